"""Text retrieval for R2P: the ColBERT text tower of a mire-jax model over a knowledge base.

The conversion needs any object with `search(texts, k) -> list of pid lists` (`Retriever`). Provided:

* `MireTextRetriever`: queries and passages encoded by the text tower (BERT + `linear`) of a mire-jax model
  folder, as the paper's ColBERTv2 (query_maxlen 80, doc_maxlen 256). Passage token embeddings are stored in
  shards under an index folder (float16, resumable shard by shard), then searched by exact MaxSim
  (`mire_jax.index.exact`) or, when `mire_jax.index.LateInteractionIndex` is importable, by that index.
* `FixedHitsRetriever`: hits computed elsewhere (e.g. by a real ColBERTv2 PLAID index), keyed by query text.

Query padding ("query augmentation") follows ColBERTv2's searcher by default (`query_mask="colbert"`): the
[MASK] padding tokens are not attended to, but their output embeddings take part in MaxSim. "attend" lets
them attend too (MIRe's training batches), "drop" removes them (MIRe's evaluation tokenizer).
"""
from __future__ import annotations

import functools
import json
import os
import warnings
from typing import Iterable, Iterator, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import mire_jax
from mire_jax.config import MIReConfig
from mire_jax.tokenizer import ColbertTokenizer

QUERY_MASK_MODES = ("colbert", "attend", "drop")
SEARCH_MODES = ("auto", "exact", "index")
INDEX_FORMAT = "mire-vid2r-kb-index/1"
LENGTH_BUCKET = 32


class Retriever(Protocol):
    """What the conversion needs from a text retriever."""

    def search(self, texts: Sequence[str], k: int) -> list[list[str]]:
        """The ids of the top-`k` passages of each query text, best first."""


class FixedHitsRetriever:
    """Hits given in advance: `{query text: [pid, ...]}` (best first)."""

    name = "fixed-hits"

    def __init__(self, hits_by_text: dict[str, Sequence[str]]):
        self.hits_by_text = {t: list(p) for t, p in hits_by_text.items()}

    def search(self, texts: Sequence[str], k: int) -> list[list[str]]:
        missing = [t for t in texts if t not in self.hits_by_text]
        if missing:
            raise KeyError(f"no fixed hits for query {missing[0]!r} ({len(missing)} missing)")
        return [self.hits_by_text[t][:k] for t in texts]


def _atomic_savez(path: str, **arrays) -> None:
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _atomic_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@functools.partial(jax.jit, static_argnums=0)
def _colbert_query_tokens(config: MIReConfig, params, input_ids, attention_mask):
    """ColBERTv2's query encoder: BERT attends to real tokens only, every position's output is kept."""
    from mire_jax.api import model
    from mire_jax.models.mire import MIRe
    t = model(config).apply({"params": params}, input_ids, attention_mask, method=MIRe.text_tokens)
    norm = jnp.linalg.norm(t, axis=-1, keepdims=True)
    return t / jnp.maximum(norm, 1e-12)


