"""Text retrieval for R2P: the ColBERT text tower of a mire-jax model over a knowledge base.

The conversion needs any object with `search(texts, k) -> list of pid lists` (`Retriever`). Provided:

* `MireTextRetriever`: queries and passages encoded by the text tower (BERT + `linear`) of a mire-jax model
  folder through `mire_jax.retrieval.Searcher`, as the paper's ColBERTv2 (query_maxlen 80, doc_maxlen 256). The
  knowledge base is encoded into `mire_jax.index` shards (float16, checksummed, resumable shard by shard) and searched
  with `mire_jax.index.LateInteractionIndex`: exact MaxSim, or ScaNN candidates reranked exactly.
* `FixedHitsRetriever`: hits computed elsewhere (e.g. by a real ColBERTv2 PLAID index), keyed by query text.

Query padding ("query augmentation") follows ColBERTv2's searcher by default (`query_mask="colbert"`): the
[MASK] padding tokens are not attended to, but their output embeddings take part in MaxSim. "attend" lets
them attend too (MIRe's training batches), "drop" removes them (MIRe's evaluation tokenizer).

Index folder (`build_index`):
  shards/         the encoded passages (`mire_jax.index.encoded_corpus`)
  index/          the saved `LateInteractionIndex` (`LateInteractionIndex.save`)
  manifest.json   INDEX_FORMAT, the encoding settings, the search mode; "complete" once both are written
"""
from __future__ import annotations

import os
import re
import shutil
import warnings
from typing import Iterable, Protocol, Sequence

import numpy as np

from mire_jax import files
from mire_jax.config import EncodingSettings, MIReConfig
from mire_jax.index import IndexConfig, LateInteractionIndex
from mire_jax.index import encoded_corpus as shard_io
from mire_jax.index.encode import EncodeFn, encode_to_shards
from mire_jax.retrieval.model_folder import config_description, load_model
from mire_jax.retrieval.searcher import Searcher
from mire_jax.tokenization.colbert import DROP_PUNCTUATION, ColbertTokenizer

QUERY_MASK_MODES = ("colbert", "attend", "drop")
# The index's modes (exact MaxSim up to `IndexConfig.exact_max_tokens` corpus tokens and ScaNN above, or either
# one always); "index" is the earlier name of "auto".
SEARCH_MODES = ("auto", "exact", "scann", "index")
INDEX_FORMAT = "mire-vid2r-kb-index/2"
MANIFEST = "manifest.json"
SHARDS_DIR = "shards"
SEARCHER_DIR = "index"
LENGTH_BUCKET = 32
PASSAGE_KEEP = DROP_PUNCTUATION  # ColBERT's skiplist, as the published conversion's ColBERTv2 indexer
_EARLIER_SHARD = re.compile(r"^shard_\d{6}\.npz$")  # mire-vid2r-kb-index/1 kept its shards as npz files


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


def _read_manifest(index_dir: str) -> dict | None:
    path = os.path.join(index_dir, MANIFEST)
    return files.read_json(path) if os.path.exists(path) else None


def _clear_other_format(index_dir: str, manifest: dict | None) -> dict | None:
    """Delete an index of another format (an earlier one kept npz shards beside its manifest), saying so;
    -> the manifest when it is of this format, else None."""
    stale = [name for name in os.listdir(index_dir) if _EARLIER_SHARD.match(name)]
    if manifest is not None and manifest.get("format") != INDEX_FORMAT:
        stale.append(MANIFEST)
        manifest = None
    if stale:
        warnings.warn(f"{index_dir}: holds a knowledge-base index of another format than {INDEX_FORMAT} "
                      f"({', '.join(sorted(stale)[:3])}, ...): removing it and encoding the knowledge base again",
                      stacklevel=3)
        for name in stale:
            os.remove(os.path.join(index_dir, name))
    return manifest


