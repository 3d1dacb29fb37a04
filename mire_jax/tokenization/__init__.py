"""Tokenizers beside BERT's WordPiece one (`mire_jax.tokenizer`): PyLate's ModernColBERT conventions for SentMIRe
(`pylate.py`), and `load`, which picks the one a folder holds."""
from __future__ import annotations

import os

from mire_jax.tokenization.pylate import PylateTokenizer, records_conventions
from mire_jax.tokenizer import ColbertTokenizer


def load(path: str | os.PathLike) -> ColbertTokenizer:
    """The tokenizer of a folder or vocab file: a `PylateTokenizer` when the folder records PyLate's conventions
    (a SentMIRe model folder's pylate_conventions.json, or a PyLate model's config_sentence_transformers.json),
    else ColBERT's WordPiece one (a vocab.txt, or a folder with vocab.txt or a BERT tokenizer.json)."""
    path = os.fspath(path)
    if records_conventions(path):
        return PylateTokenizer.from_pretrained(path)
    return ColbertTokenizer.from_pretrained(path)
