"""Evaluation stages: one model on one benchmark under a list of runs (mode, image or question ablation, query rows,
protocol), each through `mire_jax.eval.runner.evaluate`, the project's one evaluation path, its results file written
as `eval/evaluate.py` writes it, under the stage's results folder: results/<benchmark>_<split>/results_<run>.json.

The encoded corpora and their indexes are cached under R/cache/corpora/, keyed by the index settings and, inside, by
the model's fingerprint, passage length and passage keep policy (`runner.corpus_folder`), so the stages that
evaluate one model on one benchmark (its main runs, its ablations) encode the corpus once per protocol.
"""
from __future__ import annotations

import dataclasses
import os

from mire_jax.reproduce import fingerprints, multihost, recipes
from mire_jax.reproduce.graph import Inputs, Stage, StageContext
from mire_jax.reproduce.layout import BenchmarkSpec, load_benchmark
from mire_jax.reproduce.stage_data import MODEL_CODE, model_input

EVAL_CODE = ("eval", "index", *MODEL_CODE, "reproduce/stage_eval.py")
CORPORA = os.path.join("cache", "corpora")


@dataclasses.dataclass(frozen=True)
class EvalRun:
    """One evaluation of a stage: `label` names it in the report; the rest are `EvalSettings` fields."""
    label: str
    mode: str = "mire"
    image_ablation: str | None = None
    query_rows: str = "all"
    protocol: str = "published"
    question_ablation: str | None = None  # "generic": every query asks the runner's generic question

    def fields(self) -> dict:
        """Its fields as a stage's inputs record them (`question_ablation` only when set: the runs of stages made
        before it existed keep their fingerprints)."""
        fields = dataclasses.asdict(self)
        if fields["question_ablation"] is None:
            del fields["question_ablation"]
        return fields


def main_runs(protocols) -> list[EvalRun]:
    """The model as published, under each protocol."""
    return [EvalRun("mire", protocol=p) for p in protocols]


# The paper's inference ablations and the image probes, under the published protocol (the paper's).
ABLATION_RUNS = [EvalRun("text_only", mode="text_only"),
                 EvalRun("no_text_tokens", query_rows="visual"),
                 EvalRun("no_pooled_tokens", query_rows="text"),
                 EvalRun("shuffled_images", image_ablation="shuffle"),
                 EvalRun("blank_images", image_ablation="blank")]


def eval_stage(name: str, spec: BenchmarkSpec, runs: list[EvalRun], *, model_stage: str = "",
               model_path: str = "", title: str = "", skip: str = "", tags: tuple[str, ...] = ()) -> Stage:
    """Evaluates the model of `model_stage` (or `model_path`) on benchmark `spec` under `runs`."""

    def inputs(ctx: StageContext) -> Inputs:
        _, model_files = model_input(ctx, model_stage, model_path)
        base = recipes.eval_base(ctx.plan, spec)
        return Inputs(config={"benchmark": spec.key, "split": spec.split,
                              "settings": recipes.results_view(base.settings, recipes.EVAL_NOT_RESULTS),
                              "loader": base.loader, "runs": [r.fields() for r in runs]},
                      files={**ctx.layout.benchmark_files(spec), **model_files},
                      present=ctx.layout.benchmark_present(spec))

    def run(ctx: StageContext) -> dict:
        from mire_jax.eval import runner
        from mire_jax.retrieval.model_folder import load_model, load_tokenizer
        model_dir, _ = model_input(ctx, model_stage, model_path)
        base = recipes.eval_base(ctx.plan, spec)
        config, params = load_model(model_dir)
        tokenizer = load_tokenizer(model_dir)
        benchmark = load_benchmark(ctx.layout, spec, **base.loader)
        cache = os.path.join(ctx.plan.out, CORPORA, fingerprints.digest(base.settings.get("index"),
                                                                          base.settings.get("shard_size")))
        out_dir = os.path.join(ctx.results_dir, f"{benchmark.name}_{benchmark.split}")
        results, summary, searchers, names = {}, {}, {}, {}
        for r in runs:
            settings = runner.EvalSettings(**base.settings, mode=r.mode, image_ablation=r.image_ablation,
                                           question_ablation=r.question_ablation, query_rows=r.query_rows,
                                           protocol=r.protocol)
            names[settings.run_name] = r.fields()
            if r.protocol not in searchers:  # one searcher (and index) per protocol: the passage tokens differ
                searchers[r.protocol] = runner.make_searcher(config, params, tokenizer, settings, model_dir)
            ctx.log(f"  {spec.key}: {r.label} ({settings.run_name})")
            payload, ranking = runner.evaluate(benchmark, searchers[r.protocol], cache, settings,
                                               checkpoint=model_dir)
            if multihost.is_writer():
                results[settings.run_name] = runner.write_results(out_dir, settings, payload, ranking)
            metrics = payload["metrics"][r.protocol] if r.protocol in payload["metrics"] else \
                payload["metrics"]["published"]
            summary[settings.run_name] = {k: metrics[k] for k in ("MRR@5", "R@5") if k in metrics}
        return {"results": results, "benchmark": spec.key, "runs": names, "summary": summary}

    after = (model_stage,) if model_stage else ()
    return Stage(name, title or f"evaluation on {spec.key}", inputs, run, after=after, code=EVAL_CODE, skip=skip,
                 tags=("eval", *tags))
