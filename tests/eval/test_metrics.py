"""mire_jax.eval.metrics against the reference implementations: the textbook metrics against ranx and
pytrec_eval on tie-free runs and against our own tie rule (retrieval rank) on ties; the published protocol
against MIRe's pytrec_eval loop; the answer rules against plain versions of the published matchers."""
import random
import re

import numpy as np
import pytest

from mire_jax.eval import metrics

ranx = pytest.importorskip("ranx")
pytrec_eval = pytest.importorskip("pytrec_eval")

CUTOFFS = (1, 3, 5, 10, 20, 100)
RANX_METRICS = [f"{m}@{k}" for m in metrics.SUPPORTED_METRICS for k in CUTOFFS]
RANX_METRICS += list(metrics.SUPPORTED_METRICS) + ["recall@5-l2", "mrr-l2", "precision@3-l2", "hit_rate@10-l2"]


def _random_case(seed, num_queries=80, ties=False):
    """Random qrels/run with graded relevance, queries without relevant docs and long rankings; with `ties`,
    few distinct scores (many ties), otherwise distinct scores (distinct in float32 too, as trec_eval reads
    them)."""
    rng = random.Random(seed)
    qrels, run = {}, {}
    for q in range(num_queries):
        qid = f"q{q}"
        pool = list(dict.fromkeys(f"d{rng.randrange(400)}" for _ in range(rng.randint(1, 60))))
        if ties:
            values = [rng.randint(0, 3) / 4 for _ in pool]
        else:
            values = [v / 10**6 for v in rng.sample(range(10**6), len(pool))]
        run[qid] = dict(zip(pool, values))
        judged = {pid: rng.choice([0, 1, 1, 2]) for pid in rng.sample(pool, k=min(len(pool), rng.randint(0, 5)))}
        for _ in range(rng.randint(0, 3)):  # judged but never retrieved
            judged[f"unretrieved{rng.randrange(1000)}"] = rng.choice([0, 1, 2])
        qrels[qid] = judged or {"nothing_relevant": 0}
    return qrels, run


def _ties_broken_by_rank(run):
    """The same rankings with distinct scores: descending score, tied documents in the order the run lists
    them (Python's sort is stable), scored n, n-1, ..., 1."""
    untied = {}
    for qid, ranking in run.items():
        ordered = sorted(ranking, key=lambda pid: -ranking[pid])
        untied[qid] = {pid: float(len(ordered) - i) for i, pid in enumerate(ordered)}
    return untied


