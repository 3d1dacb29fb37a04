"""Model configuration: the two towers (Hugging Face field names) and the pooling head; and the encoding settings,
how questions, passages and images become the model's inputs.

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

    def image_processing(self) -> ImageProcessing:
        """The preprocessing this tower was trained with (CLIP's)."""
        return ImageProcessing(size=self.image_size)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VisionConfig":
        return _from_dict(cls, d)


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("shorter_side_and_crop", "square")


@dataclass(frozen=True)
class ImageProcessing:
    """How an image becomes the vision tower's pixels (`mire_jax.retrieval.images.preprocess`).

    `resize`: "shorter_side_and_crop" (CLIP: bicubic resize of the shorter side to `size`, centre crop) or
    "square" (bicubic resize straight to `size` x `size`); then x / 255, minus `mean`, divided by `std`.
    """
    size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resize: str = "shorter_side_and_crop"

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"ImageProcessing.resize must be one of {RESIZE_MODES}, got {self.resize!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ImageProcessing":
        d = dict(d)
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
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


PASSAGE_KEEP_POLICIES = ("punctuation_and_padding", "padding_only")


@dataclass(frozen=True)
class EncodingSettings:
    """How questions, passages and images become a model's inputs: what changes the embeddings besides the weights.

    A model folder records the settings it was trained with; an index records those its corpus was encoded with
    and its queries are searched with, and search and serving take them from there (`mire_jax.retrieval`).
    The published recipes: pre-training 40 / 400 word pieces, fine-tuning 32 / 180, both with [MASK] padding
    attended and punctuation dropped from passages; evaluation 64 / 384 with the padding neither attended nor kept
    and punctuation kept (docs/model.md, section 4).

    Attributes:
        query_maxlen: query length in word pieces, [MASK] padding included.
        doc_maxlen: passage length in word pieces.
        attend_to_mask_tokens: the query's [MASK] padding is attended to (and kept), as in the published training.
        score_mask_tokens: the [MASK] padding is not attended to but its embeddings are kept in MaxSim (ColBERTv2's
            searcher); only without `attend_to_mask_tokens`.
        passage_keep: the passage tokens stored, one of PASSAGE_KEEP_POLICIES: "punctuation_and_padding" drops
            ColBERT's skiplist (training), "padding_only" keeps punctuation (the published indexer).
        image: the image preprocessing.
    """
    query_maxlen: int = 64
    doc_maxlen: int = 384
    attend_to_mask_tokens: bool = False
    score_mask_tokens: bool = False
    passage_keep: str = "padding_only"
    image: ImageProcessing = field(default_factory=ImageProcessing)

    def __post_init__(self):
        if self.passage_keep not in PASSAGE_KEEP_POLICIES:
            raise ValueError(f"passage_keep must be one of {PASSAGE_KEEP_POLICIES}, got {self.passage_keep!r}")
        if self.query_maxlen < 3 or self.doc_maxlen < 3:
            raise ValueError(f"query_maxlen and doc_maxlen must be at least 3, got {self.query_maxlen} and "
                             f"{self.doc_maxlen}")

    def replace(self, **kw) -> "EncodingSettings":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EncodingSettings":
        d = dict(d)
        if "image" in d:
            d["image"] = ImageProcessing.from_dict(d["image"])
        return _from_dict(cls, d)

    def query_fields(self) -> dict:
        """The settings of the query side (what a search must match)."""
        return {k: getattr(self, k) for k in QUERY_FIELDS}

    def passage_fields(self) -> dict:
        """The settings of the passage side (what an encoded corpus was made with)."""
        return {k: getattr(self, k) for k in PASSAGE_FIELDS}


QUERY_FIELDS = ("query_maxlen", "attend_to_mask_tokens", "score_mask_tokens", "image")
PASSAGE_FIELDS = ("doc_maxlen", "passage_keep")
