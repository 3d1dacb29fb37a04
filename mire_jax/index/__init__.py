"""Corpus-scale late-interaction search: encoded-corpus shards, the ScaNN index (sharded, calibrated,
optionally spread over processes), exact MaxSim search.

The modules form one stack, each importing only those below it:
  storage, distributed, tokens, config     checksums and manifests; process layout; the token matrix; settings
  encoded_corpus, encode                   an encoded corpus on disk, and the loop that writes it
  exact, rerank, index_shard               exact MaxSim (all passages, or chosen ones); one shard with its ScaNN
  search                                   an opened index: search, save, load
  calibrate, build                         choosing the search settings; building shard by shard
  late_interaction                         `LateInteractionIndex`: the index with all of the above
"""
from mire_jax.index.config import IndexConfig
from mire_jax.index.exact import exact_search
from mire_jax.index.late_interaction import LateInteractionIndex
from mire_jax.index.storage import IndexFileError, IndexFormatError, ShardError

__all__ = ["IndexConfig", "IndexFileError", "IndexFormatError", "LateInteractionIndex", "ShardError", "exact_search"]
