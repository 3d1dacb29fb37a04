"""mire-jax: MIRe (multimodal late-interaction retrieval) in JAX/Flax."""
from mire_jax.api import encode_doc, encode_query, encode_vision, init_params, pooling_attention
from mire_jax.config import BertConfig, HeadConfig, MIReConfig, VisionConfig
from mire_jax.scoring import maxsim

__all__ = ["BertConfig", "HeadConfig", "MIReConfig", "VisionConfig", "encode_doc", "encode_query",
           "encode_vision", "init_params", "maxsim", "pooling_attention"]