class MireTextRetriever:
    """ColBERT-style text retrieval with the text tower of a mire-jax model.

    Args:
        config, params: the model (only `bert` and `linear` are used).
        tokenizer: a `ColbertTokenizer` with the model's vocabulary.
        query_maxlen: query length incl. [MASK] padding (the published conversion: 80).
        doc_maxlen: passage truncation (the published conversion: 256).
        query_mask: "colbert", "attend" or "drop" (module docstring).
        batch_size: rows per encoder call (batches are padded to it: one compiled shape per length bucket).
        search: "exact" (blocked brute-force MaxSim), "index" (`mire_jax.index.LateInteractionIndex`) or "auto".
        progress: show progress bars.
    """

    def __init__(self, config: MIReConfig, params, tokenizer: ColbertTokenizer, *, query_maxlen: int = 80,
                 doc_maxlen: int = 256, query_mask: str = "colbert", batch_size: int = 32, search: str = "auto",
                 progress: bool = True):
        if query_mask not in QUERY_MASK_MODES:
            raise ValueError(f"query_mask must be one of {QUERY_MASK_MODES}, got {query_mask!r}")
        if search not in SEARCH_MODES:
            raise ValueError(f"search must be one of {SEARCH_MODES}, got {search!r}")
        self.config, self.params, self.tokenizer = config, params, tokenizer
        self.query_maxlen, self.doc_maxlen = query_maxlen, doc_maxlen
        self.query_mask, self.batch_size, self.search_mode = query_mask, batch_size, search
        self.progress = progress
        self._index = None

    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
                       **kwargs) -> "MireTextRetriever":
        """From a mire-jax model folder (`mire_jax.model_io`); the tokenizer from `tokenizer_path`, else the folder."""
        from mire_jax.model_io import load_model
        config, params = load_model(model_dir)
        path = tokenizer_path or model_dir
        if tokenizer_path is None and not any(os.path.exists(os.path.join(model_dir, f))
                                              for f in ("tokenizer.json", "vocab.txt")):
            raise FileNotFoundError(f"{model_dir} holds no tokenizer.json or vocab.txt: give the tokenizer "
                                    "(a folder or vocab file, e.g. bert-base-uncased's) explicitly")
        return cls(config, params, ColbertTokenizer.from_pretrained(path), **kwargs)

    def describe(self) -> dict:
        """The options that change the embeddings (for stage fingerprints)."""
        return {"query_maxlen": self.query_maxlen, "doc_maxlen": self.doc_maxlen, "query_mask": self.query_mask,
                "config": self.config.to_dict()}

    # --- encoding -------------------------------------------------------------------------------------------

    def encode_queries(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """-> (embeddings [B, query_maxlen, dim] float32, mask [B, query_maxlen] bool)."""
        attend = self.query_mask == "attend"
        embs, masks = [], []
        for batch in _batches(texts, self.batch_size):
            n = len(batch)
            batch = list(batch) + [""] * (self.batch_size - n)
            ids, mask = self.tokenizer.encode_queries(batch, max_len=self.query_maxlen, attend_to_mask_tokens=attend)
            if self.query_mask == "colbert":
                q = _colbert_query_tokens(self.config, self.params, ids, mask)
                q_mask = np.ones(ids.shape, bool)
            else:
                q = mire_jax.encode_query(self.config, self.params, ids, mask)
                q_mask = mask.astype(bool)
            embs.append(np.asarray(q, np.float32)[:n])
            masks.append(q_mask[:n])
        dim = self.config.head.dim
        if not embs:
            return np.zeros((0, self.query_maxlen, dim), np.float32), np.zeros((0, self.query_maxlen), bool)
        return np.concatenate(embs), np.concatenate(masks)

    def encode_passages(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The kept-token embeddings of each passage: a list of [n_i, dim] float16 arrays."""
        out = []
        for batch in _batches(texts, self.batch_size):
            n = len(batch)
            batch = list(batch) + [""] * (self.batch_size - n)
            ids, mask, keep = self.tokenizer.encode_docs(batch, max_len=self.doc_maxlen)
            # Trim the padding to a length bucket: fewer wasted FLOPs, few compiled shapes.
            length = int(mask.sum(axis=1).max())
            length = min(self.doc_maxlen, -(-length // LENGTH_BUCKET) * LENGTH_BUCKET)
            d, keep = mire_jax.encode_doc(self.config, self.params, ids[:, :length], mask[:, :length],
                                          keep[:, :length])
            d, keep = np.asarray(d), np.asarray(keep)
            out.extend(d[i][keep[i]].astype(np.float16) for i in range(n))
        return out

    # --- the index ------------------------------------------------------------------------------------------

    def build_index(self, passages: Iterable[tuple[str, str]], index_dir: str | os.PathLike, *,
                    fingerprint: str = "", shard_size: int = 10_000) -> int:
        """Encode `(pid, text)` passages into shards under `index_dir`; resumable.

        A shard is written atomically once all its passages are encoded. A rerun with the same `fingerprint`
        skips the shards already there (their passages are still read from the stream, not encoded); a
        different fingerprint clears the folder first.

        Returns:
            the number of passages indexed.
        """
        index_dir = os.fspath(index_dir)
        os.makedirs(index_dir, exist_ok=True)
        manifest_path = os.path.join(index_dir, "manifest.json")
        manifest = None
        if os.path.exists(manifest_path):
            with open(manifest_path, encoding="utf-8") as f:
                manifest = json.load(f)
        if manifest is None or manifest.get("fingerprint") != fingerprint or manifest.get("shard_size") != shard_size:
            for name in os.listdir(index_dir):
                if name.startswith("shard_"):
                    os.remove(os.path.join(index_dir, name))
            manifest = {"format": INDEX_FORMAT, "fingerprint": fingerprint, "shard_size": shard_size,
                        "dim": self.config.head.dim, "complete": False}
            _atomic_json(manifest_path, manifest)
        if manifest.get("complete"):
            return manifest["num_passages"]
        total = 0
        bar = tqdm(desc="encoding knowledge base", unit="psg", disable=not self.progress)
        for shard, items in enumerate(_batches(passages, shard_size)):
            total += len(items)
            path = os.path.join(index_dir, f"shard_{shard:06d}.npz")
            if not os.path.exists(path):
                embs = self.encode_passages([t for _, t in items])
                lengths = np.array([len(e) for e in embs], np.int32)
                _atomic_savez(path, embeddings=np.concatenate(embs) if embs else np.zeros((0, 0), np.float16),
                              lengths=lengths, pids=np.array([p for p, _ in items], dtype=str))
            bar.update(len(items))
        bar.close()
        manifest.update(complete=True, num_passages=total, num_shards=-(-total // shard_size))
        _atomic_json(manifest_path, manifest)
        self._index = None
        return total

    def load_index(self, index_dir: str | os.PathLike) -> None:
        """Load the shards written by `build_index` for `search`."""
        index_dir = os.fspath(index_dir)
        with open(os.path.join(index_dir, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        if not manifest.get("complete"):
            raise ValueError(f"{index_dir}: the index is incomplete (rerun build_index)")
        if not manifest.get("num_passages"):
            raise ValueError(f"{index_dir}: the knowledge base had no passages")
        embs, lengths, pids = [], [], []
        for shard in range(manifest["num_shards"]):
            with np.load(os.path.join(index_dir, f"shard_{shard:06d}.npz")) as z:
                embs.append(z["embeddings"])
                lengths.append(z["lengths"])
                pids.extend(z["pids"].tolist())
        embeddings = np.concatenate(embs).astype(np.float16)
        lengths = np.concatenate(lengths).astype(np.int64)
        self._index = _SearchBackend(embeddings, lengths, pids, self.search_mode, self.progress)

    def search_with_scores(self, texts: Sequence[str], k: int) -> tuple[list[list[str]], list[list[float]]]:
        """-> (pid lists, score lists) of the top-`k` passages of each query text."""
        if self._index is None:
            raise RuntimeError("no index loaded: call build_index(...) then load_index(dir)")
        q, q_mask = self.encode_queries(texts)
        return self._index.search(q, q_mask, k)

    def search(self, texts: Sequence[str], k: int) -> list[list[str]]:
        return self.search_with_scores(texts, k)[0]


class _SearchBackend:
    """Exact MaxSim over all stored tokens, or the project's late-interaction index when available."""

    def __init__(self, embeddings: np.ndarray, lengths: np.ndarray, pids: list[str], mode: str, progress: bool):
        self.pids = pids
        self.progress = progress
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.embeddings = embeddings
        self.mode = mode
        self.index = None
        if mode in ("index", "auto"):
            try:
                from mire_jax.index import LateInteractionIndex  # written alongside; optional here
            except ImportError:
                if mode == "index":
                    raise
                LateInteractionIndex = None
            if LateInteractionIndex is not None:
                try:
                    self.index = LateInteractionIndex.build(embeddings.astype(np.float32), lengths,
                                                            np.arange(len(pids)))
                except Exception as e:  # noqa: BLE001  (an interface still settling: fall back, loudly)
                    if mode == "index":
                        raise
                    warnings.warn(f"LateInteractionIndex.build failed ({e!r}); using exact search")

    def search(self, q: np.ndarray, q_mask: np.ndarray, k: int) -> tuple[list[list[str]], list[list[float]]]:
        k_eff = min(k, len(self.pids))
        if k_eff == 0 or len(q) == 0:
            return [[] for _ in range(len(q))], [[] for _ in range(len(q))]
        ids = None
        if self.index is not None:
            try:
                ids, scores = self.index.search(q, q_mask, k_eff)
            except Exception as e:  # noqa: BLE001  (see __init__)
                if self.mode == "index":
                    raise
                warnings.warn(f"LateInteractionIndex.search failed ({e!r}); using exact search")
                self.index = None
        if ids is None:
            ids, scores = _exact_search(self.embeddings, self.offsets, q, q_mask, k_eff)
        ids, scores = np.asarray(ids), np.asarray(scores)
        pid_lists = [[self.pids[int(i)] for i in row if i >= 0] for row in ids]
        score_lists = [[float(s) for i, s in zip(row_i, row_s) if i >= 0] for row_i, row_s in zip(ids, scores)]
        return pid_lists, score_lists


def _exact_search(embeddings, offsets, q, q_mask, k):
    """The evaluation code's exact MaxSim search (`mire_jax.index.exact`), or a plain blocked one without it."""
    try:
        from mire_jax.index.exact import exact_search
    except ImportError:
        return _plain_exact_search(embeddings, offsets, q, q_mask, k)
    return exact_search(embeddings, offsets, q, q_mask, k, progress=False)


def _plain_exact_search(embeddings, offsets, q, q_mask, k, block: int = 256):
    from mire_jax.scoring import maxsim
    q = jnp.asarray(q * q_mask[..., None], jnp.float32)
    lengths = np.diff(offsets)
    all_scores = []
    for start in range(0, len(lengths), block):
        stop = min(start + block, len(lengths))
        width = int(lengths[start:stop].max())
        d = np.zeros((stop - start, width, embeddings.shape[1]), np.float32)
        mask = np.zeros((stop - start, width), bool)
        for row, p in enumerate(range(start, stop)):
            n = lengths[p]
            d[row, :n] = embeddings[offsets[p]:offsets[p + 1]]
            mask[row, :n] = True
        all_scores.append(np.asarray(maxsim(q, jnp.asarray(d), jnp.asarray(mask))))
    scores = np.concatenate(all_scores, axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)
