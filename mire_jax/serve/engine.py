"""The model, its saved index and the passage texts behind the server: fixed-shape query encoding, search and
the pooling's attention for one query.

Queries are encoded the way the evaluation encodes them (`mire_jax.eval.runner.encode_queries`, docs/evaluation.md):
ColBERT query framing at `query_maxlen` with the [MASK] padding not attended, CLIP preprocessing; with an image the
query is `[E_g ; E_m ; T]`, without one it is `T` alone (docs/model.md, section 3). Every jitted program runs on a
batch padded to one of a few fixed sizes, so `warm_up` compiles all of them and serving compiles nothing.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Sequence

import jax
import numpy as np
from PIL import Image

import mire_jax
from mire_jax.data.images import clip_preprocess
from mire_jax.eval.heatmaps import patch_attention
from mire_jax.index import LateInteractionIndex
from mire_jax.model_io import load_model, load_tokenizer, resolve_model_dir
from mire_jax.serve.compile_watch import CompileWatch
from mire_jax.serve.passages import load_passages


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
    """A loaded model + index + passages, answering batches of queries with fixed shapes.

    Args:
        config, params: the model (`mire_jax.model_io.load_model`); params are put on the default device once.
        tokenizer: its `ColbertTokenizer`.
        index: a `LateInteractionIndex` built from the same model's passage embeddings.
        passages: passage id (as a string) -> text, for every id of the index.
        query_maxlen: query length in word pieces (the evaluation's `query_maxlen`).
        batch_sizes: the padded batch sizes compiled at start-up; a batch of n queries runs at the smallest size
            >= n, so the largest size is the most queries one batch may hold.
        max_k: results searched per query (every request's k is at most this).
        text_lengths: the shorter text lengths compiled besides `query_maxlen` (see `encode`); default: halving
            `query_maxlen` down to 16.
    """

    def __init__(self, config, params, tokenizer, index: LateInteractionIndex, passages: dict[str, str], *,
                 query_maxlen: int = 64, batch_sizes: Sequence[int] = (1, 2, 4, 8, 12, 16), max_k: int = 100,
                 text_lengths: Sequence[int] | None = None, model_dir: str = "", index_dir: str = ""):
        if not batch_sizes or min(batch_sizes) < 1:
            raise ValueError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
        missing = [pid for pid in index.ids if str(pid) not in passages]
        if missing:
            raise ValueError(f"the passages file has no text for {len(missing)} of the index's {index.num_passages} "
                             f"passages (first: {missing[0]!r}): is it the corpus the index was built from?")
        if index.embeddings.shape[1] != config.head.dim:
            raise ValueError(f"the index holds {index.embeddings.shape[1]}-d embeddings, the model makes "
                             f"{config.head.dim}-d ones: they do not belong together")
        self.config = config
        self.params = jax.device_put(params)  # once: numpy params would be copied to the device on every call
        self.tokenizer = tokenizer
        self.index = index
        self.passages = passages
        self.query_maxlen = int(query_maxlen)
        if text_lengths is None:  # halving down to 16 word pieces
            text_lengths = [self.query_maxlen >> i for i in range(8) if self.query_maxlen >> i >= 16]
        self.text_lengths = tuple(sorted({int(n) for n in text_lengths if 0 < n < self.query_maxlen}
                                         | {self.query_maxlen}))
        self.batch_sizes = tuple(sorted({int(b) for b in batch_sizes}))
        self.max_k = int(min(max_k, index.num_passages))
        self.model_dir, self.index_dir = model_dir, index_dir
        self.image_size = config.vision.image_size
        self.num_global = config.head.num_tokens
        self.num_visual = config.head.num_tokens + config.head.num_heads
        self.position = {str(pid): p for p, pid in enumerate(index.ids)}
        self.compiles = CompileWatch()
        self._explain_lock = threading.Lock()

    @classmethod
    def load(cls, model: str, index: str, passages: str, *, tokenizer: str = "", verify_index: bool = True,
             **kwargs) -> Engine:
        """From a model folder (or training workdir), a saved index folder and a passages file (JSON Lines
        {"id", "text"} or parquet, as `mire_jax.index.encode.iter_passages` reads)."""
        model_dir = resolve_model_dir(model)
        config, params = load_model(model_dir)
        return cls(config, params, load_tokenizer(model_dir, tokenizer), LateInteractionIndex.load(index, verify_index),
                   load_passages(passages), model_dir=os.path.abspath(model_dir), index_dir=os.path.abspath(index),
                   **kwargs)

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
        """A decoded image and a question -> a Query (host-side CLIP preprocessing, as the evaluation does)."""
        pixels = None if image is None else clip_preprocess(image, self.image_size)
        return Query(question, pixels)

    def text_length(self, real_tokens: int) -> int:
        """The compiled text length that holds a question of `real_tokens` framed word pieces."""
        return next((n for n in self.text_lengths if n >= real_tokens), self.query_maxlen)

    def encode(self, queries: Sequence[Query]) -> tuple[np.ndarray, np.ndarray]:
        """-> (embeddings [B, num_visual + L, dim] float32, mask [B, same] bool), in query order.

        The questions are framed at `query_maxlen` word pieces; everything past the longest question's own tokens
        is masked [MASK] padding that nothing attends to, so the batch is encoded cut to the shortest of
        `text_lengths` holding it (L), the pooling still counting `query_maxlen` rows: the same embeddings as the
        full query's, whose tokens past L are masked and score 0. Queries with an image and
        text-only queries run as two groups, each padded to its batch size; a text-only query's tokens are placed
        after `num_visual` masked zero rows, so both kinds are searched together and score as the text-only
        baseline does.
        """
        ids, text_mask = self.tokenizer.encode_queries([q.question for q in queries], max_len=self.query_maxlen,
                                                       attend_to_mask_tokens=False)
        ids, text_mask = np.asarray(ids, np.int32), np.asarray(text_mask, np.int32)
        length = self.text_length(int(text_mask.sum(1).max()))
        ids, text_mask = ids[:, :length], text_mask[:, :length]
        n_tokens = self.num_visual + length
        embs = np.zeros((len(queries), n_tokens, self.config.head.dim), np.float32)
        mask = np.zeros((len(queries), n_tokens), bool)
        for with_image in (True, False):
            rows = [i for i, q in enumerate(queries) if (q.pixels is not None) == with_image]
            if not rows:
                continue
            e = self._encode_group([queries[i] for i in rows], ids[rows], text_mask[rows], with_image)
            if with_image:
                embs[rows], mask[rows, :self.num_visual] = e, True
            else:
                embs[rows, self.num_visual:] = e
            mask[rows, self.num_visual:] = text_mask[rows].astype(bool)
        return embs, mask

    def _encode_group(self, queries: Sequence[Query], ids: np.ndarray, text_mask: np.ndarray,
                      with_image: bool) -> np.ndarray:
        n, size = len(queries), self.bucket(len(queries))
        pad = ((0, size - n), (0, 0))
        ids, text_mask = np.pad(ids, pad), np.pad(text_mask, pad)
        if not with_image:
            return np.asarray(mire_jax.encode_query(self.config, self.params, ids, text_mask))[:n]
        pixels = np.zeros((size, self.image_size, self.image_size, 3), np.float32)
        pixels[:n] = np.stack([q.pixels for q in queries])
        out = mire_jax.encode_query(self.config, self.params, ids, text_mask, pixels, pooling_rows=self.query_maxlen)
        return np.asarray(out)[:n]

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
        ids = [[self.index.ids[p] for p in row if p >= 0] for row in positions]
        return BatchOutcome(ids, [s[:len(row)] for s, row in zip(scores, ids)], t1 - t0, t2 - t1)

    # The pooling's attention -----------------------------------------------------------------------------------

    def explain(self, image: Image.Image, question: str, passage_ids: Sequence[str] = ()) -> dict:
        """Where the pooling looked for this query, and how much of each given passage's score rests on it.

        Returns {"maps": [num_heads, grid, grid] each head's attention over the patches (averaged over the
        question's real tokens, `mire_jax.eval.heatmaps.patch_attention`), "passages": [{"id", "score",
        "shares": {"text", "global", "pooled"}, "head_weights": [num_heads], "map": [grid, grid]}]}.

        Per passage, MaxSim's term of each query token is max_j <q_i, d_j>; the terms of the pooled tokens E_m (one
        per head) weight that head's map, so a passage's map shows the regions its match with the image rests on.
        `shares` splits the score between the text tokens T, the global tokens E_g (the CLS feature: no map) and
        the pooled tokens E_m.

        Raises:
            KeyError: a passage id that the index does not hold.
        """
        positions = [self.position[str(pid)] for pid in passage_ids]  # KeyError names the unknown id
        with self._explain_lock:
            maps = patch_attention(self.config, self.params, self.tokenizer, image, question, self.query_maxlen)
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
        its chunk shapes); the vision tower and the pooling attention at batch 1
        (explanations).
        """
        t0 = time.perf_counter()
        grey = Image.new("RGB", (self.image_size, self.image_size), (128, 128, 128))
        for length in self.text_lengths:
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

    def _question_of_length(self, length: int) -> str:
        """A question that encodes at text length `length`."""
        for words in range(length, 0, -1):
            question = " ".join(["warm"] * words)
            _, mask = self.tokenizer.encode_queries([question], max_len=self.query_maxlen, attend_to_mask_tokens=False)
            if self.text_length(int(np.asarray(mask).sum())) == length:
                return question
        raise ValueError(f"no question encodes at text length {length}: is it shorter than the framing?")

    def _warm_rerank(self, query_tokens: int) -> None:
        """ScaNN mode reranks candidates in chunks of `mire_jax.index.rerank.CHUNK_TOKENS` token rows (a longer passage
        in a chunk of its own, a multiple of that): rerank the shortest and the longest passage."""
        index = self.index
        if index.searcher is None or index.config.mode == "exact":
            return
        lengths = np.diff(index.offsets)
        q = np.zeros((1, query_tokens, self.config.head.dim), np.float32)
        q_mask = np.ones(q.shape[:2], bool)
        for passage in {int(np.argmax(lengths)), int(np.argmin(np.where(lengths > 0, lengths, lengths.max() + 1)))}:
            index.rerank(q, q_mask, [np.array([passage])], self.max_k)

    def describe(self) -> dict:
        """What /healthz reports about the model, the index and the device."""
        device = jax.devices()[0]
        return {
            "model": {"dir": self.model_dir, "dim": self.config.head.dim, "image_size": self.image_size,
                      "query_maxlen": self.query_maxlen, "visual_tokens": self.num_visual,
                      "heads": self.config.head.num_heads, "residual": bool(self.config.head.residual)},
            "index": {"dir": self.index_dir, "passages": self.index.num_passages,
                      "tokens": int(self.index.offsets[-1]), "mode": self.index.config.mode},
            "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count()},
        }
