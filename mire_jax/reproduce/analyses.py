"""The analyses of `mire_jax.analyses` in the reproduction, registered through `mire_jax.reproduce.registry` like a
plug-in's stages and sections (listed in `registry.PLUGINS`): on real data as on the generated world.

Stages (tag "analyses"), after the core graph:
  analyses/reliance/<benchmark>           the pre-trained MIRe with every question replaced by the runner's generic
                                          one, and its text-only mode likewise (`question_ablation="generic"`)
  analyses/reliance_residual/<benchmark>  the residual-fusion model with shuffled images and with the generic question
  analyses/focus/<benchmark>              where the pre-trained model's pooling looks (`pooling_focus`): the entropy
                                          per query type and a heatmap gallery (on the generated world's zero-shot
                                          split, with the objects' masks, the share of attention on the object too)
  analyses/variants, analyses/trap        the conversion variants and the trap world: each needs pre-trainings of its
                                          own, so the reproduction skips them, saying why and what runs them

Sections: "Modality reliance" is computed from the results files of `zeroshot/`, `ablations/`, `residual/` and the
stages above, read back (the same file the "Every evaluation" table names); "Where the pooling looks" from the focus
stages' results files; "Analyses not run" says why an analysis has no numbers.
"""
from __future__ import annotations

import os

from mire_jax.files import write_json
from mire_jax.reproduce import multihost, recipes, registry, report_sections
from mire_jax.reproduce.engine import FINISHED
from mire_jax.reproduce.graph import Inputs, Stage, StageContext
from mire_jax.reproduce.layout import BenchmarkSpec, load_benchmark
from mire_jax.reproduce.report_context import ReportContext, Section
from mire_jax.reproduce.stage_data import MODEL_CODE, model_input
from mire_jax.reproduce.stage_eval import EvalRun, eval_stage

METRIC = "R@5"  # the published protocol's hit rate, the paper's headline zero-shot metric besides MRR@5
PROTOCOL = "published"
RELIANCE_MIRE_RUNS = [EvalRun("generic_question", question_ablation="generic"),
                      EvalRun("text_only_generic_question", mode="text_only", question_ablation="generic")]
RELIANCE_RESIDUAL_RUNS = [EvalRun("shuffled_images", image_ablation="shuffle"),
                          EvalRun("generic_question", question_ablation="generic")]
# Queries the pooling-focus stage looks at, by preset (one forward pass each); others: FOCUS_QUERIES_DEFAULT.
FOCUS_QUERIES = {"smoke": 4, "demo-quick": 24, "demo": 60}
FOCUS_QUERIES_DEFAULT = 200
GALLERY = 6
FOCUS_CODE = ("analyses", *MODEL_CODE, "reproduce/analyses.py")
RESULTS_FILE = "pooling_focus.json"

# The three runs of each model's row: (stage pattern, run label); None: the base run stands in (by construction).
RELIANCE_MODELS = {
    "MIRe": (("zeroshot/{}", "mire"), ("ablations/{}", "shuffled_images"), ("analyses/reliance/{}", "generic_question")),
    "residual fusion": (("residual/{}", "mire"), ("analyses/reliance_residual/{}", "shuffled_images"),
                        ("analyses/reliance_residual/{}", "generic_question")),
    "text only": (("ablations/{}", "text_only"), None, ("analyses/reliance/{}", "text_only_generic_question")),
}
PARTS = ("as is", "shuffled image", "generic question")


def _benchmarks(plan) -> dict[str, BenchmarkSpec]:
    """The zero-shot benchmarks of the plan: the keys of its `zeroshot/<key>` stages, with their specs."""
    from mire_jax.reproduce.layout import PAPER_BENCHMARKS, WORLD_BENCHMARKS
    specs = WORLD_BENCHMARKS if plan.preset.world else PAPER_BENCHMARKS
    keys = [s.name.split("/", 1)[1] for s in plan.stages if s.name.startswith("zeroshot/")]
    return {key: specs[key] for key in keys if key in specs}


