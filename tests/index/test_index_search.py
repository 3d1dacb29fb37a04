"""LateInteractionIndex: recall of the ScaNN path against exact search, exact mode, save/load, refusals."""
import shutil

import numpy as np
import pytest

from mire_jax.index import IndexConfig, IndexFileError, LateInteractionIndex, exact_search
from mire_jax.index.synthetic import SyntheticCorpus, SyntheticSpec

SPEC = SyntheticSpec(num_passages=2000, mean_length=32, vocab_size=8000, num_common=100, num_topics=150,
                     topic_vocab=80)
SCANN = IndexConfig(mode="scann", rerank_passages=200, calibrate=False)  # rule-of-thumb search settings


@pytest.fixture(scope="module")
def corpus():
    c = SyntheticCorpus(SPEC, seed=3)
    queries, mask, sources = c.queries(48, seed=4)
    embeddings = c.embeddings()
    truth, truth_scores = exact_search(embeddings, c.offsets, queries, mask, 100, progress=False)
    return c, embeddings, queries, mask, truth, truth_scores


@pytest.fixture(scope="module")
def scann_index(corpus):
    c, embeddings, *_ = corpus
    return LateInteractionIndex.build(embeddings, c.lengths, list(range(SPEC.num_passages)), SCANN, progress=False)


@pytest.fixture(scope="module")
def saved(scann_index, tmp_path_factory):
    folder = tmp_path_factory.mktemp("index")
    scann_index.save(folder)
    return folder


def test_scann_recall_at_10_against_exact(corpus, scann_index):
    _, _, queries, mask, truth, truth_scores = corpus
    assert scann_index.config.mode == "scann" and scann_index.searcher is not None
    ids, scores = scann_index.search(queries, mask, k=100)
    recall10 = np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(ids, truth)])
    assert recall10 >= 0.98  # against float16 exact search: the stored int8 tokens cost little
    # The final scores are exact MaxSim over the stored tokens: every returned passage scores as the brute force
    # over the decoded store does.
    stored = np.asarray(scann_index.embeddings)
    c = corpus[0]
    brute = [sum((stored[c.offsets[p]:c.offsets[p + 1]] @ q[m].T).max(axis=0)) for p, q, m in
             zip(ids[:, 0], queries, mask)]
    np.testing.assert_allclose(scores[:, 0], brute, rtol=1e-5, atol=1e-4)


def test_candidates_are_a_real_first_stage(corpus, scann_index):
    """The first stage must narrow the corpus (not hand everything to the exact rerank)."""
    _, _, queries, mask, truth, _ = corpus
    candidates = scann_index.candidates(queries[:8], mask[:8], 150)
    assert all(len(c) <= 150 for c in candidates)
    hit = np.mean([np.isin(t[:10], c).mean() for t, c in zip(truth[:8], candidates)])
    assert hit >= 0.95


