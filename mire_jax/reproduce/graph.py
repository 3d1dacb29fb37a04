"""The pieces of a reproduction graph: `Stage` (what it reads, what it does), `Inputs` (what it found it needs, when it
is reached), `StageContext` (what a stage sees while it runs) and `Plan` (the ordered stages of one run).

A stage names the stages it reads from (`after`); stages are kept in an order where each comes after those, so the
graph runs top to bottom. `inputs(ctx)` is called when the stage is reached, after the stages it reads have run,
and says what the stage needs: the settings that change its results (`config`), the files and folders it reads and
that are fingerprinted (`files`), folders that must exist but are too big to sign (`present`, e.g. image folders),
or why it cannot run (`missing`). `run(ctx)` does the work in `ctx.work_dir`, writes its results files under
`ctx.results_dir` (on process 0), and returns its outputs (paths and small values the stages after it and the report
read), optionally with a "summary" dict.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os
from typing import Any, Callable

from mire_jax.reproduce.records import Record, StageFolders


@dataclasses.dataclass
class Inputs:
    config: dict = dataclasses.field(default_factory=dict)
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    present: dict[str, str] = dataclasses.field(default_factory=dict)
    missing: str = ""

    def absent(self) -> list[str]:
        """The files and folders of `files` and `present` that do not exist (paths)."""
        return [path for path in {**self.files, **self.present}.values() if not os.path.exists(path)]


@dataclasses.dataclass
class Stage:
    """One stage of the graph.

    Attributes:
      name: unique, "/" separated (e.g. "zeroshot/remuq"); also its folder under R/stages/.
      title: one line for the report.
      inputs: ctx -> Inputs, called when the stage is reached.
      run: ctx -> outputs dict.
      after: the stages whose outputs it reads (they must be done and up to date).
      code: the package parts its results depend on (paths relative to mire_jax/), for the code version.
      hosts: "all" (every process runs it, as the project's training and sharded indexing do) or "writer"
        (process 0 builds its files alone; the others wait).
      skip: a reason, fixed when the plan is made, not to run it (e.g. "--init replaces pre-training").
      tags: names `--stages` may select it by besides its own (e.g. "zeroshot", "ablations").
    """
    name: str
    title: str
    inputs: Callable[["StageContext"], Inputs]
    run: Callable[["StageContext"], dict]
    after: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    hosts: str = "all"
    skip: str = ""
    tags: tuple[str, ...] = ()

    def __post_init__(self):
        if self.hosts not in ("all", "writer"):
            raise ValueError(f"stage {self.name}: hosts must be 'all' or 'writer', got {self.hosts!r}")

    def matches(self, pattern: str) -> bool:
        """Whether `--stages` pattern (a name, a glob, a tag, or a group such as "zeroshot") selects this stage."""
        names = (self.name, *self.tags)
        return any(fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n, pattern + "/*") for n in names)


@dataclasses.dataclass
class Plan:
    """The stages of one run, in order, and what they share: the preset, the data layout, the output folder and the
    command line's options."""
    preset: Any
    layout: Any
    out: str
    options: Any
    stages: list[Stage] = dataclasses.field(default_factory=list)

    def add(self, stage: Stage) -> Stage:
        if any(s.name == stage.name for s in self.stages):
            raise ValueError(f"two stages are named {stage.name!r}")
        known = {s.name for s in self.stages}
        unknown = [name for name in stage.after if name not in known]
        if unknown:
            raise ValueError(f"stage {stage.name!r} reads {unknown}, which no earlier stage is")
        self.stages.append(stage)
        return stage

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r} in this plan; stages: {', '.join(s.name for s in self.stages)}")

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.stages)

    def folders(self, name: str) -> StageFolders:
        return StageFolders(self.out, name)


class StageContext:
    """What a stage sees: the plan, its folders, its inputs, the outputs of the stages it reads, and a logger."""

    def __init__(self, plan: Plan, stage: Stage, log: Callable[[str], None] = print, progress: bool = True):
        self.plan, self.stage, self.log, self.progress = plan, stage, log, progress
        self.folders = plan.folders(stage.name)
        self.inputs: Inputs | None = None

    @property
    def work_dir(self) -> str:
        return self.folders.work

    @property
    def results_dir(self) -> str:
        return self.folders.results

    @property
    def preset(self):
        return self.plan.preset

    @property
    def layout(self):
        return self.plan.layout

    def record(self, name: str) -> Record:
        record = self.plan.folders(name).read()
        if record is None:
            raise FileNotFoundError(f"stage {name} has no record in {self.plan.out}")
        return record

    def output(self, name: str) -> dict[str, Any]:
        """The outputs of stage `name` (which this stage reads: it is in `after`), paths made absolute."""
        if name not in self.stage.after:
            raise ValueError(f"stage {self.stage.name} reads {name} without naming it in `after`")
        folders = self.plan.folders(name)

        def absolute(value):
            if isinstance(value, str) and value and not os.path.isabs(value) and \
                    os.path.exists(folders.absolute(value)):
                return folders.absolute(value)
            if isinstance(value, dict):
                return {k: absolute(v) for k, v in value.items()}
            if isinstance(value, list):
                return [absolute(v) for v in value]
            return value
        return absolute(self.record(name).outputs)
