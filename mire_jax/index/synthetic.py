"""Generated token embeddings with the structure of real ColBERT ones, for tests and benchmarks.

Real late-interaction token embeddings are clustered: every occurrence of a word lands near that word's
direction, shifted a little by its context (the passage's topic and the passage itself). Frequent words
(stop words, in real text) occur in nearly every passage; content words come from a topic. Random
isotropic vectors have none of this structure, so an approximate index tuned on them is tuned for the
wrong problem. This module draws such a corpus and queries built from a source passage, so that the
exact ranking is meaningful (the source passage and passages of its topic score highest).

`SHAPES` names three differently shaped corpora (dimension, cluster structure, passage lengths) on which the
index is tested and benchmarked: an index must hold its recall on all of them, not only on one. `unseen_shapes` draws
shapes from much wider ranges (dimension, noise of passages and of queries, topic structure, lengths), for checking
that what was tuned on the named shapes also holds on shapes nobody tuned for.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Sizes and noise levels of a generated corpus.

    Attributes:
        num_passages: number of passages.
        mean_length: mean number of kept tokens per passage (lengths vary +-50%).
        dim: embedding size.
        vocab_size: number of distinct "words" (cluster directions).
        num_common: the first `num_common` words are frequent everywhere (stop-word-like).
        num_topics: number of topics; each owns a random slice of the content vocabulary.
        topic_vocab: content words per topic.
        common_fraction: share of a passage's tokens that are common words.
        context_noise: norm of the per-occurrence Gaussian noise added to a word direction.
        topic_weight: weight of the topic direction mixed into every token of a passage.
        passage_weight: weight of a per-passage direction mixed into its tokens.
        query_tokens: tokens per query (Nq).
        query_from_source: share of query tokens that repeat words of the source passage.
        topic_exponent: passages pick their topic with Zipfian probabilities of this exponent (0: uniform),
            so a few topics hold most passages.
        second_topic_fraction: share of a passage's content words drawn from a second topic (mixtures).
        common_noise: context noise of the common words (None: `context_noise`); small values make
            function-word-like tokens that are nearly identical in every passage.
        length_distribution: "uniform" (mean_length +-50%) or "lognormal" (a long tail of long passages).
        query_noise: context noise of the query tokens (None: `context_noise`); larger values make queries that are
            worded unlike the passages (a query encoder's tokens, typos, paraphrase).
        query_common_fraction: share of query tokens that are common words (None: one in eight).
    """

    num_passages: int = 2000
    mean_length: int = 64
    dim: int = 128
    vocab_size: int = 30000
    num_common: int = 300
    num_topics: int = 400
    topic_vocab: int = 150
    common_fraction: float = 0.35
    context_noise: float = 0.55
    topic_weight: float = 0.25
    passage_weight: float = 0.25
    query_tokens: int = 32
    query_from_source: float = 0.5
    topic_exponent: float = 0.0
    second_topic_fraction: float = 0.0
    common_noise: float | None = None
    length_distribution: str = "uniform"
    query_noise: float | None = None
    query_common_fraction: float | None = None

    def scaled(self, num_passages: int) -> "SyntheticSpec":
        """The same shape with another number of passages."""
        return dataclasses.replace(self, num_passages=num_passages)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _zipf_probs(n: int, exponent: float = 1.0) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return weights / weights.sum()