def _pretrained(plan) -> str:
    return "init" if plan.has("init") else "pretrain"


# Stages ----------------------------------------------------------------------------------------------------------

def focus_stage(name: str, spec: BenchmarkSpec, *, model_stage: str, max_queries: int, gallery: int = GALLERY,
                tags: tuple[str, ...] = ()) -> Stage:
    """`pooling_focus` of the model of `model_stage` on the first `max_queries` queries with an image of `spec`,
    its result written to results/pooling_focus.json (figures beside it)."""
    with_regions = spec.loader == "synthetic" and spec.split == "zeroshot"

    def inputs(ctx: StageContext) -> Inputs:
        base = recipes.eval_base(ctx.plan, spec)
        return Inputs(config={"benchmark": spec.key, "split": spec.split, "loader": base.loader,
                              "query_maxlen": base.settings.get("query_maxlen"), "max_queries": max_queries,
                              "gallery": gallery, "object_masks": with_regions},
                      files=ctx.layout.benchmark_files(spec), present=ctx.layout.benchmark_present(spec))

    def run(ctx: StageContext) -> dict:
        from mire_jax.analyses import pooling_focus
        model_dir, _ = model_input(ctx, model_stage, "")
        base = recipes.eval_base(ctx.plan, spec)
        benchmark = load_benchmark(ctx.layout, spec, **base.loader)
        regions = types = None
        if with_regions:  # the generated world knows each picture's object, and what each question asks
            from mire_jax.demo.analyses.main import object_regions, question_fields
            root = ctx.layout.benchmark_root(spec)
            regions, types = object_regions(root), question_fields(root)
        ctx.log(f"  {spec.key}: pooling focus on up to {max_queries} queries")
        result = pooling_focus(model_dir, benchmark, ctx.results_dir, regions=regions, query_types=types,
                               max_queries=max_queries, gallery=gallery,
                               settings={"query_maxlen": base.settings.get("query_maxlen")})
        for key in ("plot", "gallery"):  # figures relative to the output folder, as the report links them
            if result.get(key):
                result[key] = os.path.relpath(result[key], ctx.plan.out)
        result["model"] = os.path.relpath(model_dir, ctx.plan.out) if model_dir.startswith(ctx.plan.out) else \
            model_dir
        path = os.path.join(ctx.results_dir, RESULTS_FILE)
        if multihost.is_writer():
            write_json(path, result, indent=1)
        overall = result["rows"][-1]
        return {"results": {"pooling_focus": path}, "benchmark": spec.key,
                "summary": {"queries": overall["queries"], "entropy": overall["entropy"]}}

    return Stage(name, f"where the pooling looks on {spec.key}", inputs, run, after=(model_stage,), code=FOCUS_CODE,
                 hosts="writer", tags=("analyses", *tags))


def _not_run(name: str, title: str, reason: str) -> Stage:
    def run(ctx):  # never called: the stage is skipped when the plan is made
        raise RuntimeError(f"{name}: {reason}")
    return Stage(name, title, lambda ctx: Inputs(), run, skip=reason, tags=("analyses",))


