"""Corpus-scale late-interaction search: encoded-corpus shards, the ScaNN index, exact MaxSim search."""
from mire_jax.index.exact import exact_search
from mire_jax.index.late_interaction import IndexConfig, IndexFileError, LateInteractionIndex
from mire_jax.index.shards import ShardError

__all__ = ["IndexConfig", "IndexFileError", "LateInteractionIndex", "ShardError", "exact_search"]
