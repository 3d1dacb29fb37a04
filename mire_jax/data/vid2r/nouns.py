"""Noun extractors for the short-response hint of the ViD2R filter (FORMATS.md (a) step 5).

The published filter appends ` (n1, n2, ...)` to responses of at most 4 words, with the NOUN and PROPN tokens
that spaCy's `en_core_web_sm` finds in the question's first line. spaCy's model cannot always be installed,
so the extractor is pluggable (`make_noun_extractor`):

* "spacy": spaCy with a named pipeline (default `en_core_web_sm`); exactly the published behaviour.
* "heuristic": a dependency-free approximation (below). It differs from spaCy's tagger: it keeps content words
  that are not in closed word classes (determiners, pronouns, prepositions, auxiliaries, wh-words, ...) nor in
  a list of frequent verbs and adjectives, and drops words with verb/adverb endings (-ing, -ed, -ly) unless
  they are capitalised inside the sentence (proper nouns). So it may keep some verbs and adjectives spaCy would
  not tag as nouns (e.g. "wooden"), and may miss nouns ending in -ing ("building"). It tokenises hyphenated
  words and possessives more coarsely than spaCy. Nouns of the image itself ("image", "photo") are kept, as
  spaCy keeps them.
* "none": never adds a hint (the step is skipped; the filter counts how often it would have run).
* "auto" (default): spaCy when `spacy` and the model import, else the heuristic.
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


@functools.lru_cache(maxsize=4)
def _spacy_pipeline(model: str):
    import spacy  # optional dependency
    return spacy.load(model, disable=["parser", "ner", "lemmatizer"])


def spacy_nouns_extractor(model: str = "en_core_web_sm") -> NounExtractor:
    """NOUN/PROPN tokens by spaCy's tagger, as the published filter (raises ImportError/OSError when absent)."""
    nlp = _spacy_pipeline(model)

    def extract(text: str) -> list[str]:
        return [t.text for t in nlp(text) if t.pos_ in ("NOUN", "PROPN")]

    extract.name = f"spacy:{model}"
    return extract


def spacy_available(model: str = "en_core_web_sm") -> bool:
    try:
        _spacy_pipeline(model)
    except (ImportError, OSError):
        return False
    return True


def make_noun_extractor(kind: str = "auto", spacy_model: str = "en_core_web_sm") -> tuple[NounExtractor, str]:
    """-> (extractor, the name of what was chosen: "spacy:<model>", "heuristic" or "none").

    Raises:
        ValueError: unknown kind, or kind "spacy" while spaCy or its model cannot be loaded.
    """
    if kind == "none":
        return no_nouns, "none"
    if kind == "heuristic":
        return heuristic_nouns, "heuristic"
    if kind in ("spacy", "auto"):
        try:
            return spacy_nouns_extractor(spacy_model), f"spacy:{spacy_model}"
        except (ImportError, OSError) as e:
            if kind == "spacy":
                raise ValueError(f"noun extractor 'spacy' asked for, but spaCy model {spacy_model!r} cannot be "
                                 f"loaded ({e}); use 'heuristic' or 'none'") from e
            return heuristic_nouns, "heuristic"
    raise ValueError(f"unknown noun extractor {kind!r}: expected auto, spacy, heuristic or none")