class SyntheticCorpus:
    """A generated corpus: words, topics and passages, drawn once from a seed.

    Args:
        spec: sizes and noise levels.
        seed: random seed; the same seed gives the same corpus and queries.
    """

    def __init__(self, spec: SyntheticSpec, seed: int = 0):
        self.spec = spec
        rng = np.random.default_rng(seed)
        s = spec
        self._words = _unit(rng.standard_normal((s.vocab_size, s.dim))).astype(np.float32)
        self._topics = _unit(rng.standard_normal((s.num_topics, s.dim))).astype(np.float32)
        content = np.arange(s.num_common, s.vocab_size)
        self._topic_words = np.stack(
            [rng.choice(content, size=s.topic_vocab, replace=False) for _ in range(s.num_topics)])
        self._common_p = _zipf_probs(s.num_common)
        self._topic_p = _zipf_probs(s.topic_vocab, 0.8)
        if s.length_distribution == "uniform":
            low, high = max(4, s.mean_length // 2), max(5, s.mean_length * 3 // 2)
            lengths = rng.integers(low, high + 1, size=s.num_passages)
        elif s.length_distribution == "lognormal":
            sigma = 0.6
            lengths = rng.lognormal(np.log(s.mean_length) - sigma ** 2 / 2, sigma, size=s.num_passages)
            lengths = np.clip(np.round(lengths), 4, 8 * s.mean_length)
        else:
            raise ValueError(f"length_distribution must be uniform or lognormal, not {s.length_distribution!r}")
        self.lengths = lengths.astype(np.int32)
        if s.topic_exponent:
            topic_p = _zipf_probs(s.num_topics, s.topic_exponent)
            self.passage_topic = rng.choice(s.num_topics, size=s.num_passages, p=topic_p).astype(np.int32)
        else:
            self.passage_topic = rng.integers(0, s.num_topics, size=s.num_passages).astype(np.int32)
        self._passage_seed = rng.integers(0, 2**63 - 1)
        self._query_seed = rng.integers(0, 2**63 - 1)
        self.second_topic = rng.integers(0, s.num_topics, size=s.num_passages).astype(np.int32)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])

    @property
    def num_tokens(self) -> int:
        """Total kept tokens of the corpus."""
        return int(self.offsets[-1])

    def _passage_words(self, pid: int) -> np.ndarray:
        rng = np.random.default_rng([self._passage_seed, pid])
        n = int(self.lengths[pid])
        n_common = int(round(n * self.spec.common_fraction))
        common = rng.choice(self.spec.num_common, size=n_common, p=self._common_p)
        n_second = int(round((n - n_common) * self.spec.second_topic_fraction))
        topic = self._topic_words[self.passage_topic[pid]]
        second = self._topic_words[self.second_topic[pid]]
        content = topic[rng.choice(self.spec.topic_vocab, size=n - n_common - n_second, p=self._topic_p)]
        mixed = second[rng.choice(self.spec.topic_vocab, size=n_second, p=self._topic_p)]
        words = np.concatenate([common, content, mixed])
        return words[rng.permutation(n)]

    def _embed(self, words: np.ndarray, topic: int, passage_dir: np.ndarray,
               rng: np.random.Generator, context_noise: float | None = None) -> np.ndarray:
        s = self.spec
        noise = rng.standard_normal((len(words), s.dim)).astype(np.float32)
        scale = np.full(len(words), s.context_noise if context_noise is None else context_noise, np.float32)
        if s.common_noise is not None and context_noise is None:
            scale[words < s.num_common] = s.common_noise
        noise *= (scale / np.sqrt(s.dim))[:, None]
        x = self._words[words] + noise
        x += s.topic_weight * self._topics[topic] + s.passage_weight * passage_dir
        return _unit(x)

    def _passage_dir(self, pid: int) -> np.ndarray:
        rng = np.random.default_rng([self._passage_seed, pid, 1])
        return _unit(rng.standard_normal(self.spec.dim)).astype(np.float32)

    def passage_embeddings(self, pid: int) -> np.ndarray:
        """Embeddings [length, dim] float32 of passage `pid` (L2-normalised rows)."""
        rng = np.random.default_rng([self._passage_seed, pid, 2])
        return self._embed(self._passage_words(pid), int(self.passage_topic[pid]),
                           self._passage_dir(pid), rng)

    def embeddings(self, start: int = 0, stop: int | None = None,
                   dtype=np.float16) -> np.ndarray:
        """Concatenated embeddings [tokens, dim] of passages start..stop-1, in order."""
        stop = self.spec.num_passages if stop is None else stop
        out = np.empty((int(self.offsets[stop] - self.offsets[start]), self.spec.dim), dtype)
        base = self.offsets[start]
        for pid in range(start, stop):
            out[self.offsets[pid] - base:self.offsets[pid + 1] - base] = self.passage_embeddings(pid)
        return out

    def queries(self, num_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Queries made from random source passages.

        Each query repeats some words of its source passage (fresh context noise), adds other words of
        the source's topic and a few common words. The last few tokens of some queries are masked out,
        like padding.

        Returns:
            (embeddings [B, Nq, dim] float32, mask [B, Nq] bool, source passage index [B] int32).
        """
        s = self.spec
        rng = np.random.default_rng([self._query_seed, seed])
        nq = s.query_tokens
        sources = rng.integers(0, s.num_passages, size=num_queries).astype(np.int32)
        embs = np.zeros((num_queries, nq, s.dim), np.float32)
        mask = np.zeros((num_queries, nq), bool)
        for b, pid in enumerate(sources):
            n = int(rng.integers(nq * 3 // 4, nq + 1))
            own = self._passage_words(int(pid))
            n_src = int(round(n * s.query_from_source))
            n_common = max(1, n // 8) if s.query_common_fraction is None else int(round(n * s.query_common_fraction))
            n_src = min(n_src, n - n_common)
            topic = self._topic_words[self.passage_topic[pid]]
            words = np.concatenate([
                rng.choice(own, size=n_src),
                topic[rng.choice(s.topic_vocab, size=n - n_src - n_common, p=self._topic_p)],
                rng.choice(s.num_common, size=n_common, p=self._common_p),
            ])
            embs[b, :n] = self._embed(words, int(self.passage_topic[pid]), self._passage_dir(int(pid)), rng,
                                      s.query_noise)
            mask[b, :n] = True
        return embs, mask, sources


SHAPES = {
    # Word clusters, 400 equally likely topics, stop-word-like common words; 128-d, 32-96 tokens.
    "uniform128": SyntheticSpec(num_passages=100_000),
    # 64-d, short passages (12-36 tokens), many small topics with a strong topic direction, noisier words.
    "short64": SyntheticSpec(num_passages=100_000, mean_length=24, dim=64, vocab_size=20_000, num_common=100,
                             num_topics=1000, topic_vocab=50, common_fraction=0.25, context_noise=0.65,
                             topic_weight=0.4, passage_weight=0.15, query_tokens=24),
    # Topics of Zipfian sizes, passages mixing two topics, tight function words (half the tokens), long tail.
    "zipf_mixed": SyntheticSpec(num_passages=100_000, mean_length=64, dim=128, vocab_size=40_000, num_common=150,
                                num_topics=3000, topic_vocab=120, common_fraction=0.5, context_noise=0.5,
                                topic_weight=0.2, passage_weight=0.2, topic_exponent=1.0,
                                second_topic_fraction=0.4, common_noise=0.15, length_distribution="lognormal"),
}


def unseen_shapes(count: int, seed: int = 0, num_passages: int = 20_000) -> dict[str, SyntheticSpec]:
    """`count` corpus shapes drawn at random, each unlike `SHAPES` and unlike the others: dimension 32 to 192, 8 to
    96 tokens per passage (uniform or long-tailed), 20 to 2000 topics (uniform or Zipfian sizes, some passages mixing
    two), 5 to 60% common words (loose or tight), passage noise 0.3 to 1.0, and queries of 8 to 64 tokens, 10 to 80%
    of them from the source passage, with a noise of 0.8 to 2.2 times the passages' (worded unlike the passages).

    The same (count, seed) gives the same shapes; names say the seed, the number and the main traits.
    """
    rng = np.random.default_rng([seed, 23])
    shapes = {}
    for i in range(count):
        dim = int(rng.choice([32, 48, 64, 96, 128, 192]))
        mean_length = int(rng.choice([8, 16, 24, 48, 96]))
        num_common = int(rng.integers(20, 400))
        num_topics = int(rng.integers(20, 2000))
        topic_vocab = int(rng.integers(20, 300))
        context_noise = float(rng.uniform(0.3, 1.0))
        spec = SyntheticSpec(
            num_passages=num_passages, mean_length=mean_length, dim=dim,
            vocab_size=num_common + int(rng.integers(max(topic_vocab, 2000), 40_000)), num_common=num_common,
            num_topics=num_topics, topic_vocab=topic_vocab, common_fraction=float(rng.uniform(0.05, 0.6)),
            context_noise=context_noise, topic_weight=float(rng.uniform(0.0, 0.5)),
            passage_weight=float(rng.uniform(0.0, 0.4)), query_tokens=int(rng.choice([8, 16, 24, 32, 48, 64])),
            query_from_source=float(rng.uniform(0.1, 0.8)),
            topic_exponent=float(rng.choice([0.0, 0.0, 0.7, 1.0, 1.3])),
            second_topic_fraction=float(rng.uniform(0.1, 0.5)) if rng.random() < 0.4 else 0.0,
            common_noise=float(rng.uniform(0.05, 0.4)) if rng.random() < 0.4 else None,
            length_distribution=str(rng.choice(["uniform", "lognormal"])),
            query_noise=context_noise * float(rng.uniform(0.8, 2.2)),
            query_common_fraction=float(rng.uniform(0.05, 0.4)) if rng.random() < 0.5 else None)
        shapes[f"unseen{seed}_{i}_d{dim}_len{mean_length}_qn{spec.query_noise:.2f}"] = spec
    return shapes
