"""A small WordPiece vocabulary from the world's texts, for tiny random towers trained on generated data (no
download needed)."""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable

SPECIAL = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_vocabulary(texts: Iterable[str], max_words: int = 4000) -> list[str]:
    """Special tokens (ColBERT's markers included), punctuation, single characters with their `##` forms (so
    every word tokenises) and the most frequent lowercase words of `texts`."""
    counts = Counter(w for t in texts for w in re.findall(r"[a-z0-9]+", t.lower()))
    chars = list(string.ascii_lowercase + string.digits)
    tokens = SPECIAL + list(string.punctuation) + chars + ["##" + c for c in chars]
    return tokens + [w for w, _ in counts.most_common(max_words) if w not in tokens]
