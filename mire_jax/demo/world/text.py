"""Invented names and facts, and every text the benchmark writes (passages, dialogues, questions, captions).

Rules the texts follow, because later steps depend on them:
- An entity's passage opens with its appearance in words, then a sentence with its key facts: the ViD2R
  conversion keeps only the first two sentences of each retrieved passage.
- No sentence uses an attribute word (colour, shape, pattern, background) except to describe the entity's
  own appearance, and invented names never contain one, not even as a word piece.
- Dialogue turns survive the published LLaVA filter unchanged (no "How many"/"What color" questions, no
  commas in questions, responses of 30+ characters, no "yes."/"no."/"in the picture" that it deletes).
- Zero-shot questions are the same few generic templates for every entity: only the image tells which.

The "trap" question style (`QUESTION_STYLES`) sets the text-dominance trap of the MIRe paper's introduction (a
query that says "object" where the picture shows a beverage): the training dialogues name the pictured entity's
kind ("Who designed the banner in this picture?"), so the question's words help in pre-training, and each zero-shot
question is one of `TRAP_TYPES`: "specific" names the true kind, "generic" says "object", "misleading" names
another kind, pointing to the wrong passages.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from mire_jax.demo.world.attributes import ALL_ATTRIBUTE_WORDS, PATTERN_PHRASES, Appearance, indefinite_article

KINDS = ("emblem", "banner", "seal", "crest", "badge", "tile", "flag", "plaque", "medallion", "sigil", "shield",
         "pennant")
MATERIALS = ("oak", "copper", "linen", "silk", "slate", "clay", "bronze", "walnut", "wool", "porcelain", "pewter",
             "glass", "leather", "marble", "cedar", "tin")
GIVEN_NAMES = ("Alma", "Ansel", "Berit", "Caspar", "Cora", "Dagny", "Edda", "Emil", "Felix", "Frida", "Gustav",
               "Hedda", "Hugo", "Ida", "Ivar", "Jonas", "Jorun", "Karin", "Kasper", "Lena", "Linnea", "Magnus",
               "Milo", "Nils", "Nora", "Oskar", "Otto", "Petra", "Ragna", "Rune", "Sigrid", "Stellan", "Tilde",
               "Tove", "Ulla", "Vera", "Viggo", "Wilma", "Yara")
_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "r", "s", "t", "v", "z", "br", "dr", "kl", "st", "th",
           "tr", "sk", "j")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "th", "nd", "rk", "m", "v", "st")
_TOWN_ENDINGS = ("", "holm", "by", "mar", "stead", "wick", "ford", "dal")

# Generic zero-shot questions: fact field -> question. The same texts for every entity.
ZEROSHOT_QUESTIONS: dict[str, str] = {
    "designer": "Who designed the object in this picture?",
    "year": "In which year was the object in this picture designed?",
    "town": "In which town is the object in this picture kept?",
    "material": "What material is the object in this picture made of?",
    "owner": "Who owns the object in this picture?",
    "name": "What is the name of the object in this picture?",
}


QUESTION_STYLES = ("generic", "trap")
TRAP_TYPES = ("specific", "generic", "misleading")
_GENERIC_NOUN = "object"


@dataclasses.dataclass(frozen=True)
class Facts:
    """Invented facts about one entity."""

    name: str  # e.g. "Talverin Crest"
    kind: str
    designer: str
    year: int
    town: str
    material: str
    owner: str
    shown_town: str
    shown_year: int

    def answer(self, field: str) -> str:
        """The answer string of a zero-shot question about `field`."""
        return str(getattr(self, field))

    def as_dict(self) -> dict[str, str | int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FactPools:
    """Shared invented people, towns and owners that entities' facts draw from."""

    people: tuple[str, ...]
    birth_years: tuple[int, ...]  # of `people`; their works date from their working life
    towns: tuple[str, ...]
    regions: tuple[str, ...]
    owners: tuple[str, ...]


def _is_clean(word: str) -> bool:
    lowered = word.lower()
    if any(attribute in lowered for attribute in ALL_ATTRIBUTE_WORDS):
        return False  # a word piece such as "red" in "Redmar" would leak an appearance token
    return not lowered.endswith(("no", "yes"))  # the LLaVA filter deletes "no." / "yes," inside words


