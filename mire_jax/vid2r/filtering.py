"""Cleaning and filtering of (image, question, response) triples into ViD2R's unconverted records.

Defaults follow the rules of `filter_1st_stage` in MIRe's published `runs/data_filtering.py` (public repository
yeongjoonJu/MIRe); every rule is a field of `FilterConfig`. In order, for each triple:

1. skip text-only records and images whose path contains `VG_100K`;
2. response := stripped and lower-cased; drop if empty (the published code would crash on it), if it contains
   `unanswerable.` or `answering does not require reading`, or if it is digits once a final `.` is removed;
3. delete boilerplate (4 regexes, in order, anywhere in the response: see `PUBLISHED_BOILERPLATE`); drop if
   nothing is left;
4. a response of at most 4 words gets ` (n1, n2, ...)`: the nouns of the question's first line (`nouns.py`);
5. drop if the response is shorter than 30 characters, or the question contains one of
   `BAD_QUESTION_SUBSTRINGS` (case-sensitive, anywhere);
6. strip, upper-case the first character; if the question contains a comma, delete from the response every
   occurrence of the question's text before its first ", ";
7. emit `{"image", "id": f"{record id}_{turn}", "question", "document"}`;
8. ids that repeat within one image get a random `_<a-l><0-9>` suffix (`assign_unique_ids`, seeded here);
   optionally each record gets `negs`: copies of the other records of its image with a different question.

Where the paper's prose and the published code differ, the code is the default:
- the paper strips boilerplate *openers* ("yes,", "certainly!", "in the image", "the image shows ...");
  the code deletes the patterns anywhere and without word boundaries, so "piano." loses "no." and
  "in the image" is cut from mid-sentence. `boilerplate="openers"` applies them only at the start.
- the paper drops questions "about counting or colours"; the code tests substrings anywhere in the question
  and also drops VG region descriptions ("a short description for this region:").
- the paper says nothing of lower-casing, the noun hint or the question-prefix deletion, which the code does.

Two modes (`FilterConfig.published`):
- clean (default): each turn is judged on its own response and question, which is what the code means.
- published: the published loop exactly. It reads two variables that it assigns only on some branches, so a
  turn may see the value an earlier turn (of any earlier record) left (`PublishedCarryOver`): the digit test of
  a response without a final "." reads the last response that had one, and the noun hint of a question
  without a line break reads the first line of the last short response's multi-line question. Where the
  script would crash instead (an empty response, or one of those variables read before any turn assigned it),
  `PublishedScriptCrash` names the record. The other rules must keep their published defaults. Not
  reproducible: the script's unseeded id suffixes, and its crash on a record whose `image` is null (skipped
  here like a text-only record).
"""
from __future__ import annotations

import collections
import dataclasses
import random
import re
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from mire_jax.vid2r.dialogues import Triple
from mire_jax.vid2r.nouns import NounExtractor, no_nouns

PUBLISHED_BOILERPLATE = (
    r"(yes|no|answerable)([,.!])",
    r"(certainly|sure)[!.]",
    r"in (the|this) (image|scene|photo|picture)([,\s])?",
    r"the image (showcases|features|captures|depicts|shows|presents|displays) ",
)
UNANSWERABLE_MARKERS = ("unanswerable.", "answering does not require reading")
BAD_QUESTION_SUBSTRINGS = ("a short description for this region:", "How many", "What color", "What is the color",
                           "What are the colors")
SKIP_IMAGE_SUBSTRINGS = ("VG_100K",)
BOILERPLATE_MODES = ("published", "openers", "none")
ID_SUFFIX_LETTERS = "abcdefghijkl"

