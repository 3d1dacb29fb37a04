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

Variants for the analyses of the conversion (none of them published): `k=0` keeps the response alone (the
paper's "w/o R2P" ablation), `k=1`/`k=2` insert fewer hits, `position` moves the response among the hits (0: before
them, k: after them; published 1), and `cut="none"` keeps each hit whole, so that `position=0, cut="none"` is the
plain concatenation "response + hit1 + hit2 + hit3".
The retrieval itself is in `retrieval.py`; this module only composes, given the hits.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence

CUT_MODES = ("published", "sentences", "none")
STYLES = ("published", "title")
NEGATIVE_MODES = ("response", "converted")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BRACKETS = re.compile(r"\([^(]+\)")


@dataclasses.dataclass(frozen=True)
class ConversionConfig:
    """How passages are composed.

    Attributes:
        k: hits per response (published 3; 0: the response alone).
        sentences: sentences kept of each hit (published 2).
        cut: "published" (split on "."), "sentences" (see the module docstring) or "none" (the whole hit).
        style: "published" (hit1, response, hit2, hit3) or "title" (the `--remove_bracket` variant).
        position: where the response goes among the hits in the "published" style: 0 before them, 1 after the
            first (published), k (or more) after the last.
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
    position: int = 1

    def __post_init__(self):
        for name, allowed in (("cut", CUT_MODES), ("style", STYLES), ("negatives", NEGATIVE_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.k < 0 or self.sentences < 1 or self.position < 0:
            raise ValueError(f"k and position must be >= 0 and sentences >= 1, got k={self.k}, "
                             f"sentences={self.sentences}, position={self.position}")
        if self.position != 1 and self.style != "published":
            raise ValueError(f"position applies to the 'published' style only, not to {self.style!r}")

    def to_json(self) -> dict:
        """The fields (what a composition's fingerprint records); `position` only where it is not the published
        1, so that folders composed before it existed stay up to date."""
        fields = dataclasses.asdict(self)
        if fields["position"] == 1:
            del fields["position"]
        return fields


def cut_passage(text: str, sentences: int = 2, mode: str = "published") -> str:
    """The first `sentences` sentences of `text` (see the module docstring for the two modes)."""
    if mode == "published":
        return ".".join(text.split(".")[:sentences])
    if mode == "sentences":
        return " ".join(_SENTENCE_END.split(text.strip())[:sentences])
    if mode == "none":
        return text
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
        parts = [*cuts[:config.position], response, *cuts[config.position:]]
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
