"""The extension point: more stages and more report sections, added without touching the core graph.

A plug-in is a module that, when imported, registers what it adds:

    from mire_jax.reproduce import registry
    from mire_jax.reproduce.graph import Inputs, Stage
    from mire_jax.reproduce.stage_eval import eval_stage, main_runs
    from mire_jax.reproduce.report_sections import Section

    def my_stages(plan):                        # called once the core graph is built; may read plan.stages
        yield eval_stage("analyses/foo", ..., model_stage="pretrain")   # its `after` may name any core stage

    def my_section(report):                     # a ReportContext: records, outcomes, results files, paper numbers
        rows = report.results("analyses/foo")   # {run name: the results file's content}
        return Section("Foo", ["| ... |"], data={...}, figures=["figures/foo.png"])

    registry.register_stages(my_stages)
    registry.register_section("foo", my_section, order=60)

Plug-ins are imported by module name before a plan is built: those listed in `PLUGINS` (the project's own), and
those named in the environment variable MIRE_REPRODUCE_PLUGINS (comma-separated, e.g. a user's own module).
`--stages` selects plug-in stages by name, glob or tag like any other; the engine fingerprints, skips, reruns and
records them like the core stages, and their sections come after the core ones (by `order`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
from typing import Callable, Iterable, Iterator

PLUGINS: tuple[str, ...] = ("mire_jax.reproduce.analyses",)  # the project's own: the analyses' stages
ENVIRONMENT = "MIRE_REPRODUCE_PLUGINS"


@dataclasses.dataclass(frozen=True)
class SectionEntry:
    name: str
    build: Callable
    order: int


_stage_factories: list[Callable] = []
_sections: dict[str, SectionEntry] = {}


def register_stages(factory: Callable[..., Iterable]) -> Callable:
    """Adds `factory(plan) -> iterable of Stage` to every plan (after the core stages, in registration order)."""
    if factory not in _stage_factories:
        _stage_factories.append(factory)
    return factory


def register_section(name: str, build: Callable, order: int = 100) -> Callable:
    """Adds the report section `build(report_context) -> Section | None` (None: nothing to show in this run);
    sections are written by increasing `order` (the core ones use 10-50), a name registered again replaces."""
    _sections[name] = SectionEntry(name, build, order)
    return build


@contextlib.contextmanager
def temporarily(stages: Iterable[Callable] = (), sections: Iterable[tuple[str, Callable, int]] = ()) -> Iterator[None]:
    """Registers stage factories and (name, build, order) sections for the length of a block (tests, one-off runs),
    then removes them (a section it replaced comes back)."""
    added = [f for f in stages if f not in _stage_factories]
    replaced: dict[str, SectionEntry | None] = {}
    for factory in added:
        register_stages(factory)
    for name, build, order in sections:
        replaced.setdefault(name, _sections.get(name))
        register_section(name, build, order)
    try:
        yield
    finally:
        for factory in added:
            _stage_factories.remove(factory)
        for name, previous in replaced.items():
            if previous is None:
                _sections.pop(name, None)
            else:
                _sections[name] = previous


def stage_factories() -> list[Callable]:
    return list(_stage_factories)


def sections() -> list[SectionEntry]:
    return sorted(_sections.values(), key=lambda s: (s.order, s.name))


def load_plugins() -> list[str]:
    """Imports the plug-in modules (`PLUGINS` and MIRE_REPRODUCE_PLUGINS); -> their names. A module that cannot be
    imported is refused by name."""
    names = list(PLUGINS) + [n.strip() for n in os.environ.get(ENVIRONMENT, "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ValueError(f"reproduction plug-in {name!r} cannot be imported: {e}") from e
    return names
