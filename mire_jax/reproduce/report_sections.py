"""The report's core sections, each registered with `mire_jax.reproduce.registry` like a plug-in's: the paper's
tables against ours, the generated world, every results file, the index's recall against exact search, the
evaluation choices, the trainings, and the stages (status, wall time, hardware)."""
from __future__ import annotations

import os

from mire_jax.reproduce import comparisons, hardware, registry
from mire_jax.reproduce.report_context import ReportContext, Section

DASH = "—"
WORLD_METRICS = ("R@1", "R@5", "R@10", "MRR@5")
# How the report names the models of the stage groups (a stage's name less its last part, else its first part) and the
# runs of the evaluation stages (others: their names); plug-ins add theirs.
MODELS = {"zeroshot": "MIRe, pre-trained", "ablations": "MIRe, pre-trained", "finetuned": "MIRe, fine-tuned",
          "finetuned_scratch": "MIRe, fine-tuned w/o pre-training", "residual": "residual fusion, pre-trained"}
RUNS = {"mire": "image + question", "text_only": "question only (text tower)", "no_text_tokens": "w/o E_t",
        "no_pooled_tokens": "w/o E_g & E_m", "shuffled_images": "shuffled images", "blank_images": "blank images"}


def fmt(value, signed: bool = False) -> str:
    if value is None:
        return DASH
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _eval_stages(report: ReportContext) -> list[str]:
    return [s.name for s in report.plan.stages if "eval" in s.tags]


# The paper's tables ----------------------------------------------------------------------------------------------

