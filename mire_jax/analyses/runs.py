"""Retrieval runs of the analyses: a model folder, a benchmark and evaluation settings -> published metrics, over all
queries and per group of queries (a query type, a trap type). Every run goes through `mire_jax.eval.runner`, the
evaluation's own path, so an analysis row and an evaluation of the same model under the same settings agree."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable, Mapping

from mire_jax.eval import runner
from mire_jax.eval.benchmarks.base import Benchmark
from mire_jax.retrieval.searcher import Searcher

# The published metrics the analyses report (hit rates and MRR@5, `mire_jax.eval.metrics.evaluate_published`).
METRICS = ("R@1", "R@5", "R@10", "MRR@5")

Groups = Mapping[str, str] | Callable | None  # qid -> group, or Query -> group


def text_tower(config, params) -> str:
    """A digest of what a passage's embeddings depend on: the text tower (BERT and the projection, their config) and
    nothing of the pooling head, so models pre-trained from one frozen text tower share it."""
    import jax
    import numpy as np
    digest = hashlib.sha256(json.dumps([dataclasses.asdict(config.bert), config.head.dim, config.dtype]).encode())
    for leaf in jax.tree_util.tree_leaves({"bert": params["bert"], "linear": params["linear"]}):
        digest.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    return digest.hexdigest()[:16]


class Searchers:
    """One `Searcher` per model folder, kept for every run of that model (one compilation per model), and one
    encoded corpus per text tower and benchmark: passages go through the text tower alone, so the models of an
    analysis that share a frozen text tower (every pre-training from the same start does) share its index instead
    of encoding the corpus again."""

    def __init__(self, settings: runner.EvalSettings):
        self.settings = settings
        self._searchers: dict[str, Searcher] = {}
        self._towers: dict[str, str] = {}
        self._indexes: dict[tuple, object] = {}

    def __call__(self, model_dir: str | os.PathLike) -> Searcher:
        from mire_jax.retrieval.model_folder import load_model, load_tokenizer, resolve_model_dir
        key = os.path.abspath(resolve_model_dir(model_dir))
        if key not in self._searchers:
            config, params = load_model(key)
            self._searchers[key] = runner.make_searcher(config, params, load_tokenizer(key), self.settings, key)
            self._towers[key] = text_tower(config, params)
        return self._searchers[key]

    def index(self, model_dir: str | os.PathLike, benchmark: Benchmark, workdir: str):
        """The benchmark's corpus index for this model: built (and cached under `workdir`) by the first model of its
        text tower, shared with the others."""
        searcher = self(model_dir)
        tower = self._towers.get(searcher.model_dir)
        if tower is None:  # a searcher given ready-made (tests): its own index
            return None
        s = self.settings
        key = (tower, id(benchmark), os.path.abspath(workdir), s.doc_maxlen, s.passage_keep,
               json.dumps(s.index, sort_keys=True))
        if key not in self._indexes:
            self._indexes[key] = (benchmark, runner.corpus_index(benchmark, searcher, workdir, s))
        return self._indexes[key][1]


def group_of(groups: Groups, benchmark: Benchmark) -> dict[str, str]:
    """qid -> group name for every query that has one (`groups`: a mapping by qid, or a function of the Query)."""
    if groups is None:
        return {}
    if callable(groups):
        return {q.qid: str(groups(q)) for q in benchmark.queries}
    return {q.qid: str(groups[q.qid]) for q in benchmark.queries if q.qid in groups}


def published(benchmark: Benchmark, run: Mapping[str, Mapping[str, float]], qids=None) -> dict[str, float]:
    """The published metrics of `run` (restricted to `qids`), as `METRICS` -> value, with the number of queries."""
    if qids is not None:
        keep = set(qids)
        benchmark = dataclasses.replace(benchmark, queries=[q for q in benchmark.queries if q.qid in keep])
        run = {qid: ranking for qid, ranking in run.items() if qid in keep}
    m = benchmark.evaluate_published(run).as_dict()
    return {**{k: float(m[k]) for k in METRICS}, "queries": len(run)}


def evaluate(searchers: Searchers, model_dir: str | os.PathLike, benchmark: Benchmark, workdir: str, *,
             mode: str = "mire", image_ablation: str | None = None, question_ablation: str | None = None,
             groups: Groups = None, **overrides) -> dict:
    """One retrieval run -> {"all": metrics, "groups": {group: metrics}} (published protocol metrics).

    The corpus is encoded and indexed once per text tower under `workdir` (`Searchers.index`) and reused by every
    model and ablation; `overrides` change other `EvalSettings` fields (e.g. `generic_question`)."""
    settings = dataclasses.replace(searchers.settings, mode=mode, image_ablation=image_ablation,
                                   question_ablation=question_ablation, **overrides)
    index = searchers.index(model_dir, benchmark, workdir) if hasattr(searchers, "index") else None
    run = runner.retrieve(benchmark, searchers(model_dir), workdir, settings, index=index)
    by_group = group_of(groups, benchmark)
    out = {"all": published(benchmark, run), "groups": {}}
    for name in sorted(set(by_group.values())):
        out["groups"][name] = published(benchmark, run, [qid for qid, g in by_group.items() if g == name])
    return out
