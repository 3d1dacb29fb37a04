"""Visual attribute vocabularies and the split of attribute combinations.

An entity's appearance is one value of each of four attributes (shape, colour, pattern, background).
The zero-shot split uses combinations never rendered for training, while every single value is seen in
training, so a retriever must compose what it learned rather than recall a seen picture.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

import numpy as np

# Word -> RGB. Foreground colours and backgrounds use disjoint words so that a passage names each
# attribute unambiguously; backgrounds are chosen to contrast with every foreground colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "blue": (40, 75, 225),
    "yellow": (240, 215, 30),
    "green": (40, 170, 60),
    "purple": (140, 50, 190),
    "orange": (245, 130, 20),
    "pink": (245, 120, 185),
    "turquoise": (30, 200, 215),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (242, 242, 242),
    "black": (22, 22, 22),
    "grey": (128, 128, 128),
    "brown": (112, 78, 46),
}
# Every word is one WordPiece of the bert-base-uncased vocabulary, so a late-interaction model sees one token
# per attribute. Shapes are ordered so that the first six differ most in outline.
SHAPES: tuple[str, ...] = ("circle", "triangle", "square", "star", "cross", "crescent", "diamond", "pentagon")
PATTERNS: tuple[str, ...] = ("plain", "striped", "dotted", "checked", "banded")

# How a pattern reads when it follows the shape noun ("a red triangle with stripes").
PATTERN_PHRASES: dict[str, str] = {
    "plain": "no decoration",
    "striped": "stripes",
    "dotted": "dots",
    "checked": "a checked pattern",
    "banded": "concentric bands",
}


def indefinite_article(phrase: str) -> str:
    """ "a" or "an" for the word that starts `phrase` (by its first letter, enough for this vocabulary)."""
    return "an" if phrase[:1].lower() in "aeiou" else "a"


@dataclasses.dataclass(frozen=True)
class Appearance:
    """One combination of visual attributes."""

    shape: str
    colour: str
    pattern: str
    background: str

    def words(self) -> tuple[str, str, str, str]:
        """The four attribute words, in (colour, pattern, shape, background) reading order."""
        return (self.colour, self.pattern, self.shape, self.background)

    def phrase(self) -> str:
        """Canonical description, e.g. "a red striped triangle on a grey background"."""
        if self.pattern == "plain":
            look = f"plain {self.colour} {self.shape}"
        else:
            look = f"{self.colour} {self.pattern} {self.shape}"
        background = f"{indefinite_article(self.background)} {self.background} background"
        return f"{indefinite_article(look)} {look} on {background}"

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class AttributeSpace:
    """The attribute values in use (a prefix of each vocabulary)."""

    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    patterns: tuple[str, ...]
    backgrounds: tuple[str, ...]

    @classmethod
    def create(cls, n_shapes: int, n_colours: int, n_patterns: int, n_backgrounds: int) -> "AttributeSpace":
        """Takes the first n values of each vocabulary.

        Raises:
            ValueError: if a count is below 2 or above the vocabulary size (naming the attribute).
        """
        wanted = {
            "shapes": (n_shapes, SHAPES),
            "colours": (n_colours, tuple(COLOURS)),
            "patterns": (n_patterns, PATTERNS),
            "backgrounds": (n_backgrounds, tuple(BACKGROUNDS)),
        }
        values = {}
        for name, (count, vocabulary) in wanted.items():
            if not 2 <= count <= len(vocabulary):
                raise ValueError(f"n_{name}={count} must be between 2 and {len(vocabulary)} ({', '.join(vocabulary)})")
            values[name] = tuple(vocabulary[:count])
        return cls(**values)

    def all_combinations(self) -> list[Appearance]:
        """Every combination, in a fixed (lexicographic by vocabulary order) order."""
        return [
            Appearance(shape=s, colour=c, pattern=p, background=b)
            for s, c, p, b in itertools.product(self.shapes, self.colours, self.patterns, self.backgrounds)
        ]

    def all_words(self) -> frozenset[str]:
        """Every attribute word in use."""
        return frozenset(self.shapes + self.colours + self.patterns + self.backgrounds)

    def as_dict(self) -> dict[str, list[str]]:
        return {name: list(values) for name, values in dataclasses.asdict(self).items()}


ALL_ATTRIBUTE_WORDS: frozenset[str] = frozenset(SHAPES) | frozenset(COLOURS) | frozenset(PATTERNS) | frozenset(
    BACKGROUNDS
)


def split_combinations(
    space: AttributeSpace, n_train: int, n_heldout: int, rng: np.random.Generator
) -> tuple[list[Appearance], list[Appearance]]:
    """Draws disjoint training and held-out combinations.

    First a covering set is drawn: as many combinations as the largest attribute has values, pairing the
    values of each attribute in a random order, so every value of every attribute occurs in training. The
    held-out combinations are then drawn from the rest, and the remaining training ones after them.
    Unused combinations (neither set) exist when the space is larger than the two sets.

    Args:
        space: the attribute values in use.
        n_train: number of training combinations (one per training entity).
        n_heldout: number of held-out combinations (zero-shot entities and distractors).
        rng: source of randomness.

    Returns:
        (train, heldout), each a list of distinct combinations in a random order.

    Raises:
        ValueError: if the space is too small or n_train is below the size of the covering set.
    """
    combos = space.all_combinations()
    if n_train + n_heldout > len(combos):
        raise ValueError(
            f"{n_train} training + {n_heldout} held-out entities need more than the {len(combos)} attribute "
            "combinations available: raise n_shapes/n_colours/n_patterns/n_backgrounds or lower the entity counts"
        )
    values = (space.shapes, space.colours, space.patterns, space.backgrounds)
    n_cover = max(len(v) for v in values)
    if n_train < n_cover:
        raise ValueError(
            f"n_train_entities={n_train} is too small to show every attribute value in training: it must be "
            f"at least {n_cover}, the largest number of values of one attribute"
        )
    orders = [rng.permutation(len(v)) for v in values]
    # Row i takes each attribute's (i mod count)-th value in its random order; rows differ in the largest
    # attribute, so the covering combinations are distinct.
    cover = [
        Appearance(*(v[order[i % len(v)]] for v, order in zip(values, orders)))
        for i in range(n_cover)
    ]
    covered = set(cover)
    rest = [combos[i] for i in rng.permutation(len(combos)) if combos[i] not in covered]
    heldout = rest[:n_heldout]
    train = cover + rest[n_heldout : n_heldout + n_train - n_cover]
    train = [train[i] for i in rng.permutation(len(train))]
    return train, heldout


def coverage(appearances: Sequence[Appearance]) -> dict[str, set[str]]:
    """The set of values of each attribute that occur in `appearances`."""
    seen: dict[str, set[str]] = {"shape": set(), "colour": set(), "pattern": set(), "background": set()}
    for appearance in appearances:
        for name, value in appearance.as_dict().items():
            seen[name].add(value)
    return seen
