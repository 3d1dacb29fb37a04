"""Runs a `Plan`: each stage once its inputs exist, skipping those that are done with the same inputs, rerunning
those whose inputs changed (and, through the run ids they read, everything after them), saying for each why.

For every stage, in order:
  1. not selected by `--stages`: kept as it is; "up to date" when its record matches its inputs now, otherwise
     "not selected (out of date)", and the stages after it that are selected do not run on its stale outputs;
  2. a stage it reads did not finish (skipped, failed, out of date): skipped, naming it;
  3. its inputs (`Stage.inputs`) are missing: skipped, naming the first missing file or the stage's own reason;
  4. its record is "done" with the same fingerprint (and it is not forced): "up to date";
  5. otherwise it runs. A record with another fingerprint means its inputs changed: its work and results folders
     are cleared first, and the outcome says what changed. A "running" or "failed" record with the same
     fingerprint is resumed in place (training continues from its checkpoints).
A stage that raises is recorded "failed" with the error in one line; the stages before it keep their results.
Without `keep_going` the run stops there; with it, the stages that do not read the failed one go on.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

from mire_jax import cli
from mire_jax.reproduce import fingerprints, hardware, multihost
from mire_jax.reproduce.graph import Plan, Stage, StageContext
from mire_jax.reproduce.records import DONE, FAILED, RUNNING, Record, new_run_id, now, outputs_relative

RAN, UP_TO_DATE, SKIPPED, FAILED_OUTCOME, NOT_SELECTED, STALE, NOT_RUN, WOULD_RUN = (
    "ran", "up to date", "skipped", "failed", "not selected (up to date)", "not selected (out of date)", "not run",
    "would run")
_CODES = {SKIPPED: 0, UP_TO_DATE: 1, RAN: 2, NOT_SELECTED: 3, STALE: 4}
FINISHED = (RAN, UP_TO_DATE, NOT_SELECTED)  # outcomes whose results are current


@dataclasses.dataclass
class Outcome:
    stage: str
    status: str
    reason: str = ""
    wall_s: float | None = None

    def line(self) -> str:
        took = f" in {self.wall_s:.1f} s" if self.wall_s is not None else ""
        return f"[{self.status}{took}] {self.stage}" + (f": {self.reason}" if self.reason else "")


class StageFailed(RuntimeError):
    """A stage raised; the message names the stage and the error in one line."""


class Engine:
    """Runs the stages of `plan`.

    Args:
      plan: the stages.
      select: `--stages` patterns (names, globs, tags); None selects every stage.
      force: patterns of stages to rerun even when up to date.
      keep_going: after a failure, go on with the stages that do not read the failed one (one process only).
      log: where progress lines go (process 0 only).
      dry: decide only: say for each stage what a run would do (`WOULD_RUN` and why), run nothing, write nothing.
      code_changes: "rerun" (a stage whose code changed since it ran reruns) or "keep" (a finished stage whose
        inputs differ only by the code version is kept, its outcome saying so: for edits known not to change
        results, e.g. to spare a long pre-training).
    """

    def __init__(self, plan: Plan, select: Sequence[str] | None = None, force: Sequence[str] = (),
                 keep_going: bool = False, log: Callable[[str], None] = print, progress: bool = True,
                 dry: bool = False, code_changes: str = "rerun"):
        if code_changes not in ("rerun", "keep"):
            raise ValueError(f"code_changes must be 'rerun' or 'keep', got {code_changes!r}")
        self.plan, self.select, self.force = plan, list(select) if select else None, list(force)
        self.keep_going, self.progress, self.dry, self.code_changes = keep_going, progress, dry, code_changes
        self.writer = multihost.is_writer()
        self.log = log if self.writer else (lambda line: None)
        self.outcomes: dict[str, Outcome] = {}
        unknown = [p for p in (self.select or []) + self.force if not any(s.matches(p) for s in plan.stages)]
        if unknown:
            raise ValueError(f"--stages/--force {unknown[0]!r} names no stage; stages: "
                             f"{', '.join(s.name for s in plan.stages)}")

    def _selected(self, stage: Stage) -> bool:
        return self.select is None or any(stage.matches(p) for p in self.select)

    def _forced(self, stage: Stage) -> bool:
        return any(stage.matches(p) for p in self.force)

    # ---------------------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Outcome]:
        failed = None
        for stage in self.plan.stages:
            if failed is not None and not self.keep_going:
                self._set(Outcome(stage.name, NOT_RUN, f"stopped after {failed} failed"))
                continue
            try:
                self._step(stage)
            except StageFailed:
                failed = stage.name
                if multihost.process_count() > 1:
                    raise
        return self.outcomes

    def _set(self, outcome: Outcome) -> None:
        self.outcomes[outcome.stage] = outcome
        self.log(outcome.line())

    def _blocked_by(self, stage: Stage) -> str:
        for name in stage.after:
            upstream = self.outcomes[name]
            if upstream.status not in FINISHED:  # its own reason, unless that is another stage it needs
                why = upstream.reason if upstream.reason and not upstream.reason.startswith(("needs ", "never")) \
                    else ""
                return f"needs {name} ({upstream.status}{': ' + why if why else ''})"
        return ""

    def _inputs_record(self, stage: Stage, ctx: StageContext) -> tuple[str, dict]:
        inputs = ctx.inputs
        recorded = {"config": inputs.config,
                    "files": {label: fingerprints.path_signature(path) for label, path in inputs.files.items()},
                    "upstream": {name: ctx.record(name).run_id for name in stage.after},
                    "code": fingerprints.code_version(stage.code) if stage.code else ""}
        return fingerprints.digest(stage.name, recorded), recorded

    def _decide(self, stage: Stage, ctx: StageContext) -> tuple[str, str, str, dict]:
        """-> (outcome status, reason, fingerprint, recorded inputs) on this process."""
        if stage.skip:
            return SKIPPED, stage.skip, "", {}
        blocked = self._blocked_by(stage)
        if blocked and not self._selected(stage):
            return STALE, "never ran" if ctx.folders.read() is None else blocked, "", {}
        if blocked:
            return SKIPPED, blocked, "", {}
        ctx.inputs = stage.inputs(ctx)
        if ctx.inputs.missing:
            return SKIPPED, ctx.inputs.missing, "", {}
        absent = ctx.inputs.absent()
        if absent:
            return SKIPPED, f"missing {absent[0]}" + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""), \
                "", {}
        fp, recorded = self._inputs_record(stage, ctx)
        record = ctx.folders.read()
        current = record is not None and record.status == DONE and record.fingerprint == fp
        if not current and record is not None and record.status == DONE and self.code_changes == "keep" and \
                {**record.inputs, "code": ""} == {**recorded, "code": ""} and not self._forced(stage):
            return (UP_TO_DATE if self._selected(stage) else NOT_SELECTED), \
                "its code changed since it ran (kept: --code-changes keep)", record.fingerprint, record.inputs
        if not self._selected(stage):
            if current:
                return NOT_SELECTED, "", fp, recorded
            return STALE, "never ran" if record is None else "its inputs changed since it ran; select it to rerun", \
                fp, recorded
        if current and not self._forced(stage):
            return UP_TO_DATE, "", fp, recorded
        if record is None:
            return RAN, "", fp, recorded
        if record.fingerprint == fp:
            why = {DONE: "forced", RUNNING: "resuming an unfinished run", FAILED: "retrying after a failure"}
            return RAN, why.get(record.status, ""), fp, recorded
        changed = fingerprints.changes(record.inputs, recorded)
        return RAN, "inputs changed: " + "; ".join(changed or ["(details unrecorded)"]), fp, recorded

    def _preview(self, stage: Stage) -> Outcome | None:
        """In a dry run, the outcome of a stage that reads one that would run (its inputs are not known yet)."""
        pending = [name for name in stage.after if self.outcomes[name].status == WOULD_RUN]
        if not pending or stage.skip:
            return None
        finished = FINISHED + (WOULD_RUN,)
        blocked = next((n for n in stage.after if self.outcomes[n].status not in finished), None)
        if blocked:
            return Outcome(stage.name, SKIPPED, f"needs {blocked} ({self.outcomes[blocked].status})")
        if not self._selected(stage):
            return Outcome(stage.name, STALE, f"{pending[0]} would run first")
        return Outcome(stage.name, WOULD_RUN, f"after {', '.join(pending)}")

    def _step(self, stage: Stage) -> None:
        ctx = StageContext(self.plan, stage, log=self.log, progress=self.progress and self.writer)
        preview = self._preview(stage) if self.dry else None
        if preview is not None:
            self._set(preview)
            return
        status, reason, fp, recorded = self._decide(stage, ctx)
        status = {code: name for name, code in _CODES.items()}[multihost.agree(_CODES[status])]
        if status == RAN and self.dry:
            self._set(Outcome(stage.name, WOULD_RUN, reason))
            return
        if status != RAN:
            self._set(Outcome(stage.name, status, reason))
            return
        self.log(f"[running] {stage.name}" + (f": {reason}" if reason else ""))
        folders = ctx.folders
        if self.writer:
            previous = folders.read()
            if previous is not None and previous.fingerprint != fp:
                folders.clear()
            folders.write(Record(stage.name, RUNNING, fp, recorded, started=now(), hardware=hardware.describe()))
        multihost.barrier(f"{stage.name} starts")
        t0 = time.perf_counter()
        outputs, error = {}, None
        try:
            if stage.hosts == "all" or self.writer:
                outputs = stage.run(ctx) or {}
        except Exception as raised:
            error = raised
        if stage.hosts == "writer" and multihost.agree(int(error is not None)) and error is None:
            error = RuntimeError("it failed on process 0 (which builds it alone)")  # the others stop too
        if error is not None:
            line = cli.describe(error)
            if self.writer:
                record = folders.read()
                record.status, record.error, record.finished = FAILED, line, now()
                record.wall_s = round(time.perf_counter() - t0, 1)
                folders.write(record)
            self._set(Outcome(stage.name, FAILED_OUTCOME, line, round(time.perf_counter() - t0, 1)))
            if cli.debugging():
                raise error
            raise StageFailed(f"stage {stage.name} failed: {line}") from error
        multihost.barrier(f"{stage.name} finished")
        wall = round(time.perf_counter() - t0, 1)
        if self.writer:
            outputs = dict(outputs)
            summary = outputs.pop("summary", {})
            record = folders.read()
            record.status, record.run_id, record.finished, record.wall_s = DONE, new_run_id(), now(), wall
            record.outputs, record.summary = outputs_relative(folders, outputs), summary
            folders.write(record)
        multihost.barrier(f"{stage.name} recorded")
        self._set(Outcome(stage.name, RAN, reason, wall))
