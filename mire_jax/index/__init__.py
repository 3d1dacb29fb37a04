"""Corpus-scale late-interaction search: encoded-corpus shards, the ScaNN index (sharded, calibrated,
optionally spread over processes), exact MaxSim search."""
from mire_jax.index.config import IndexConfig
from mire_jax.index.exact import exact_search
from mire_jax.index.index_shard import IndexFileError
from mire_jax.index.late_interaction import LateInteractionIndex
from mire_jax.index.shards import ShardError

__all__ = ["IndexConfig", "IndexFileError", "LateInteractionIndex", "ShardError", "exact_search"]
