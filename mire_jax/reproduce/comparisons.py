"""Which of our runs stands for which row of the paper's tables, and the comparison of each cell: the paper's number,
ours under the published protocol and under the textbook one, and the differences (ours - paper, in points).

The paper's metrics and ours (docs/paper_tables.md, docs/evaluation.md):
  MRR@5  published "MRR@5"; textbook "MRR@5"
  R@5    (a hit rate) published "R@5"; textbook "Hit@5" (textbook R@5 is a recall)
  PR@5   (pseudo relevance: a passage holding an answer string) published "R@5" of the answer-string protocol;
         no textbook counterpart (textbook metrics need gold passage ids)
Our values are the results files' fractions times 100 (the paper prints percentages).
"""
from __future__ import annotations

import dataclasses

from mire_jax.reproduce.layout import PAPER_BENCHMARKS, PAPER_FINETUNE
from mire_jax.reproduce.report_context import ReportContext

PROTOCOLS = ("published", "textbook")
METRICS = {"published": {"MRR@5": "MRR@5", "R@5": "R@5", "PR@5": "R@5"},
           "textbook": {"MRR@5": "MRR@5", "R@5": "Hit@5", "PR@5": None}}
BY_PAPER_NAME = {spec.paper: key for key, spec in PAPER_BENCHMARKS.items()}
AVERAGE = "Average"


@dataclasses.dataclass(frozen=True)
class OurRow:
    """A paper row we produce: the stage group whose stage `<group>/<benchmark or set>` holds the run `label`, or
    why we have no such run (`absent`)."""
    table: str
    row: str
    group: str = ""
    label: str = "mire"
    absent: str = ""
    what: str = ""


OUR_ROWS = [
    OurRow("zero-shot main", "MIRe (ours)", "zeroshot", what="the pre-trained model (or --init's), zero-shot"),
    OurRow("fine-tuned", "MIRe (ours)", "finetuned", what="fine-tuned from the pre-trained model"),
    OurRow("fine-tuned", "MIRe w/o pre-training", "finetuned_scratch", what="fine-tuned from the starting model"),
    OurRow("ablation", "MIRe (full)", "zeroshot", what="the pre-trained model, zero-shot"),
    OurRow("ablation", "w/ Residual", "residual", what="pre-trained with the residual head"),
    OurRow("ablation", "w/o E_t at inference", "ablations", "no_text_tokens",
           what="the pre-trained model searching with [E_g ; E_m] only"),
    OurRow("ablation", "w/o E_g & E_m at inference", "ablations", "no_pooled_tokens",
           what="the pre-trained model searching with its text tokens only"),
    OurRow("ablation", "w/o R2P", absent="needs a pre-training on ViD2R built without the response-to-passage "
                                         "conversion (no stage in the core graph)"),
    OurRow("ablation", "w/ E_t in alignment", absent="needs pre-training with the text tokens in the query (no "
                                                     "option in mire-jax)"),
]


def stage_for(row: OurRow, benchmark: str) -> str:
    """The stage holding `row`'s run on a paper benchmark (fine-tuned rows: the set of that benchmark)."""
    key = BY_PAPER_NAME.get(benchmark, "")
    if row.group in ("finetuned", "finetuned_scratch"):
        key = next((s for s, spec in PAPER_FINETUNE.items() if spec.benchmark == key), "")
    return f"{row.group}/{key}" if key else ""


def our_value(report: ReportContext, stage: str, label: str, protocol: str, paper_metric: str) -> dict:
    """{"value", "results", "metric", "note"} of one cell of ours under `protocol` (value None with a note when we
    have none)."""
    metric = METRICS[protocol].get(paper_metric)
    if metric is None:
        return {"value": None, "note": f"{paper_metric} has no {protocol} counterpart"}
    if not report.plan.has(stage):
        return {"value": None, "note": "no such stage in this plan"}
    if not report.usable(stage):
        status, why = report.status(stage), report.reason(stage)
        return {"value": None, "note": f"{stage} {status}" + (f": {why}" if why else "")}
    found = report.find_run(stage, label, protocol)
    if found is None:
        return {"value": None, "note": f"{stage} made no {label} run under the {protocol} protocol"}
    metrics = found.data["metrics"].get(protocol)
    if metrics is None or metric not in metrics:
        return {"value": None, "results": found.path,
                "note": f"no {protocol} {metric} in the results (textbook metrics need gold passage ids)"}
    return {"value": 100 * metrics[metric], "results": found.path, "metric": f"metrics.{protocol}.{metric}",
            "caveat": report.caveat(stage)}


def compare(report: ReportContext, size: str) -> list[dict]:
    """The paper's tables as far as this run covers them: per table, per row we produce, per cell."""
    paper = report.paper
    tables = []
    for table in paper.tables():
        rows = []
        for ours in [r for r in OUR_ROWS if r.table == table]:
            cells = paper.row_cells(table, ours.row, size)
            if not cells:
                continue
            out_cells = []
            for cell in cells:
                entry = {"benchmark": cell.benchmark, "metric": cell.metric, "paper": cell.value,
                         "paper_note": cell.note, "source": cell.source, "ours": {}, "diff": {}, "where": {}}
                if cell.benchmark != AVERAGE:
                    stage = stage_for(ours, cell.benchmark) if not ours.absent else ""
                    entry["stage"] = stage
                    for protocol in PROTOCOLS:
                        got = our_value(report, stage, ours.label, protocol, cell.metric) if stage else \
                            {"value": None, "note": ours.absent or f"no stage for {cell.benchmark}"}
                        entry["ours"][protocol] = got["value"]
                        entry["where"][protocol] = {k: v for k, v in got.items() if k != "value" and v}
                out_cells.append(entry)
            _averages(out_cells)
            for entry in out_cells:
                for protocol in PROTOCOLS:
                    ours_value = entry["ours"].get(protocol)
                    entry["diff"][protocol] = None if ours_value is None or entry["paper"] is None else \
                        ours_value - entry["paper"]
            rows.append({"row": ours.row, "model": size, "what": ours.what, "absent": ours.absent,
                         "cells": out_cells})
        if rows:
            ours_rows = {(r["row"], size) for r in rows}
            others = [f"{row} ({model})" if model else row for row, model in paper.rows(table)
                      if (row, model) not in ours_rows]
            tables.append({"table": table, "caption": paper.captions.get(table, ""), "rows": rows,
                           "paper_rows_not_run": others})
    return tables


def _averages(cells: list[dict]) -> None:
    """The ablation table's Average: the mean of our values over the row's other benchmarks, when we have all."""
    for entry in cells:
        if entry["benchmark"] != AVERAGE:
            continue
        others = [c for c in cells if c["benchmark"] != AVERAGE and c["metric"] == entry["metric"]]
        for protocol in PROTOCOLS:
            values = [c["ours"].get(protocol) for c in others]
            complete = others and all(v is not None for v in values)
            entry["ours"][protocol] = sum(values) / len(values) if complete else None
            entry["where"][protocol] = {"note": f"mean of the {len(others)} benchmarks of this row" if complete
                                        else "needs every benchmark of this row"}