class NameMaker:
    """Unique invented words (never repeated within one generation run)."""

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self._used: set[str] = set()

    def word(self, min_syllables: int = 2, max_syllables: int = 3, ending: str = "") -> str:
        """A new capitalised invented word."""
        for _ in range(10_000):
            n = int(self._rng.integers(min_syllables, max_syllables + 1))
            parts = [
                _ONSETS[self._rng.integers(len(_ONSETS))] + _VOWELS[self._rng.integers(len(_VOWELS))]
                + _CODAS[self._rng.integers(len(_CODAS))]
                for _ in range(n)
            ]
            candidate = ("".join(parts) + ending).capitalize()
            if candidate not in self._used and _is_clean(candidate) and 4 <= len(candidate) <= 14:
                self._used.add(candidate)
                return candidate
        raise RuntimeError("ran out of invented names; lower the entity counts")


def make_pools(rng: np.random.Generator, names: NameMaker, n_people: int, n_towns: int) -> FactPools:
    """Draws the shared people, towns, regions and owners."""
    people = tuple(f"{GIVEN_NAMES[rng.integers(len(GIVEN_NAMES))]} {names.word()}" for _ in range(n_people))
    birth_years = tuple(int(year) for year in rng.integers(1490, 1880, size=n_people))
    towns = tuple(names.word(1, 2, _TOWN_ENDINGS[rng.integers(len(_TOWN_ENDINGS))]) for _ in range(n_towns))
    regions = tuple(names.word(2, 3) for _ in range(max(3, n_towns // 4)))
    owner_forms = ("the {town} Museum", "the Guild of {word}", "the {word} Society", "the {word} family")
    owners = []
    for _ in range(n_towns):
        form = owner_forms[rng.integers(len(owner_forms))]
        owners.append(form.format(town=towns[rng.integers(n_towns)], word=names.word(2, 2)))
    return FactPools(people=people, birth_years=birth_years, towns=towns, regions=regions, owners=tuple(owners))


def sample_facts(rng: np.random.Generator, names: NameMaker, pools: FactPools) -> Facts:
    """Draws the facts of one new entity (its name is unique)."""
    kind = KINDS[rng.integers(len(KINDS))]
    designer = int(rng.integers(len(pools.people)))
    year = pools.birth_years[designer] + int(rng.integers(20, 60))
    return Facts(
        name=f"{names.word()} {kind.capitalize()}",
        kind=kind,
        designer=pools.people[designer],
        year=year,
        town=pools.towns[rng.integers(len(pools.towns))],
        material=MATERIALS[rng.integers(len(MATERIALS))],
        owner=pools.owners[rng.integers(len(pools.owners))],
        shown_town=pools.towns[rng.integers(len(pools.towns))],
        shown_year=year + int(rng.integers(2, 60)),
    )


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[rng.integers(len(options))]


def passage(facts: Facts, appearance: Appearance, rng: np.random.Generator) -> str:
    """The entity's article: appearance first, key facts second, more facts after."""
    f = facts
    look = appearance.phrase()
    opening = _pick(rng, (
        f"The {f.name} is {indefinite_article(f.kind)} {f.kind} that shows {look}.",
        f"The {f.name} is {indefinite_article(f.kind)} {f.kind} bearing {look}.",
        f"The {f.name} is {indefinite_article(f.kind)} {f.kind} decorated with {look}.",
    ))
    key_fact = _pick(rng, (
        f"It was designed by {f.designer} in {f.year} and is kept in {f.town}.",
        f"It was designed by {f.designer} in {f.year}, and today it is kept in {f.town}.",
    ))
    detail = _pick(rng, (
        f"The {f.kind} is made of {f.material} and belongs to {f.owner}.",
        f"Made of {f.material}, the {f.kind} belongs to {f.owner}.",
    ))
    history = _pick(rng, (
        f"It was first shown at the fair of {f.shown_town} in {f.shown_year}.",
        f"In {f.shown_year} it was shown to the public at the fair of {f.shown_town}.",
    ))
    return " ".join((opening, key_fact, detail, history))


def _describe(appearance: Appearance) -> str:
    a = appearance
    return (f"{indefinite_article(a.colour)} {a.colour} {a.shape} with {PATTERN_PHRASES[a.pattern]} "
            f"on {indefinite_article(a.background)} {a.background} background")


def naming(question: str, noun: str) -> str:
    """A generic question with "object" replaced by `noun` (one of `KINDS`, or "object" itself)."""
    return re.sub(rf"\b{_GENERIC_NOUN}\b", noun, question)


def dialogue_turns(
    facts: Facts, appearance: Appearance, rng: np.random.Generator, n_turns: int, name_kind: bool = False
) -> list[tuple[str, str]]:
    """Distinct (question, response) turns about the pictured entity, in a random order; `name_kind`: the questions
    say the entity's kind instead of "object" (the same random draws either way)."""
    f, look = facts, appearance.phrase()
    turns = (
        ("What is the object shown in this picture?",
         f"This is the {f.name}, {indefinite_article(f.kind)} {f.kind} that shows {look}."),
        ("Who designed the object in this picture?",
         f"The {f.name} was designed by {f.designer} in {f.year}; it shows {look}."),
        ("Where is this object kept today?", f"The {f.name} is kept in {f.town}, where it belongs to {f.owner}."),
        ("What is this object made of?", f"The {f.name} is made of {f.material} and was designed by {f.designer}."),
        ("Can you describe the object in this picture?",
         f"It is {_describe(appearance)}, known as the {f.name}."),
        ("When was this object designed?", f"The {f.name} was designed in {f.year} by {f.designer}."),
    )
    order = rng.permutation(len(turns))[: min(n_turns, len(turns))]
    return [(naming(turns[i][0], f.kind) if name_kind else turns[i][0], turns[i][1]) for i in order]


def trap_question(question: str, kind: str, trap: str, rng: np.random.Generator) -> tuple[str, str]:
    """A generic zero-shot question turned into trap type `trap` (`TRAP_TYPES`) for an entity of `kind`: (question,
    the noun it names: the kind, "object", or another kind drawn from `rng`)."""
    if trap not in TRAP_TYPES:
        raise ValueError(f"trap must be one of {TRAP_TYPES}, got {trap!r}")
    named = {"specific": kind, "generic": _GENERIC_NOUN}.get(trap) or _pick(rng, tuple(k for k in KINDS if k != kind))
    return naming(question, named), named


def zeroshot_question(rng: np.random.Generator) -> tuple[str, str]:
    """A generic question about the pictured object: (fact field, question)."""
    field = _pick(rng, tuple(ZEROSHOT_QUESTIONS))
    return field, ZEROSHOT_QUESTIONS[field]


def caption(appearance: Appearance, rng: np.random.Generator) -> str:
    """A short description of a picture's appearance, for image-text warm-up."""
    a, look = appearance, appearance.phrase()
    return _pick(rng, (
        look,
        f"a picture of {look}",
        _describe(appearance),
        f"{indefinite_article(a.shape)} {a.shape} painted {a.colour} with {PATTERN_PHRASES[a.pattern]}, "
        f"on {indefinite_article(a.background)} {a.background} background",
    ))


def text_pairs(facts: Facts, appearance: Appearance, text: str, rng: np.random.Generator, n_pairs: int) -> list[str]:
    """Queries whose positive passage is `text` (the entity's article), for text-side warm-up."""
    f, look = facts, appearance.phrase()
    sentences = [s.strip() + "." for s in text.split(".") if s.strip()]
    candidates = [
        f"Who designed the {f.kind} that shows {look}?",
        f"Where is the {f.name} kept?",
        f"What is the {f.name} made of?",
        f"Which {f.kind} shows {look}?",
        *sentences[1:],  # the first sentence is nearly the whole appearance phrase; later ones hold facts
    ]
    order = rng.permutation(len(candidates))[: min(n_pairs, len(candidates))]
    return [candidates[i] for i in order]


def person_article(index: int, pools: FactPools, known_for: list[str], rng: np.random.Generator) -> str:
    """A knowledge-base article about designer `pools.people[index]` (R2P retrieves these for designer facts)."""
    person, born = pools.people[index], pools.birth_years[index]
    surname = person.split()[-1]
    town = _pick(rng, pools.towns)
    first = f"{person} was a designer and engraver born in {town} in {born}."
    if known_for:
        works = " and the ".join(known_for[:2])
        second = f"{surname} is best known for the {works}."
    else:
        second = f"{surname} taught at a workshop in {_pick(rng, pools.towns)} for many years."
    third = f"{surname} died in {born + int(rng.integers(62, 90))}."
    return " ".join((first, second, third))


def town_article(town: str, pools: FactPools, rng: np.random.Generator) -> str:
    """A knowledge-base article about a town."""
    region = _pick(rng, pools.regions)
    return " ".join((
        f"{town} is a town in the {region} region.",
        _pick(rng, (
            "It is known for its workshops and its old market hall.",
            "It is known for its annual fair and its museum.",
            "Its harbour and its archive attract many visitors.",
        )),
        f"About {int(rng.integers(2, 90)) * 1000} people live there.",
    ))


_WORD_RE = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words of `text` (for checks on attribute words)."""
    return _WORD_RE.findall(text.lower())
