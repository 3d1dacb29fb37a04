"""`python -m mire_jax.demo --analyses`: the four analyses on the generated world, after the demo, into
`<out>/analyses/` (analyses.md, analyses.json, one PNG per analysis and a heatmap gallery)."""
from __future__ import annotations

import os
import time

from mire_jax.demo.analyses.plan import AnalysesPlan, DemoRun, eval_settings
from mire_jax.files import iter_json_lines


def _queries(data: str) -> list[dict]:
    return [q for _, _, q in iter_json_lines(os.path.join(data, "zeroshot", "test.jsonl"))]


def question_fields(data: str) -> dict[str, str]:
    """qid -> the fact its generic question asks for (designer, year, town, material, owner, name)."""
    from mire_jax.demo.world.text import ZEROSHOT_QUESTIONS
    field = {question: name for name, question in ZEROSHOT_QUESTIONS.items()}
    return {q["id"]: field.get(q["question"], "other") for q in _queries(data)}


def trap_types(data: str) -> dict[str, str]:
    """qid -> its trap type (specific, generic, misleading) in a trap world."""
    return {q["id"]: q["trap"] for q in _queries(data)}


def object_regions(data: str) -> dict[str, object]:
    """qid -> the object's mask in its picture."""
    from mire_jax.demo.world import object_masks
    queries = _queries(data)
    masks = object_masks(data, [q["image"] for q in queries])
    return {q["id"]: masks[q["image"]] for q in queries}


def compilation_cache(folder: str) -> None:
    """JAX's persistent compilation cache in `folder`, unless one is configured: the analyses' many pre-trainings
    and searchers compile the same few programs again and again (each training, each model's encoders)."""
    import jax
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def run_analyses(run: DemoRun, plan: AnalysesPlan, lap=lambda name: None) -> dict:
    """The four analyses; -> {"results": [...], "report": path, "json": path}. `lap(name)` is called after each."""
    from mire_jax.analyses import conversion_variants, modality_reliance, pooling_focus, text_dominance, write_report
    from mire_jax.analyses.runs import Searchers
    from mire_jax.demo.analyses.trap import build_trap_world, train_trap_models
    from mire_jax.demo.analyses.variants import train_variants
    from mire_jax.demo.world import load_synthetic

    out, workdir = run.analyses, os.path.join(run.analyses, "eval")
    compilation_cache(os.path.join(out, "jit_cache"))
    searchers = Searchers(eval_settings(run))
    bench = load_synthetic(run.data, "zeroshot")
    load_start, t0, cpu0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
    m = run.models

    focus = pooling_focus(m["mire"], bench, out, regions=object_regions(run.data),
                          query_types=question_fields(run.data), gallery=plan.gallery, searcher=searchers(m["mire"]))
    focus["title"] += " (MIRe, generic questions, by the fact asked for)"
    lap("analyses: pooling focus")
    reliance = modality_reliance({"text_only": (m["text_only"], "text_only"), "mire": m["mire"],
                                  "mire_residual": m["mire_residual"]}, bench, workdir, out, searchers=searchers)
    reliance["title"] += " (the demo's world, generic questions)"
    lap("analyses: modality reliance")

    variants = conversion_variants(train_variants(run, plan), bench, workdir, out, searchers=searchers)
    lap("analyses: conversion variants")

    trap_data, trap_vid2r = build_trap_world(run)
    trap_models = train_trap_models(run, plan, trap_vid2r)
    trap_bench = load_synthetic(trap_data, "zeroshot")
    groups = trap_types(trap_data)
    trap_workdir = os.path.join(out, "trap_eval")  # its own: a corpus folder is named by benchmark and model only
    dominance = text_dominance(trap_models, trap_bench, trap_workdir, os.path.join(out, "trap"), groups=groups,
                               baseline=m["text_only"], searchers=searchers)
    dominance["title"] += " on the trap world"
    trap_reliance = modality_reliance({"text_only": (m["text_only"], "text_only"), "mire": trap_models["mire"][0],
                                       "mire_residual": trap_models["mire_residual"][0]}, trap_bench, trap_workdir,
                                      os.path.join(out, "trap"), groups=groups, searchers=searchers)
    trap_reliance["title"] += f" (the trap world, seed {plan.trap_seeds[0]})"
    trap_focus = pooling_focus(trap_models["mire"][0], trap_bench, os.path.join(out, "trap"),
                               regions=object_regions(trap_data), query_types=groups, gallery=plan.gallery,
                               searcher=searchers(trap_models["mire"][0]))
    trap_focus["title"] += f" (MIRe on the trap world, seed {plan.trap_seeds[0]}, by the noun the question uses)"
    lap("analyses: trap world")

    results = [variants, focus, trap_focus, reliance, trap_reliance, dominance]
    minutes, cpu_minutes = (time.perf_counter() - t0) / 60, (time.process_time() - cpu0) / 60
    preamble = [
        f"The generated world of `{run.out}`: {len(bench.queries)} zero-shot queries on unseen attribute "
        f"combinations, {len(bench.corpus)} passages (chance R@5 {500 / len(bench.corpus):.1f}%). Published metrics "
        "(gold id; R@k = hit rate), exact MaxSim search. Models: `text_only` (the warmed-up text tower), `mire` "
        "(fusion-free pooling head pre-trained on ViD2R), `mire_residual` (the paper's fusion ablation).",
        "",
        f"The trap world (`{os.path.relpath(trap_data, run.out)}`): the same pictures and passages; the training "
        "dialogues name the pictured entity's kind, and each zero-shot question names the right kind (`specific`), "
        "says \"object\" (`generic`, the paper's Figure 1 case) or names another kind (`misleading`); "
        f"{len(plan.trap_seeds)} training seed(s) per model.",
        "",
        f"The analyses took {minutes:.1f} min after the demo ({cpu_minutes:.1f} min of this process's CPU time; "
        f"1-minute load average {load_start:.1f} at their start and {os.getloadavg()[0]:.1f} at their end, on "
        f"{os.cpu_count()} CPU(s): a load above the CPU count means other work shared them).",
    ]
    md, js = write_report(out, results, title="MIRe demo: analyses", preamble=preamble)
    return {"results": results, "report": md, "json": js}