def _with_pytrec_eval(qrels, run, level):
    """`evaluate`'s metrics at relevance `level`, per query from trec_eval's measures, then averaged."""
    cutoffs = ",".join(map(str, CUTOFFS))
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"P.{cutoffs}", f"recall.{cutoffs}", f"success.{cutoffs}",
                                                       "recip_rank"}, relevance_level=level)
    per_query = evaluator.evaluate(run)
    mean = lambda values: float(np.mean(list(values)))
    suffix = "" if level == 1 else f"-l{level}"
    out = {f"mrr{suffix}": mean(v["recip_rank"] for v in per_query.values())}
    for k in CUTOFFS:
        out[f"precision@{k}{suffix}"] = mean(v[f"P_{k}"] for v in per_query.values())
        out[f"hits@{k}{suffix}"] = mean(v[f"P_{k}"] * k for v in per_query.values())
        out[f"recall@{k}{suffix}"] = mean(v[f"recall_{k}"] for v in per_query.values())
        out[f"hit_rate@{k}{suffix}"] = mean(v[f"success_{k}"] for v in per_query.values())
        top_k = {q: dict(sorted(r.items(), key=lambda item: -item[1])[:k]) for q, r in run.items()}
        per_query_top_k = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}, relevance_level=level).evaluate(top_k)
        out[f"mrr@{k}{suffix}"] = mean(v["recip_rank"] for v in per_query_top_k.values())
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_matches_ranx_on_tie_free_runs(seed):
    qrels, run = _random_case(seed)
    ours = metrics.evaluate(qrels, run, RANX_METRICS)
    theirs = ranx.evaluate(qrels, run, RANX_METRICS)
    for name in RANX_METRICS:
        assert ours[name] == pytest.approx(float(theirs[name]), abs=1e-12), name


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_matches_pytrec_eval_on_tie_free_runs(seed):
    qrels, run = _random_case(seed)
    for level in (1, 2):
        expected = _with_pytrec_eval(qrels, run, level)
        ours = metrics.evaluate(qrels, run, list(expected))
        for name, value in expected.items():
            assert ours[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("seed", [3, 4])
def test_ties_are_broken_by_retrieval_rank(seed):
    """On a run full of ties, every metric equals ranx's on the same rankings with the ties broken by the
    order the run lists the documents in."""
    qrels, run = _random_case(seed, ties=True)
    ours = metrics.evaluate(qrels, run, RANX_METRICS)
    theirs = ranx.evaluate(qrels, _ties_broken_by_rank(run), RANX_METRICS)
    for name in RANX_METRICS:
        assert ours[name] == pytest.approx(float(theirs[name]), abs=1e-12), name


def test_a_tied_document_ranks_where_the_retriever_listed_it():
    qrels = {"a": {"d1": 1}}
    listed_first = metrics.evaluate(qrels, {"a": {"d1": 0.5, "d2": 0.5, "d4": 0.5}}, ["mrr", "recall@2"])
    listed_last = metrics.evaluate(qrels, {"a": {"d2": 0.5, "d4": 0.5, "d1": 0.5}}, ["mrr", "recall@2"])
    assert listed_first == {"mrr": 1.0, "recall@2": 1.0}
    assert listed_last == {"mrr": pytest.approx(1 / 3), "recall@2": 0.0}
    textbook = metrics.evaluate_textbook(qrels, {"a": {"d2": 0.5, "d1": 0.5, "x": 0.1}}, ks=(1, 5))
    assert textbook.metrics["MRR@5"] == 0.5 and textbook.metrics["Hit@1"] == 0.0


def test_missing_queries_raise_and_make_comparable_scores_them_zero():
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}, "c": {"d3": 2}}
    run = {"a": {"d1": 0.9, "x": 0.1}, "z": {"d2": 1.0}}
    with pytest.raises(ValueError, match="missing from the run.*'b'"):
        metrics.evaluate(qrels, run, ["recall@5"])
    # As ranx's Run.make_comparable: b and c get empty rankings (0), z is dropped; mean over a, b, c.
    ours = metrics.evaluate(qrels, run, ["recall@5", "mrr", "precision@2"], make_comparable=True)
    assert ours == {"recall@5": pytest.approx(1 / 3), "mrr": pytest.approx(1 / 3),
                    "precision@2": pytest.approx(1 / 6)}


def test_queries_are_matched_by_id_not_position():
    qrels, run = _random_case(5, num_queries=20)
    shuffled = dict(reversed(list(run.items())))
    assert metrics.evaluate(qrels, shuffled, RANX_METRICS) == metrics.evaluate(qrels, run, RANX_METRICS)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown metric 'ndcg'"):
        metrics.evaluate({"a": {"d": 1}}, {"a": {"d": 1.0}}, ["ndcg@5"])
    with pytest.raises(ValueError, match="'a' has NaN"):
        metrics.evaluate({"a": {"d": 1}}, {"a": {"d": float("nan"), "e": 1.0}}, ["mrr"])
    with pytest.raises(ValueError, match="unknown answer rule 'exact'"):
        metrics.answer_qrels({"q": {"p": 1.0}}, {"q": ["a"]}, {"p": "a"}, "exact")


def test_evaluate_is_fast_enough_for_10k_queries():
    rng = np.random.default_rng(0)
    run = {f"q{i}": {f"p{j}": float(s) for j, s in zip(rng.choice(100_000, 100, replace=False), rng.random(100))}
           for i in range(10_000)}
    qrels = {qid: {next(iter(r)): 1} for qid, r in run.items()}
    import time
    start = time.perf_counter()
    result = metrics.evaluate(qrels, run, ["recall@5", "mrr@5", "precision@5", "hit_rate@100"])
    assert time.perf_counter() - start < 30  # ~1-2 s on one core; generous for a loaded CI box
    assert result["hit_rate@100"] == 1.0


# -------------------------------------------------------------------------------- published protocol

