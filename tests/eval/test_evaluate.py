"""Zero-shot evaluation end to end on the fixtures, with a tiny random model and the real BERT vocabulary."""
import dataclasses
import itertools
import json
import pathlib
import shutil
import string
import subprocess
import sys

import numpy as np
import pytest

from mire_jax.eval import runner
from mire_jax.eval.benchmarks import load_benchmark
from mire_jax.index import encoded_corpus
from mire_jax.retrieval.model_folder import load_model
from mire_jax.tokenization.colbert import ColbertTokenizer

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"

ROOT = FIXTURES.parents[1]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


def _ranked(ranking: dict) -> list:
    """Passage ids by descending score."""
    return sorted(ranking, key=ranking.get, reverse=True)


def _hit_rate(run, gold, k):
    return np.mean([any(p in gold[q] for p in _ranked(r)[:k]) for q, r in run.items()])


def _mrr(run, gold, k):
    return np.mean([next((1 / (i + 1) for i, p in enumerate(_ranked(r)[:k]) if p in gold[q]), 0.0)
                    for q, r in run.items()])


def test_modes_and_ablations_on_remuq(model_dir, tmp_path):
    config, params = load_model(model_dir)
    tok = ColbertTokenizer.from_pretrained(model_dir / "vocab.txt")
    bench = load_benchmark("remuq", FIXTURES / "remuq")
    runs = {}
    for mode, ablation in [("mire", None), ("text_only", None), ("mire", "shuffle"), ("mire", "blank")]:
        settings = runner.EvalSettings(mode=mode, image_ablation=ablation, k=5, query_maxlen=16,
                                           doc_maxlen=48, batch_size=4, index={"mode": "exact"})
        runs[(mode, ablation)] = runner.retrieve(bench, runner.make_searcher(config, params, tok, settings), str(tmp_path), settings)
    for run in runs.values():
        assert set(run) == {q.qid for q in bench.queries}
        assert all(len(r) == min(5, len(bench.corpus)) for r in run.values())
    # the text-only query ignores the image; the ablations change the image, hence the scores
    for a, b in itertools.combinations([("mire", None), ("mire", "shuffle"), ("mire", "blank")], 2):
        assert runs[a] != runs[b], (a, b)
    text = runner.EvalSettings(mode="text_only", image_ablation="shuffle", k=5, query_maxlen=16, doc_maxlen=48,
                                   batch_size=4, index={"mode": "exact"})
    assert runner.retrieve(bench, runner.make_searcher(config, params, tok, text), str(tmp_path), text) == runs[("text_only", None)]
    # one gold passage per query: published R@k (a hit rate) and textbook R@k are both the hit rate
    run = runs[("mire", None)]
    gold = {q.qid: q.gold_pids for q in bench.queries}
    assert all(len(g) == 1 for g in gold.values()) and len({tuple(_ranked(r)) for r in run.values()}) > 1
    scores = runner.score(bench, run)
    for protocol in ("published", "textbook"):
        assert scores[protocol]["protocol"] == protocol and scores[protocol]["run_protocol"] == "published"
        for k in (1, 5):
            assert scores[protocol][f"R@{k}"] == pytest.approx(_hit_rate(run, gold, k))
        assert scores[protocol]["MRR@5"] == pytest.approx(_mrr(run, gold, 5))
    # the corpus was encoded once (per model and protocol) and reused
    assert len(list(tmp_path.glob("remuq_test/model_*"))) == 1


