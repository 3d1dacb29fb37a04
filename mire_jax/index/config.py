"""Settings of a LateInteractionIndex: how it is built, how it searches, and how it calibrates itself.

Build settings (ScaNN partitioning and hashing, shard size) are fixed when the index is built. Search
settings (partitions probed, neighbours per query token, the first stage's fill, candidates reranked) are
chosen by calibration (`mire_jax.index.calibrate`) when left as None, and stored with the index.
"""

from __future__ import annotations

import dataclasses
import math

MODES = ("auto", "scann", "exact")
TOKEN_CODECS = ("auto", "int8", "int4", "float16")  # "auto" and mire_jax.index.token_store.CODECS
FALLBACKS = ("best", "exact")


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """Settings of a LateInteractionIndex; None fields are chosen by `resolve` (build) or calibration (search).

    Attributes:
        mode: "scann", "exact", or "auto": exact up to `exact_max_tokens` corpus tokens, and on accelerators
            (GPU, TPU) whenever the stored tokens fit the devices' memory (exact search spread over every local
            device, `mire_jax.index.exact`); else scann.
        exact_max_tokens: corpus size (tokens) up to which "auto" means exact search on CPU.
        token_codec: how the tokens are stored for the rerank and the exact search
            (`mire_jax.index.token_store.CODECS`): "int8" (8-bit codes and a float16 scale per token, dim + 2
            bytes), "int4" (half of that, less recall), "float16" (2 dim bytes, no quantisation), or "auto":
            int8 where a check at build time finds that exact search over int8 tokens keeps the float32 top 10
            and top 100 on a sample of the corpus (`mire_jax.index.exact.choose_codec`), else float16.
        exact_resident_bytes: bytes of stored tokens the exact search keeps on the devices between searches
            (None: a quarter of the host's memory on CPU, three quarters of the devices' elsewhere); a larger
            corpus is copied to them piece by piece at every exact search.
        shard_tokens: most tokens per index shard. Each shard gets its own ScaNN searcher, built from a
            float32 copy of that shard only, so this bounds the build's memory: it peaks at 4 to 7 times that
            copy (measured: 2.4 GB for one shard of 2.4M 64-d tokens; 9.8 GB in a process that built two
            shards of 2.6M 128-d tokens and calibrated), 8-15 GB at the default for 128-d tokens. Shards built from an encoded corpus
            (`from_shards`) group whole encoded shards.
        num_leaves: ScaNN partitions of the largest shard (default ~1.6 sqrt(tokens), a power of two);
            smaller shards get proportionally fewer.
        dims_per_block: dimensions per asymmetric-hashing block, 4 bits each (default dim // 32: 16 bytes
            of codes per token whatever the dimension).
        anisotropic_threshold: ScaNN's anisotropic quantisation threshold for dot products.
        spherical: spherical k-means partitions (unit centroids). Clusters of rare words then keep
            centroids that queries can reach; plain k-means pools them into low-norm centroids that
            dot-product probing never visits.
        training_sample_size: tokens sampled per shard to train partitions and codebooks (default 64 per
            leaf, at most 250k).
        soar_lambda: ScaNN SOAR spilling (each token indexed in a second partition), off when None.
        leaves_to_search: partitions probed per query token in the largest shard (scaled down for smaller
            ones). None: calibrated.
        neighbors_per_token: corpus tokens retrieved per query token and shard. None: calibrated.
        fill_fraction: share of a query token's last retrieved score counted for a candidate passage none
            of whose tokens it retrieved. None: calibrated.
        rerank_passages: candidates scored exactly per query (per process when distributed; at least k).
            None: calibrated.
        query_batch: queries searched together.
        training_threads: ScaNN build threads (0: all cores).
        exact_passages_per_block: no longer used (the exact search's blocks follow the stored layout); kept so
            that configs naming it still load.
        calibrate: measure recall against exact search at build time and choose the None search settings.
        calibration_queries: queries drawn from the corpus for calibration (when none are given).
        calibration_query_tokens: tokens per drawn calibration query.
        calibration_kinds: the kinds of drawn queries (`mire_jax.index.calibrate.QUERY_KINDS`, easy to hard) the
            calibration queries cycle through; None: all of them, so that the recall measured is a lower bound of
            what real queries get. Leaving out the hard kinds gives cheaper settings that only easy queries get.
        calibration_short_queries: short queries (a few words) also drawn, and measured at the settings chosen
            (not used to choose them): their recall is reported apart, and searching short queries warns when it is
            below the targets. 0: none.
        target_recall_at_10: recall@10 against exact search that calibration must reach.
        target_recall_at_100: recall@100 against exact search that calibration must reach.
        calibration_fallback: when no approximate setting reaches the targets: "best" keeps the one with
            the highest recall (and says so), "exact" switches the index to exact search.
        calibration_sigmas: standard errors (of the mean recall over calibration queries) that the measured
            recall must clear each target by, so that the targets hold on other queries too.
        exact_if_cheaper: let calibration switch to exact search when that is cheaper than every
            approximate setting reaching the targets (small corpora).
        seed: seed of the calibration queries.
    """

    mode: str = "auto"
    exact_max_tokens: int = 50_000
    token_codec: str = "auto"
    exact_resident_bytes: int | None = None
    shard_tokens: int = 1 << 22
    num_leaves: int | None = None
    dims_per_block: int | None = None
    anisotropic_threshold: float = 0.2
    spherical: bool = True
    training_sample_size: int | None = None
    soar_lambda: float | None = None
    leaves_to_search: int | None = None
    neighbors_per_token: int | None = None
    fill_fraction: float | None = None
    rerank_passages: int | None = None
    query_batch: int = 64
    training_threads: int = 0
    exact_passages_per_block: int = 128
    calibrate: bool = True
    calibration_queries: int = 64
    calibration_query_tokens: int = 32
    calibration_kinds: tuple[str, ...] | None = None
    calibration_short_queries: int = 16
    target_recall_at_10: float = 0.99
    target_recall_at_100: float = 0.95
    calibration_fallback: str = "best"
    calibration_sigmas: float = 2.0
    exact_if_cheaper: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.calibration_kinds is not None:  # a list when read back from index.json
            object.__setattr__(self, "calibration_kinds", tuple(self.calibration_kinds))

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"IndexConfig.mode must be auto, scann or exact, not {self.mode!r}")
        if self.calibration_fallback not in FALLBACKS:
            raise ValueError(f"IndexConfig.calibration_fallback must be one of {FALLBACKS}, "
                             f"not {self.calibration_fallback!r}")
        if self.shard_tokens < 1:
            raise ValueError(f"IndexConfig.shard_tokens must be positive, got {self.shard_tokens}")
        if self.token_codec not in TOKEN_CODECS:
            raise ValueError(f"IndexConfig.token_codec must be one of {TOKEN_CODECS}, not {self.token_codec!r}")

    def resolve(self, num_tokens: int, dim: int = 128, largest_shard_tokens: int | None = None,
                accelerators_hold: bool = False) -> "IndexConfig":
        """A copy with the build settings decided for a corpus of `num_tokens` tokens of size `dim`.

        `accelerators_hold`: the devices are accelerators and this process's share of the stored tokens fits
        their memory ("auto" is then exact). Search settings left as None stay None (calibration decides them);
        `with_default_search` fills them without calibrating.
        """
        self.validate()
        mode = self.mode
        if mode == "auto":
            mode = "exact" if num_tokens <= self.exact_max_tokens or accelerators_hold else "scann"
        shard = largest_shard_tokens or min(num_tokens, self.shard_tokens)
        leaves = self.num_leaves or default_leaves(shard)
        sample = self.training_sample_size or min(max(shard, 1), 64 * leaves, 250_000)
        dpb = self.dims_per_block or max(1, dim // 32)
        return dataclasses.replace(self, mode=mode, num_leaves=int(leaves), training_sample_size=int(sample),
                                   dims_per_block=int(dpb))

    def with_default_search(self, num_tokens: int) -> "IndexConfig":
        """A copy with every None search setting set by rule of thumb (for uncalibrated indexes)."""
        shard = min(max(num_tokens, 1), self.shard_tokens)
        leaves = self.num_leaves or default_leaves(shard)
        neighbors = self.neighbors_per_token or min(512, shard)
        probe = self.leaves_to_search
        if probe is None:
            probe = max(8, math.ceil(0.03 * leaves), math.ceil(8 * neighbors * leaves / shard))
        return dataclasses.replace(
            self, leaves_to_search=int(min(probe, leaves)), neighbors_per_token=int(neighbors),
            fill_fraction=0.5 if self.fill_fraction is None else self.fill_fraction,
            rerank_passages=400 if self.rerank_passages is None else self.rerank_passages)

    def search_fields(self) -> dict:
        """The search settings (what calibration chooses)."""
        return {name: getattr(self, name) for name in SEARCH_FIELDS}


SEARCH_FIELDS = ("leaves_to_search", "neighbors_per_token", "fill_fraction", "rerank_passages")


def default_leaves(shard_tokens: int) -> int:
    """ScaNN partitions for a shard of this many tokens: ~1.6 sqrt(tokens), a power of two, 16..65536."""
    leaves = 2 ** round(math.log2(max(1.6 * math.sqrt(max(shard_tokens, 1)), 1)))
    return int(min(max(leaves, 16), 65536, max(shard_tokens // 64, 1)))


def shard_leaves(config: IndexConfig, shard_tokens: int, largest_shard_tokens: int) -> int:
    """Partitions of one shard: the config's count scaled to the shard's share of the largest shard."""
    scaled = config.num_leaves * shard_tokens / max(largest_shard_tokens, 1)
    return int(max(1, min(round(scaled), shard_tokens // 16 or 1)))


def shard_probe(leaves_to_search: int, shard_leaves_count: int, largest_leaves: int) -> int:
    """Partitions probed in a shard with `shard_leaves_count` leaves, scaled like its leaves."""
    return int(max(1, min(shard_leaves_count, math.ceil(leaves_to_search * shard_leaves_count / max(largest_leaves, 1)))))


def as_config(config: IndexConfig | dict | None) -> IndexConfig:
    """An IndexConfig from None (defaults), a dict of its fields, or an IndexConfig."""
    if config is None:
        return IndexConfig()
    if isinstance(config, dict):
        known = {f.name for f in dataclasses.fields(IndexConfig)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown IndexConfig fields {unknown}")
        return IndexConfig(**config)
    return config
