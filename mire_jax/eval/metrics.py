"""IR metrics: the textbook definitions (with a stated tie rule) and MIRe's published evaluation protocol.

Conventions (pytrec_eval / ranx): `qrels = {qid: {pid: relevance int}}`, `run = {qid: {pid: score}}` in the
retriever's order; all ids are strings. Pure Python + numpy; ranx and pytrec_eval only check it in the tests.

Three entry points:

* `evaluate(qrels, run, metrics)` -> `{metric name: mean over queries}`: the textbook definitions, with the
  metric names of ranx (`"recall@5"`, `"mrr@5"`, `"precision@5"`, `"hit_rate@5"`, `"hits@5"`; no `@k` = the
  whole ranking; a `-lN` suffix sets the relevance level). Rules:
    - a document is relevant iff its qrels value >= the level (default 1); queries whose qrels hold no
      relevant document score 0 on every metric and still count in the mean;
    - `precision@k` divides by k even when fewer than k documents were retrieved; `precision` (no k)
      divides by the number retrieved;
    - TIE RULE: documents are ranked by descending score, and tied scores keep the run's order, i.e. the
      retriever's rank (`retriever_order`, the order the published protocol reads a run in too). Without
      ties this equals ranx and pytrec_eval; with ties they differ from us and from each other (ranx keeps
      the order of an unstable quicksort, trec_eval sorts tied documents by id, descending);
    - queries of the qrels missing from the run (or the reverse) are an error; with
      `make_comparable=True` (as ranx's `Run.make_comparable`) missing queries get an empty ranking (all
      metrics 0) and run queries absent from the qrels are dropped;
    - queries are matched by id; an empty ranking or empty qrels scores 0; NaN scores are rejected.

* `evaluate_published(run, relevance, ks)` -> `ProtocolResult(protocol="published")`: MIRe's
  runs/evaluate_retrieval.py (docs/evaluation.md). For each k the ranking is cut to its top k and qrels
  are built only from the relevant passages inside that cut, then scored with pytrec_eval. Hence:
  `R@k` = 1 if any relevant passage is in the top k (a hit rate), `P@5` = relevant-in-top-5 / 5,
  `MRR@5` = reciprocal rank within the top 5, `P@1` = relevance of the first passage. Reported names:
  P@1, MRR@5, P@5, R@1, R@5, R@10, R@20, R@50, R@100.
  Ordering: the run dict is read in the retriever's order (a stable sort by descending score, so
  insertion order breaks ties, as the retriever's own list does); inside a cut, trec_eval re-sorts by
  score rounded to float32, descending, then by passage id, descending (string order): that order
  decides MRR@5 when scores tie.

* `evaluate_textbook(qrels, run, ks)` -> `ProtocolResult(protocol="textbook")`: the textbook metrics on
  full qrels (recall = found / all relevant; the rules of `evaluate`): P@1, MRR@5, P@5, R@k and Hit@k.

Pseudo relevance from answer strings (docs/evaluation.md), one rule per benchmark:

  `"whole_word"`               OK-VQA Wiki-11M: `re.search(r"\\b" + a + r"\\b", passage.lower())` with
                               `a = answer.strip().lower()`, NOT escaped; an invalid pattern raises.
  `"whole_word_or_substring"`  OK-VQA Google-Search: the same regex; where it raises, `a in passage.lower()`.
  `"substring"`                M2KR E-VQA / InfoSeek (PreFLMR "pseudo recall"): `a in passage.lower()`.
  `"gold_id"`                  ReMuQ, A-OKVQA, ViD2R val: the passage id is one of the query's gold ids.

`answer_qrels` applies an answer rule to the passages of a run; `gold_qrels` turns gold ids into qrels.
Every `ProtocolResult.as_dict()` carries a `"protocol"` key (and the relevance rule when known), so a
results file always says which protocol produced it.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Iterable, Mapping, Sequence, Union

import numpy as np

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

SUPPORTED_METRICS = ("hits", "hit_rate", "precision", "recall", "mrr")
PUBLISHED_KS = (1, 5, 10, 20, 50, 100)

WHOLE_WORD = "whole_word"
WHOLE_WORD_OR_SUBSTRING = "whole_word_or_substring"
SUBSTRING = "substring"
GOLD_ID = "gold_id"
RELEVANCE_RULES = (WHOLE_WORD, WHOLE_WORD_OR_SUBSTRING, SUBSTRING, GOLD_ID)


# ----------------------------------------------------------------------------------------------------
# Ranking order
# ----------------------------------------------------------------------------------------------------

def _scores_array(qid: str, ranking: Mapping[str, float]) -> np.ndarray:
    scores = np.fromiter((float(s) for s in ranking.values()), dtype=np.float64, count=len(ranking))
    if np.isnan(scores).any():
        raise ValueError(f"run: query {qid!r} has NaN scores")
    return scores


def retriever_order(qid: str, ranking: Mapping[str, float]) -> list[str]:
    """Descending score, ties in insertion order (the order a retriever's own ranked list has): the textbook
    metrics' tie rule, and the order the published protocol cuts a run in."""
    pids = list(ranking.keys())
    scores = _scores_array(qid, ranking)
    return [pids[i] for i in np.argsort(-scores, kind="stable")]


def trec_eval_order(ranking: Mapping[str, float]) -> list[str]:
    """trec_eval's order: score as float32, descending, then document id descending.

    (Python's code-point order of str equals C's strcmp on the UTF-8 bytes.)
    """
    return sorted(ranking, key=lambda pid: (float(np.float32(ranking[pid])), pid), reverse=True)


# ----------------------------------------------------------------------------------------------------
# Textbook metrics
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A parsed metric name: `kind` (one of SUPPORTED_METRICS), cut-off `k` (0 = all), relevance `level`."""
    name: str
    kind: str
    k: int
    level: int


def parse_metric(name: str) -> MetricSpec:
    """Parse a ranx metric name such as `"recall@5"`, `"mrr"`, `"precision@10-l2"`."""
    base, level = name, 1
    if "-l" in base:
        base, level_text = base.split("-l", 1)
        if not level_text.isdigit():
            raise ValueError(f"metric {name!r}: relevance level after '-l' must be an integer")
        level = int(level_text)
    kind, _, k_text = base.partition("@")
    if kind not in SUPPORTED_METRICS:
        raise ValueError(f"metric {name!r}: unknown metric {kind!r}; supported: {', '.join(SUPPORTED_METRICS)}")
    if k_text and not k_text.isdigit():
        raise ValueError(f"metric {name!r}: the cut-off after '@' must be a non-negative integer")
    return MetricSpec(name=name, kind=kind, k=int(k_text) if k_text else 0, level=level)


def _query_metric(spec: MetricSpec, hits_mask: np.ndarray, num_relevant: int) -> float:
    """One metric of one query, given the relevance flags of its ranking (`retriever_order`)."""
    n = hits_mask.shape[0]
    cut = n if spec.k == 0 or spec.k > n else spec.k
    if spec.kind == "precision":
        denominator = spec.k if spec.k != 0 else n
        if denominator == 0 or num_relevant == 0:
            return 0.0
        return float(hits_mask[:cut].sum()) / denominator
    if num_relevant == 0 or cut == 0:
        return 0.0
    top = hits_mask[:cut]
    if spec.kind == "hits":
        return float(top.sum())
    if spec.kind == "recall":
        return float(top.sum()) / num_relevant
    if spec.kind == "hit_rate":
        return 1.0 if top.any() else 0.0
    first = np.flatnonzero(top)  # mrr
    return 1.0 / (first[0] + 1) if first.size else 0.0


def evaluate(qrels: Qrels, run: Run, metrics: Union[str, Sequence[str]], *,
             make_comparable: bool = False) -> dict[str, float]:
    """Mean over queries of each textbook metric, ties broken by retrieval rank (module docstring).

    Args:
      qrels: `{qid: {pid: relevance}}`.
      run: `{qid: {pid: score}}`, each ranking in retrieval order (it breaks ties).
      metrics: a ranx metric name or a list of them (see `parse_metric`).
      make_comparable: give queries missing from the run an empty ranking and drop run queries absent
        from the qrels (ranx's `Run.make_comparable`); otherwise differing query sets are an error.

    Returns:
      `{metric name: mean over the qrels' queries}` (Python floats).

    Raises:
      ValueError: unknown metric, empty qrels, NaN scores, or query sets that differ (naming some ids).
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    specs = [parse_metric(m) for m in names]
    if not qrels:
        raise ValueError("qrels is empty: nothing to evaluate")
    if not make_comparable:
        _check_same_queries(qrels, run)
    per_metric = {spec.name: [] for spec in specs}
    levels = sorted({spec.level for spec in specs})
    for qid, judged in qrels.items():
        ranking = run.get(qid, {})
        ordered = retriever_order(qid, ranking) if ranking else []
        for level in levels:
            mask = np.fromiter((judged.get(pid, 0) >= level for pid in ordered), dtype=bool, count=len(ordered))
            num_relevant = sum(1 for rel in judged.values() if rel >= level)
            for spec in specs:
                if spec.level == level:
                    per_metric[spec.name].append(_query_metric(spec, mask, num_relevant))
    return {name: float(np.mean(values)) for name, values in per_metric.items()}


def _check_same_queries(qrels: Qrels, run: Run) -> None:
    missing = [q for q in qrels if q not in run]
    extra = [q for q in run if q not in qrels]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} qrels queries missing from the run (e.g. {missing[:5]})")
        if extra:
            parts.append(f"{len(extra)} run queries absent from the qrels (e.g. {extra[:5]})")
        raise ValueError("qrels and run query ids differ: " + "; ".join(parts)
                         + ". Pass make_comparable=True to score missing queries as 0 and drop extra ones.")


# ----------------------------------------------------------------------------------------------------
# Protocol results
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ProtocolResult:
    """Metrics together with the protocol that produced them.

    Attributes:
      protocol: `"published"` (MIRe's evaluate_retrieval.py rules) or `"textbook"`.
      metrics: `{reported name: mean over queries}`, e.g. `{"P@1": ..., "MRR@5": ..., "R@5": ...}`.
      num_queries: how many queries the means are over.
      relevance: the relevance rule (`RELEVANCE_RULES`), or "qrels" for given judgments, or None.
    """
    protocol: str
    metrics: dict[str, float]
    num_queries: int
    relevance: str | None = None

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict: `protocol`, `relevance`, `num_queries`, then the metrics."""
        return {"protocol": self.protocol, "relevance": self.relevance, "num_queries": self.num_queries,
                **self.metrics}


RelevanceFn = Callable[[str, str], bool]


def _relevance_fn(relevance: Union[Qrels, RelevanceFn]) -> RelevanceFn:
    if callable(relevance):
        return relevance
    return lambda qid, pid: relevance.get(qid, {}).get(pid, 0) >= 1


def published_metric_names(ks: Iterable[int] = PUBLISHED_KS) -> list[str]:
    """The names `evaluate_published` reports for cut-offs `ks`, in report order."""
    ks = sorted(set(ks))
    names = []
    if 1 in ks:
        names.append("P@1")
    if 5 in ks:
        names += ["MRR@5", "P@5"]
    return names + [f"R@{k}" for k in ks]


def evaluate_published(run: Run, relevance: Union[Qrels, RelevanceFn],
                       ks: Iterable[int] = PUBLISHED_KS, *, relevance_name: str | None = None) -> ProtocolResult:
    """MIRe's published evaluation (docs/evaluation.md; see the module docstring for every rule).

    Args:
      run: `{qid: {pid: score}}`, normally the top 100 per query; dict order = the retriever's order
        among tied scores.
      relevance: qrels (a passage is relevant iff its value >= 1) or a function `(qid, pid) -> bool`
        (e.g. built by `answer_qrels`); only retrieved passages are ever asked about.
      ks: the cut-offs; k=1 adds P@1, k=5 adds MRR@5 and P@5, every k adds R@k (a hit rate).
      relevance_name: recorded in the result (defaults to "qrels" or "function").

    Returns:
      A `ProtocolResult` with protocol "published", means over all queries of the run.
    """
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    if not run:
        raise ValueError("run is empty: nothing to evaluate")
    is_relevant = _relevance_fn(relevance)
    sums = {name: 0.0 for name in published_metric_names(ks)}
    deepest = ks[-1]
    for qid, ranking in run.items():
        ordered = retriever_order(qid, ranking)[:deepest]
        flags = [bool(is_relevant(qid, pid)) for pid in ordered]
        for k in ks:
            top_flags = flags[:k]
            sums[f"R@{k}"] += 1.0 if any(top_flags) else 0.0
            if k == 1:
                sums["P@1"] += 1.0 if any(top_flags) else 0.0
            if k == 5:
                sums["P@5"] += sum(top_flags) / 5.0
                relevant = {pid for pid, flag in zip(ordered[:k], top_flags) if flag}
                cut = {pid: ranking[pid] for pid in ordered[:k]}
                for rank, pid in enumerate(trec_eval_order(cut), start=1):
                    if pid in relevant:
                        sums["MRR@5"] += 1.0 / rank
                        break
    name = relevance_name or ("function" if callable(relevance) else "qrels")
    return ProtocolResult(protocol="published", metrics={k: v / len(run) for k, v in sums.items()},
                          num_queries=len(run), relevance=name)


def evaluate_textbook(qrels: Qrels, run: Run, ks: Iterable[int] = PUBLISHED_KS, *,
                      make_comparable: bool = False, relevance_name: str | None = "qrels") -> ProtocolResult:
    """Textbook metrics on full qrels: P@1, MRR@5, P@5, R@k (recall) and Hit@k for each k in `ks`.

    Same rules as `evaluate` (ties by retrieval rank); R@k here is found-relevant / all-relevant of the qrels.
    """
    ks = sorted(set(int(k) for k in ks))
    metric_names = {"P@1": "precision@1", "MRR@5": "mrr@5", "P@5": "precision@5"}
    metric_names.update({f"R@{k}": f"recall@{k}" for k in ks})
    metric_names.update({f"Hit@{k}": f"hit_rate@{k}" for k in ks})
    scores = evaluate(qrels, run, list(metric_names.values()), make_comparable=make_comparable)
    num_queries = len(qrels) if make_comparable else len(run)
    return ProtocolResult(protocol="textbook", metrics={n: scores[m] for n, m in metric_names.items()},
                          num_queries=num_queries, relevance=relevance_name)


# ----------------------------------------------------------------------------------------------------
# Pseudo relevance from answers
# ----------------------------------------------------------------------------------------------------

class AnswerPatternError(re.error):
    """An answer is not a valid regular expression under a rule that does not catch that (OK-VQA Wiki-11M)."""


ANSWER_RULES = (WHOLE_WORD, WHOLE_WORD_OR_SUBSTRING, SUBSTRING)


class _CompiledAnswers:
    """The answers of one query with their patterns compiled once (same outcome as re.search per call)."""

    def __init__(self, answers: Sequence[str]):
        self.needles = [a.strip().lower() for a in answers]
        self.patterns: list[re.Pattern | re.error] = []
        for needle in self.needles:
            try:
                self.patterns.append(re.compile(r"\b" + needle + r"\b"))
            except re.error as e:
                self.patterns.append(e)

    def match(self, rule: str, qid: str, text: str) -> bool:
        if rule == SUBSTRING:
            return any(needle in text for needle in self.needles)
        for needle, pattern in zip(self.needles, self.patterns):
            if isinstance(pattern, re.error):
                if rule == WHOLE_WORD:
                    raise AnswerPatternError(f"query {qid!r}: answer {needle!r} is not a valid regular "
                                             f"expression ({pattern}); the OK-VQA Wiki-11M rule does not escape "
                                             f"answers and fails here as the published code does")
                if needle in text:
                    return True
            elif pattern.search(text):
                return True
        return False


def answer_qrels(run: Run, answers: Mapping[str, Sequence[str]], passage_texts: Mapping[str, str],
                 rule: str) -> dict[str, dict[str, int]]:
    """Pseudo-relevance qrels for the passages of a run: `{qid: {pid: 1}}` for each retrieved match.

    Args:
      run: `{qid: {pid: score}}`; every retrieved passage is tested (the published protocol only ever
        asks about retrieved passages, so these qrels feed `evaluate_published` exactly).
      answers: `{qid: answers}` in the order the rule should try them.
      passage_texts: `{pid: text}` for at least every retrieved pid.
      rule: one of "whole_word", "whole_word_or_substring", "substring".

    Raises:
      AnswerPatternError: rule "whole_word" meets an answer that is not a valid regex.
      KeyError: a query without answers or a retrieved passage without text (the message names it).
    """
    if rule not in ANSWER_RULES:
        raise ValueError(f"unknown answer rule {rule!r}; expected one of {ANSWER_RULES}")
    qrels: dict[str, dict[str, int]] = {}
    lowered: dict[str, str] = {}
    for qid, ranking in run.items():
        if qid not in answers:
            raise KeyError(f"query {qid!r} of the run has no answers")
        compiled = _CompiledAnswers(answers[qid])
        relevant = {}
        for pid in ranking:
            if pid not in lowered:
                if pid not in passage_texts:
                    raise KeyError(f"passage {pid!r} (retrieved for query {qid!r}) has no text")
                lowered[pid] = passage_texts[pid].lower()
            if compiled.match(rule, qid, lowered[pid]):
                relevant[pid] = 1
        qrels[qid] = relevant
    return qrels


def gold_qrels(gold_pids: Mapping[str, Iterable[str]]) -> dict[str, dict[str, int]]:
    """`{qid: [gold pid, ...]}` -> qrels `{qid: {pid: 1}}` (ids as str)."""
    return {str(qid): {str(pid): 1 for pid in pids} for qid, pids in gold_pids.items()}