def analysis_stages(plan):
    """The analyses' stages for `plan` (registered with `registry.register_stages`)."""
    pretrained = _pretrained(plan)
    benchmarks = _benchmarks(plan)
    if not benchmarks or not plan.has(pretrained):
        return
    for key, spec in benchmarks.items():
        yield eval_stage(f"analyses/reliance/{key}", spec, RELIANCE_MIRE_RUNS, model_stage=pretrained,
                         title=f"modality reliance on {key}: MIRe and its text-only mode with a generic question",
                         tags=("analyses", "reliance"))
        if plan.has("pretrain_residual"):
            yield eval_stage(f"analyses/reliance_residual/{key}", spec, RELIANCE_RESIDUAL_RUNS,
                             model_stage="pretrain_residual",
                             title=f"modality reliance on {key}: the residual-fusion model, shuffled images and a "
                                   "generic question", tags=("analyses", "reliance"))
    for key, spec in benchmarks.items():
        yield focus_stage(f"analyses/focus/{key}", spec, model_stage=pretrained,
                          max_queries=FOCUS_QUERIES.get(plan.preset.name, FOCUS_QUERIES_DEFAULT), tags=("focus",))
    if plan.preset.world:
        yield _not_run("analyses/variants", "response-to-passage conversion variants, each pre-trained",
                       "pre-trains one more model per conversion variant: not part of the reproduction; "
                       "`python -m mire_jax.demo --analyses` runs it on the generated world (docs/analyses.md)")
        yield _not_run("analyses/trap", "the text-dominance trap world: MIRe against residual fusion, several seeds",
                       "builds a trap world and pre-trains MIRe and the residual ablation on it with several seeds: "
                       "not part of the reproduction; `python -m mire_jax.demo --analyses` runs it")
    else:
        yield _not_run("analyses/variants", "response-to-passage conversion variants, each pre-trained",
                       "pre-trains one more model per conversion variant with the paper's recipe (six more "
                       "pre-trainings): not run by the reproduction; docs/analyses.md (On real data) gives the "
                       "commands")
        yield _not_run("analyses/trap", "the text-dominance trap world",
                       "the trap is a setting of the generated world (its questions name a wrong or generic kind); "
                       "real data has no such questions: see the modality-reliance section")


# Sections --------------------------------------------------------------------------------------------------------

def lookup(report: ReportContext, stage: str, label: str, protocol: str = PROTOCOL):
    """(the Results of run `label` of `stage`, "") or (None, why it has none)."""
    if not report.plan.has(stage):
        return None, f"no stage {stage} in this plan"
    if not report.usable(stage):
        why = report.reason(stage)
        return None, f"{stage} {report.status(stage)}" + (f": {why}" if why else "")
    found = report.find_run(stage, label, protocol)
    if found is not None:
        return found, ""
    listed = report.record(stage).outputs.get("results") or {}
    for run_name, run in report.run_settings(stage).items():
        if run.get("label") == label and run.get("protocol") == protocol and run_name in listed:
            return None, f"results file {listed[run_name]} of {stage} is missing"
    return None, f"{stage} made no {label} run under the {protocol} protocol"


def _metrics(found) -> dict:
    metrics = found.data["metrics"][PROTOCOL]
    return {METRIC: metrics[METRIC], "queries": found.data.get("num_queries")}


def modality_reliance(report: ReportContext) -> Section | None:
    from mire_jax.analyses import plots
    from mire_jax.analyses.reliance import NAME, falls_row, findings
    from mire_jax.analyses.report import parts
    from mire_jax.eval.runner import GENERIC_QUESTION
    benchmarks = _benchmarks(report.plan)
    if not benchmarks:
        return None
    rows, missing = [], []
    for key in benchmarks:
        for model, runs in RELIANCE_MODELS.items():
            found, files, why = {}, {}, ""
            for part, run in zip(PARTS, runs):
                if run is None:
                    continue
                stage, label = run[0].format(key), run[1]
                found[part], why = lookup(report, stage, label)
                if found[part] is None:
                    break
                files[part] = found[part].path
            if why:
                missing.append({"benchmark": key, "model": model, "reason": why})
                continue
            base = _metrics(found["as is"])
            shuffled = base if found.get("shuffled image") is None else _metrics(found["shuffled image"])
            row = falls_row(model, base, shuffled, _metrics(found["generic question"]), METRIC)
            caveats = {report.caveat(run[0].format(key)) for run in runs if run} - {""}
            rows.append({"benchmark": key, **row, "results": files,
                         **({"caveat": "; ".join(sorted(caveats))} if caveats else {})})
    result = {
        "analysis": NAME,
        "title": "Modality reliance: shuffled images versus a generic question",
        "what": (f"{METRIC} (published protocol, x 100) of each pre-trained model on each zero-shot benchmark as is, "
                 "with each query's image swapped for another query's, and with every question replaced by "
                 f"\"{GENERIC_QUESTION}\"; read back from the results files (`results` in reproduction.json). "
                 f"Falls are in points; text dominance = question fall / (question fall + image fall), falls below "
                 "0 counted as 0 (1: the words alone matter, 0: the image alone). The text-only model does not read "
                 "the image: its shuffled-image value is its own (a fall of 0 by construction)."),
        "metric": METRIC, "protocol": PROTOCOL, "generic_question": GENERIC_QUESTION,
        "columns": ["benchmark", "model", METRIC, "shuffled image", "generic question", "image fall",
                    "question fall", "text dominance"],
        "rows": rows, "not_computed": missing,
        "findings": [f"{r['benchmark']}, {line}" for r, line in zip(rows, findings(rows, METRIC))],
        "plot": None,
    }
    if rows:
        try:
            labelled = [{**r, "model": f"{r['benchmark']}: {r['model']}"} for r in rows]
            path = plots.falls(labelled, report.figure_path("modality_reliance.png"), METRIC,
                               f"what each model's {METRIC} loses (published protocol)")
            result["plot"] = os.path.relpath(path, report.out)
        except ImportError:
            pass
    section = parts(result)
    lines = section["lines"]
    if not rows:
        lines = [result["what"], "", "No row could be computed."]
    lines += _missing_lines(missing, "Not computed (no results to read)")
    return Section(section["title"], lines, data=result, figures=section["figures"])