# Drop reasons, in the order the rules run (the keys of the saved counts).
DROP_REASONS = ("skipped_text_only", "skipped_image_substring", "dropped_empty_response", "dropped_unanswerable",
                "dropped_digits", "dropped_empty_after_boilerplate", "dropped_short", "dropped_bad_question",
                "dropped_empty_after_strip")


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """The rules of the ViD2R filter; defaults are the published ones (see the module docstring).

    Attributes:
        skip_text_only: skip records without an image.
        skip_image_substrings: skip records whose image path contains one of these (Visual Genome regions).
        lowercase: lower-case the response (published: yes; the answer keeps this casing).
        unanswerable_markers: drop a response containing one of these (tested after lower-casing).
        drop_digit_responses: drop a response that is digits once a final "." is removed.
        boilerplate: "published" (patterns deleted anywhere), "openers" (only at the start, repeatedly) or "none".
        boilerplate_patterns: the regexes, applied in order.
        noun_hint_max_words: responses of at most this many words get the question's nouns appended (0: never).
        min_chars: the length floor, in characters, of the cleaned response (before the final strip, as published).
        bad_question_substrings: drop a triple whose question contains one of these (case-sensitive).
        capitalize_first: upper-case the first character of the kept response.
        remove_question_lead: if the question has a comma, delete its text before the first ", " from the response.
        published: reproduce the published loop exactly, stale values and crashes included (see the module
            docstring); the other rules must then keep their defaults.
    """

    skip_text_only: bool = True
    skip_image_substrings: tuple[str, ...] = SKIP_IMAGE_SUBSTRINGS
    lowercase: bool = True
    unanswerable_markers: tuple[str, ...] = UNANSWERABLE_MARKERS
    drop_digit_responses: bool = True
    boilerplate: str = "published"
    boilerplate_patterns: tuple[str, ...] = PUBLISHED_BOILERPLATE
    noun_hint_max_words: int = 4
    min_chars: int = 30
    bad_question_substrings: tuple[str, ...] = BAD_QUESTION_SUBSTRINGS
    capitalize_first: bool = True
    remove_question_lead: bool = True
    published: bool = False

    def __post_init__(self):
        if self.boilerplate not in BOILERPLATE_MODES:
            raise ValueError(f"boilerplate must be one of {BOILERPLATE_MODES}, got {self.boilerplate!r}")
        for name in ("skip_image_substrings", "unanswerable_markers", "boilerplate_patterns",
                     "bad_question_substrings"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for pattern in self.boilerplate_patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"bad boilerplate pattern {pattern!r}: {e}") from e
        changed = self.rules_changed_from_published()
        if self.published and changed:
            raise ValueError("published=True reproduces runs/data_filtering.py, whose rules are the defaults; it "
                             f"cannot be combined with {', '.join(changed)}")

    def rules_changed_from_published(self) -> list[str]:
        """`name=value` of each rule that differs from the published script's."""
        return [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                if f.name != "published" and getattr(self, f.name) != f.default]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class PublishedScriptCrash(ValueError):
    """The published script would stop with an exception at this turn: published mode has no output to copy."""

    def __init__(self, triple: Triple, what_the_script_raises: str):
        super().__init__(
            f"record {triple.record_id!r}, turn {triple.turn} (image {triple.image!r}): the published "
            f"runs/data_filtering.py stops here with {what_the_script_raises}; published mode reproduces only "
            f"runs the script completes (without --published / published=False the clean rules apply)")


@dataclasses.dataclass
class PublishedCarryOver:
    """The two loop variables of the published filter that outlive the turn that assigned them.

    In `filter_1st_stage` of `runs/data_filtering.py` (yeongjoonJu/MIRe), `ref` (the response without its final
    ".") is assigned only when the response ends with "." but read by the digit test of every turn that gets
    that far, and `phrase` (the question's first line) is assigned only when a short response's question has a
    line break but fed to spaCy for every short response. Both are locals of one loop over all records, so a
    turn reads what the last assigning turn left, in the same record or an earlier one (records skipped for
    their image never reach the loop). None: never assigned yet, where the script raises UnboundLocalError.

    Attributes:
        ref: the last response that ended with ".", without that ".".
        phrase: the first line of the last multi-line question of a short response.
    """

    ref: str | None = None
    phrase: str | None = None


