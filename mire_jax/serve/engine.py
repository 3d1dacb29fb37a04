"""The searcher behind the server (`mire_jax.retrieval.Searcher`: model, saved index, passage texts), with fixed
shapes: query encoding and search in a few compiled batch sizes, and the pooling's attention for one query.

Queries are encoded as the index's settings say (docs/evaluation.md): ColBERT query framing at `query_maxlen` with
the [MASK] padding not attended, the model's image preprocessing; with an image the query is `[E_g ; E_m ; T]`,
without one `T` alone (docs/model.md, section 3). Every jitted program runs on a batch padded to one of a few fixed
sizes, so `warm_up` compiles all of them and serving compiles nothing.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence

import jax
import numpy as np
from PIL import Image

from mire_jax.retrieval.searcher import Searcher
from mire_jax.serve.audit import Audit
from mire_jax.serve.compile_watch import CompileWatch


@dataclasses.dataclass(frozen=True)
class Query:
    """One prepared query: the question ("" when absent) and the CLIP-normalised pixels (None: text only)."""
    question: str
    pixels: np.ndarray | None


@dataclasses.dataclass
class BatchOutcome:
    """What one batch of queries returned: per query the index's top `max_k` (ids, scores), and the stage times."""
    ids: list[list]
    scores: list[np.ndarray]
    encode_s: float
    search_s: float


