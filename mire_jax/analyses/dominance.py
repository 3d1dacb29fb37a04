"""The text-dominance comparison: two (or more) models, each trained with several seeds, on one benchmark whose
queries fall into groups (on the generated world: questions that name the right kind, say "object", or name a
wrong kind). Reports each model's metric per group as mean and spread over the seeds, and the paired difference
(first model minus second, seed by seed): which wins, by how much, and on how many seeds, whichever way it comes out.
"""
from __future__ import annotations

import os
import statistics
from typing import Mapping, Sequence

from mire_jax.analyses import plots
from mire_jax.analyses.runs import Groups, Searchers, evaluate
from mire_jax.eval import runner
from mire_jax.eval.benchmarks.base import Benchmark

NAME = "text_dominance"


def spread(values: Sequence[float]) -> dict:
    """mean, sample standard deviation (0 for one value), min, max and n of `values`."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values")
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """a - b seed by seed: the spread of the differences and how many seeds each side wins (ties apart)."""
    if len(a) != len(b):
        raise ValueError(f"paired seeds: {len(a)} values against {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    return {**spread(diffs), "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs),
            "ties": sum(d == 0 for d in diffs), "per_seed": diffs}


def verdict(first: str, second: str, diff: dict, metric: str, where: str) -> str:
    """One sentence: who wins on `where`, by how much (mean +- std over seeds), on how many seeds."""
    n = diff["n"]
    if round(diff["mean"], 1) == 0:  # nothing to call at the precision the report prints
        return (f"{where}: {first} and {second} tie on {metric} on average (mean difference {abs(diff['mean']):.1f} "
                f"+-{diff['std']:.1f} over {n} seed(s); {first} ahead on {diff['wins']}, {second} on "
                f"{diff['losses']})")
    winner, loser = (first, second) if diff["mean"] > 0 else (second, first)
    wins = diff["wins"] if diff["mean"] > 0 else diff["losses"]
    return (f"{where}: {winner} beats {loser} by {abs(diff['mean']):.1f} points of {metric} "
            f"(+-{diff['std']:.1f} over {n} seed(s); ahead on {wins} of {n})")


def text_dominance(models: Mapping[str, Sequence[str | os.PathLike]], benchmark: Benchmark, workdir: str,
                   out_dir: str | None = None, *, groups: Groups = None, settings: runner.EvalSettings | None = None,
                   metric: str = "R@5", baseline: str | os.PathLike | None = None,
                   searchers: Searchers | None = None) -> dict:
    """Compares the models of `models` (name -> one model folder per seed; the first two are compared seed by seed)
    on `benchmark`, over all queries and per group.

    Args:
        models: e.g. {"mire": [seed0, seed1, ...], "mire_residual": [seed0, seed1, ...]}, the same number each.
        benchmark: any loaded benchmark.
        workdir: where the runner caches each model's encoded corpus.
        out_dir: where the plot goes (None: no plot).
        groups: qid -> group (or a function of the Query), e.g. the generated trap world's trap types.
        settings: the evaluation settings (default `EvalSettings()`).
        metric: a published metric (R@1, R@5, R@10, MRR@5).
        baseline: a text-only model folder to add as a reference row (one run: it has no seeds).

    Returns:
        A plain dict: "rows" (one per model and group: mean, std, min, max over seeds), "differences" (the first
        model minus the second per group, seed by seed), "findings" (the verdicts), "plot".
    """
    names = list(models)
    if len(names) < 2:
        raise ValueError("text_dominance compares at least two models")
    counts = {name: len(models[name]) for name in names}
    if len(set(counts.values())) != 1 or not counts[names[0]]:
        raise ValueError(f"every model needs the same (non-zero) number of seeds, got {counts}")
    searchers = searchers or Searchers(settings or runner.EvalSettings())
    values: dict[str, dict[str, list[float]]] = {}
    for name in names:
        for folder in models[name]:
            result = evaluate(searchers, folder, benchmark, workdir, groups=groups)
            for group, m in [("all", result["all"]), *result["groups"].items()]:
                values.setdefault(name, {}).setdefault(group, []).append(100 * m[metric])
    if baseline is not None:
        result = evaluate(searchers, baseline, benchmark, workdir, mode="text_only", groups=groups)
        values["text_only"] = {g: [100 * m[metric]] for g, m in [("all", result["all"]), *result["groups"].items()]}
    group_names = ["all"] + sorted(g for g in values[names[0]] if g != "all")
    rows = [{"model": name, "group": g, **spread(values[name][g])}
            for g in group_names for name in values]
    first, second = names[0], names[1]
    differences = [{"group": g, **paired_difference(values[first][g], values[second][g])} for g in group_names]
    result = {
        "analysis": NAME,
        "title": f"Text dominance: {first} versus {second}",
        "what": (f"{metric} (mean +- sample std over {counts[first]} seed(s)) per query group, and the paired "
                 f"difference {first} - {second} seed by seed, in points."),
        "benchmark": f"{benchmark.name}/{benchmark.split}", "metric": metric, "seeds": counts[first],
        "models": {name: [os.fspath(f) for f in models[name]] for name in names},
        "columns": ["group", "model", "mean", "std", "min", "max", "n"],
        "rows": rows, "differences": differences, "values": values,
        "extra_tables": [{"title": f"{first} - {second}, seed by seed (points of {metric})",
                          "columns": ["group", "mean", "std", "min", "max", "wins", "losses", "ties"],
                          "rows": differences}],
        "findings": [verdict(first, second, d, metric, d["group"]) for d in differences],
        "plot": None,
    }
    if out_dir is not None:
        result["plot"] = plots.grouped_bars(
            group_names, {name: [spread(values[name][g])["mean"] for g in group_names] for name in values},
            os.path.join(out_dir, f"{NAME}.png"), ylabel=f"{metric} (%)",
            title=f"{benchmark.name}: {metric} by question group ({counts[first]} seed(s); dots: seeds)",
            errors={name: [spread(values[name][g])["std"] for g in group_names] for name in values},
            points={name: [values[name][g] for g in group_names] for name in values})
    return result
