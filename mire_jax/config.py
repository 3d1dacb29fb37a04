"""Model configuration: the two towers (Hugging Face field names) and the pooling head; and the encoding settings,
how questions, passages and images become the model's inputs.

The text tower is BERT (MIRe) unless `MIReConfig.modernbert` is set: then it is a ModernBERT encoder with PyLate's
projection (SentMIRe, the published `SentMIRe` on a PyLate ModernColBERT).

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


VISION_MODEL_TYPES = ("clip", "siglip")
# Hugging Face's `model_type` of a vision config (and of the full model's) -> the tower it names.
_HF_VISION_TYPES = {"clip": "clip", "clip_vision_model": "clip", "siglip": "siglip", "siglip_vision_model": "siglip"}
# SigLIP's fields where a config dict leaves them out: the published `SigLipVisionConfig` defaults
# (retrievers/layers/siglip.py: so400m/14 at 384 px), not CLIP's.
SIGLIP_DEFAULTS = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                       image_size=384, patch_size=14, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")

LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass(frozen=True)
class ModernBertConfig:
    """ModernBERT text tower (Hugging Face `ModernBertConfig` field names) and PyLate's projection.

    `layer_types`: "full_attention" (global) or "sliding_attention" (local) per layer; empty: every
    `global_attn_every_n_layers`-th layer global, starting with layer 0, as Hugging Face derives it. A local layer
    attends to the keys at most `local_attention // 2` positions away. Rotary bases: `global_rope_theta` in global
    layers, `local_rope_theta` in local ones. `projection_bias`: the PyLate Dense layer has a bias (PyLate's
    ModernColBERT models have none).
    """
    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    global_attn_every_n_layers: int = 3
    layer_types: tuple[str, ...] = ()
    local_attention: int = 128
    global_rope_theta: float = 160000.0
    local_rope_theta: float = 10000.0
    embedding_dropout: float = 0.0      # active only in training (`deterministic=False`), like BERT's
    attention_dropout: float = 0.0
    mlp_dropout: float = 0.0
    pad_token_id: int = 50283
    projection_bias: bool = False

    def __post_init__(self):
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if self.layer_types and len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"layer_types names {len(self.layer_types)} layers, num_hidden_layers is "
                             f"{self.num_hidden_layers}")
        bad = sorted(set(self.layer_types) - set(LAYER_TYPES))
        if bad:
            raise ValueError(f"unknown layer types {bad}; known: {list(LAYER_TYPES)}")
        if self.hidden_size % self.num_attention_heads or (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(f"hidden_size {self.hidden_size} must split into {self.num_attention_heads} heads of an "
                             "even size (rotary embeddings rotate pairs)")

    def is_global(self, layer: int) -> bool:
        if self.layer_types:
            return self.layer_types[layer] == "full_attention"
        return layer % self.global_attn_every_n_layers == 0

    @property
    def window(self) -> int:
        """How far a local layer looks either way: |query - key| <= window."""
        return self.local_attention // 2

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModernBertConfig":
        """From this class's fields or a Hugging Face config.json (transformers 4: global/local_rope_theta and
        global_attn_every_n_layers; transformers 5: layer_types and rope_parameters)."""
        d = dict(d)
        rope = d.pop("rope_parameters", None) or {}
        for layer_type, key in (("full_attention", "global_rope_theta"), ("sliding_attention", "local_rope_theta")):
            params = rope.get(layer_type) or {}
            if params.get("rope_type", "default") != "default":
                raise ValueError(f"rope_type {params['rope_type']!r} of the {layer_type} layers is not supported "
                                 "(only the default rotary embedding)")
            if "rope_theta" in params:
                d[key] = params["rope_theta"]
        for key in ("rope_scaling",):
            if d.get(key):
                raise ValueError(f"{key} {d[key]!r} is not supported (only the default rotary embedding)")
        if "local_rope_theta" in d and d["local_rope_theta"] is None:  # transformers 4: the global base everywhere
            d["local_rope_theta"] = d.get("global_rope_theta", cls.global_rope_theta)
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            d.pop(key, None)
        if d.get("layer_types") is None:
            d.pop("layer_types", None)
        config = _from_dict(cls, d)
        if config.layer_types == dataclasses.replace(config, layer_types=()).resolved_layer_types():
            config = dataclasses.replace(config, layer_types=())  # the pattern the period gives: one spelling
        return config

    def resolved_layer_types(self) -> tuple[str, ...]:
        return tuple(LAYER_TYPES[0] if self.is_global(i) else LAYER_TYPES[1] for i in range(self.num_hidden_layers))


@dataclass(frozen=True)
class VisionConfig:
    """The vision tower: `model_type` "clip" (CLIP ViT; the defaults are ViT-B/32 at 224 px) or "siglip" (SigLIP,
    `VisionConfig.siglip()`: so400m/14 at 384 px). Hugging Face field names."""
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    model_type: str = "clip"

    def __post_init__(self):
        if self.model_type not in VISION_MODEL_TYPES:
            raise ValueError(f"VisionConfig.model_type must be one of {VISION_MODEL_TYPES}, got {self.model_type!r}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def image_processing(self) -> ImageProcessing:
        """The preprocessing this tower was trained with: CLIP's (shorter side, centre crop, CLIP mean/std), or
        SigLIP's (straight to a square, mean and std 0.5)."""
        if self.model_type == "siglip":
            return ImageProcessing(size=self.image_size, mean=SIGLIP_MEAN, std=SIGLIP_STD, resize="square")
        return ImageProcessing(size=self.image_size)

    @classmethod
    def siglip(cls, **overrides) -> "VisionConfig":
        """A SigLIP tower: the published defaults (so400m/14 at 384 px) with `overrides`."""
        return cls(**{**SIGLIP_DEFAULTS, **overrides, "model_type": "siglip"})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VisionConfig":
        """From our own dict or a Hugging Face (CLIP/SigLIP) vision config dict; `model_type` picks the tower
        (absent: CLIP) and, for SigLIP, the defaults of the fields the dict leaves out."""
        d = dict(d)
        kind = d.get("model_type", "clip")
        if kind not in _HF_VISION_TYPES:
            raise ValueError(f"unsupported vision model_type {kind!r}; known: {sorted(_HF_VISION_TYPES)}")
        d["model_type"] = _HF_VISION_TYPES[kind]
        if d.get("vision_use_head") is False:  # Hugging Face SiglipVisionConfig: no attention-pooling head
            raise ValueError("a SigLIP vision config with vision_use_head false has no attention-pooling head, "
                             "which gives MIRe's global image feature")
        if d["model_type"] == "siglip":
            d = {**SIGLIP_DEFAULTS, **d}
        return _from_dict(cls, d)


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
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
    dim 128. With `modernbert` set, the text tower is that ModernBERT (SentMIRe) and `bert` is unused."""
    bert: BertConfig = field(default_factory=BertConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    dtype: str = "float32"  # compute dtype of the matmuls: "float32" or "bfloat16"; params stay float32
    layout: TorchLayout = field(default_factory=TorchLayout)
    modernbert: ModernBertConfig | None = None

    @property
    def text_tower(self) -> str:
        """"bert" (MIRe) or "modernbert" (SentMIRe)."""
        return "bert" if self.modernbert is None else "modernbert"

    @property
    def text(self) -> BertConfig | ModernBertConfig:
        """The config of the text tower in use (both have `vocab_size` and `hidden_size`)."""
        return self.bert if self.modernbert is None else self.modernbert

    def replace_text(self, **kw) -> "MIReConfig":
        """The same model with these fields of the text tower in use changed."""
        if self.modernbert is None:
            return self.replace(bert=dataclasses.replace(self.bert, **kw))
        return self.replace(modernbert=dataclasses.replace(self.modernbert, **kw))

    def replace(self, **kw) -> "MIReConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MIReConfig":
        layout = dict(d.get("layout", {}))
        layout["position_ids"] = tuple(layout.get("position_ids", ()))
        modernbert = ModernBertConfig.from_dict(d["modernbert"]) if d.get("modernbert") is not None else None
        return cls(bert=BertConfig.from_dict(d.get("bert", {})), vision=VisionConfig.from_dict(d.get("vision", {})),
                   head=HeadConfig.from_dict(d.get("head", {})), dtype=d.get("dtype", "float32"),
                   layout=TorchLayout(**layout), modernbert=modernbert)

    @classmethod
    def tiny(cls, vocab_size: int = 128, text: str = "bert", **kw) -> "MIReConfig":
        """Tiny random sizes for tests (the same shapes as the PyTorch oracle's tiny configs). `text="modernbert"`:
        a tiny SentMIRe, 3 layers (global, local, local) of odd widths with a window of 2 either way."""
        if text == "modernbert":
            kw.setdefault("modernbert", ModernBertConfig(
                vocab_size=vocab_size, hidden_size=70, intermediate_size=45, num_hidden_layers=3,
                num_attention_heads=5, local_attention=4, global_rope_theta=1000.0, local_rope_theta=50.0,
                pad_token_id=0))
        elif text != "bert":
            raise ValueError(f"text must be 'bert' or 'modernbert', got {text!r}")
        bert = BertConfig() if text == "modernbert" else BertConfig(  # unused by SentMIRe: left at its default
            vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
        return cls(bert=bert,
                   vision=VisionConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                                       image_size=32, patch_size=8),
                   head=HeadConfig(dim=16, num_tokens=4, num_heads=3), **kw)

    @classmethod
    def tiny_siglip(cls, vocab_size: int = 128, **kw) -> "MIReConfig":
        """`tiny` with a tiny random SigLIP tower of odd sizes (width 42 over 3 heads, a 5 x 5 patch grid from 32 px
        in patches of 6, the last 2 pixels unused), the PyTorch oracle's tiny SigLIP config."""
        return cls.tiny(vocab_size, **kw).replace(vision=VisionConfig.siglip(
            hidden_size=42, intermediate_size=74, num_hidden_layers=2, num_attention_heads=3, image_size=32,
            patch_size=6))


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