def test_exact_mode_equals_numpy_brute_force():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 20, size=150)
    embeddings = rng.standard_normal((int(lengths.sum()), 16)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    queries = rng.standard_normal((5, 7, 16)).astype(np.float32)
    mask = np.ones((5, 7), bool)
    mask[1, 4:] = False
    mask[3, 1:] = False
    index = LateInteractionIndex.build(embeddings, lengths, [f"doc{i}" for i in range(150)],
                                       {"mode": "exact", "exact_passages_per_block": 32}, progress=False)
    ids, scores = index.search(queries, mask, k=20)
    stored = np.asarray(index.embeddings, np.float64)  # the tokens as stored (int8 codes, a scale per token)
    assert np.abs(stored - embeddings).max() <= np.abs(embeddings).max(axis=1).max() / 254 + 1e-6
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    brute = np.array([[sum((stored[offsets[p]:offsets[p + 1]] @ q[m].T).max(axis=0))
                       for p in range(150)] for q, m in zip(queries.astype(np.float64), mask)])
    order = np.argsort(-brute, axis=1)[:, :20]
    assert ids.tolist() == [[f"doc{p}" for p in row] for row in order]
    np.testing.assert_allclose(scores, np.take_along_axis(brute, order, axis=1), rtol=1e-5, atol=1e-5)


def test_exact_mode_pads_when_k_exceeds_corpus():
    embeddings = np.eye(4, dtype=np.float32)
    index = LateInteractionIndex.build(embeddings, [1, 3], [10, 20], {"mode": "exact"}, progress=False)
    ids, scores = index.search(np.eye(4, dtype=np.float32)[None, 1:3], np.ones((1, 2), bool), k=4)
    assert ids.tolist() == [[20, 10, -1, -1]]
    assert np.isneginf(scores[0, 2:]).all()


def test_auto_mode_follows_corpus_size():
    assert IndexConfig().resolve(1_000).mode == "exact"
    big = IndexConfig().resolve(6_400_000, 128, 3_200_000)
    assert big.mode == "scann" and big.num_leaves == 2048 and big.dims_per_block == 4
    assert big.leaves_to_search is None  # left to calibration
    assert big.with_default_search(3_200_000).leaves_to_search >= 60
    assert IndexConfig(num_leaves=100, leaves_to_search=7).resolve(6_400_000).with_default_search(
        6_400_000).leaves_to_search == 7
    assert IndexConfig().resolve(10**6, dim=64).dims_per_block == 2  # 16 bytes of codes per token
    # On accelerators whose memory holds the stored tokens, "auto" is the exact search, whatever the size.
    assert IndexConfig().resolve(6_400_000, 128, 3_200_000, accelerators_hold=True).mode == "exact"
    assert IndexConfig(mode="scann").resolve(1_000, accelerators_hold=True).mode == "scann"
    from mire_jax.index import build
    assert not build.accelerators_hold(10**6, 128, IndexConfig())  # CPU devices: the choice stays by size


def test_save_load_gives_identical_results(corpus, scann_index, saved):
    _, _, queries, mask, *_ = corpus
    loaded = LateInteractionIndex.load(saved)
    assert isinstance(loaded.shards[0].store.codes.base, np.memmap)  # stored tokens stay on disk (a view of the map)
    assert loaded.config == scann_index.config and loaded.ids == scann_index.ids
    ids_a, scores_a = scann_index.search(queries, mask, k=50)
    ids_b, scores_b = loaded.search(queries, mask, k=50)
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(scores_a, scores_b)


@pytest.mark.parametrize("name", ["shard_000000/tokens.npy", "shard_000000/scann/hashed_dataset.packed.npy",
                                  "shard_000000/ids.json", "index.json"])
def test_altered_index_file_is_refused_by_name(saved, tmp_path, name):
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    path = copy / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match=name.replace("/", ".")):
        LateInteractionIndex.load(copy)


@pytest.mark.parametrize("name", ["shard_000000/offsets.npy", "shard_000000/scales.npy",
                                  "shard_000000/scann/ah_codebook.pb", "shard_000000/shard.json", "manifest.json"])
def test_missing_index_file_is_refused_by_name(saved, tmp_path, name):
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    (copy / name).unlink()
    with pytest.raises(IndexFileError, match=name.replace("/", ".") + ": missing"):
        LateInteractionIndex.load(copy)


def test_build_rejects_inconsistent_inputs():
    embeddings = np.ones((5, 4), np.float32)
    with pytest.raises(ValueError, match="lengths sum to 4"):
        LateInteractionIndex.build(embeddings, [2, 2], ["a", "b"], progress=False)
    with pytest.raises(ValueError, match="not unique"):
        LateInteractionIndex.build(embeddings, [2, 3], ["a", "a"], progress=False)
    with pytest.raises(ValueError, match="mode"):
        LateInteractionIndex.build(embeddings, [2, 3], ["a", "b"], {"mode": "fast"}, progress=False)
