"""Model configuration: the two towers (Hugging Face field names) and the pooling head.

Frozen dataclasses, so a config is hashable and can be a static argument of `jax.jit`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping


def _from_dict(cls, d: Mapping[str, Any]):
    """Build `cls` from a dict, ignoring keys it does not have (e.g. the rest of a PretrainedConfig dict)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1           # active only in training (`deterministic=False`)
    attention_probs_dropout_prob: float = 0.1

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BertConfig":
        return _from_dict(cls, d)


@dataclass(frozen=True)
class VisionConfig:
    """CLIP vision tower (ViT); defaults are ViT-B/32 at 224 px."""
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VisionConfig":
        return _from_dict(cls, d)


@dataclass(frozen=True)
class HeadConfig:
    """Query-guided attentive pooling. `residual` adds the text back (the paper's "w/ Residual" ablation)."""
    dim: int = 128          # late-interaction embedding size
    num_tokens: int = 16    # global visual tokens from the CLS feature (E_g)
    num_heads: int = 12     # pooling heads, one pooled token each (E_m)
    residual: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HeadConfig":
        return _from_dict(cls, d)


@dataclass(frozen=True)
class TorchLayout:
    """How the published PyTorch state dict spells its keys, remembered so that export reproduces the import.

    `vision_model_prefix`: transformers < 5 names CLIP weights `...vision_tower.vision_model.*`, transformers 5
    drops the `vision_model.` level. `position_ids`: the keys of `position_ids` buffers that older transformers
    saved (always `arange`), re-emitted on export.
    """
    vision_model_prefix: bool = False
    position_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class MIReConfig:
    """The defaults are the paper's base model: BERT-base (ColBERTv2) + CLIP ViT-B/32, 16 global tokens, 12 heads,
    dim 128."""
    bert: BertConfig = field(default_factory=BertConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    dtype: str = "float32"  # compute dtype of the matmuls: "float32" or "bfloat16"; params stay float32
    layout: TorchLayout = field(default_factory=TorchLayout)

    def replace(self, **kw) -> "MIReConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MIReConfig":
        layout = dict(d.get("layout", {}))
        layout["position_ids"] = tuple(layout.get("position_ids", ()))
        return cls(bert=BertConfig.from_dict(d.get("bert", {})), vision=VisionConfig.from_dict(d.get("vision", {})),
                   head=HeadConfig.from_dict(d.get("head", {})), dtype=d.get("dtype", "float32"),
                   layout=TorchLayout(**layout))

    @classmethod
    def tiny(cls, vocab_size: int = 128, **kw) -> "MIReConfig":
        """Tiny random sizes for tests (the same shapes as the PyTorch oracle's tiny configs)."""
        return cls(bert=BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=128),
                   vision=VisionConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                                       image_size=32, patch_size=8),
                   head=HeadConfig(dim=16, num_tokens=4, num_heads=3), **kw)
