"""What a report section reads: the plan, this run's outcomes, each stage's record and results files, and the
paper's numbers; and what it returns (`Section`). Every number a section shows comes from a results file a stage
wrote (`results`), read back here, never recomputed by another path.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from mire_jax.files import read_json
from mire_jax.reproduce.engine import FINISHED, NOT_SELECTED, UP_TO_DATE, Outcome
from mire_jax.reproduce.graph import Plan
from mire_jax.reproduce.paper import PaperNumbers
from mire_jax.reproduce.records import DONE, Record


@dataclasses.dataclass
class Section:
    """A part of the report: a title, Markdown lines, JSON data (under the section's name in reproduction.json),
    and figures (paths relative to the output folder, shown under the lines)."""
    title: str
    lines: list[str]
    data: Any = None
    figures: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Results:
    """A results file of a stage: its path relative to the output folder and its content."""
    path: str
    data: dict


class ReportContext:
    def __init__(self, plan: Plan, outcomes: dict[str, Outcome], paper: PaperNumbers | None = None):
        self.plan, self.outcomes = plan, outcomes
        self.paper = paper or PaperNumbers()
        self.out = plan.out
        self.figures_dir = os.path.join(self.out, "figures")
        self._records: dict[str, Record | None] = {}

    def record(self, name: str) -> Record | None:
        if name not in self._records:
            self._records[name] = self.plan.folders(name).read() if self.plan.has(name) else None
        return self._records[name]

    def status(self, name: str) -> str:
        outcome = self.outcomes.get(name)
        return outcome.status if outcome else "not run"

    def reason(self, name: str) -> str:
        outcome = self.outcomes.get(name)
        return outcome.reason if outcome else ""

    def usable(self, name: str) -> bool:
        """The stage finished once (its results files exist)."""
        record = self.record(name)
        return record is not None and record.status == DONE

    def current(self, name: str) -> bool:
        """Its results are those of its inputs now (it ran or was up to date in this run)."""
        return self.usable(name) and self.status(name) in FINISHED

    def caveat(self, name: str) -> str:
        """"" for current results; else why they may not reflect the inputs now (shown beside the numbers): kept
        although their code changed, or made by an earlier run and now out of date, skipped or failed."""
        if self.current(name):
            return self.reason(name) if self.status(name) in (UP_TO_DATE, NOT_SELECTED) else ""
        why = self.reason(name) or self.status(name)
        return f"from an earlier run; now {self.status(name)}" + (f" ({why})" if why != self.status(name) else "")

    def results(self, name: str) -> dict[str, Results]:
        """{run name: Results} of an evaluation stage that finished (empty otherwise)."""
        if not self.usable(name):
            return {}
        found = {}
        for run_name, rel in (self.record(name).outputs.get("results") or {}).items():
            path = rel if os.path.isabs(rel) else os.path.join(self.out, rel)
            if os.path.exists(path):
                found[run_name] = Results(os.path.relpath(path, self.out), read_json(path))
        return found

    def run_settings(self, name: str) -> dict[str, dict]:
        """{run name: the EvalRun fields (label, mode, ...)} of an evaluation stage."""
        record = self.record(name)
        return dict(record.outputs.get("runs") or {}) if record else {}

    def find_run(self, name: str, label: str, protocol: str) -> Results | None:
        """The results file of the run `label` under `protocol` of stage `name` (None when it has none)."""
        results = self.results(name)
        for run_name, run in self.run_settings(name).items():
            if run.get("label") == label and run.get("protocol") == protocol and run_name in results:
                return results[run_name]
        return None

    def figure_path(self, name: str) -> str:
        os.makedirs(self.figures_dir, exist_ok=True)
        return os.path.join(self.figures_dir, name)
