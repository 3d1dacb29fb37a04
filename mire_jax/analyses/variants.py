"""Response-to-passage (R2P) conversion variants: the ViD2R training passages composed in other ways from the same
filtered records and the same retrieved hits, each pre-trained and then evaluated zero-shot.

`compose_variants` writes one ViD2R file per variant from a ViD2R work folder (`python -m mire_jax.vid2r`: its
filtered records and hits); pre-training each is the caller's (the demo's, the reproduce graph's);
`conversion_variants` evaluates the pre-trained models and tabulates them.
"""
from __future__ import annotations

import os
from typing import Mapping

from mire_jax import files
from mire_jax.analyses import plots
from mire_jax.analyses.runs import Searchers, evaluate
from mire_jax.eval import runner
from mire_jax.eval.benchmarks.base import Benchmark
from mire_jax.vid2r import stages
from mire_jax.vid2r.conversion import ConversionConfig, convert_records, cut_passage

NAME = "conversion_variants"
PUBLISHED = "k3_published"

# Name -> how the passage is composed (`mire_jax.vid2r.conversion`); PUBLISHED is the published conversion.
VARIANTS: dict[str, ConversionConfig] = {
    "response_only": ConversionConfig(k=0),
    "k1": ConversionConfig(k=1),
    "k2": ConversionConfig(k=2),
    PUBLISHED: ConversionConfig(),
    "response_first": ConversionConfig(position=0),
    "response_last": ConversionConfig(position=3),
    "plain_concatenation": ConversionConfig(position=0, cut="none"),
}


def describe(config: ConversionConfig) -> str:
    """The layout of a variant's passage, e.g. "hit1 + response + hit2 + hit3 (first 2 sentences of each hit)"."""
    if config.k == 0:
        return "response alone (no R2P)"
    hits = [f"hit{i + 1}" for i in range(config.k)]
    parts = hits[:config.position] + ["response"] + hits[config.position:]
    cut = "whole hits" if config.cut == "none" else f"first {config.sentences} sentences of each hit"
    return " + ".join(parts) + f" ({cut})"


