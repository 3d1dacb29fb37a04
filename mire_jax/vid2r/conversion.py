"""Response-to-passage conversion (R2P), docs/data_formats.md, "Building ViD2R".

Each filtered record's response is the query of a text search over a knowledge base; the top-k passages
(k = 3) are cut to their first two sentences and composed with the response into the training passage:

    document = " ".join([hit1, response, hit2, hit3]).replace("..", ".")
    answer   = response

Published string operations (MIRe `runs/convert_tasks.py`), the defaults here:
- the cut is `".".join(p.split(".")[:2])`: the text before the passage's 2nd ".", so it has no final full
  stop (and a decimal point such as "3.5" counts as a sentence end). The paper says "first two sentences":
  `cut="sentences"` splits at sentence ends (". ", "! ", "? ") and keeps the punctuation.
- `.replace("..", ".")` runs once over the whole document (`dedupe_periods`).
- `style="title"` is the published `--remove_bracket` variant: the response loses "(...)" groups and the
  document is `"Title: <response> content: " + hits`; the answer is the bracket-free response.
The retrieval itself is in `retrieval.py`; this module only composes, given the hits.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence

CUT_MODES = ("published", "sentences")
STYLES = ("published", "title")
NEGATIVE_MODES = ("response", "converted")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BRACKETS = re.compile(r"\([^(]+\)")


@dataclasses.dataclass(frozen=True)
class ConversionConfig:
    """How passages are composed.

    Attributes:
        k: hits per response (published 3).
        sentences: sentences kept of each hit (published 2).
        cut: "published" (split on ".") or "sentences" (see the module docstring).
        style: "published" (hit1, response, hit2, hit3) or "title" (the `--remove_bracket` variant).
        dedupe_periods: apply `.replace("..", ".")` to the document.
        negatives: for records with `negs` (filter option): "response" keeps them as the filter wrote them (their
            `document` is the other triple's response, as published); "converted" replaces each one's document
            by that triple's converted passage (and adds its `answer`), so negatives look like positives.
    """

    k: int = 3
    sentences: int = 2
    cut: str = "published"
    style: str = "published"
    dedupe_periods: bool = True
    negatives: str = "response"

    def __post_init__(self):
        for name, allowed in (("cut", CUT_MODES), ("style", STYLES), ("negatives", NEGATIVE_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.k < 1 or self.sentences < 1:
            raise ValueError(f"k and sentences must be >= 1, got k={self.k}, sentences={self.sentences}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def cut_passage(text: str, sentences: int = 2, mode: str = "published") -> str:
    """The first `sentences` sentences of `text` (see the module docstring for the two modes)."""
    if mode == "published":
        return ".".join(text.split(".")[:sentences])
    if mode == "sentences":
        return " ".join(_SENTENCE_END.split(text.strip())[:sentences])
    raise ValueError(f"cut must be one of {CUT_MODES}, got {mode!r}")


def compose(response: str, hit_texts: Sequence[str], config: ConversionConfig = ConversionConfig()
            ) -> tuple[str, str]:
    """-> (document, answer) for one response and the full texts of its hits, best first.

    Fewer than `config.k` hits (a tiny knowledge base) compose with what there is; none gives the response.
    """
    cuts = [cut_passage(t, config.sentences, config.cut) for t in hit_texts[:config.k]]
    if config.style == "title":
        response = _BRACKETS.sub("", response).strip()
        parts = ["Title: " + response + " content:", *cuts]
    else:
        parts = [*cuts[:1], response, *cuts[1:]]
    document = " ".join(parts)
    if config.dedupe_periods:
        document = document.replace("..", ".")
    return document, response


def convert_records(records: Sequence[dict], hits: Sequence[Sequence[str]], texts: Mapping[str, str],
                    config: ConversionConfig = ConversionConfig()) -> list[dict]:
    """The ViD2R records: each filtered record with `document` := the composed passage, `answer` := response.

    Args:
        records: filtered records (`{"image", "id", "question", "document", ["negs"]}`), not modified.
        hits: for each record (same order), its passage ids, best first.
        texts: passage id -> full passage text.
        config: composition options.

    Raises:
        ValueError: `hits` and `records` differ in length.
        KeyError: a hit has no text (naming the record).
    """
    if len(hits) != len(records):
        raise ValueError(f"{len(records)} records but {len(hits)} hit lists")
    out = []
    for i, (record, pids) in enumerate(zip(records, hits)):
        pids = list(pids)[:config.k]
        missing = [p for p in pids if p not in texts]
        if missing:
            raise KeyError(f"record {i} (id {record['id']!r}): no text for hit(s) {missing}")
        converted = dict(record)
        # Key order as published: the record's keys, then "answer" appended.
        document, converted["answer"] = compose(record["document"], [texts[p] for p in pids], config)
        converted["document"] = document
        out.append(converted)
    if config.negatives == "converted":
        by_id = {r["id"]: r for r in out}
        for r in out:
            if "negs" in r:
                r["negs"] = [{**n, "document": by_id[n["id"]]["document"], "answer": by_id[n["id"]]["answer"]}
                             if n.get("id") in by_id else dict(n) for n in r["negs"]]
    return out
