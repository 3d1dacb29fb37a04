"""PyLate's ModernColBERT tokenisation conventions on a BPE `tokenizer.json`: the tokenizer of SentMIRe models.

Every query and passage is framed as `[CLS] marker tokens... [SEP]`; queries are padded with [MASK] up to their
length (query expansion), passages with [PAD]; truncation keeps [SEP]. The interface is `ColbertTokenizer`'s, so
training, evaluation, the Searcher and the server use either alike. Two framings of the text:

- "sentmire" (`FRAMING_SENTMIRE`, the default): what the published SentMIRe trains and evaluates with (public
  repository yeongjoonJu/MIRe: `dataset/base.py`, and ColBERT's `QueryTokenizer` / `DocTokenizer` with PyLate's
  prefixes as the markers, `train_retrieval.py`). ". " + text is tokenised with the special tokens, and the "." at
  position 1 is overwritten by the marker, so on a byte-level BPE the text's first word keeps a leading space.
- "pylate" (`FRAMING_PYLATE`): PyLate's own `ColBERT.tokenize` (lightonai/pylate): the text, stripped as
  sentence-transformers strips it (and lower-cased when the model's `sentence_bert_config.json` says so), is
  tokenised with the special tokens and the marker is inserted after [CLS]. For a PyLate model used as it is.

The markers are PyLate's query and document prefixes ("[Q] ", "[D] "), tokens PyLate adds to the vocabulary. The
passage skiplist holds the first token of each skiplist word (PyLate's `skiplist_words`, string.punctuation by
default), as the published `ModernColBERT` builds it; on a byte-level BPE vocabulary this is also PyLate's own rule
(the word's vocabulary id). Whether the [MASK] expansion is attended is the encoding settings' choice
(`attend_to_mask_tokens`: PyLate's `attend_to_expansion_tokens`; with neither it nor `score_mask_tokens`, the query
is not expanded at all, PyLate's `do_query_expansion = False`).

A model folder records the conventions in `pylate_conventions.json` beside `tokenizer.json`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import string
from typing import Any, Mapping, Sequence

import numpy as np
import tokenizers

from mire_jax.files import read_json, write_json
from mire_jax.tokenization.colbert import ColbertTokenizer

CONVENTIONS_FILE = "pylate_conventions.json"
FRAMING_SENTMIRE, FRAMING_PYLATE = FRAMINGS = ("sentmire", "pylate")
PYLATE_CONFIG = "config_sentence_transformers.json"   # PyLate's record of its prefixes, lengths and skiplist
SBERT_CONFIG = "sentence_bert_config.json"            # sentence-transformers' (do_lower_case)
COLBERT_METADATA = "artifact.metadata"                # ColBERT's config, saved beside published checkpoints


class TokenizerError(ValueError):
    """A tokenizer folder that does not fit the conventions; the message names what is wrong."""


@dataclasses.dataclass(frozen=True)
class PylateConventions:
    """How texts become a ModernColBERT's inputs, besides the lengths (those are the `EncodingSettings`')."""
    query_prefix: str = "[Q] "
    document_prefix: str = "[D] "
    skiplist_words: tuple[str, ...] = tuple(string.punctuation)
    framing: str = FRAMING_SENTMIRE
    lowercase: bool = False   # "pylate" framing only: sentence-transformers' do_lower_case

    def __post_init__(self):
        object.__setattr__(self, "skiplist_words", tuple(self.skiplist_words))
        if self.framing not in FRAMINGS:
            raise TokenizerError(f"framing must be one of {FRAMINGS}, got {self.framing!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PylateConventions":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, framing: str | None = None) -> "PylateConventions":
        """The conventions a folder records: its `pylate_conventions.json` (a mire-jax model folder), else PyLate's
        `config_sentence_transformers.json` (a PyLate model), else the markers of ColBERT's `artifact.metadata` (a
        published SentMIRe checkpoint folder) with PyLate's default skiplist; `framing` overrides the recorded one.
        """
        folder = os.fspath(folder)
        path = lambda name: os.path.join(folder, name)
        if os.path.isfile(path(CONVENTIONS_FILE)):
            found = cls.from_dict(read_json(path(CONVENTIONS_FILE), error=TokenizerError))
        elif os.path.isfile(path(PYLATE_CONFIG)):
            st = read_json(path(PYLATE_CONFIG), error=TokenizerError)
            sbert = read_json(path(SBERT_CONFIG), error=TokenizerError) if os.path.isfile(path(SBERT_CONFIG)) else {}
            if st.get("query_prefix") == "" or st.get("document_prefix") == "":
                raise TokenizerError(f"{path(PYLATE_CONFIG)}: a prefix-free PyLate model; the ColBERT framing of "
                                     "SentMIRe needs a query and a document prefix token")
            found = cls(query_prefix=st.get("query_prefix") or cls.query_prefix,
                        document_prefix=st.get("document_prefix") or cls.document_prefix,
                        skiplist_words=tuple(st.get("skiplist_words") or string.punctuation),
                        lowercase=bool(sbert.get("do_lower_case", False)))
        elif os.path.isfile(path(COLBERT_METADATA)):
            meta = read_json(path(COLBERT_METADATA), error=TokenizerError)
            found = cls(query_prefix=meta.get("query_token_id") or cls.query_prefix,
                        document_prefix=meta.get("doc_token_id") or cls.document_prefix)
        else:
            raise TokenizerError(f"{folder}: no {CONVENTIONS_FILE}, {PYLATE_CONFIG} or {COLBERT_METADATA} to take "
                                 "the ModernColBERT prefixes and skiplist from")
        return dataclasses.replace(found, framing=framing) if framing else found

    def save(self, folder: str | os.PathLike) -> None:
        write_json(os.path.join(os.fspath(folder), CONVENTIONS_FILE), self.to_dict(), indent=2)


def records_conventions(folder: str | os.PathLike) -> bool:
    """Whether a folder records PyLate's conventions: a mire-jax SentMIRe model folder, or a PyLate model (its
    config_sentence_transformers.json names the prefixes; other sentence-transformers models' does not)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return False
    if os.path.isfile(os.path.join(folder, CONVENTIONS_FILE)):
        return True
    path = os.path.join(folder, PYLATE_CONFIG)
    if not os.path.isfile(path):
        return False
    record = read_json(path, error=TokenizerError)
    return isinstance(record, dict) and ("query_prefix" in record or record.get("model_type") == "ColBERT")


