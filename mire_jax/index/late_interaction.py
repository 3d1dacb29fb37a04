"""`LateInteractionIndex`: the index users build, save, open, calibrate and search.

It is the opened index of `mire_jax.index.search` with the layers above it: building (`mire_jax.index.build`,
shard by shard, from arrays or an encoded corpus) and calibration (`mire_jax.index.calibrate`: the index measures
its own recall against exact search and keeps the cheapest search settings reaching the targets; what it measured is
saved with it as `index.calibration`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mire_jax.index import build as build_lib
from mire_jax.index import calibrate as calibrate_lib
from mire_jax.index.config import IndexConfig, as_config
from mire_jax.index.search import SearchableIndex


class LateInteractionIndex(SearchableIndex):
    """Top-k passages by MaxSim over a corpus of token embeddings.

    Build with `LateInteractionIndex.build(...)` (arrays) or `from_shards(...)` (an encoded corpus); persist with
    `save(dir)` and `LateInteractionIndex.load(dir)`; search with `search(queries, mask, k)`.
    """

    @classmethod
    def build(cls, embeddings: np.ndarray, lengths: Sequence[int], ids: Sequence,
              config: IndexConfig | dict | None = None, progress: bool = True,
              calibration_queries: tuple[np.ndarray, np.ndarray] | None = None,
              encoding: dict | None = None) -> "LateInteractionIndex":
        """Index a corpus held in memory (as index shards of at most `config.shard_tokens` tokens), then
        calibrate the search settings against exact search.

        Args:
            embeddings: [total_tokens, dim] every passage's kept token embeddings (L2-normalised),
                concatenated in passage order; each shard keeps its slice as float16 until `save`.
            lengths: [N] tokens per passage.
            ids: [N] passage ids (ints or strings), returned by `search`.
            config: IndexConfig (or a dict of its fields).
            progress: show progress bars.
            calibration_queries: (query embeddings [Q, Nq, dim], mask [Q, Nq]) to calibrate on, e.g. real
                queries; None draws them from the corpus.
            encoding: how the corpus was encoded (model fingerprint, passage settings), saved with the index.
        """
        return build_lib.build_in_memory(cls, embeddings, lengths, ids, as_config(config), progress,
                                         calibration_queries, encoding)

    @classmethod
    def from_shards(cls, shard_dir, config: IndexConfig | dict | None = None, verify: bool = True,
                    progress: bool = True, directory=None,
                    calibration_queries: tuple[np.ndarray, np.ndarray] | None = None,
                    encoding: dict | None = None) -> "LateInteractionIndex":
        """Index the encoded corpus of a shard directory (`mire_jax.index.encoded_corpus`, e.g. written by
        eval/encode_corpus.py) one index shard at a time, never holding more than one shard as float32.

        With `directory`, every index shard is saved (and checksummed) there as soon as it is built and a
        repeated call resumes at the first missing shard; under `jax.distributed` each process builds its
        own shards. Without it the index is built in memory (the encoded shards stay memory-mapped).
        """
        return build_lib.build_from_encoded(cls, shard_dir, as_config(config), verify=verify, progress=progress,
                                            directory=directory, calibration_queries=calibration_queries,
                                            encoding=encoding)

    def calibrate(self, queries: np.ndarray | None = None, query_mask: np.ndarray | None = None,
                  progress: bool = False, **overrides) -> dict:
        """Choose the cheapest search settings reaching the config's recall targets against exact search,
        on `queries` (e.g. real ones) or on queries drawn from the corpus; sets `self.config` and
        `self.calibration` and returns the latter. Collective under `jax.distributed`."""
        return calibrate_lib.calibrate_index(self, queries, query_mask, progress=progress, **overrides)
