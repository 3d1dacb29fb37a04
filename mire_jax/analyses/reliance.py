"""Modality reliance: how far each model's score falls when the image is shuffled among the queries, and when the
question is replaced by one generic question, and which of the two falls dominates (the paper's text-dominance
question, asked of each model: MIRe, its residual-fusion ablation, the text-only baseline).

    text dominance = question fall / (question fall + image fall)

with each fall (points of the metric, unablated minus ablated) counted from 0 when the ablation raised the score:
1 means the model's score rests on the question's words alone, 0 on the image alone; undefined (None) when
neither ablation lowers it. A text-only model never sees the image, so its image fall is 0 by construction (not
run).
"""
from __future__ import annotations

import os
from typing import Mapping

from mire_jax.analyses import plots
from mire_jax.analyses.runs import Groups, Searchers, evaluate
from mire_jax.eval import runner
from mire_jax.eval.benchmarks.base import Benchmark

NAME = "modality_reliance"


def dominance_ratio(image_fall: float, question_fall: float) -> float | None:
    """question fall / (question fall + image fall), falls below 0 counted as 0; None when both are 0."""
    image_fall, question_fall = max(0.0, image_fall), max(0.0, question_fall)
    total = image_fall + question_fall
    return None if total <= 0 else question_fall / total


def _model(spec) -> tuple[str, str]:
    """A model spec: a model folder (image + question) or (folder, mode)."""
    if isinstance(spec, (str, os.PathLike)):
        return os.fspath(spec), "mire"
    folder, mode = spec
    return os.fspath(folder), mode


def modality_reliance(models: Mapping[str, object], benchmark: Benchmark, workdir: str, out_dir: str | None = None, *,
                      settings: runner.EvalSettings | None = None, metric: str = "R@5",
                      generic_question: str = runner.GENERIC_QUESTION, groups: Groups = None,
                      searchers: Searchers | None = None) -> dict:
    """The image fall, question fall and text dominance of each model on `benchmark`.

    Args:
        models: name -> model folder, or name -> (model folder, mode) with mode "mire" or "text_only".
        benchmark: any loaded benchmark (`mire_jax.eval.benchmarks.load_benchmark`, the generated world's
            `load_synthetic`).
        workdir: where the runner caches each model's encoded corpus and index.
        out_dir: where the plot goes (None: no plot).
        settings: the evaluation settings (default `EvalSettings()`, the published evaluation).
        metric: the metric the falls are measured in (a published metric: R@1, R@5, R@10, MRR@5).
        generic_question: the question every query asks in the question ablation.
        groups: query groups (qid -> name, or a function of the Query) to report the rows of separately too.

    Returns:
        A plain dict: "rows" (one per model: the metric unablated, with shuffled images, with the generic question,
        both falls and the text dominance), "extra_tables" (the same per query group), "metrics" (every metric of
        every run), and "plot" (a PNG path under out_dir, or None).
    """
    searchers = searchers or Searchers(settings or runner.EvalSettings())
    runs, rows, group_rows = {}, [], []
    for name, spec in models.items():
        folder, mode = _model(spec)
        base = evaluate(searchers, folder, benchmark, workdir, mode=mode, groups=groups)
        shuffled = base if mode == "text_only" else evaluate(searchers, folder, benchmark, workdir, mode=mode,
                                                             image_ablation="shuffle", groups=groups)
        generic = evaluate(searchers, folder, benchmark, workdir, mode=mode, question_ablation="generic",
                           generic_question=generic_question, groups=groups)
        runs[name] = {"mode": mode, "model": folder, "base": base, "shuffled_image": shuffled,
                      "generic_question": generic, "image_run": mode != "text_only"}
        rows.append(falls_row(name, base["all"], shuffled["all"], generic["all"], metric))
        for group in base["groups"]:
            group_rows.append({"group": group, **falls_row(name, base["groups"][group], shuffled["groups"][group],
                                                      generic["groups"][group], metric)})
    order = {name: i for i, name in enumerate(models)}
    group_rows.sort(key=lambda r: (r["group"], order[r["model"]]))
    result = {
        "analysis": NAME,
        "title": "Modality reliance: shuffled images versus a generic question",
        "what": (f"{metric} of each model as is, with each query's image swapped for another query's (a fixed "
                 f"derangement), and with every question replaced by \"{generic_question}\". Falls are in points of "
                 f"{metric}; text dominance = question fall / (question fall + image fall), falls below 0 counted "
                 "as 0 (1: the words alone matter, 0: the image alone). A text-only model does not read the image: "
                 "its image fall is 0 by construction."),
        "metric": metric, "generic_question": generic_question, "benchmark": f"{benchmark.name}/{benchmark.split}",
        "num_queries": len(benchmark.queries),
        "columns": ["model", metric, "shuffled image", "generic question", "image fall", "question fall",
                    "text dominance"],
        "rows": rows, "metrics": runs,
        "extra_tables": [{"title": "by query group", "columns": ["group", "model", metric, "shuffled image",
                                                                 "generic question", "image fall", "question fall",
                                                                 "text dominance"], "rows": group_rows}]
        if group_rows else [],
        "findings": findings(rows, metric),
        "plot": None,
    }
    if out_dir is not None:
        result["plot"] = plots.falls(rows, os.path.join(out_dir, f"{NAME}.png"), metric,
                                     f"{benchmark.name}: what each model's {metric} loses")
    return result


def falls_row(name: str, base: dict, shuffled: dict, generic: dict, metric: str) -> dict:
    """One model's row from its three runs' metrics (fractions, as results files hold them; each with "queries"):
    the metric as is, with shuffled images and with the generic question (x 100), both falls and the text
    dominance. The reproduction builds its rows with it from the results files it reads back."""
    image_fall = 100 * (base[metric] - shuffled[metric])
    question_fall = 100 * (base[metric] - generic[metric])
    return {"model": name, metric: 100 * base[metric], "shuffled image": 100 * shuffled[metric],
            "generic question": 100 * generic[metric], "image fall": image_fall, "question fall": question_fall,
            "text dominance": dominance_ratio(image_fall, question_fall), "queries": base["queries"]}


def findings(rows: list[dict], metric: str) -> list[str]:
    """One line per row of `falls_row`."""
    out = []
    for row in rows:
        td = row["text dominance"]
        share = "undefined (neither ablation lowers it)" if td is None else f"{td:.2f}"
        out.append(f"{row['model']}: {metric} {row[metric]:.1f}; shuffled images cost {row['image fall']:.1f} "
                   f"points, a generic question {row['question fall']:.1f}; text dominance {share}")
    return out
