"""Tokenizers: ColBERT's on a BERT WordPiece vocabulary (`colbert.py`, MIRe), PyLate's ModernColBERT conventions on
a BPE tokenizer.json (`pylate.py`, SentMIRe), and `load`, which picks the one a folder holds."""
from __future__ import annotations

import os

from mire_jax.tokenization.colbert import DROP_PADDING_ONLY, DROP_PUNCTUATION, ColbertTokenizer
from mire_jax.tokenization.pylate import PylateTokenizer, records_conventions


def load(path: str | os.PathLike) -> ColbertTokenizer:
    """The tokenizer of a folder or vocab file: a `PylateTokenizer` when the folder records PyLate's conventions
    (a SentMIRe model folder's pylate_conventions.json, or a PyLate model's config_sentence_transformers.json),
    else ColBERT's WordPiece one (a vocab.txt, or a folder with vocab.txt or a BERT tokenizer.json)."""
    path = os.fspath(path)
    if records_conventions(path):
        return PylateTokenizer.from_pretrained(path)
    return ColbertTokenizer.from_pretrained(path)


__all__ = ["DROP_PADDING_ONLY", "DROP_PUNCTUATION", "ColbertTokenizer", "PylateTokenizer", "load"]