def _special_token_names(folder: str) -> dict[str, str]:
    """cls/sep/pad/mask token strings from tokenizer_config.json or special_tokens_map.json (BERT's by default)."""
    names = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]"}
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        path = os.path.join(folder, file)
        if os.path.isfile(path):
            record = read_json(path, error=TokenizerError)
            for key in names:
                value = record.get(key)
                if isinstance(value, dict):
                    value = value.get("content")
                if isinstance(value, str) and value:
                    names[key] = value
    return names


class PylateTokenizer(ColbertTokenizer):
    """Query/passage tokeniser with PyLate's markers, [MASK] query expansion, skiplist and one of two framings
    (module docstring). `ColbertTokenizer`'s interface: `encode_queries`, `encode_docs`, `passage_keep`,
    `wordpieces`, `fingerprint`, `vocab_size` and the special ids."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, conventions: PylateConventions = PylateConventions(),
                 special_tokens: Mapping[str, str] | None = None):
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._wp = tokenizer
        self.conventions = conventions
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        names = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]",
                 **(special_tokens or {})}

        def token_id(token: str, what: str) -> int:
            i = tokenizer.token_to_id(token)
            if i is None:
                raise TokenizerError(f"the tokenizer has no {what} token {token!r}")
            return i

        self.cls_id, self.sep_id = token_id(names["cls_token"], "CLS"), token_id(names["sep_token"], "SEP")
        self.pad_id, self.mask_id = token_id(names["pad_token"], "padding"), token_id(names["mask_token"], "mask")
        self.q_marker_id = token_id(conventions.query_prefix, "query prefix")
        self.d_marker_id = token_id(conventions.document_prefix, "document prefix")
        framed = tokenizer.encode("a", add_special_tokens=True).ids
        if framed != [self.cls_id, *tokenizer.encode("a", add_special_tokens=False).ids, self.sep_id]:
            raise TokenizerError(f"the tokenizer does not frame a text as {names['cls_token']} ... "
                                 f"{names['sep_token']} (its post-processor gives {framed} for 'a')")
        firsts = [tokenizer.encode(w, add_special_tokens=False).ids for w in conventions.skiplist_words]
        self.punctuation_ids = np.array(sorted({ids[0] for ids in firsts if ids}), dtype=np.int32)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, conventions: PylateConventions | None = None,
                        framing: str | None = None) -> "PylateTokenizer":
        """From a folder holding tokenizer.json and the conventions (`PylateConventions.from_folder`), e.g. a
        PyLate model, a published SentMIRe checkpoint folder or a mire-jax model folder."""
        folder = os.fspath(path)
        tok_json = os.path.join(folder, "tokenizer.json")
        if not os.path.isfile(tok_json):
            raise FileNotFoundError(f"{folder}: no tokenizer.json (a ModernColBERT's tokenizer is a BPE "
                                    "tokenizer.json)")
        if conventions is None:
            conventions = PylateConventions.from_folder(folder, framing)
        elif framing:
            conventions = dataclasses.replace(conventions, framing=framing)
        return cls(tokenizers.Tokenizer.from_file(tok_json), conventions, _special_token_names(folder))

    @classmethod
    def from_vocab(cls, *args, **kwargs):
        raise TypeError("a ModernColBERT tokenizer is a tokenizer.json, not a WordPiece vocab.txt")

    def fingerprint(self) -> str:
        """A short hash of the vocabulary and the conventions (what token ids mean and how texts are framed)."""
        vocab = sorted(self._wp.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
        h = hashlib.sha256("\n".join(token for token, _ in vocab).encode("utf-8"))
        h.update(json.dumps(self.conventions.to_dict(), sort_keys=True).encode("utf-8"))
        return h.hexdigest()[:16]

    def wordpieces(self, texts: Sequence[str]) -> list[list[int]]:
        """The token ids that follow the marker, before truncation: those of ". " + text after its first token
        ("sentmire"), or of the stripped (lower-cased) text ("pylate"); no special tokens."""
        if isinstance(texts, str):
            raise TypeError("expected a sequence of texts, got one str")
        if self.conventions.framing == FRAMING_SENTMIRE:
            return [e.ids[1:] for e in self._wp.encode_batch([". " + t for t in texts], add_special_tokens=False)]
        texts = [t.strip().lower() if self.conventions.lowercase else t.strip() for t in texts]
        return [e.ids for e in self._wp.encode_batch(texts, add_special_tokens=False)]

    def save_conventions(self, folder: str | os.PathLike) -> None:
        self.conventions.save(folder)
