"""The analyses on small generated worlds with models built to show each measure, run through the real evaluation
path (runner, encoded corpus, exact MaxSim index): a picture reader whose visual tokens are the words of the colour
and background it reads off the pixels, a text-only model, a "fused" model whose visual tokens are its question's
words (text dominance by construction), and pooling maps that look at the object, everywhere, or away from it."""
from __future__ import annotations

import json
import re
import zlib

import numpy as np
import pytest

from mire_jax.analyses import modality_reliance, pooling_focus, text_dominance, write_report
from mire_jax.analyses.runs import Searchers
from mire_jax.config import EncodingSettings, ImageProcessing
from mire_jax.demo.world import generate, load_synthetic, object_masks
from mire_jax.demo.world.attributes import BACKGROUNDS, COLOURS
from mire_jax.eval import runner
from mire_jax.retrieval.searcher import Searcher

SIZES = dict(n_train_entities=24, views_per_train_entity=1, n_zeroshot_entities=36, n_distractors=24,
             n_seen_queries=4, n_extra_caption_images=4, text_pairs_per_entity=1)
DIM, TEXT_ROWS, VISUAL_ROWS, DOC_ROWS = 48, 24, 2, 96


def word_vector(word: str, salt: int = 0) -> np.ndarray:
    v = np.random.default_rng([zlib.crc32(word.encode()), salt]).normal(size=DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def read_picture(image) -> list[str]:
    """The background and the object's colour, read off the pixels (nearest named colours)."""
    pixels = np.asarray(image.convert("RGB"), float).reshape(-1, 3)
    border = np.concatenate([np.asarray(image.convert("RGB"), float)[[0, -1]].reshape(-1, 3)])
    background = min(BACKGROUNDS, key=lambda n: np.abs(np.median(border, 0) - BACKGROUNDS[n]).sum())
    inside = pixels[np.abs(pixels - BACKGROUNDS[background]).sum(1) > 90]
    colour = max(COLOURS, key=lambda n: (np.abs(inside - COLOURS[n]).sum(1) < 90).sum())
    return [colour, background]


class WordModel(Searcher):
    """A bag-of-words late-interaction model: a token is its word's fixed random vector, so MaxSim counts the query's
    words found in a passage. `visual`: "picture" (the words `read_picture` gives), "question" (the question's first
    words: fusion that lets the text through) or None (text only)."""

    def __init__(self, name: str, visual: str | None, salt: int = 0):
        self.settings = EncodingSettings(query_maxlen=TEXT_ROWS, doc_maxlen=DOC_ROWS, image=ImageProcessing(size=64))
        self.visual, self.salt = visual, salt
        self.batch_size, self.model_dir, self.index_dir = 8, name, ""
        self.index = self.passages = None
        self._fingerprint = f"{name}-{salt}"
        self.config = None

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def _rows(self, tokens: list[str], rows: int):
        e = np.zeros((rows, DIM), np.float32)
        tokens = tokens[:rows]
        for i, w in enumerate(tokens):
            e[i] = word_vector(w, self.salt)
        return e, np.arange(rows) < len(tokens)

    def encode_queries(self, questions, images=None, **_):
        images = images if images is not None else [None] * len(questions)
        visual = self.visual is not None and any(i is not None for i in images)
        width = (VISUAL_ROWS if visual else 0) + TEXT_ROWS
        embs, mask = np.zeros((len(questions), width, DIM), np.float32), np.zeros((len(questions), width), bool)
        for i, (question, image) in enumerate(zip(questions, images)):
            if visual and image is not None:
                seen = read_picture(image) if self.visual == "picture" else words(question)[-VISUAL_ROWS:]
                embs[i, :VISUAL_ROWS], mask[i, :VISUAL_ROWS] = self._rows(seen, VISUAL_ROWS)
            embs[i, width - TEXT_ROWS:], mask[i, width - TEXT_ROWS:] = self._rows(words(question), TEXT_ROWS)
        return embs, mask

    def passage_encoder(self, length_bucket=None, batch_size=None):
        def encode(texts):
            rows = [self._rows(words(t), DOC_ROWS) for t in texts]
            return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
        return encode


class Models(Searchers):
    """`Searchers` over the built models, by name."""

    def __init__(self, models: dict):
        super().__init__(runner.EvalSettings(k=20, batch_size=8, index={"mode": "exact"}, exact=True))
        self.models = models

    def __call__(self, name):
        return self.models[str(name)]


@pytest.fixture(scope="module")
def trap_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("trap")
    generate(root, seed=2, progress=False, questions="trap", **SIZES)
    return root


def _trap_groups(root) -> dict:
    return {json.loads(line)["id"]: json.loads(line)["trap"]
            for line in (root / "zeroshot" / "test.jsonl").read_text().splitlines()}


def test_picture_reader_reads_the_pictures(trap_world):
    bench = load_synthetic(trap_world, "zeroshot")
    entities = {json.loads(line)["entity_id"]: json.loads(line)["appearance"]
                for line in (trap_world / "meta" / "entities.jsonl").read_text().splitlines()}
    right = [read_picture(q.image.load()) == [entities[q.gold_pids[0]][k] for k in ("colour", "background")]
             for q in bench.queries]
    assert np.mean(right) >= 0.9


def test_modality_reliance_moves_the_right_way(trap_world, tmp_path):
    bench = load_synthetic(trap_world, "zeroshot")
    models = Models({"reader": WordModel("reader", "picture"), "text": WordModel("text", None)})
    result = modality_reliance({"image reader": "reader", "text only": ("text", "text_only")}, bench,
                               str(tmp_path / "eval"), str(tmp_path), searchers=models, groups=_trap_groups(trap_world))
    rows = {r["model"]: r for r in result["rows"]}
    reader, text = rows["image reader"], rows["text only"]
    assert reader["R@5"] > text["R@5"]
    assert reader["image fall"] > 20  # shuffled pictures lower the reader's score
    assert text["image fall"] == 0 and text["shuffled image"] == text["R@5"]  # never run: it does not read images
    assert text["question fall"] > reader["question fall"]  # a generic question costs the text-only model more
    assert text["text dominance"] == 1.0 and reader["text dominance"] < 0.5
    by_group = {(r["group"], r["model"]): r for r in result["extra_tables"][0]["rows"]}
    # the question that names the right kind is what the text-only model lives on
    assert by_group["specific", "text only"]["R@5"] > by_group["misleading", "text only"]["R@5"]
    assert (tmp_path / "modality_reliance.png").stat().st_size > 2000
    # the falls are those of the runs the result keeps
    base = result["metrics"]["image reader"]["base"]["all"]["R@5"]
    assert reader["R@5"] == pytest.approx(100 * base)


def test_text_dominance_names_the_winner_per_group_with_the_spread(trap_world, tmp_path):
    bench = load_synthetic(trap_world, "zeroshot")
    built = {f"{kind}{seed}": WordModel(kind, visual, salt=seed) for seed in (0, 1)
             for kind, visual in (("reader", "picture"), ("fused", "question"))}
    built["text"] = WordModel("text", None)
    result = text_dominance({"reader": ["reader0", "reader1"], "fused": ["fused0", "fused1"]}, bench,
                            str(tmp_path / "eval"), str(tmp_path), groups=_trap_groups(trap_world), baseline="text",
                            searchers=Models(built))
    diffs = {d["group"]: d for d in result["differences"]}
    assert set(diffs) == {"all", "generic", "misleading", "specific"}
    # the model that lets the question's words stand in for the picture loses where the words mislead
    assert diffs["misleading"]["mean"] > 20 and diffs["misleading"]["wins"] == 2
    assert diffs["all"]["n"] == 2 and len(diffs["all"]["per_seed"]) == 2
    assert any(f.startswith("misleading: reader beats fused by") for f in result["findings"])
    rows = {(r["group"], r["model"]): r for r in result["rows"]}
    assert rows["all", "text_only"]["n"] == 1 and rows["all", "reader"]["n"] == 2
    assert rows["all", "reader"]["min"] <= rows["all", "reader"]["mean"] <= rows["all", "reader"]["max"]
    md, js = write_report(str(tmp_path), [result])
    text = open(md).read()
    assert "| all | reader |" in text and "text_dominance.png" in text
    assert json.loads(open(js).read())["analyses"][0]["analysis"] == "text_dominance"


class LookingModel:
    """Pooling maps built from the picture: attention on the object's pixels ("object"), uniform ("everywhere"), or
    on the background ("away")."""

    def __init__(self, where: str, heads: int = 3, grid: int = 4):
        self.where, self.heads, self.grid = where, heads, grid

    def pooling_maps(self, image, question):
        pixels = np.asarray(image.convert("RGB"), float)
        background = np.median(np.concatenate([pixels[0], pixels[-1]]), 0)
        on = (np.abs(pixels - background).sum(-1) > 90).astype(float)
        step = pixels.shape[0] // self.grid
        share = on.reshape(self.grid, step, self.grid, step).mean((1, 3))
        m = {"object": share + 1e-3, "everywhere": np.ones_like(share), "away": 1 - share + 1e-3}[self.where]
        return np.stack([m / m.sum()] * self.heads)


@pytest.mark.parametrize("where", ["object", "everywhere", "away"])
def test_pooling_focus_measures_where_a_built_model_looks(trap_world, tmp_path, where):
    bench = load_synthetic(trap_world, "zeroshot")
    queries = [json.loads(line) for line in (trap_world / "zeroshot" / "test.jsonl").read_text().splitlines()]
    masks = object_masks(trap_world, [q["image"] for q in queries])
    regions = {q["id"]: masks[q["image"]] for q in queries}
    result = pooling_focus("built", bench, str(tmp_path), regions=regions, query_types=_trap_groups(trap_world),
                           gallery=3, searcher=LookingModel(where))
    overall = result["rows"][-1]
    assert overall["query type"] == "all" and overall["queries"] == len(bench.queries)
    assert [r["query type"] for r in result["rows"][:-1]] == ["generic", "misleading", "specific"]
    if where == "object":
        assert overall["on object"] > 2 * overall["object area"] > 0
        assert overall["on object"] > 2 * overall["same region elsewhere"]
        assert overall["entropy"] < 0.9
    elif where == "everywhere":
        assert overall["on object"] == pytest.approx(overall["object area"])
        assert overall["same region elsewhere"] == pytest.approx(overall["object area"])
        assert overall["entropy"] == pytest.approx(1.0)
    else:
        assert overall["on object"] < overall["object area"] < overall["same region elsewhere"]
    assert (tmp_path / "pooling_focus.png").stat().st_size > 2000
    assert (tmp_path / "pooling_focus_gallery.png").stat().st_size > 2000