class MireTextRetriever:
    """ColBERT-style text retrieval with the text tower of a mire-jax model.

    Args:
        config, params: the model (only `bert` and `linear` are used).
        tokenizer: a `ColbertTokenizer` with the model's vocabulary.
        query_maxlen: query length incl. [MASK] padding (the published conversion: 80).
        doc_maxlen: passage truncation (the published conversion: 256).
        query_mask: "colbert", "attend" or "drop" (module docstring).
        batch_size: rows per encoder call, split over this process's devices (passages are trimmed to a multiple of
            LENGTH_BUCKET tokens: a few compiled shapes).
        search: the `LateInteractionIndex` mode (`IndexConfig.mode`): "exact", "scann", or "auto" (exact for a
            small knowledge base, ScaNN for a big one); "index" is "auto".
        progress: show progress bars.
    """

    def __init__(self, config: MIReConfig, params, tokenizer: ColbertTokenizer, *, query_maxlen: int = 80,
                 doc_maxlen: int = 256, query_mask: str = "colbert", batch_size: int = 32, search: str = "auto",
                 progress: bool = True):
        if query_mask not in QUERY_MASK_MODES:
            raise ValueError(f"query_mask must be one of {QUERY_MASK_MODES}, got {query_mask!r}")
        if search not in SEARCH_MODES:
            raise ValueError(f"search must be one of {SEARCH_MODES}, got {search!r}")
        settings = EncodingSettings(query_maxlen=query_maxlen, doc_maxlen=doc_maxlen,
                                    attend_to_mask_tokens=query_mask == "attend",
                                    score_mask_tokens=query_mask == "colbert", passage_keep=PASSAGE_KEEP,
                                    image=config.vision.image_processing())
        self.searcher = Searcher(config, params, tokenizer, settings, batch_size=batch_size)
        self.config, self.tokenizer = config, tokenizer
        self.query_maxlen, self.doc_maxlen = query_maxlen, doc_maxlen
        self.query_mask, self.batch_size = query_mask, batch_size
        self.search_mode = "auto" if search == "index" else search
        self.progress = progress
        self._index: LateInteractionIndex | None = None

    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
                       **kwargs) -> "MireTextRetriever":
        """From a mire-jax model folder; the tokenizer from `tokenizer_path`, else the folder."""
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
                "config": config_description(self.config)}

    # --- encoding -------------------------------------------------------------------------------------------

    def passage_encoder(self) -> EncodeFn:
        """Passage texts -> (token embeddings, kept tokens), the `EncodeFn` of the index shards."""
        return self.searcher.passage_encoder(LENGTH_BUCKET)

    def encode_queries(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """-> (embeddings [B, query_maxlen, dim] float32, mask [B, query_maxlen] bool)."""
        return self.searcher.encode_queries(list(texts))

    def encode_passages(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The kept-token embeddings of each passage: a list of [n_i, dim] float16 arrays."""
        return self.searcher.encode_passages(texts, LENGTH_BUCKET)

    # --- the index ------------------------------------------------------------------------------------------

    def _shard_settings(self, fingerprint: str) -> dict:
        return {"fingerprint": fingerprint, "doc_maxlen": self.doc_maxlen, "passage_keep": PASSAGE_KEEP}

    def build_index(self, passages: Iterable[tuple[str, str]], index_dir: str | os.PathLike, *,
                    fingerprint: str = "", shard_size: int = 10_000) -> int:
        """Encode `(pid, text)` passages into shards under `index_dir` and index them for `self.search_mode`.

        Resumable: a rerun with the same `fingerprint` and `shard_size` keeps the finished shards (their passages
        are still read from the stream, not encoded) and, once all are written, does not read the stream at all;
        another search mode only rebuilds the index. Other settings, or an index of an earlier format, clear the
        folder first.

        Returns:
            the number of passages indexed.
        """
        index_dir = os.fspath(index_dir)
        os.makedirs(index_dir, exist_ok=True)
        manifest = _clear_other_format(index_dir, _read_manifest(index_dir))
        encoding = {"shard_settings": self._shard_settings(fingerprint), "shard_size": shard_size}
        same_encoding = manifest is not None and {key: manifest.get(key) for key in encoding} == encoding
        if same_encoding and manifest["complete"] and manifest.get("search") == self.search_mode:
            return manifest["num_passages"]
        if not same_encoding:
            for name in (SHARDS_DIR, SEARCHER_DIR):
                shutil.rmtree(os.path.join(index_dir, name), ignore_errors=True)
        manifest = {"format": INDEX_FORMAT, **encoding, "complete": False}
        files.write_json(os.path.join(index_dir, MANIFEST), manifest, indent=2)

        shard_dir = os.path.join(index_dir, SHARDS_DIR)
        if not os.path.exists(os.path.join(shard_dir, shard_io.MANIFEST)):
            summary = encode_to_shards(passages, shard_dir, self.passage_encoder(), shard_size=shard_size,
                                       batch_size=self.batch_size, settings=encoding["shard_settings"],
                                       progress=self.progress)
            shard_io.write_manifest(shard_dir, summary.num_shards)
        index = LateInteractionIndex.from_shards(shard_dir, IndexConfig(mode=self.search_mode),
                                                 progress=self.progress, encoding=self.searcher.encoding_record())
        index.save(os.path.join(index_dir, SEARCHER_DIR))
        manifest.update(complete=True, search=self.search_mode, num_passages=index.num_passages)
        files.write_json(os.path.join(index_dir, MANIFEST), manifest, indent=2)
        self._index = None
        return index.num_passages

    def load_index(self, index_dir: str | os.PathLike) -> None:
        """Open the index written by `build_index` for `search` (embeddings memory-mapped, checksums verified).

        Raises:
            ValueError: the folder holds an index of another format, an unfinished one, one built for another
                search mode, or an empty knowledge base.
        """
        index_dir = os.fspath(index_dir)
        manifest = _read_manifest(index_dir)
        if manifest is None:
            raise FileNotFoundError(f"{os.path.join(index_dir, MANIFEST)}: missing (build the index first)")
        if manifest.get("format") != INDEX_FORMAT:
            raise ValueError(f"{index_dir}: a knowledge-base index of format {manifest.get('format')!r}, not "
                             f"{INDEX_FORMAT}: build it again (rerun the index stage, or build_index)")
        if not manifest.get("complete"):
            raise ValueError(f"{index_dir}: the index is incomplete (rerun build_index)")
        if manifest.get("search") != self.search_mode:
            raise ValueError(f"{index_dir}: indexed for search {manifest.get('search')!r}, not "
                             f"{self.search_mode!r} (rerun build_index with this retriever)")
        if not manifest.get("num_passages"):
            raise ValueError(f"{index_dir}: the knowledge base had no passages")
        # ViD2R is built by one process (it writes its files alone): the whole index is opened here, never only the
        # shards this process would serve under `jax.distributed`, so its searches are not collective.
        self._index = LateInteractionIndex.load(os.path.join(index_dir, SEARCHER_DIR), distributed=False)

    def search_with_scores(self, texts: Sequence[str], k: int) -> tuple[list[list[str]], list[list[float]]]:
        """-> (pid lists, score lists) of the top-`k` passages of each query text."""
        if self._index is None:
            raise RuntimeError("no index loaded: call build_index(...) then load_index(dir)")
        k = min(k, self._index.num_passages)
        if k == 0 or not texts:
            return [[] for _ in texts], [[] for _ in texts]
        q, q_mask = self.encode_queries(texts)
        positions, scores = self._index.search_positions(q, q_mask, k)
        ids = self._index.ids
        pid_lists = [[ids[p] for p in row if p >= 0] for row in positions]
        score_lists = [[float(s) for p, s in zip(row_p, row_s) if p >= 0] for row_p, row_s in zip(positions, scores)]
        return pid_lists, score_lists

    def search(self, texts: Sequence[str], k: int) -> list[list[str]]:
        return self.search_with_scores(texts, k)[0]