class Engine:
    """A searcher (model + index + passages) answering batches of queries with fixed shapes.

    Args:
        searcher: a `Searcher` with an index and the passages' texts.
        batch_sizes: the padded batch sizes compiled at start-up; a batch of n queries runs at the smallest size
            >= n, so the largest size is the most queries one batch may hold.
        max_k: results searched per query (every request's k is at most this).
        audit_rate: share of answered queries also searched exactly in the background (`mire_jax.serve.audit`), once
            `audit.start()` was called (the server does at start-up); 0 turns the audit off.
        audit_cpu: the most CPU the audit may use, as a fraction of one core.
    """

    def __init__(self, searcher: Searcher, *, batch_sizes: Sequence[int] = (1, 2, 4, 8, 12, 16), max_k: int = 100,
                 audit_rate: float = 0.01, audit_cpu: float = 0.2):
        if not batch_sizes or min(batch_sizes) < 1:
            raise ValueError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
        if searcher.index is None or searcher.passages is None:
            raise ValueError("the server needs a searcher with an index and the passages' texts")
        self.searcher = searcher
        self.index, self.passages = searcher.index, searcher.passages
        self.passage_images = searcher.passage_images  # id -> image file, for the passages that carry one
        self.batch_sizes = tuple(sorted({int(b) for b in batch_sizes}))
        self.max_k = int(min(max_k, self.index.num_passages))
        self.image_size = searcher.settings.image.size
        self.num_global, self.num_visual = searcher.num_global, searcher.num_visual
        self.position = {str(pid): p for p, pid in enumerate(self.index.ids)}
        self.compiles = CompileWatch()
        self._explain_lock = threading.Lock()
        self.audit = Audit(self.index, rate=audit_rate, cpu_share=audit_cpu)

    @property
    def max_batch(self) -> int:
        return self.batch_sizes[-1]

    def bucket(self, n: int) -> int:
        """The compiled batch size that holds n queries."""
        for size in self.batch_sizes:
            if size >= n:
                return size
        raise ValueError(f"{n} queries exceed the largest batch size {self.max_batch}")

    # Preparing and encoding ----------------------------------------------------------------------------------

    def prepare(self, question: str, image: Image.Image | None) -> Query:
        """A decoded image and a question -> a Query (host-side preprocessing, as the evaluation does)."""
        return Query(question, None if image is None else self.searcher.preprocess(image))

    def encode(self, queries: Sequence[Query]) -> tuple[np.ndarray, np.ndarray]:
        """-> (embeddings [B, num_visual + L, dim] float32, mask [B, same] bool), in query order: the searcher's
        query path, cut to the shortest compiled text length holding the longest question, image and text-only
        queries each padded to a compiled batch size."""
        return self.searcher.encode_queries([q.question for q in queries], [q.pixels for q in queries],
                                            batch_sizes=self.batch_sizes, visual_rows=True, cut=True)

    def run_batch(self, queries: Sequence[Query]) -> BatchOutcome:
        """Encode and search a batch (at most `max_batch` queries): each query's top `max_k` passages."""
        t0 = time.perf_counter()
        embs, mask = self.encode(queries)
        t1 = time.perf_counter()
        # Searched at the compiled batch size too (the first query repeated): the search pads a batch its own way,
        # to a power of two, so a batch of 2 under sizes (1, 4) would otherwise compile new programs while serving.
        fill = [0] * (self.bucket(len(queries)) - len(queries))
        positions, scores = self.index.search_positions(np.concatenate([embs, embs[fill]]),
                                                        np.concatenate([mask, mask[fill]]), k=self.max_k)
        positions, scores = positions[:len(queries)], scores[:len(queries)]
        t2 = time.perf_counter()
        self.audit.offer(embs[:len(queries)], mask[:len(queries)], positions)  # a few queued for the background audit, never waited for
        ids = [[self.index.ids[p] for p in row if p >= 0] for row in positions]
        return BatchOutcome(ids, [s[:len(row)] for s, row in zip(scores, ids)], t1 - t0, t2 - t1)

    # The pooling's attention -----------------------------------------------------------------------------------

    def explain(self, image: Image.Image, question: str, passage_ids: Sequence[str] = ()) -> dict:
        """Where the pooling looked for this query, and how much of each given passage's score rests on it.

        Returns {"maps": [num_heads, grid, grid] each head's attention over the patches (averaged over the
        question's real tokens, `Searcher.pooling_maps`), "passages": [{"id", "score", "shares": {"text", "global",
        "pooled"}, "head_weights": [num_heads], "map": [grid, grid]}]}.

        Per passage, MaxSim's term of each query token is max_j <q_i, d_j>; the terms of the pooled tokens E_m (one
        per head) weight that head's map, so a passage's map shows the regions its match with the image rests on.
        `shares` splits the score between the text tokens T, the global tokens E_g (the CLS feature: no map) and
        the pooled tokens E_m.

        Raises:
            KeyError: a passage id that the index does not hold.
        """
        positions = [self.position[str(pid)] for pid in passage_ids]  # KeyError names the unknown id
        with self._explain_lock:
            maps = self.searcher.pooling_maps(image, question)
            embs, mask = self.encode([self.prepare(question, image)])
        q = embs[0] * mask[0][:, None]
        out = []
        for pid, p in zip(passage_ids, positions):
            start, stop = int(self.index.offsets[p]), int(self.index.offsets[p + 1])
            doc = np.asarray(self.index.embeddings[start:stop], np.float32)
            terms = (q @ doc.T).max(axis=1) if len(doc) else np.zeros(len(q), np.float32)
            pooled = terms[self.num_global:self.num_visual]
            weights = np.maximum(pooled, 0.0)
            weights = weights / weights.sum() if weights.sum() > 0 else np.full_like(weights, 1.0 / len(weights))
            out.append({"id": pid, "score": float(terms.sum()),
                        "shares": {"text": float(terms[self.num_visual:].sum()),
                                   "global": float(terms[:self.num_global].sum()), "pooled": float(pooled.sum())},
                        "head_weights": weights.tolist(), "map": np.tensordot(weights, maps, axes=1)})
        return {"maps": maps, "passages": out}

    # Start-up --------------------------------------------------------------------------------------------------

    def warm_up(self) -> dict:
        """Compile every program serving can run; afterwards `self.compiles.since_warm_up` counts new ones.

        Compiled: the query encoder with and without an image at every batch size and text length; the index
        search at every batch size and query length (exact mode: its fixed blocks; ScaNN mode: the exact rerank at
        its chunk shapes); the vision tower and the pooling attention at batch 1 (explanations).
        """
        t0 = time.perf_counter()
        grey = Image.new("RGB", (self.image_size, self.image_size), (128, 128, 128))
        for length in self.text_lengths():
            question = self._question_of_length(length)
            with_image, text_only = self.prepare(question, grey), self.prepare(question, None)
            for size in self.batch_sizes:
                self.run_batch([with_image] * size)
                self.run_batch([text_only] * size)
            self._warm_rerank(self.num_visual + length)
        self.explain(grey, "warm up", [str(self.index.ids[0])])
        seconds = time.perf_counter() - t0
        self.compiles.mark_warm()
        return {"seconds": round(seconds, 1), "programs": self.compiles.total}

    def text_lengths(self) -> list[int]:
        """Every text length a batch may be encoded at (`Searcher.text_length`)."""
        maxlen = self.searcher.settings.query_maxlen
        return sorted({self.searcher.text_length(n) for n in range(1, maxlen + 1)})

    def _question_of_length(self, length: int) -> str:
        """A question that encodes at text length `length`."""
        for words in range(length, 0, -1):
            question = " ".join(["warm"] * words)
            _, mask = self.searcher.tokenize_queries([question])
            if self.searcher.text_length(int(mask.sum())) == length:
                return question
        raise ValueError(f"no question encodes at text length {length}: is it shorter than the framing?")

    def _warm_rerank(self, query_tokens: int) -> None:
        """ScaNN mode reranks candidates in chunks of `mire_jax.index.rerank.CHUNK_TOKENS` token rows (a longer passage
        in a chunk of its own, a multiple of that): rerank the shortest and the longest passage."""
        index = self.index
        if index.searcher is None or index.config.mode == "exact":
            return
        lengths = np.diff(index.offsets)
        q = np.zeros((1, query_tokens, self.searcher.config.head.dim), np.float32)
        q_mask = np.ones(q.shape[:2], bool)
        for passage in {int(np.argmax(lengths)), int(np.argmin(np.where(lengths > 0, lengths, lengths.max() + 1)))}:
            index.rerank(q, q_mask, [np.array([passage])], self.max_k)

    def describe(self) -> dict:
        """What /healthz reports about the model, the index and the device."""
        device = jax.devices()[0]
        config, settings = self.searcher.config, self.searcher.settings
        return {
            "model": {"dir": self.searcher.model_dir, "dim": config.head.dim, "image_size": self.image_size,
                      "query_maxlen": settings.query_maxlen, "visual_tokens": self.num_visual,
                      "heads": config.head.num_heads, "residual": bool(config.head.residual)},
            "index": {"dir": self.searcher.index_dir, "passages": self.index.num_passages,
                      "passages_with_images": len(self.passage_images),
                      "tokens": int(self.index.offsets[-1]), "mode": self.index.config.mode,
                      "encoding": self.index.encoding},
            "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count()},
        }
