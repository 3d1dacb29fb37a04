"""A small WordPiece vocabulary from texts: for tiny models trained on generated data (no download needed)."""
from __future__ import annotations

import os
import re
import string
from collections import Counter
from typing import Iterable

SPECIAL = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(texts: Iterable[str], path: str | os.PathLike, max_words: int = 4000) -> str:
    """Special tokens (ColBERT's markers included), punctuation, single characters with their `##` forms (so
    every word tokenises) and the most frequent lowercase words of `texts`. Written atomically."""
    counts = Counter(w for t in texts for w in re.findall(r"[a-z0-9]+", t.lower()))
    chars = list(string.ascii_lowercase + string.digits)
    tokens = SPECIAL + list(string.punctuation) + chars + ["##" + c for c in chars]
    tokens += [w for w, _ in counts.most_common(max_words) if w not in tokens]
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(tokens) + "\n")
    os.replace(path + ".tmp", path)
    return path
