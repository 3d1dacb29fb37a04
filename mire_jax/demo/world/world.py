"""The invented world: sizes, entities (appearance + facts + passage) and the knowledge-base articles."""

from __future__ import annotations

import dataclasses

import numpy as np

from mire_jax.demo.world import text
from mire_jax.demo.world.attributes import Appearance, AttributeSpace, split_combinations

# Independent random streams, so that e.g. changing how passages are worded leaves the images unchanged.
STREAM_COMBINATIONS, STREAM_FACTS, STREAM_TEXT, STREAM_IDS, STREAM_IMAGES = range(5)

SPLIT_TRAIN, SPLIT_ZEROSHOT, SPLIT_DISTRACTOR = "train", "zeroshot", "distractor"


@dataclasses.dataclass(frozen=True)
class SyntheticSizes:
    """How much to generate. The defaults make the `make demo` benchmark."""

    n_train_entities: int = 300
    views_per_train_entity: int = 2
    turns_per_dialogue: int = 3
    n_zeroshot_entities: int = 150
    n_distractors: int = 150
    queries_per_zeroshot_entity: int = 1
    n_seen_queries: int = 100
    n_extra_caption_images: int = 600
    text_pairs_per_entity: int = 2
    n_shapes: int = 6
    n_colours: int = 8
    n_patterns: int = 4
    n_backgrounds: int = 4
    image_size: int = 64

    def __post_init__(self):
        minimum = {"n_train_entities": 1, "views_per_train_entity": 1, "turns_per_dialogue": 1,
                   "n_zeroshot_entities": 1, "queries_per_zeroshot_entity": 1, "image_size": 16}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{field.name} must be an int, got {value!r}")
            if value < minimum.get(field.name, 0):
                raise ValueError(f"{field.name}={value} must be at least {minimum.get(field.name, 0)}")

    @classmethod
    def tiny(cls) -> "SyntheticSizes":
        """The world of `configs/tiny.py`: 80 training pictures, 16 validation queries, 32 px images."""
        return cls(n_train_entities=40, views_per_train_entity=2, n_zeroshot_entities=8, n_distractors=8,
                   n_seen_queries=16, n_extra_caption_images=0, image_size=32)

    def attribute_space(self) -> AttributeSpace:
        return AttributeSpace.create(self.n_shapes, self.n_colours, self.n_patterns, self.n_backgrounds)


@dataclasses.dataclass(frozen=True)
class Entity:
    """One pictured entity of the world."""

    entity_id: str  # an invented Wikidata-style id, "Q..."
    split: str  # SPLIT_TRAIN, SPLIT_ZEROSHOT or SPLIT_DISTRACTOR
    appearance: Appearance
    facts: text.Facts
    passage: str

    def as_dict(self) -> dict:
        return {
            "entity_id": self.entity_id,
            "split": self.split,
            "appearance": self.appearance.as_dict(),
            "facts": self.facts.as_dict(),
            "passage": self.passage,
        }


@dataclasses.dataclass(frozen=True)
class Article:
    """A knowledge-base article without a picture (a designer or a town)."""

    entity_id: str
    title: str
    content: str


@dataclasses.dataclass(frozen=True)
class World:
    """Everything that is decided before any file is written."""

    space: AttributeSpace
    entities: tuple[Entity, ...]  # train, then zero-shot, then distractors
    articles: tuple[Article, ...]
    unused_combinations: tuple[Appearance, ...]  # neither trained nor held out: extra caption pictures

    def by_split(self, split: str) -> list[Entity]:
        return [e for e in self.entities if e.split == split]


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """A generator determined by the seed and a key path (stream, then any indices)."""
    return np.random.default_rng([seed, *key])


def build_world(seed: int, sizes: SyntheticSizes) -> World:
    """Draws the attribute split, the facts and the texts of every entity and article.

    Raises:
        ValueError: if the sizes do not fit the attribute space.
    """
    space = sizes.attribute_space()
    n_heldout = sizes.n_zeroshot_entities + sizes.n_distractors
    train_looks, heldout_looks = split_combinations(
        space, sizes.n_train_entities, n_heldout, rng_for(seed, STREAM_COMBINATIONS)
    )
    taken = set(train_looks) | set(heldout_looks)
    unused = tuple(c for c in space.all_combinations() if c not in taken)

    facts_rng = rng_for(seed, STREAM_FACTS)
    names = text.NameMaker(facts_rng)
    n_total = sizes.n_train_entities + n_heldout
    pools = text.make_pools(facts_rng, names, n_people=max(12, n_total // 6), n_towns=max(10, n_total // 10))

    splits = (
        [SPLIT_TRAIN] * sizes.n_train_entities
        + [SPLIT_ZEROSHOT] * sizes.n_zeroshot_entities
        + [SPLIT_DISTRACTOR] * sizes.n_distractors
    )
    looks = list(train_looks) + list(heldout_looks)
    # Ids are a random permutation, so an id says nothing about an entity's split.
    id_numbers = 100_000 + rng_for(seed, STREAM_IDS).permutation(n_total)
    text_rng = rng_for(seed, STREAM_TEXT)
    entities = []
    for i, (split, look) in enumerate(zip(splits, looks)):
        facts = text.sample_facts(facts_rng, names, pools)
        entities.append(Entity(
            entity_id=f"Q{id_numbers[i]}", split=split, appearance=look, facts=facts,
            passage=text.passage(facts, look, text_rng),
        ))

    articles = []
    next_id = 200_000
    for index, person in enumerate(pools.people):
        known_for = [e.facts.name for e in entities if e.split == SPLIT_TRAIN and e.facts.designer == person]
        articles.append(Article(f"Q{next_id}", person, text.person_article(index, pools, known_for, text_rng)))
        next_id += 1
    for town in pools.towns:
        articles.append(Article(f"Q{next_id}", town, text.town_article(town, pools, text_rng)))
        next_id += 1
    return World(space=space, entities=tuple(entities), articles=tuple(articles), unused_combinations=unused)