def _missing_lines(missing: list[dict], title: str) -> list[str]:
    if not missing:
        return []
    return ["", f"{title}:", ""] + [f"- {m['benchmark']}, {m.get('model', 'pooling focus')}: {m['reason']}"
                                    for m in missing]


def pooling_focus(report: ReportContext) -> Section | None:
    from mire_jax.analyses.report import parts
    stages = [s.name for s in report.plan.stages if s.name.startswith("analyses/focus/")]
    if not stages:
        return None
    lines, figures, data, missing = [], [], {}, []
    for stage in stages:
        key = stage.split("/", 2)[2]
        results, why = report.results(stage).get("pooling_focus"), ""
        if results is None:
            if report.usable(stage):
                why = f"results file {report.record(stage).outputs.get('results', {}).get('pooling_focus')} of " \
                      f"{stage} is missing"
            else:
                why = f"{stage} {report.status(stage)}" + (f": {report.reason(stage)}" if report.reason(stage) else "")
            missing.append({"benchmark": key, "reason": why})
            continue
        result = results.data
        section = parts(result)
        caveat = report.caveat(stage)
        lines += [f"### {key}" + (f" ({caveat})" if caveat else ""), ""] + section["lines"] + \
            ["", f"From `{results.path}`.", ""]
        figures += section["figures"]
        data[key] = {**result, "results": results.path}
    if not data:
        lines = ["No pooling-focus stage has results."]
    lines += _missing_lines(missing, "Not computed")
    return Section("Where the pooling looks", lines, data={"benchmarks": data, "not_computed": missing},
                   figures=figures)


def not_run(report: ReportContext) -> Section | None:
    rows = [{"stage": s.name, "title": s.title, "status": report.status(s.name), "reason": report.reason(s.name)}
            for s in report.plan.stages if "analyses" in s.tags and
            not (report.usable(s.name) and report.status(s.name) in FINISHED)]
    if not rows:
        return None
    lines = ["| analysis stage | what | status | why |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['title']} | {r['status']} | {r['reason']} |" for r in rows]
    return Section("Analyses not run", lines, data=rows)


# How the report's evaluation tables name the analyses' models and runs.
report_sections.MODELS.update({"analyses/reliance": "MIRe, pre-trained",
                               "analyses/reliance_residual": "residual fusion, pre-trained"})
report_sections.RUNS.update({"generic_question": "generic question",
                             "text_only_generic_question": "question only, generic question"})

registry.register_stages(analysis_stages)
registry.register_section("modality_reliance", modality_reliance, order=46)
registry.register_section("pooling_focus", pooling_focus, order=47)
registry.register_section("analyses_not_run", not_run, order=48)
