"""Queries that the drawn calibration queries cannot vouch for (a few noisy words) are warned about when they are
searched, and the drawn queries come in their kinds, easy to hard (the reported recall against held-out queries is
checked in test_index_calibration.py)."""
import dataclasses
import warnings

import numpy as np
import pytest

from mire_jax.index import LateInteractionIndex
from mire_jax.index import calibrate as calibrate_lib
from mire_jax.index.synthetic import SHAPES, SyntheticCorpus, SyntheticSpec

SHORT64 = dataclasses.replace(SHAPES["short64"], num_passages=2000, vocab_size=8000, num_topics=160)
# Small corpora: exact search would be the cheaper, and the approximate search is what is under test.
CONFIG = {"mode": "scann", "exact_if_cheaper": False}


def _recalls(found, truth) -> dict:
    return {f"recall@{k}": float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))
            for k in (10, 100)}


def _build(spec):
    corpus = SyntheticCorpus(spec, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = LateInteractionIndex.build(corpus.embeddings(), corpus.lengths, list(range(spec.num_passages)), CONFIG,
                                           progress=False)
    return corpus, index, [str(w.message) for w in caught if "calibration" in str(w.message)]


def test_queries_of_a_few_noisy_words_are_warned_about():
    """Real queries of 8 tokens, a third from the source passage, twice as noisy as the passages: the long drawn
    queries cannot vouch for them, and the short ones measured beside them say so when such queries are searched."""
    spec = SyntheticSpec(num_passages=3000, mean_length=16, dim=48, vocab_size=10_000, num_common=350, num_topics=900,
                         topic_vocab=130, common_fraction=0.34, context_noise=0.66, topic_weight=0.3,
                         passage_weight=0.05, query_tokens=8, query_from_source=0.34, second_topic_fraction=0.34,
                         length_distribution="lognormal", query_noise=1.4, query_common_fraction=0.28)
    corpus, index, _ = _build(spec)
    short = index.calibration["short_queries"]
    assert not short["reaches_targets"] and short["below_tokens"] == 16
    assert "searching queries of fewer than 16 tokens warns" in index.calibration["trust"]["note"]
    queries, mask, _ = corpus.queries(96, seed=1000)
    truth, _ = index.search_positions(queries, mask, 100, exact=True)
    with pytest.warns(UserWarning, match="96 of 96 queries have fewer than 16 tokens: on short queries"):
        found, _ = index.search_positions(queries, mask, 100)
    measured = _recalls(found, truth)
    assert min(measured["recall@10"] - 0.99, measured["recall@100"] - 0.95) < 0  # they do miss the targets
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per index
        index.search_positions(queries[:8], mask[:8], 100)


def test_the_kinds_of_drawn_queries():
    corpus = SyntheticCorpus(SHORT64, seed=1)
    index = LateInteractionIndex.build(corpus.embeddings(), corpus.lengths, list(range(2000)),
                                       {"mode": "scann", "calibrate": False}, progress=False)
    q, mask, kinds = calibrate_lib.draw_query_mix(index, 40, 32, seed=3)
    assert kinds == list(calibrate_lib.QUERY_KINDS) * 10 and q.shape == (40, 32, 64)
    kept = mask.sum(1)
    assert (kept >= 24).all()
    np.testing.assert_allclose(np.linalg.norm(q[mask], axis=1), 1.0, atol=1e-5)
    stored = np.asarray(index.embeddings, np.float32)
    best = {name: np.median((q[np.array(kinds) == name][mask[np.array(kinds) == name]] @ stored.T).max(1))
            for name in calibrate_lib.QUERY_KINDS}
    assert best["noisy"] < best["near"] - 0.1  # mostly noise around the source
    short, short_mask = calibrate_lib.draw_queries(index, 12, 32, seed=4, kind="short")
    assert (short_mask.sum(1) >= 4).all() and (short_mask.sum(1) <= 8).all()
    with pytest.raises(ValueError, match="calibration_kinds"):
        index.calibrate(calibration_kinds=("nearby",))
