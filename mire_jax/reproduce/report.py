"""R/reproduction.md and R/reproduction.json: a header (preset, data root, command, this run's wall time and
hardware, the code version) and the registered sections (`registry.sections()`: the core ones of
`report_sections`, then the plug-ins'), each as Markdown and as JSON under its name. Written by process 0."""
from __future__ import annotations

import os
import platform
import shlex
import sys
import time

from mire_jax.files import atomic_open, write_json
from mire_jax.reproduce import (
    fingerprints,
    hardware,
    registry,
    report_sections,  # noqa: F401  (registers the core sections)
)
from mire_jax.reproduce.engine import Outcome
from mire_jax.reproduce.graph import Plan
from mire_jax.reproduce.report_context import ReportContext, Section

MARKDOWN, JSON = "reproduction.md", "reproduction.json"
REPORT_VERSION = 1


def build(plan: Plan, outcomes: dict[str, Outcome], *, started: float, argv: list[str] | None = None
          ) -> tuple[dict, list[tuple[str, Section]]]:
    """(the report's JSON, its sections by name)."""
    report = ReportContext(plan, outcomes)
    sections = []
    for entry in registry.sections():
        section = entry.build(report)
        if section is not None:
            sections.append((entry.name, section))
    wall = round(time.time() - started, 1)
    recorded = [report.record(s.name) for s in plan.stages]
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    doc = {"report_version": REPORT_VERSION, "paper": f"{report.paper.paper} {report.paper.version}",
           "preset": plan.preset.name, "description": plan.preset.description, "data_root": plan.layout.root,
           "out": plan.out, "command": _command(argv),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": wall,
           "stages_wall_s": round(sum(r.wall_s or 0 for r in recorded if r is not None and r.status == "done"), 1),
           "outcomes": counts, "hardware": hardware.describe(), "platform": platform.platform(),
           "code_version": fingerprints.code_version(["."]),
           "sections": [name for name, _ in sections]}
    for name, section in sections:
        doc[name] = section.data
    return doc, sections


def _command(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return "python -m mire_jax.reproduce " + " ".join(shlex.quote(a) for a in args)


def markdown(doc: dict, sections: list[tuple[str, Section]]) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in doc["outcomes"].items())
    lines = [f"# Reproduction of MIRe ({doc['paper']}): preset `{doc['preset']}`", "",
             f"- {doc['description']}",
             f"- command: `{doc['command']}`",
             f"- data root: `{doc['data_root']}`; output: `{doc['out']}`",
             f"- this run: {doc['started']} to {doc['finished']}, {doc['wall_s']:.1f} s wall; stages: {counts}",
             f"- time of the stages behind these results (as recorded when each ran): {doc['stages_wall_s']:.1f} s",
             f"- hardware: {hardware.one_line(doc['hardware'])}; {doc['platform']}; jax {doc['hardware']['jax']}",
             f"- code version: {doc['code_version']}", ""]
    for _, section in sections:
        lines += [f"## {section.title}", ""] + section.lines + [""]
        lines += [f"![{os.path.basename(f)}]({f})" for f in section.figures]
        if section.figures:
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write(plan: Plan, outcomes: dict[str, Outcome], *, started: float, argv: list[str] | None = None) -> tuple[str, str]:
    """Writes R/reproduction.md and R/reproduction.json; -> their paths."""
    doc, sections = build(plan, outcomes, started=started, argv=argv)
    md_path, json_path = os.path.join(plan.out, MARKDOWN), os.path.join(plan.out, JSON)
    write_json(json_path, doc, indent=2)
    with atomic_open(md_path, encoding="utf-8") as f:
        f.write(markdown(doc, sections))
    return md_path, json_path