class ResponseFilter:
    """Applies `FilterConfig` to triples one at a time, counting what each rule does.

    With `config.published` it carries `PublishedCarryOver` from turn to turn (`self.carry_over`; None in the
    clean mode): feed the triples in input order, to one filter.
    """

    def __init__(self, config: FilterConfig = FilterConfig(), noun_extractor: NounExtractor = no_nouns):
        self.config = config
        self.noun_extractor = noun_extractor
        self.counts: collections.Counter = collections.Counter()
        self.carry_over = PublishedCarryOver() if config.published else None
        if self.carry_over is not None:
            self.counts.update({"published_stale_ref_reads": 0, "published_stale_phrase_reads": 0})
        if config.boilerplate == "openers":
            self._patterns = [re.compile(r"^\s*(?:" + p + ")") for p in config.boilerplate_patterns]
        else:
            self._patterns = [re.compile(p) for p in config.boilerplate_patterns]

    def _drop(self, reason: str) -> None:
        self.counts[reason] += 1
        return None

    def _remove_boilerplate(self, doc: str) -> str:
        mode = self.config.boilerplate
        if mode == "none":
            return doc
        if mode == "published":
            for pattern in self._patterns:
                doc = pattern.sub("", doc)
            return doc
        changed = True
        while changed:  # openers: "Yes, in the image, ..." loses both
            changed = False
            for pattern in self._patterns:
                new = pattern.sub("", doc, count=1)
                if new != doc:
                    doc, changed = new, True
        return doc

    def _digit_test_text(self, doc: str, triple: Triple) -> str:
        """The text the digit test reads: this response without its final "." (published: see `ref`)."""
        if doc.endswith("."):
            if self.carry_over is not None:
                self.carry_over.ref = doc[:-1]
            return doc[:-1]
        if self.carry_over is None:
            return doc
        if self.carry_over.ref is None:
            raise PublishedScriptCrash(triple, "UnboundLocalError: `ref` is read, but no earlier response ended "
                                               "with '.' (the only branch that assigns it)")
        self.counts["published_stale_ref_reads"] += 1
        return self.carry_over.ref

    def _noun_hint_phrase(self, question: str, triple: Triple) -> str:
        """The text whose nouns a short response gets: the question's first line (published: see `phrase`)."""
        if self.carry_over is None:
            return question.split("\n")[0]
        if "\n" in question:
            self.carry_over.phrase = question.split("\n")[0]
            return self.carry_over.phrase
        if self.carry_over.phrase is None:
            raise PublishedScriptCrash(triple, "UnboundLocalError: `phrase` is read for this short response, but "
                                               "no earlier short response had a question with a line break (the "
                                               "only branch that assigns it)")
        self.counts["published_stale_phrase_reads"] += 1
        return self.carry_over.phrase

    def _add_noun_hint(self, doc: str, phrase: str) -> str:
        self.counts["noun_hint_candidates"] += 1
        nouns = self.noun_extractor(phrase)
        if nouns:
            self.counts["noun_hints_added"] += 1
            doc = f"{doc} ({', '.join(nouns)})"
        return doc

    def __call__(self, triple: Triple) -> dict | None:
        """The cleaned record of `triple`, or None when a rule drops it."""
        c = self.config
        self.counts["triples"] += 1
        if triple.image is None:
            if c.skip_text_only:
                return self._drop("skipped_text_only")
        elif any(s in triple.image for s in c.skip_image_substrings):
            return self._drop("skipped_image_substring")
        question = triple.question
        doc = triple.response.strip()
        if c.lowercase:
            doc = doc.lower()
        if not doc:
            if c.published:
                raise PublishedScriptCrash(triple, "IndexError: the response is empty, and the script reads its "
                                                   "last character")
            return self._drop("dropped_empty_response")
        if any(m in doc for m in c.unanswerable_markers):
            return self._drop("dropped_unanswerable")
        if c.drop_digit_responses and self._digit_test_text(doc, triple).strip().isdigit():
            return self._drop("dropped_digits")
        cleaned = self._remove_boilerplate(doc)
        if cleaned != doc:
            self.counts["boilerplate_removed"] += 1
        doc = cleaned
        if not doc.strip():
            return self._drop("dropped_empty_after_boilerplate")
        if c.noun_hint_max_words > 0 and len(doc.split()) <= c.noun_hint_max_words:
            doc = self._add_noun_hint(doc, self._noun_hint_phrase(question, triple))
        if len(doc) < c.min_chars:
            return self._drop("dropped_short")
        if any(s in question for s in c.bad_question_substrings):
            return self._drop("dropped_bad_question")
        doc = doc.strip()
        if not doc:
            return self._drop("dropped_empty_after_strip")
        if c.capitalize_first:
            doc = doc[0].upper() + doc[1:]
        if c.remove_question_lead and "," in question:
            lead = question.split(", ")[0]
            if lead and lead in doc:
                self.counts["question_lead_removed"] += 1
                doc = doc.replace(lead, "")
        self.counts["kept"] += 1
        return {"image": triple.image, "id": f"{triple.record_id}_{triple.turn}", "question": question,
                "document": doc}


