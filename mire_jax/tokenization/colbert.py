"""ColBERT(v2) tokenisation on a BERT WordPiece vocabulary (docs/model.md, section 4).

Query:   [CLS] [Q] tokens... [SEP], padded to `max_len` with [MASK] (query augmentation).
Passage: [CLS] [D] tokens... [SEP], padded with [PAD]; `keep` marks the tokens whose embeddings are stored.
[Q] is [unused0] and [D] is [unused1]: ColBERT tokenises ". " + text and overwrites the "." with the marker,
which is the same as inserting the marker id after [CLS].

Which passage tokens are kept depends on the phase in MIRe's published code (yeongjoonJu/MIRe):
  - `DROP_PUNCTUATION` ("punctuation_and_padding"): padding and every token of `string.punctuation` are dropped,
    ColBERT's skiplist. MIRe's training uses it (`MIRe.encode_document` masks with the skiplist).
  - `DROP_PADDING_ONLY` ("padding_only"): only padding is dropped, punctuation stays. MIRe's indexer uses it
    (`retrievers/indexing.py` passes the attention mask as the passage mask), so the published evaluation does.
"""
from __future__ import annotations

import hashlib
import os
import string
from typing import Sequence

import numpy as np
import tokenizers

from mire_jax.config import PASSAGE_KEEP_POLICIES
from mire_jax.files import read_json

QUERY_MARKER = "[unused0]"
DOC_MARKER = "[unused1]"

DROP_PUNCTUATION, DROP_PADDING_ONLY = PASSAGE_KEEP_POLICIES

# The fixed question that guides the pooling of a passage's image (the published `MIRe.doc`), framed as a query.
PASSAGE_IMAGE_PROMPT = "Can you describe the primary elements in this image?"


class ColbertTokenizer:
    """Query/passage tokeniser with ColBERT's markers, [MASK] query padding and passage keep policies."""

    def __init__(self, wordpiece: tokenizers.Tokenizer):
        wordpiece.no_truncation()
        wordpiece.no_padding()
        self._wp = wordpiece
        self.vocab_size = wordpiece.get_vocab_size(with_added_tokens=True)

        def token_id(token: str) -> int:
            i = wordpiece.token_to_id(token)
            if i is None:
                raise ValueError(f"the vocabulary has no {token!r} token")
            return i

        self.cls_id, self.sep_id = token_id("[CLS]"), token_id("[SEP]")
        self.pad_id, self.mask_id = token_id("[PAD]"), token_id("[MASK]")
        self.q_marker_id, self.d_marker_id = token_id(QUERY_MARKER), token_id(DOC_MARKER)
        punct = [wordpiece.encode(c, add_special_tokens=False).ids for c in string.punctuation]
        self.punctuation_ids = np.array(sorted({ids[0] for ids in punct if ids}), dtype=np.int32)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "ColbertTokenizer":
        """From a tokenizer folder (tokenizer.json, else vocab.txt + tokenizer_config.json) or a vocab file."""
        path = os.fspath(path)
        if os.path.isdir(path):
            tok_json = os.path.join(path, "tokenizer.json")
            if os.path.exists(tok_json):
                return cls(tokenizers.Tokenizer.from_file(tok_json))
            vocab = os.path.join(path, "vocab.txt")
            lowercase = True
            cfg_file = os.path.join(path, "tokenizer_config.json")
            if os.path.exists(cfg_file):
                lowercase = read_json(cfg_file).get("do_lower_case", True)
            return cls.from_vocab(vocab, lowercase=lowercase)
        return cls.from_vocab(path)

    @classmethod
    def from_vocab(cls, vocab_file: str | os.PathLike, lowercase: bool = True) -> "ColbertTokenizer":
        vocab_file = os.fspath(vocab_file)
        if not os.path.exists(vocab_file):
            raise FileNotFoundError(f"WordPiece vocabulary not found: {vocab_file}")
        wp = tokenizers.BertWordPieceTokenizer(vocab_file, lowercase=lowercase)
        return cls(wp._tokenizer)  # the underlying Tokenizer: same pipeline, fewer wrappers

    def fingerprint(self) -> str:
        """A short hash of the WordPiece vocabulary (what token ids mean)."""
        vocab = sorted(self._wp.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
        return hashlib.sha256("\n".join(token for token, _ in vocab).encode("utf-8")).hexdigest()[:16]

    def wordpieces(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens, no truncation."""
        if isinstance(texts, str):
            raise TypeError("expected a sequence of texts, got one str")
        return [e.ids for e in self._wp.encode_batch(list(texts), add_special_tokens=False)]

    def _frame(self, texts, marker: int, max_len: int, pad: int):
        if max_len < 3:
            raise ValueError(f"max_len must be >= 3 ([CLS], marker, [SEP]), got {max_len}")
        ids = np.full((len(texts), max_len), pad, dtype=np.int32)
        mask = np.zeros((len(texts), max_len), dtype=np.int32)
        for row, pieces in enumerate(self.wordpieces(texts)):
            seq = [self.cls_id, marker, *pieces[: max_len - 3], self.sep_id]
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return ids, mask

    def encode_queries(self, texts: Sequence[str], max_len: int = 32, attend_to_mask_tokens: bool = True):
        """-> (ids int32 [B, max_len], mask int32 [B, max_len]).

        `attend_to_mask_tokens`: the published training batches set the mask to 1 on the [MASK] padding (they
        attend and take part in MaxSim and pooling); its evaluation tokenizer sets it to 0. Defaults: True for
        training, pass False to reproduce published evaluation.
        """
        ids, mask = self._frame(texts, self.q_marker_id, max_len, self.mask_id)
        if attend_to_mask_tokens:
            mask = np.where(ids == self.mask_id, 1, mask).astype(np.int32)
        return ids, mask

    def encode_image_prompt(self, prompt: str = PASSAGE_IMAGE_PROMPT) -> np.ndarray:
        """The ids [P] int32 of the prompt that guides the pooling of a passage image: `[CLS] [Q] tokens [SEP]`,
        neither padded nor cut, every token attended (the published `MIRe.tensorize_query` tokenises it alone with
        padding "longest", so no [MASK] padding is added)."""
        return np.asarray([self.cls_id, self.q_marker_id, *self.wordpieces([prompt])[0], self.sep_id], np.int32)

    def encode_docs(self, texts: Sequence[str], max_len: int = 220, keep_policy: str = DROP_PUNCTUATION):
        """-> (ids int32 [B, max_len], mask int32 [B, max_len], keep bool [B, max_len]).

        `keep_policy`: `DROP_PUNCTUATION` (default, training) or `DROP_PADDING_ONLY` (published indexing).
        """
        ids, mask = self._frame(texts, self.d_marker_id, max_len, self.pad_id)
        return ids, mask, self.passage_keep(ids, mask, keep_policy)

    def passage_keep(self, ids: np.ndarray, mask: np.ndarray, keep_policy: str = DROP_PUNCTUATION) -> np.ndarray:
        """The tokens of framed passages whose embeddings are kept under `keep_policy` (bool, ids' shape)."""
        if keep_policy not in PASSAGE_KEEP_POLICIES:
            raise ValueError(f"keep_policy must be one of {PASSAGE_KEEP_POLICIES}, got {keep_policy!r}")
        keep = mask == 1
        if keep_policy == DROP_PUNCTUATION:
            keep &= ~np.isin(ids, self.punctuation_ids)
        return keep
