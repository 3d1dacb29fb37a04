"""The analyses' report: each analysis result (a plain dict with a title, a table, findings and a plot) as a markdown
section, and all of them in `<out>/analyses.md` and `<out>/analyses.json`. `section` (markdown) and `parts` (title,
lines, data, figures: the shape of the reproduce report's sections) are what another report includes."""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

from mire_jax.files import atomic_open, write_json

# Columns shown with two decimals (ratios and normalised entropies); everything else numeric with one.
FINE = ("text dominance", "entropy", "object / area")


def cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).replace("|", "\\|")
    if isinstance(value, int):
        return str(value)
    return f"{value:.2f}" if any(column.startswith(f) for f in FINE) else f"{value:.1f}"


def table(columns: Sequence[str], rows: Sequence[Mapping]) -> list[str]:
    """A markdown table of `rows` (dicts) over `columns`."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def parts(result: Mapping, relative_to: str | None = None) -> dict:
    """An analysis as another report's section: {"title", "lines" (markdown, no heading, no figures), "data" (the
    result), "figures" (paths relative to `relative_to` when given)}."""
    body = section(result, None, level=2).split("\n")[2:]
    figures = [result[k] for k in ("plot", "gallery") if result.get(k)]
    lines = [line for line in body if not line.startswith("![")]
    while lines and not lines[-1]:
        lines.pop()
    if relative_to:
        figures = [os.path.relpath(f, relative_to) if os.path.isabs(f) else f for f in figures]
    return {"title": result["title"], "lines": lines, "data": dict(result), "figures": figures}


def section(result: Mapping, relative_to: str | None = None, level: int = 2) -> str:
    """One analysis as markdown: title, what it measures, its table(s), findings and figures (paths relative to
    `relative_to`, the folder the markdown is written in)."""
    def link(path):
        return os.path.relpath(path, relative_to) if relative_to and os.path.isabs(path) else path

    lines = ["#" * level + " " + result["title"], ""]
    if result.get("what"):
        lines += [result["what"], ""]
    if result.get("benchmark"):
        lines += [f"Benchmark: {result['benchmark']}.", ""]
    lines += table(result["columns"], result["rows"]) + [""]
    for extra in result.get("extra_tables", ()):
        lines += [f"**{extra['title']}**", ""] + table(extra["columns"], extra["rows"]) + [""]
    if result.get("findings"):
        lines += [f"- {f}" for f in result["findings"]] + [""]
    for key in ("plot", "gallery"):
        if result.get(key):
            lines += [f"![{result['analysis']} {key}]({link(result[key])})", ""]
    return "\n".join(lines)


def write_report(out_dir: str, results: Sequence[Mapping], *, title: str = "Analyses",
                 preamble: Sequence[str] = ()) -> tuple[str, str]:
    """Writes `out_dir/analyses.md` (every section) and `out_dir/analyses.json` (the results as they are);
    -> (markdown path, JSON path)."""
    os.makedirs(out_dir, exist_ok=True)
    md = os.path.join(out_dir, "analyses.md")
    body = [f"# {title}", "", *preamble, ""] + [section(r, out_dir) for r in results]
    with atomic_open(md) as f:
        f.write("\n".join(body).rstrip() + "\n")
    js = os.path.join(out_dir, "analyses.json")
    write_json(js, {"title": title, "preamble": list(preamble), "analyses": list(results)}, indent=2)
    return md, js
