"""What every evaluation benchmark shares: `Query`, `Benchmark`, format errors and record readers.

A `Benchmark` holds the queries of one split (file order, duplicate ids collapsed as MIRe's dict-keyed
loaders do: the FIRST occurrence keeps its position, the LAST one's values win), a streaming `Corpus`
(see corpus.py) and the name of the relevance rule MIRe's evaluation applies to it
(`mire_jax.eval.metrics.RELEVANCE_RULES`). All ids are `str`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterable, Mapping

from mire_jax.eval import metrics
from mire_jax.eval.benchmarks.corpus import Corpus
from mire_jax.eval.benchmarks.image_refs import ImageRef


@dataclasses.dataclass(frozen=True)
class Query:
    """One evaluation query.

    Attributes:
      qid: the query id as MIRe keys it, as str.
      question: the question text fed to the query encoder (after the benchmark's published cleanup).
      image: where the query image is (`.load()` gives a PIL RGB image); None when the set has none.
      answers: answer strings in the order the relevance rule tries them (empty when the set has none).
      gold_pids: gold passage ids (str); empty for sets without them.
    """
    qid: str
    question: str
    image: ImageRef | None
    answers: list[str]
    gold_pids: list[str]


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A split of an evaluation benchmark.

    Attributes:
      name: registry name (e.g. "okvqa_gs").
      split: the split loaded.
      queries: the queries, file order.
      corpus: the passages, streamed in file order (`len()`, iteration, `texts_for`).
      relevance: the published relevance rule ("whole_word", "whole_word_or_substring", "substring",
        "gold_id").
      notes: what the loader did that changes the data (dropped records, collapsed ids, ...).
    """
    name: str
    split: str
    queries: list[Query]
    corpus: Corpus
    relevance: str
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        if self.relevance not in metrics.RELEVANCE_RULES:
            raise ValueError(f"{self.name}: unknown relevance rule {self.relevance!r}")

    @functools.cached_property
    def queries_by_id(self) -> dict[str, Query]:
        """`{qid: Query}`."""
        return {q.qid: q for q in self.queries}

    def gold_qrels(self) -> dict[str, dict[str, int]]:
        """Qrels from the gold passage ids: `{qid: {pid: 1}}` (queries without gold ids get `{}`)."""
        return {q.qid: {pid: 1 for pid in q.gold_pids} for q in self.queries}

    def published_qrels(self, run: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, int]]:
        """The relevant passages among those of `run`, by this benchmark's published rule.

        Gold-id sets: the gold ids. Answer sets: the retrieved passages whose text matches an answer
        (texts are fetched from the corpus in one streaming pass).
        """
        self._check_run_queries(run)
        if self.relevance == metrics.GOLD_ID:
            return {qid: {pid: 1 for pid in self.queries_by_id[qid].gold_pids} for qid in run}
        needed = {pid for ranking in run.values() for pid in ranking}
        texts = self.corpus.texts_for(needed)
        answers = {qid: self.queries_by_id[qid].answers for qid in run}
        return metrics.answer_qrels(run, answers, texts, self.relevance)

    def evaluate_published(self, run: Mapping[str, Mapping[str, float]],
                           ks: Iterable[int] = metrics.PUBLISHED_KS) -> metrics.ProtocolResult:
        """MIRe's published protocol on this benchmark (`metrics.evaluate_published`)."""
        return metrics.evaluate_published(run, self.published_qrels(run), ks, relevance_name=self.relevance)

    def evaluate_textbook(self, run: Mapping[str, Mapping[str, float]], ks: Iterable[int] = metrics.PUBLISHED_KS,
                          qrels: Mapping[str, Mapping[str, int]] | None = None) -> metrics.ProtocolResult:
        """Textbook metrics against `qrels` (default: the gold ids; every query must have some).

        Answer-only sets (OK-VQA Wiki-11M) have no gold ids: pass pooled judgments, e.g.
        `published_qrels` of the union of several runs.
        """
        if qrels is None:
            without = [q.qid for q in self.queries if not q.gold_pids]
            if without:
                raise ValueError(f"{self.name}: {len(without)} queries have no gold passage ids (e.g. "
                                 f"{without[:3]}); pass qrels= (e.g. pooled published_qrels)")
            qrels, name = self.gold_qrels(), "gold_id"
        else:
            name = "qrels"
        return metrics.evaluate_textbook(qrels, run, ks, relevance_name=name)

    def _check_run_queries(self, run: Mapping[str, Mapping[str, float]]) -> None:
        unknown = [qid for qid in run if qid not in self.queries_by_id]
        if unknown:
            raise KeyError(f"{self.name}: {len(unknown)} run queries are not in the benchmark (e.g. {unknown[:5]})")
        missing = [q.qid for q in self.queries if q.qid not in run]
        if missing:
            raise ValueError(f"{self.name}: {len(missing)} benchmark queries are missing from the run "
                             f"(e.g. {missing[:5]}); MIRe retrieves for every query")


def collapse_by_id(items: Iterable[Any], key) -> tuple[list[Any], int]:
    """Deduplicate like a Python dict keyed by `key(item)`: first position, last value. Returns (items, dropped)."""
    table: dict[str, Any] = {}
    count = 0
    for item in items:
        table[key(item)] = item
        count += 1
    return list(table.values()), count - len(table)