def compose_variants(work_dir: str | os.PathLike, kb: str | os.PathLike, out_dir: str | os.PathLike,
                     variants: Mapping[str, ConversionConfig] | None = None, *, kb_text_field: str | None = None,
                     kb_id_field: str | None = None, progress: bool = True) -> dict[str, str]:
    """One ViD2R file per variant, `out_dir/<name>/ViD2R.json` (the manual dir of the `vid2r` dataset builder).

    Args:
        work_dir: a ViD2R work folder whose "filter" and "search" stages are done (vid2r_wo_conversion.json,
            hits.jsonl), its hits at least as many per record as the largest k wanted.
        kb: the knowledge base the hits' ids refer to (as given to the pipeline).
        out_dir: where the variants go; a variant already composed from the same inputs is kept.
        variants: name -> ConversionConfig (default `VARIANTS`).

    Returns:
        name -> the path of its ViD2R.json.

    Raises:
        FileNotFoundError: the work folder lacks the filtered records or the hits (naming the file).
        ValueError: a variant wants more hits than were searched.
    """
    from mire_jax.vid2r.knowledge_base import KnowledgeBase

    variants = dict(VARIANTS if variants is None else variants)
    records_path = os.path.join(work_dir, "vid2r_wo_conversion.json")
    hits_path = os.path.join(work_dir, "hits.jsonl")
    for path in (records_path, hits_path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: missing; run `python -m mire_jax.vid2r` up to its search stage first")
    inputs = stages.fingerprint(stages.file_signature(records_path), stages.file_signature(hits_path))
    todo = {}
    for name, config in variants.items():
        folder = os.path.join(os.fspath(out_dir), name)
        marker = os.path.join(folder, "variant.json")
        fp = stages.fingerprint(inputs, config.to_json())
        if os.path.exists(marker) and os.path.exists(os.path.join(folder, "ViD2R.json")) and \
                files.read_json(marker).get("fingerprint") == fp:
            continue
        todo[name] = (config, folder, marker, fp)
    if todo:
        records = files.read_json(records_path)
        hits = [row["pids"] for _, _, row in files.iter_json_lines(hits_path)]
        searched = max((len(h) for h in hits), default=0)
        deepest = max(config.k for config, *_ in todo.values())
        if deepest > searched:
            raise ValueError(f"{hits_path}: at most {searched} hits per record, a variant wants {deepest}; rerun "
                             f"the search with -k {deepest}")
        base = KnowledgeBase(kb, kb_text_field, kb_id_field)
        # One pass over the knowledge base per way of cutting the hits, keeping only the cuts.
        depth: dict[tuple, int] = {}
        for config, *_ in todo.values():
            if config.k:
                key = (config.cut, config.sentences)
                depth[key] = max(depth.get(key, 0), config.k)
        cuts = {key: base.texts_for({p for pids in hits for p in pids[:k]}, progress=progress,
                                    transform=lambda t, key=key: cut_passage(t, key[1], key[0]))
                for key, k in depth.items()}
        for name, (config, folder, marker, fp) in todo.items():
            converted = convert_records(records, hits, cuts.get((config.cut, config.sentences), {}), config)
            os.makedirs(folder, exist_ok=True)
            files.write_json(os.path.join(folder, "ViD2R.json"), converted, indent=2)
            files.write_json(marker, {"fingerprint": fp, "name": name, "conversion": config.to_json(),
                                      "layout": describe(config), "records": len(converted)}, indent=2)
    return {name: os.path.join(os.fspath(out_dir), name, "ViD2R.json") for name in variants}


def conversion_variants(models: Mapping[str, str | os.PathLike], benchmarks: Benchmark | Mapping[str, Benchmark],
                        workdir: str, out_dir: str | None = None, *,
                        variants: Mapping[str, ConversionConfig] | None = None,
                        settings: runner.EvalSettings | None = None, metrics: tuple[str, ...] = ("R@5", "MRR@5"),
                        searchers: Searchers | None = None) -> dict:
    """Zero-shot metrics of the model pre-trained on each variant's ViD2R.

    Args:
        models: variant name -> its pre-trained model folder.
        benchmarks: one benchmark, or name -> benchmark (the paper's zero-shot sets).
        workdir: where the runner caches each model's encoded corpus.
        out_dir: where the plot goes (None: no plot).
        variants: name -> ConversionConfig, to describe each row (default `VARIANTS`).
        settings: the evaluation settings (default `EvalSettings()`).
        metrics: published metrics to report per benchmark.

    Returns:
        A plain dict: "rows" (one per variant: its layout, then `<benchmark> <metric>` in %), the differences to the
        published variant where it is among the models, "plot".
    """
    if isinstance(benchmarks, Benchmark):
        benchmarks = {benchmarks.name: benchmarks}
    variants = dict(VARIANTS if variants is None else variants)
    searchers = searchers or Searchers(settings or runner.EvalSettings())
    rows = []
    for name, folder in models.items():
        config = variants.get(name)
        row = {"variant": name, "layout": describe(config) if config else "", "model": os.fspath(folder)}
        for bench_name, bench in benchmarks.items():
            m = evaluate(searchers, folder, bench, workdir)["all"]
            row.update({f"{bench_name} {k}": 100 * m[k] for k in metrics})
        rows.append(row)
    value_columns = [f"{b} {k}" for b in benchmarks for k in metrics]
    reference = next((r for r in rows if r["variant"] == PUBLISHED), None)
    findings = []
    if reference is not None:
        for row in rows:
            if row is not reference:
                deltas = ", ".join(f"{c} {row[c] - reference[c]:+.1f}" for c in value_columns)
                findings.append(f"{row['variant']} against {PUBLISHED}: {deltas}")
    result = {
        "analysis": NAME,
        "title": "Response-to-passage conversion variants (pre-trained, zero-shot)",
        "what": ("Each row pre-trains the same model on ViD2R passages composed another way from the same filtered "
                 "records and retrieved hits, then evaluates it zero-shot (published metrics, %). "
                 f"{PUBLISHED} is the published conversion; response_only is the paper's 'w/o R2P'."),
        "benchmarks": {name: f"{b.name}/{b.split} ({len(b.queries)} queries)" for name, b in benchmarks.items()},
        "columns": ["variant", "layout", *value_columns], "rows": rows, "findings": findings, "plot": None,
    }
    if out_dir is not None:
        result["plot"] = plots.grouped_bars([r["variant"] for r in rows],
                                            {c: [r[c] for r in rows] for c in value_columns},
                                            os.path.join(out_dir, f"{NAME}.png"), ylabel="%",
                                            title="zero-shot retrieval after pre-training on each conversion")
    return result