def assign_unique_ids(records: Sequence[dict], rng: random.Random) -> int:
    """Give records whose image has repeated ids a random `_<a-l><0-9>` suffix, in place, as published.

    The published rule, kept exactly: records are visited in order, and a record is renamed when the ids of
    the records of its image (as renamed so far) are not all distinct, whether or not its own id is one of the
    repeated ones; a suffix that collides again is not retried. With the ids [a, a] the first is renamed.

    Returns:
        how many records were renamed.
    """
    groups: dict[str, list[int]] = collections.defaultdict(list)
    for i, r in enumerate(records):
        groups[r["image"]].append(i)
    id_counts = {image: collections.Counter(records[i]["id"].strip() for i in idx) for image, idx in groups.items()}
    repeats = {image: sum(n - 1 for n in counter.values()) for image, counter in id_counts.items()}
    renamed = 0
    for r in records:
        image = r["image"]
        if repeats[image] == 0:
            continue
        counter = id_counts[image]
        old = r["id"].strip()
        new_id = f"{r['id']}_{rng.choice(ID_SUFFIX_LETTERS)}{rng.randint(0, 9)}"
        repeats[image] -= 1 if counter[old] > 1 else 0
        counter[old] -= 1
        repeats[image] += 1 if counter[new_id.strip()] >= 1 else 0
        counter[new_id.strip()] += 1
        r["id"] = new_id
        renamed += 1
    return renamed


def attach_negatives(records: Sequence[dict]) -> int:
    """Add `negs` to every record, in place: copies of the other records of its image whose question differs.

    Returns:
        the total number of negatives attached.
    """
    by_image: dict[str, list[dict]] = collections.defaultdict(list)
    for r in records:
        by_image[r["image"]].append({k: v for k, v in r.items() if k != "negs"})
    total = 0
    for r in records:
        r["negs"] = [dict(n) for n in by_image[r["image"]] if n["question"] != r["question"]]
        total += len(r["negs"])
    return total


def filter_triples(triples: Iterable[Triple], config: FilterConfig = FilterConfig(),
                   noun_extractor: NounExtractor = no_nouns, *, seed: int = 0, unique_ids: bool = True,
                   save_negative: bool = False, progress: bool = True) -> tuple[list[dict], dict]:
    """Filter triples into ViD2R's unconverted records (`vid2r_wo_conversion.json`).

    Args:
        triples: in input order (the published carry-over and the id suffixes depend on it).
        config: the rules.
        noun_extractor: for the short-response hint (`nouns.make_noun_extractor`).
        seed: seeds the random id suffixes (the published script leaves them unseeded).
        unique_ids: apply `assign_unique_ids`.
        save_negative: attach `negs` (the published `--save_negative`).
        progress: show a progress bar.

    Returns:
        (records, counts): counts has one entry per rule (`DROP_REASONS`), "kept", "triples" and what the
        cleaning steps changed ("boilerplate_removed", "noun_hint_candidates", "noun_hints_added",
        "question_lead_removed", "ids_renamed", "negatives"); in published mode also how many turns read a
        carried-over value ("published_stale_ref_reads", "published_stale_phrase_reads").

    Raises:
        PublishedScriptCrash: in published mode, at a turn where the published script would crash.
    """
    response_filter = ResponseFilter(config, noun_extractor)
    records = []
    for triple in tqdm(triples, desc="filtering", unit="turn", disable=not progress):
        record = response_filter(triple)
        if record is not None:
            records.append(record)
    counts = {reason: 0 for reason in ("triples",) + DROP_REASONS + ("kept",)}
    counts.update(response_filter.counts)
    counts["ids_renamed"] = assign_unique_ids(records, random.Random(seed)) if unique_ids else 0
    counts["negatives"] = attach_negatives(records) if save_negative else 0
    return records, counts