def test_scores_of_a_hand_made_run():
    """Gold passages at known ranks, worked out by hand. Query 1 has two gold passages (ranks 3 and 6), so the
    published R@5 (any gold passage in the top 5) and the textbook R@5 (the share of gold passages found) differ."""
    bench = load_benchmark("remuq", FIXTURES / "remuq")
    two_gold = [dataclasses.replace(q, gold_pids=["7741", "7742"]) if q.qid == "1" else q for q in bench.queries]
    bench = dataclasses.replace(bench, queries=two_gold)
    orders = {"0": ["5012", "5013", "5020", "6100", "7741", "7742", "8803", "9150"],   # gold 5012 at rank 1
              "1": ["5012", "5013", "7741", "5020", "6100", "7742", "8803", "9150"],   # 7741 at 3, 7742 at 6
              "2": ["5012", "5013", "6100", "7741", "7742", "8803", "5020", "9150"]}   # 5020 at rank 7
    run = {qid: {pid: 1.0 - rank / 10 for rank, pid in enumerate(order)} for qid, order in orders.items()}
    scores = runner.score(bench, run, run_protocol="textbook")
    assert list(scores) == ["textbook", "published"]  # the run's own protocol first
    assert {s["run_protocol"] for s in scores.values()} == {"textbook"}
    same = {"P@1": 1 / 3, "MRR@5": (1 + 1 / 3 + 0) / 3, "P@5": (1 / 5 + 1 / 5 + 0) / 3, "R@1": 1 / 3, "R@10": 1.0}
    for protocol in ("published", "textbook"):
        for name, value in same.items():
            assert scores[protocol][name] == pytest.approx(value), (protocol, name)
    assert scores["published"]["R@5"] == pytest.approx((1 + 1 + 0) / 3)
    assert scores["textbook"]["R@5"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert scores["textbook"]["Hit@5"] == pytest.approx((1 + 1 + 0) / 3)


def _token_counts(vocab: list[str], tok: ColbertTokenizer, texts, max_len: int):
    """Per passage, counted from the token strings: its tokens that are not padding ([CLS] [D] pieces [SEP]),
    and those of them that are not punctuation."""
    non_padding, non_punctuation = [], []
    for pieces in tok.wordpieces(texts):
        pieces = pieces[:max_len - 3]
        non_padding.append(len(pieces) + 3)
        non_punctuation.append(len(pieces) + 3 - sum(vocab[i] in string.punctuation for i in pieces))
    return non_padding, non_punctuation


def test_each_protocol_indexes_its_own_passage_tokens(model_dir, tmp_path):
    """published: every non-padding token is stored (MIRe's indexer); textbook: punctuation is dropped too
    (ColBERT). The two encoded corpora live in two cache folders."""
    config, params = load_model(model_dir)
    tok = ColbertTokenizer.from_pretrained(model_dir / "vocab.txt")
    bench = load_benchmark("remuq", FIXTURES / "remuq")
    stored = {}
    for protocol in runner.PROTOCOLS:
        settings = runner.EvalSettings(protocol=protocol, doc_maxlen=48, batch_size=4, index={"mode": "exact"})
        index = runner.corpus_index(bench, runner.make_searcher(config, params, tok, settings), str(tmp_path), settings)
        (folder,) = tmp_path.glob(f"remuq_test/model_*_d48_{settings.passage_keep}")
        _, lengths, ids = encoded_corpus.read_corpus(folder / "shards")
        assert ids == [pid for pid, _ in bench.corpus] and index.num_passages == len(ids)
        stored[protocol] = lengths.tolist()
    assert len(list(tmp_path.glob("remuq_test/model_*"))) == 2
    vocab = (model_dir / "vocab.txt").read_text().splitlines()
    non_padding, non_punctuation = _token_counts(vocab, tok, [text for _, text in bench.corpus], 48)
    assert stored == {"published": non_padding, "textbook": non_punctuation}
    assert non_padding != non_punctuation  # the fixture's passages do have punctuation


def test_generic_question_ablation(model_dir, tmp_path):
    queries = [type("Q", (), {"question": f"question {i}"})() for i in range(3)]
    generic = runner.EvalSettings(question_ablation="generic", generic_question="What is it?")
    assert runner.query_questions(queries, generic) == ["What is it?"] * 3
    assert runner.query_questions(queries, runner.EvalSettings()) == ["question 0", "question 1", "question 2"]
    assert generic.run_name == "mire_question_generic_published"
    assert dataclasses.replace(generic, image_ablation="shuffle").run_name == "mire_shuffle_question_generic_published"
    with pytest.raises(ValueError, match="question_ablation must be one of"):
        runner.EvalSettings(question_ablation="empty")
    with pytest.raises(ValueError, match="generic_question is empty"):
        runner.EvalSettings(question_ablation="generic", generic_question=" ")
    # end to end: a text-only model asked one question for every query ranks every query the same way, while the
    # image keeps MIRe's queries apart
    config, params = load_model(model_dir)
    tok = ColbertTokenizer.from_pretrained(model_dir / "vocab.txt")
    bench = load_benchmark("remuq", FIXTURES / "remuq")
    runs = {}
    for mode in ("text_only", "mire"):
        for ablation in (None, "generic"):
            settings = runner.EvalSettings(mode=mode, question_ablation=ablation, k=5, query_maxlen=16,
                                           doc_maxlen=48, batch_size=4, index={"mode": "exact"})
            runs[mode, ablation] = runner.retrieve(bench, runner.make_searcher(config, params, tok, settings),
                                                   str(tmp_path), settings)
    assert len({tuple(_ranked(r)) for r in runs["text_only", "generic"].values()}) == 1
    assert len({tuple(_ranked(r)) for r in runs["text_only", None].values()}) > 1
    assert len({tuple(_ranked(r)) for r in runs["mire", "generic"].values()}) > 1
    assert runs["mire", "generic"] != runs["mire", None]


def test_shuffle_is_a_derangement():
    queries = list(range(7))
    shuffled = runner.query_images(queries, runner.EvalSettings(image_ablation="shuffle"))
    assert sorted(shuffled) == queries and all(a != b for a, b in zip(queries, shuffled))


def _evaluate_command(model_dir, workdir, *extra):
    return subprocess.run([sys.executable, str(ROOT / "eval" / "evaluate.py"), "--config",
                           str(ROOT / "configs" / "eval.py") + ":okvqa_gs", f"--config.root={FIXTURES / 'okvqa_gs'}",
                           "--config.index.mode=exact", "--config.query_maxlen=16", "--config.doc_maxlen=48",
                           "--checkpoint", str(model_dir), "--workdir", str(workdir), *extra],
                          capture_output=True, text=True, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def test_command_line(model_dir, tmp_path):
    folder = tmp_path / "okvqa_gs_test"
    bench = load_benchmark("okvqa_gs", FIXTURES / "okvqa_gs")
    for protocol, flags, passage_keep in [("published", [], "padding_only"),
                                          ("textbook", ["--protocol", "textbook"], "punctuation_and_padding")]:
        out = _evaluate_command(model_dir, tmp_path, *flags)
        assert out.returncode == 0, out.stderr[-3000:]
        results = json.loads((folder / f"results_mire_{protocol}.json").read_text())
        assert results["protocol"] == protocol and results["passage_keep"] == passage_keep
        metrics = results["metrics"]
        assert list(metrics)[0] == protocol and {m["run_protocol"] for m in metrics.values()} == {protocol}
        assert metrics["published"]["relevance"] == "whole_word_or_substring"
        # the metrics are those of the run written next to them
        run = json.loads((folder / f"run_mire_{protocol}.json").read_text())
        assert metrics == runner.score(bench, run, run_protocol=protocol)
        assert f"mire_{protocol} ({protocol} metrics)" in out.stdout
    # one encoded corpus per protocol, next to one results file per protocol
    assert sorted(p.name.split("_d48_")[1] for p in folder.glob("model_*")) == ["padding_only",
                                                                                "punctuation_and_padding"]
    assert sorted(p.name for p in folder.glob("results_*")) == ["results_mire_published.json",
                                                                 "results_mire_textbook.json"]


def test_attention_maps_command(model_dir, tmp_path):
    image = FIXTURES / "aokvqa" / "images" / "coco" / "val2017" / "000000378284.jpg"
    out = subprocess.run([sys.executable, str(ROOT / "eval" / "attention_maps.py"), "--checkpoint", str(model_dir),
                          "--image", str(image), "--question", "What is on the table?", "--out",
                          str(tmp_path / "att.png")], capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "att.png").stat().st_size > 2000


def test_patch_attention_rows_sum_to_one(model_dir):
    from PIL import Image

    from mire_jax.retrieval.searcher import Searcher
    searcher = Searcher.load(model_dir)
    config = searcher.config
    maps = searcher.pooling_maps(Image.new("RGB", (40, 50), (200, 10, 10)), "a red picture")
    assert maps.shape == (config.head.num_heads, 4, 4)
    np.testing.assert_allclose(maps.reshape(maps.shape[0], -1).sum(-1), 1.0, rtol=1e-5)


@pytest.fixture(scope="module")
def evaluate_entry():
    """eval/evaluate.py as a module (imported once: it defines absl flags)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("evaluate_entry", ROOT / "eval" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,fixture,images", [("okvqa_gs", "okvqa_gs", "images"), ("remuq", "remuq", "webqa"),
                                                 ("fashioniq", "fashioniq", "images")])
def test_image_root_override_moves_the_images(tmp_path, evaluate_entry, name, fixture, images):
    from configs.eval import get_config

    evaluate = evaluate_entry
    moved = tmp_path / "elsewhere"
    shutil.copytree(FIXTURES / fixture / images, moved)
    data = tmp_path / fixture
    shutil.copytree(FIXTURES / fixture, data, ignore=shutil.ignore_patterns(images))
    cfg = get_config(name)
    assert evaluate.loader_overrides(cfg) == {}
    with pytest.raises(Exception):  # the images are no longer where the loader looks by default
        load_benchmark(cfg.benchmark, data, **evaluate.loader_overrides(cfg)).queries[0].image.load()
    cfg.image_root = str(moved)
    bench = load_benchmark(cfg.benchmark, data, **evaluate.loader_overrides(cfg))
    loaded = [q.image.load() for q in bench.queries[:3]]
    assert all(im.size[0] > 0 for im in loaded)


@pytest.mark.parametrize("name", ["evqa", "infoseek"])
def test_m2kr_searches_the_published_test_passages(evaluate_entry, name):
    """The published evaluation loads `test_passages` for every M2KR query split; the config says so and the
    loader follows it (here: the fixture's valid queries searched over its test passages)."""
    from configs.eval import get_config

    cfg = get_config(name)
    assert evaluate_entry.loader_overrides(cfg) == {"passages_split": "test_passages"}
    if name == "evqa":
        valid = load_benchmark(cfg.benchmark, FIXTURES / "m2kr", split="valid", **evaluate_entry.loader_overrides(cfg))
        own = load_benchmark(cfg.benchmark, FIXTURES / "m2kr", split="valid")
        test = load_benchmark(cfg.benchmark, FIXTURES / "m2kr", split="test")
        assert valid.corpus.source.endswith("test_passages") and own.corpus.source.endswith("valid_passages")
        assert list(valid.corpus) == list(test.corpus)


def test_query_rows_ablations_drop_the_intended_rows(model_dir, tmp_path):
    """The paper's inference ablations: "visual" searches with the pooled tokens [E_g ; E_m] alone (w/o E_t), "text"
    with the text tokens T alone (w/o E_g & E_m). Their rows are those rows of the full query, bit for bit, each
    search scores exactly the MaxSim of the kept rows, and the runs differ from the full query's."""
    from mire_jax.scoring import maxsim

    config, params = load_model(model_dir)
    tok = ColbertTokenizer.from_pretrained(model_dir / "vocab.txt")
    bench = load_benchmark("remuq", FIXTURES / "remuq")
    settings = {rows: runner.EvalSettings(query_rows=rows, k=8, query_maxlen=16, doc_maxlen=48, batch_size=4,
                                          index={"mode": "exact"}) for rows in ("all", "visual", "text")}
    searcher = runner.make_searcher(config, params, tok, settings["all"])
    queries = {rows: runner.encode_queries(bench.queries, searcher, s) for rows, s in settings.items()}
    num_visual = config.head.num_tokens + config.head.num_heads
    (full, full_mask), (visual, visual_mask), (text, text_mask) = queries.values()
    assert visual.shape[1] == num_visual and text.shape[1] == full.shape[1] - num_visual == 16
    np.testing.assert_array_equal(visual, full[:, :num_visual])
    np.testing.assert_array_equal(visual_mask, full_mask[:, :num_visual])
    assert visual_mask.all()
    np.testing.assert_array_equal(text, full[:, num_visual:])
    np.testing.assert_array_equal(text_mask, full_mask[:, num_visual:])
    # the text rows of an image query are the text-only query's (the text never sees the image), up to float error
    text_only = runner.EvalSettings(mode="text_only", query_maxlen=16, doc_maxlen=48, batch_size=4)
    plain, plain_mask = runner.encode_queries(bench.queries, searcher, text_only)
    np.testing.assert_array_equal(plain_mask, text_mask)
    np.testing.assert_allclose(plain, text, atol=1e-5)

    runs = {rows: runner.retrieve(bench, runner.make_searcher(config, params, tok, s), str(tmp_path), s)
            for rows, s in settings.items()}
    assert runs["visual"] != runs["all"] and runs["text"] != runs["all"]
    docs = searcher.encode_passages([text for _, text in bench.corpus])
    width = max(len(d) for d in docs)
    d = np.stack([np.pad(x.astype(np.float32), ((0, width - len(x)), (0, 0))) for x in docs])
    d_mask = np.stack([np.arange(width) < len(x) for x in docs])
    pids = [pid for pid, _ in bench.corpus]
    for rows, (q, q_mask) in queries.items():
        expected = np.asarray(maxsim(q * q_mask[..., None], d, d_mask))
        for qi, query in enumerate(bench.queries):
            for pid, score in runs[rows][query.qid].items():  # int8-stored tokens: within 0.2% of float32
                assert score == pytest.approx(float(expected[qi, pids.index(pid)]), rel=2e-3, abs=2e-3), (rows, pid)
    names = {s.run_name for s in settings.values()}
    assert names == {"mire_published", "mire_visual_rows_published", "mire_text_rows_published"}
    with pytest.raises(ValueError, match="needs mode 'mire'"):
        runner.EvalSettings(mode="text_only", query_rows="visual")
    with pytest.raises(ValueError, match="query_rows must be one of"):
        runner.EvalSettings(query_rows="pooled")