def _published_with_pytrec_eval(run, relevant, ks):
    """MIRe's runs/evaluate_retrieval.py loop, written against pytrec_eval as that script does."""
    qids = list(run)
    ranked = {q: sorted(run[q], key=lambda p: -run[q][p]) for q in qids}  # Python's sort is stable
    out = {}
    for k in ks:
        cut = {q: {p: float(run[q][p]) for p in ranked[q][:k]} for q in qids}
        qrels = {q: {"placeholder": 0, **{p: 1 for p in cut[q] if (q, p) in relevant}} for q in qids}
        if k == 5:
            measures = {"recip_rank", "P_5", "recall_5"}
        elif k == 1:
            measures = {"P_1"}
        else:
            measures = {f"recall_{k}"}
        per_query = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(cut)
        mean = lambda m: float(np.average([v[m] for v in per_query.values()]))
        if k == 5:
            out.update({"MRR@5": mean("recip_rank"), "P@5": mean("P_5"), "R@5": mean("recall_5")})
        elif k == 1:
            out["P@1"] = mean("P_1")
        else:
            out[f"R@{k}"] = mean(f"recall_{k}")
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_published_matches_pytrec_eval_loop(seed):
    rng = random.Random(seed)
    run, relevant = {}, set()
    for q in range(60):
        qid = str(rng.randrange(10**6))
        pids = list(dict.fromkeys(f"{rng.choice('abc')}{rng.randrange(300)}" for _ in range(rng.randint(1, 120))))
        if q % 3 == 0:  # exact ties
            scores = [rng.randint(0, 4) * 0.25 for _ in pids]
        elif q % 3 == 1:  # differ only below float32 resolution: trec_eval sees ties
            scores = [1.0 + rng.randint(0, 3) * 1e-9 for _ in pids]
        else:
            scores = [rng.gauss(0, 1) for _ in pids]
        run[qid] = dict(zip(pids, scores))
        relevant.update((qid, p) for p in pids if rng.random() < 0.08)
    ks = metrics.PUBLISHED_KS
    result = metrics.evaluate_published(run, lambda q, p: (q, p) in relevant, ks)
    expected = _published_with_pytrec_eval(run, relevant, ks)
    assert result.protocol == "published" and result.num_queries == len(run)
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-12), name
    assert result.metrics["R@1"] == result.metrics["P@1"]


def test_published_and_textbook_differ_as_documented():
    qrels = {"q": {"a": 1, "b": 1, "z": 1}}
    run = {"q": {"x": 0.9, "a": 0.8, "y": 0.7, "b": 0.6, "c": 0.5}}
    published = metrics.evaluate_published(run, qrels, ks=(1, 5))
    textbook = metrics.evaluate_textbook(qrels, run, ks=(1, 5))
    assert published.metrics == {"P@1": 0.0, "MRR@5": 0.5, "P@5": 0.4, "R@1": 0.0, "R@5": 1.0}
    assert textbook.metrics["R@5"] == pytest.approx(2 / 3)  # recall: 2 of the 3 relevant
    assert textbook.metrics["Hit@5"] == 1.0
    assert published.as_dict()["protocol"] == "published"
    assert textbook.as_dict()["protocol"] == "textbook"
    assert list(published.as_dict())[:3] == ["protocol", "relevance", "num_queries"]


def test_published_mrr_breaks_ties_like_trec_eval():
    # Tied scores: trec_eval orders them by id descending, whatever the retriever's order was.
    run = {"q": {"d1": 0.5, "d2": 0.5, "d3": 0.1}}
    result = metrics.evaluate_published(run, {"q": {"d1": 1}}, ks=(5,))
    assert result.metrics["MRR@5"] == 0.5


# -------------------------------------------------------------------------------- answer rules

def _whole_word(answers, passage):
    """OK-VQA Wiki-11M's published matcher (yeongjoonJu/MIRe, dataset/okvqa.py): unescaped whole-word regex."""
    return any(re.search(r"\b" + a.strip().lower() + r"\b", passage.lower()) for a in answers)


def _whole_word_or_substring(answers, passage):
    """OK-VQA Google-Search's published matcher: the same regex, a substring test where it is invalid."""
    for answer in answers:
        try:
            if re.search(r"\b" + answer.strip().lower() + r"\b", passage.lower()):
                return True
        except re.error:
            if answer.strip().lower() in passage.lower():
                return True
    return False


