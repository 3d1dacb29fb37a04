"""Noun extractors for the short-response hint of the ViD2R filter.

The published filter (`runs/data_filtering.py` of yeongjoonJu/MIRe) appends ` (n1, n2, ...)` to responses of at
most 4 words, with the NOUN and PROPN tokens that spaCy's `en_core_web_sm` finds in the question's first line.
spaCy's model is an optional extra (`requirements-vid2r.txt`: it is not on PyPI), so the extractor is pluggable
(`make_noun_extractor`):

* "spacy": spaCy with a named pipeline (default `en_core_web_sm`); exactly the published behaviour.
* "heuristic": a dependency-free approximation (below). It differs from spaCy's tagger: it keeps content words
  that are not in closed word classes (determiners, pronouns, prepositions, auxiliaries, wh-words, ...) nor in
  a list of frequent verbs and adjectives, and drops words with verb/adverb endings (-ing, -ed, -ly) unless
  they are capitalised inside the sentence (proper nouns). So it may keep some verbs and adjectives spaCy would
  not tag as nouns (e.g. "wooden"), and may miss nouns ending in -ing ("building"). It tokenises hyphenated
  words and possessives more coarsely than spaCy. Nouns of the image itself ("image", "photo") are kept, as
  spaCy keeps them.
* "none": never adds a hint (the step is skipped; the filter counts how often it would have run).
* "auto" (default): spaCy when `spacy` and the model import, else the heuristic; `heuristic_notice` is the line
  the pipeline prints and records when that fallback (or the heuristic by choice) was used.
"""
from __future__ import annotations

import functools
import re
from typing import Callable

NounExtractor = Callable[[str], list]

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*[A-Za-z]|[A-Za-z]")

# Closed word classes and very frequent non-noun words of visual questions.
_STOPWORDS = frozenset("""
a an the this that these those there here some any each every all both either neither no not nor
i me my mine we us our ours you your yours he him his she her hers it its they them their theirs one ones
what which who whom whose when where why how whether if then than so as because while though although
is are was were be been being am do does did done doing have has had having will would shall should can could
may might must ought
of in on at by for with about against between into through during before after above below to from up down
out off over under again further near onto upon within without along across behind beside besides beneath
around toward towards inside outside among per via like unlike
and or but also just only very too quite rather really more most less least much many few several
other another such same own else
please describe explain tell give provide identify mention list write using shown seen visible appear appears
look looks see show shows happen happens go goes get gets make makes take takes use uses put puts come comes
hold holds sit sits stand stands wear wears eat eats next
big small large little tall long high low old new young good bad main different possible likely
""".split())

_NON_NOUN_ENDINGS = ("ing", "ed", "ly")


def heuristic_nouns(text: str) -> list[str]:
    """Likely nouns of `text` in order of appearance (see the module docstring for what it gets wrong)."""
    words = _WORD.findall(text)
    nouns = []
    for i, word in enumerate(words):
        lower = word.lower()
        if lower in _STOPWORDS or len(word) < 2:
            continue
        proper = i > 0 and word[0].isupper()
        if not proper and lower.endswith(_NON_NOUN_ENDINGS):
            continue
        nouns.append(word)
    return nouns


def no_nouns(text: str) -> list[str]:
    """The extractor of the "none" setting: the hint step never adds anything."""
    del text
    return []


INSTALL_OPTIONAL_EXTRA = "pip install -r requirements-vid2r.txt"
# Components that do not change a token's `pos_` in the English pipelines; skipped for speed outside --published.
_COMPONENTS_NOT_NEEDED_FOR_POS = ("parser", "ner", "lemmatizer")


@functools.lru_cache(maxsize=4)
def _spacy_pipeline(model: str, full_pipeline: bool):
    import spacy  # optional dependency: requirements-vid2r.txt
    if full_pipeline:
        return spacy.load(model)  # verbatim the published call
    return spacy.load(model, disable=list(_COMPONENTS_NOT_NEEDED_FOR_POS))


def spacy_nouns_extractor(model: str = "en_core_web_sm", full_pipeline: bool = False) -> NounExtractor:
    """NOUN/PROPN tokens by spaCy's tagger, in text order, as the published filter keeps them.

    Args:
        model: the spaCy pipeline to load.
        full_pipeline: load every component, as the published script does, instead of skipping the parser,
            NER and lemmatizer (which do not set `pos_`).

    Raises:
        ImportError, OSError: spaCy or the model cannot be loaded.
    """
    nlp = _spacy_pipeline(model, full_pipeline)

    def extract(text: str) -> list[str]:
        return [t.text for t in nlp(text) if t.pos_ in ("NOUN", "PROPN")]

    extract.name = f"spacy:{model}"
    return extract


def make_noun_extractor(kind: str = "auto", spacy_model: str = "en_core_web_sm",
                        full_pipeline: bool = False) -> tuple[NounExtractor, str]:
    """-> (extractor, the name of what was chosen: "spacy:<model>", "heuristic" or "none").

    `full_pipeline` is passed to `spacy_nouns_extractor`.

    Raises:
        ValueError: unknown kind, or kind "spacy" while spaCy or its model cannot be loaded.
    """
    if kind == "none":
        return no_nouns, "none"
    if kind == "heuristic":
        return heuristic_nouns, "heuristic"
    if kind in ("spacy", "auto"):
        try:
            return spacy_nouns_extractor(spacy_model, full_pipeline), f"spacy:{spacy_model}"
        except (ImportError, OSError) as e:
            if kind == "spacy":
                raise ValueError(f"noun extractor 'spacy' asked for, but spaCy model {spacy_model!r} cannot be "
                                 f"loaded ({e}); install it with `{INSTALL_OPTIONAL_EXTRA}`, or use 'heuristic' "
                                 f"or 'none'") from e
            return heuristic_nouns, "heuristic"
    raise ValueError(f"unknown noun extractor {kind!r}: expected auto, spacy, heuristic or none")


def heuristic_notice(extractor_name: str, requested: str, published: bool = False) -> str | None:
    """The one line to print and record when the heuristic made the noun hints (None otherwise).

    Args:
        extractor_name: what `make_noun_extractor` chose.
        requested: the kind that was asked for ("auto" falls back to the heuristic when spaCy is absent).
        published: the filter reproduces the published script, whose output the heuristic cannot match.
    """
    if extractor_name != "heuristic":
        return None
    if published:
        return ("WARNING: --published without spaCy's en_core_web_sm (not importable here): the noun hints of "
                "short responses come from a heuristic, so this output CANNOT equal the released ViD2R; install "
                f"the optional extra (`{INSTALL_OPTIONAL_EXTRA}`), or add --nouns spacy to refuse to run without it")
    why = "chosen with --nouns heuristic" if requested == "heuristic" else "spaCy's en_core_web_sm is not importable"
    return (f"note: the noun hints of short responses came from a heuristic ({why}), not from spaCy's "
            f"en_core_web_sm as published, so they may differ from the released ViD2R; for spaCy's: "
            f"`{INSTALL_OPTIONAL_EXTRA}`")
