"""The generated world's text-dominance trap (`generate(..., questions="trap")`) and its object masks
(`object_masks`): the pictures, passages and knowledge base stay those of the generic world."""
from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from mire_jax.demo.world import generate, object_masks
from mire_jax.demo.world.attributes import BACKGROUNDS
from mire_jax.demo.world.text import KINDS, TRAP_TYPES, ZEROSHOT_QUESTIONS
from mire_jax.vid2r.dialogues import Triple
from mire_jax.vid2r.filtering import ResponseFilter

SIZES = dict(n_train_entities=24, views_per_train_entity=1, n_zeroshot_entities=30, n_distractors=12,
             n_seen_queries=4, n_extra_caption_images=4, text_pairs_per_entity=1)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("worlds")
    generate(root / "generic", seed=5, progress=False, **SIZES)
    generate(root / "trap", seed=5, progress=False, questions="trap", **SIZES)
    return root / "generic", root / "trap"


def _jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def test_trap_world_keeps_pictures_and_passages_and_changes_only_the_questions(worlds):
    generic, trap = worlds
    g, t = (json.loads((w / "manifest.json").read_text()) for w in worlds)
    assert t["images"]["sha256"] == g["images"]["sha256"] and t["questions"] == "trap" and "questions" not in g
    for name in ("knowledge_base", "zeroshot_corpus", "seen_corpus", "captions", "text_pairs", "entities"):
        assert t["files"][name]["sha256"] == g["files"][name]["sha256"], name
    queries_g, queries_t = _jsonl(generic / "zeroshot/test.jsonl"), _jsonl(trap / "zeroshot/test.jsonl")
    entities = {e["entity_id"]: e for e in _jsonl(trap / "meta/entities.jsonl")}
    seen = set()
    for qg, qt in zip(queries_g, queries_t):
        assert {k: qg[k] for k in ("id", "image", "document_id", "answer")} == \
            {k: qt[k] for k in ("id", "image", "document_id", "answer")}
        kind = entities[qt["document_id"]]["facts"]["kind"]
        seen.add(qt["trap"])
        expected = {"specific": kind, "generic": "object"}.get(qt["trap"], qt["named"])
        assert qt["named"] == expected and qt["question"] == qg["question"].replace("object", expected)
        if qt["trap"] == "misleading":
            assert qt["named"] in KINDS and qt["named"] != kind
    counts = [sum(q["trap"] == t for q in queries_t) for t in TRAP_TYPES]
    assert max(counts) - min(counts) <= 1 and seen == set(TRAP_TYPES)  # equal shares
    assert all(q["question"] in ZEROSHOT_QUESTIONS.values() for q in queries_g)
    # a generic world of the same seed is unchanged by the trap option existing (same bytes on a second write)
    assert generate(generic, seed=5, progress=False, **SIZES)["files"] == g["files"]


def test_trap_dialogues_name_the_kind_and_survive_the_filter(worlds):
    _, trap = worlds
    entities = {e["entity_id"]: e for e in _jsonl(trap / "meta/entities.jsonl")}
    rule = ResponseFilter()
    for record in json.loads((trap / "llava/synthetic_dialogues.json").read_text()):
        kind = entities[record["id"].split("_")[0]]["facts"]["kind"]
        turns = record["conversations"]
        for human, gpt in zip(turns[::2], turns[1::2]):
            question = human["value"].replace("<image>\n", "")
            assert "object" not in question and re.search(rf"\b{kind}\b", question), (kind, question)
            assert rule(Triple(record["id"], 0, record["image"], question, gpt["value"])) is not None


def test_questions_style_is_checked_and_part_of_the_identity(tmp_path, capsys):
    from mire_jax.demo.world import __main__ as cli
    assert cli.main(["--out", str(tmp_path / "cli"), "--quiet", "--questions", "trap", "--n-train-entities", "24",
                     "--n-zeroshot-entities", "6", "--n-distractors", "6", "--n-extra-caption-images", "0",
                     "--n-seen-queries", "2", "--image-size", "32"]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "cli" / "manifest.json").read_text())["questions"] == "trap"
    with pytest.raises(ValueError, match="questions must be one of"):
        generate(tmp_path / "x", seed=0, progress=False, questions="tricky", **SIZES)
    generate(tmp_path / "w", seed=0, progress=False, **SIZES)
    manifest = generate(tmp_path / "w", seed=0, progress=False, questions="trap", **SIZES)
    assert manifest["questions"] == "trap"  # not taken for the generic world already there


def test_object_masks_cover_the_painted_object_and_nothing_else(worlds):
    generic, _ = worlds
    records = {r["image"]: r for r in _jsonl(generic / "meta/images.jsonl")}
    masks = object_masks(generic)
    assert set(masks) == set(records)
    for path, mask in list(masks.items())[:20]:
        assert mask.shape == (64, 64) and mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1
        pixels = np.asarray(Image.open(generic / "images" / path), float)
        background = np.asarray(BACKGROUNDS[records[path]["appearance"]["background"]], float)
        off = np.abs(pixels[mask == 0] - background).mean()
        on = np.abs(pixels[mask == 1] - background).mean()
        assert off < 10 and on > 40, (path, off, on)  # pixel noise outside, the object's colours inside
        assert 0.05 < mask.mean() < 0.7
    one = next(iter(masks))
    assert set(object_masks(generic, [one])) == {one}
    with pytest.raises(KeyError, match="no picture 'nope.png'"):
        object_masks(generic, ["nope.png"])


def test_object_masks_refuse_a_folder_whose_views_differ(tmp_path):
    generate(tmp_path / "w", seed=1, progress=False, **SIZES)
    meta = tmp_path / "w" / "meta" / "images.jsonl"
    rows = _jsonl(meta)
    rows[0]["view"]["rotation_deg"] += 1
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="recorded view differs"):
        object_masks(tmp_path / "w")