def _substring(answers, passage):
    """M2KR E-VQA / InfoSeek (PreFLMR pseudo recall): `answer.strip().lower() in passage.lower()`."""
    return any(a.strip().lower() in passage.lower() for a in answers)


PUBLISHED_MATCHERS = {metrics.WHOLE_WORD: _whole_word, metrics.WHOLE_WORD_OR_SUBSTRING: _whole_word_or_substring,
                      metrics.SUBSTRING: _substring}


def _matches(rule, answers, passage):
    """Whether `answer_qrels` judges `passage` relevant to a query with `answers` under `rule`."""
    return bool(metrics.answer_qrels({"q": {"p": 1.0}}, {"q": answers}, {"p": passage}, rule)["q"])


def test_whole_word_rule_and_its_unescaped_pattern():
    passage = "Wetsuits keep Surfers warm."
    assert not _matches(metrics.WHOLE_WORD, ["surf"], passage)
    assert _matches(metrics.SUBSTRING, ["surf"], passage)
    assert _matches(metrics.WHOLE_WORD, ["  SURFERS "], passage)
    # Not escaped: "." is a regex wildcard, so "u.s" matches "u-s" as the published code does.
    assert _matches(metrics.WHOLE_WORD, ["u.s"], "the u-s army")
    with pytest.raises(metrics.AnswerPatternError):
        _matches(metrics.WHOLE_WORD, ["(1996"], "the (1996 film")


def test_google_search_rule_falls_back_to_substring_on_invalid_pattern():
    assert _matches(metrics.WHOLE_WORD_OR_SUBSTRING, ["(1996"], "The (1996 film")
    assert not _matches(metrics.WHOLE_WORD_OR_SUBSTRING, ["(1996"], "The 1996 film")
    assert not _matches(metrics.WHOLE_WORD_OR_SUBSTRING, ["surf"], "surfers")


def test_answer_qrels_only_marks_retrieved_matches():
    run = {"q1": {"p1": 1.0, "p2": 0.5}, "q2": {"p2": 1.0}}
    texts = {"p1": "Hydrants are painted RED.", "p2": "A covered bridge.", "p3": "red"}
    answers = {"q1": ["red"], "q2": ["red"]}
    assert metrics.answer_qrels(run, answers, texts, metrics.WHOLE_WORD) == {"q1": {"p1": 1}, "q2": {}}
    assert metrics.answer_qrels(run, answers, texts, metrics.SUBSTRING) == {"q1": {"p1": 1, "p2": 1},
                                                                            "q2": {"p2": 1}}
    with pytest.raises(metrics.AnswerPatternError, match="'q1'.*'red \\('"):
        metrics.answer_qrels(run, {"q1": ["red ("], "q2": []}, texts, metrics.WHOLE_WORD)
    with pytest.raises(KeyError, match="'p2'"):
        metrics.answer_qrels(run, answers, {"p1": "red"}, metrics.SUBSTRING)


def test_answer_qrels_agree_with_the_published_matchers():
    rng = random.Random(0)
    words = ["red", "yellow", "st. louis", "c++", "(a", "b)", "new york", "york", "1889"]
    texts = {f"p{i}": " ".join(rng.choices(words + ["the", "and", "Red", "NEWYORK"], k=8)) for i in range(40)}
    run = {f"q{i}": {p: rng.random() for p in rng.sample(sorted(texts), 10)} for i in range(30)}
    answers = {q: rng.sample(words, 2) for q in run}
    for rule in (metrics.WHOLE_WORD_OR_SUBSTRING, metrics.SUBSTRING):
        qrels = metrics.answer_qrels(run, answers, texts, rule)
        matcher = PUBLISHED_MATCHERS[rule]
        assert qrels == {q: {p: 1 for p in run[q] if matcher(answers[q], texts[p])} for q in run}
    valid = {q: [a for a in answers[q] if a not in ("c++", "(a", "b)")] for q in run}  # valid patterns only
    assert metrics.answer_qrels(run, valid, texts, metrics.WHOLE_WORD) == \
           {q: {p: 1 for p in run[q] if _whole_word(valid[q], texts[p])} for q in run}


def test_gold_qrels_stringifies_ids():
    assert metrics.gold_qrels({3: [5012, "x"]}) == {"3": {"5012": 1, "x": 1}}