def paper_tables(report: ReportContext) -> Section | None:
    if report.plan.preset.world:
        return None
    tables = comparisons.compare(report, report.plan.preset.size)
    lines = [f"The paper's numbers are read from `mire_jax/reproduce/paper_numbers.json` ({report.paper.paper} "
             f"{report.paper.version}; secondary sources, see docs/paper_tables.md); {DASH} where the file has no "
             "number or we have no run. Ours are the results files' values x 100, under the **published** protocol "
             "(MIRe's evaluation) and the **textbook** one; diff = ours - paper, in points. Model size: "
             f"{report.plan.preset.size}.", ""]
    for table in tables:
        lines += [f"### Table `{table['table']}`", "", table["caption"], "",
                  "| row | benchmark | metric | paper | ours (published) | diff | ours (textbook) | diff | notes |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in table["rows"]:
            for cell in row["cells"]:
                notes = "; ".join(dict.fromkeys(w.get("note") or w.get("caveat") or "" for w in cell["where"].values()
                                                if w.get("note") or w.get("caveat")))
                if row["absent"]:
                    notes = row["absent"]
                lines.append(f"| {row['row']} | {cell['benchmark']} | {cell['metric']} | {fmt(cell['paper'])} | "
                             f"{fmt(cell['ours'].get('published'))} | {fmt(cell['diff'].get('published'), True)} | "
                             f"{fmt(cell['ours'].get('textbook'))} | {fmt(cell['diff'].get('textbook'), True)} | "
                             f"{notes} |")
        if table["paper_rows_not_run"]:
            lines += ["", "The paper's other rows of this table (baselines, other sizes; not run here): " +
                      ", ".join(table["paper_rows_not_run"]) + "."]
        lines.append("")
    figures = [_plot_tables(report, tables)] if tables else []
    return Section("The paper's tables and ours", lines, data=tables, figures=[f for f in figures if f])


def _plot_tables(report: ReportContext, tables: list[dict]) -> str:
    cells = [(t["table"], f"{r['row']}\n{c['benchmark']}", c["paper"], c["ours"].get("published"))
             for t in tables for r in t["rows"] for c in r["cells"]]
    if not any(ours is not None for *_, ours in cells):
        return ""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    names = list(dict.fromkeys(t for t, *_ in cells))
    fig, axes = plt.subplots(len(names), 1, figsize=(max(6.0, 0.55 * max(sum(1 for c in cells if c[0] == n)
                                                                            for n in names)), 3.2 * len(names)),
                             squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        mine = [c for c in cells if c[0] == name]
        xs = range(len(mine))
        ax.bar([x - 0.2 for x in xs], [c[2] or 0 for c in mine], 0.4, label="paper")
        ax.bar([x + 0.2 for x in xs], [c[3] or 0 for c in mine], 0.4, label="ours (published)")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([c[1] for c in mine], fontsize=6, rotation=60, ha="right")
        ax.set_title(f"table {name}", fontsize=9)
        ax.set_ylabel("%")
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = report.figure_path("paper_vs_ours.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.path.relpath(path, report.out)


# Every results file ----------------------------------------------------------------------------------------------

def all_results(report: ReportContext) -> Section | None:
    rows = []
    for stage in _eval_stages(report):
        settings = report.run_settings(stage)
        for run_name, found in report.results(stage).items():
            metrics = found.data["metrics"]
            protocol = found.data.get("protocol", "published")
            own = metrics.get(protocol, {})
            rows.append({"stage": stage, "run": run_name, "label": settings.get(run_name, {}).get("label", ""),
                         "benchmark": found.data["benchmark"], "split": found.data["split"], "protocol": protocol,
                         "metrics_protocol": protocol if protocol in metrics else "published",
                         "MRR@5": (own or metrics["published"]).get("MRR@5"),
                         "R@5": (own or metrics["published"]).get("R@5"),
                         "Hit@5": own.get("Hit@5"), "R@10": (own or metrics["published"]).get("R@10"),
                         "num_queries": found.data.get("num_queries"), "num_passages": found.data.get("num_passages"),
                         "results": found.path, "caveat": report.caveat(stage)})
    if not rows:
        return Section("Every evaluation", ["No evaluation stage has results yet."], data=[])
    lines = ["Each run's own protocol's metrics (x 100), from its results file.", "",
             "| stage | run | queries | passages | MRR@5 | R@5 | Hit@5 | R@10 | results file |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pct = {k: None if r[k] is None else 100 * r[k] for k in ("MRR@5", "R@5", "Hit@5", "R@10")}
        caveat = f" ({r['caveat']})" if r["caveat"] else ""
        lines.append(f"| {r['stage']}{caveat} | {r['label']} ({r['protocol']}) | {r['num_queries']} | "
                     f"{r['num_passages']} | {fmt(pct['MRR@5'])} | {fmt(pct['R@5'])} | {fmt(pct['Hit@5'])} | "
                     f"{fmt(pct['R@10'])} | `{r['results']}` |")
    return Section("Every evaluation", lines, data=rows)


# The generated world ---------------------------------------------------------------------------------------------

def world(report: ReportContext) -> Section | None:
    if not report.plan.preset.world:
        return None
    rows = []
    for stage in _eval_stages(report):
        settings = report.run_settings(stage)
        for run_name, found in report.results(stage).items():
            label = settings.get(run_name, {}).get("label", run_name)
            protocol = found.data.get("protocol", "published")
            metrics = found.data["metrics"].get(protocol) or found.data["metrics"]["published"]
            group = stage.split("/")[0]
            model = MODELS.get(stage.rsplit("/", 1)[0], MODELS.get(group, group))
            rows.append({"model": model, "run": RUNS.get(label, label), "protocol": protocol,
                         "split": found.data["split"], "stage": stage, "results": found.path,
                         **{k: metrics.get(k) for k in WORLD_METRICS}})
    lines = ["Generated world rows: no paper numbers exist for them. Zero-shot queries ask generic questions about "
             "entities whose attribute combinations never occur in training (`zeroshot`); `seen` queries show new "
             "pictures of training entities. Values x 100.", "",
             "| model | run | protocol | split | " + " | ".join(WORLD_METRICS) + " |",
             "|---|---|---|---|" + "---|" * len(WORLD_METRICS)]
    for r in rows:
        lines.append(f"| {r['model']} | {r['run']} | {r['protocol']} | {r['split']} | " +
                     " | ".join(fmt(None if r[k] is None else 100 * r[k]) for k in WORLD_METRICS) + " |")
    record = report.record("world")
    if record is not None and record.summary.get("chance_R@5") is not None:
        lines += ["", f"Chance R@5 on the zero-shot split: {100 * record.summary['chance_R@5']:.2f}."]
    figure = _plot_world(report, rows)
    return Section("Generated world", lines, data=rows, figures=[figure] if figure else [])


def _plot_world(report: ReportContext, rows: list[dict]) -> str:
    shown = [r for r in rows if r["protocol"] == "published" and r["R@5"] is not None]
    if not shown:
        return ""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    splits = list(dict.fromkeys(r["split"] for r in shown))
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 3.4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        mine = [r for r in shown if r["split"] == split]
        ax.barh([f"{r['model']}: {r['run']}" for r in mine], [100 * r["R@5"] for r in mine])
        ax.set_title(f"R@5 on the {split} split (published)", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = report.figure_path("world_r5.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.path.relpath(path, report.out)


# The index's error -----------------------------------------------------------------------------------------------

def index_recall(report: ReportContext) -> Section | None:
    rows = []
    for stage in _eval_stages(report):
        for run_name, found in report.results(stage).items():
            index = found.data.get("index") or {}
            rows.append({"stage": stage, "run": run_name, "search": index.get("search"),
                         "recall@10": index.get("recall@10"), "recall@100": index.get("recall@100"),
                         "sample_size": index.get("sample_size"), "results": found.path})
    if not rows:
        return None
    lines = ["Recall of the index's search against exact MaxSim search, measured on a sample of each benchmark's own "
             "queries for every run (1.00: the index returned what exact search returns); the lowest over the runs "
             "of each stage (every run is in reproduction.json).", "",
             "| stage | runs | search | recall@10 | recall@100 | queries sampled |", "|---|---|---|---|---|---|"]
    for stage in dict.fromkeys(r["stage"] for r in rows):
        mine = [r for r in rows if r["stage"] == stage]
        low = {k: min((r[k] for r in mine if r[k] is not None), default=None) for k in ("recall@10", "recall@100")}
        searches = ", ".join(sorted({str(r["search"]) for r in mine}))
        lines.append(f"| {stage} | {len(mine)} | {searches} | {fmt(low['recall@10'])} | {fmt(low['recall@100'])} | "
                     f"{max(r['sample_size'] or 0 for r in mine)} |")
    return Section("The index against exact search", lines, data=rows)


# Evaluation choices ----------------------------------------------------------------------------------------------

def choices(report: ReportContext) -> Section:
    plan = report.plan
    items = [
        "Protocols: **published** = MIRe's evaluation (passages indexed with their punctuation; its script's metrics: "
        "R@k is a hit rate, and on answer-string sets a passage is relevant when it holds an answer, so OKVQA-GS's "
        "PR@5 is its published R@5); **textbook** = ColBERT's indexing (punctuation dropped) and the standard "
        "definitions on gold passage ids (the paper's hit-rate R@5 is Hit@5 there). docs/evaluation.md has both.",
        "The ablation rows, the image probes and the residual model are evaluated under the published protocol only.",
    ]
    corpora = {}
    for stage in _eval_stages(report):
        record = report.record(stage)
        config = (record.inputs.get("config") if record else None) or {}
        for found in report.results(stage).values():
            corpora.setdefault((found.data["benchmark"], found.data["split"]),
                               (found.data.get("corpus"), config.get("settings", {}), config.get("loader", {})))
    for (benchmark, split), (corpus, settings, loader) in corpora.items():
        passages = f"; passages split `{loader['passages_split']}` (as the published evaluation, whatever the " \
                   f"query split)" if loader.get("passages_split") else ""
        items.append(f"{benchmark} ({split}): corpus `{corpus}`{passages}; k = {settings.get('k')}, queries of "
                     f"{settings.get('query_maxlen')} and passages of {settings.get('doc_maxlen')} word pieces, "
                     f"index {settings.get('index.mode', (settings.get('index') or {}).get('mode', 'auto'))}.")
    if plan.options.init:
        items.append(f"--init {plan.options.init}: the zero-shot rows evaluate this checkpoint, not a pre-training "
                     "of this run (they check the evaluation alone).")
    if plan.preset.recipes_changed:
        items.append(f"Preset `{plan.preset.name}` departs from the paper's recipes: {plan.preset.recipes_changed}.")
    for section, changes in sorted(plan.options.sets.items()):
        items.append(f"--set {section}: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))
    return Section("Evaluation choices", [f"- {item}" for item in items], data=items)


# Trainings -------------------------------------------------------------------------------------------------------

def trainings(report: ReportContext) -> Section | None:
    rows, figures = [], []
    for stage in report.plan.stages:
        if "train" not in stage.tags or not report.usable(stage.name):
            continue
        record = report.record(stage.name)
        rows.append({"stage": stage.name, "wall_s": record.wall_s, **record.summary})
        workdir = record.outputs.get("workdir")
        workdir = workdir if not workdir or os.path.isabs(workdir) else os.path.join(report.out, workdir)
        if workdir and os.path.exists(os.path.join(workdir, "metrics.jsonl")):
            try:
                from mire_jax.train.plot import plot
                path = report.figure_path(f"curves_{stage.name.replace('/', '_')}.png")
                plot(workdir, path, f"{stage.name}")
                figures.append(os.path.relpath(path, report.out))
            except (ImportError, ValueError, OSError):
                pass
    if not rows:
        return None
    lines = ["| stage | steps | last loss | last accuracy | validation accuracy | wall time (s) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r.get('step', DASH)} | {fmt(r.get('loss'))} | {fmt(r.get('accuracy'))} | "
                     f"{fmt(r.get('val_accuracy'))} | {fmt(r.get('wall_s'))} |")
    return Section("Trainings", lines, data=rows, figures=figures)


# Stages ----------------------------------------------------------------------------------------------------------

def stages(report: ReportContext) -> Section:
    rows = []
    for stage in report.plan.stages:
        record = report.record(stage.name)
        rows.append({"stage": stage.name, "title": stage.title, "status": report.status(stage.name),
                     "reason": report.reason(stage.name),
                     "wall_s": record.wall_s if record and record.status == "done" else None,
                     "finished": record.finished if record and record.status == "done" else "",
                     "hardware": record.hardware if record else {}})
    lines = ["Status in this run; the wall time and hardware are those of the run that made the stage's current "
             "results.", "", "| stage | status | wall time (s) | hardware | why |", "|---|---|---|---|---|"]
    for r in rows:
        hw = hardware.one_line(r["hardware"]) if r["wall_s"] is not None else DASH
        lines.append(f"| {r['stage']} | {r['status']} | {fmt(r['wall_s'])} | {hw} | {r['reason']} |")
    return Section("Stages", lines, data=rows)


registry.register_section("paper_tables", paper_tables, order=10)
registry.register_section("world", world, order=15)
registry.register_section("results", all_results, order=20)
registry.register_section("index", index_recall, order=30)
registry.register_section("choices", choices, order=40)
registry.register_section("trainings", trainings, order=45)
registry.register_section("stages", stages, order=50)
