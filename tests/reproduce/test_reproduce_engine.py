"""The engine of `mire_jax.reproduce` on a toy graph (no model): what runs, what is skipped and why, what a change
reruns, how a failure and an interruption are recorded and resumed, the dry run, and the code-change policy.

    a (reads data.txt) -> b -> c
    a -> d
"""
import pathlib

import pytest

from mire_jax.reproduce import fingerprints
from mire_jax.reproduce.engine import Engine
from mire_jax.reproduce.graph import Inputs, Plan, Stage
from mire_jax.reproduce.plan import Options


class Toy:
    def __init__(self, root: pathlib.Path):
        self.root = root
        self.data = root / "data.txt"
        self.data.write_text("one")
        self.settings = {"a": 1, "b": 1, "c": 1, "d": 1}
        self.runs: list[str] = []
        self.fail: dict[str, BaseException] = {}

    def stage(self, name: str, after=()) -> Stage:
        def inputs(ctx):
            files = {"data": str(self.data)} if name == "a" else {}
            return Inputs(config={"setting": self.settings[name]}, files=files)

        def run(ctx):
            self.runs.append(name)
            work = pathlib.Path(ctx.work_dir)
            work.mkdir(parents=True, exist_ok=True)
            (work / "started").write_text(name)
            if name in self.fail:
                raise self.fail.pop(name)
            upstream = [pathlib.Path(ctx.output(u)["value"]).read_text() for u in after]
            out = work / "value.txt"
            out.write_text("+".join(upstream + [f"{name}{self.settings[name]}"]))
            return {"value": str(out), "summary": {"setting": self.settings[name]}}

        return Stage(name, f"toy {name}", inputs, run, after=tuple(after), tags=("toy",))

    def plan(self) -> Plan:
        plan = Plan(None, None, str(self.root / "R"), Options())
        for name, after in (("a", ()), ("b", ("a",)), ("c", ("b",)), ("d", ("a",))):
            plan.add(self.stage(name, after))
        return plan

    def run(self, **kwargs) -> dict:
        self.runs = []
        outcomes = Engine(self.plan(), log=lambda line: None, **kwargs).run()
        return {name: (o.status, o.reason) for name, o in outcomes.items()}

    def value(self, name: str) -> str:
        return (self.root / "R" / "stages" / name / "work" / "value.txt").read_text()


@pytest.fixture
def toy(tmp_path):
    return Toy(tmp_path)


def statuses(outcomes) -> dict:
    return {name: status for name, (status, _) in outcomes.items()}


def test_a_rerun_runs_nothing(toy):
    assert statuses(toy.run()) == dict.fromkeys("abcd", "ran") and toy.runs == list("abcd")
    assert toy.value("c") == "a1+b1+c1"
    assert statuses(toy.run()) == dict.fromkeys("abcd", "up to date") and toy.runs == []


def test_a_changed_setting_reruns_the_stage_and_what_reads_it(toy):
    toy.run()
    toy.settings["b"] = 2
    outcomes = toy.run()
    assert toy.runs == ["b", "c"] and statuses(outcomes) == {"a": "up to date", "b": "ran", "c": "ran",
                                                             "d": "up to date"}
    assert outcomes["b"][1] == "inputs changed: config.setting: 1 -> 2"
    assert outcomes["c"][1] == "inputs changed: b was rerun"
    assert toy.value("c") == "a1+b2+c1"


def test_a_data_file_is_signed_by_content_when_small(toy):
    toy.run()
    toy.data.write_text("one")  # rewritten with the same bytes: a new mtime, the same content
    assert toy.run() and toy.runs == []
    toy.data.write_text("two")
    outcomes = toy.run()
    assert toy.runs == list("abcd") and outcomes["a"][1] == "inputs changed: files.data changed"


def test_a_large_file_is_signed_by_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprints, "CONTENT_HASH_BYTES", 2)
    path = tmp_path / "big.bin"
    path.write_bytes(b"abc")
    first = fingerprints.path_signature(path)
    assert "sha256" not in first and first["size"] == 3
    folder = fingerprints.path_signature(tmp_path)
    assert folder["files"]["big.bin"]["size"] == 3 and "path" not in folder["files"]["big.bin"]
    with pytest.raises(FileNotFoundError):
        fingerprints.path_signature(tmp_path / "absent")


def test_a_failure_is_recorded_and_stops_the_run(toy):
    toy.run()
    a_record = (toy.root / "R/stages/a/record.json").read_text()
    toy.settings["b"] = 2
    toy.fail["b"] = ValueError("the data of b is\nbroken")
    outcomes = toy.run()
    assert outcomes["b"] == ("failed", "the data of b is broken")
    assert outcomes["c"] == outcomes["d"] == ("not run", "stopped after b failed")
    assert (toy.root / "R/stages/a/record.json").read_text() == a_record  # earlier results untouched
    record = toy.plan().folders("b").read()
    assert record.status == "failed" and record.error == "the data of b is broken"
    # the next run retries it in place, with the same inputs
    outcomes = toy.run()
    assert outcomes["b"] == ("ran", "retrying after a failure") and toy.runs == ["b", "c"]
    assert outcomes["d"][0] == "up to date"


def test_keep_going_runs_what_does_not_read_the_failed_stage(toy):
    toy.fail["b"] = ValueError("boom")
    outcomes = toy.run(keep_going=True)
    assert statuses(outcomes) == {"a": "ran", "b": "failed", "c": "skipped", "d": "ran"}
    assert outcomes["c"][1] == "needs b (failed: boom)"


def test_an_interrupted_stage_resumes_in_place_and_a_changed_one_starts_clean(toy):
    toy.fail["b"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        toy.run()
    started = toy.root / "R/stages/b/work/started"
    assert started.exists() and toy.plan().folders("b").read().status == "running"
    outcomes = toy.run()
    assert outcomes["b"] == ("ran", "resuming an unfinished run") and toy.runs == ["b", "c", "d"]
    (toy.root / "R/stages/b/work/leftover").write_text("from the earlier inputs")
    toy.settings["b"] = 3
    toy.run()
    assert not (toy.root / "R/stages/b/work/leftover").exists()


def test_selection_keeps_other_stages_and_refuses_stale_inputs(toy):
    toy.run()
    toy.settings["b"] = 2
    outcomes = toy.run(select=["c"])
    assert outcomes["a"] == ("not selected (up to date)", "")
    assert outcomes["b"] == ("not selected (out of date)", "its inputs changed since it ran; select it to rerun")
    assert outcomes["c"][0] == "skipped" and outcomes["c"][1].startswith("needs b (not selected (out of date)")
    assert toy.runs == []
    outcomes = toy.run(select=["b", "c"])
    assert toy.runs == ["b", "c"] and outcomes["d"][0] == "not selected (up to date)"
    with pytest.raises(ValueError, match="'nope' names no stage"):
        Engine(toy.plan(), select=["nope"])
    assert statuses(toy.run(select=["toy"])) == dict.fromkeys("abcd", "up to date")  # a tag selects
    assert statuses(toy.run(force=["d"])) == {"a": "up to date", "b": "up to date", "c": "up to date", "d": "ran"}


def test_a_dry_run_says_what_would_run_and_runs_nothing(toy):
    outcomes = toy.run(dry=True)
    assert statuses(outcomes) == dict.fromkeys("abcd", "would run") and toy.runs == []
    assert outcomes["b"][1] == "after a" and not (toy.root / "R" / "stages").exists()
    toy.run()
    toy.settings["d"] = 5
    outcomes = toy.run(dry=True)
    assert statuses(outcomes) == {"a": "up to date", "b": "up to date", "c": "up to date", "d": "would run"}
    assert outcomes["d"][1] == "inputs changed: config.setting: 1 -> 5" and toy.runs == []


def test_code_changes_rerun_unless_kept(toy, monkeypatch):
    version = {"value": "v1"}
    monkeypatch.setattr(fingerprints, "code_version", lambda parts: version["value"])
    plan = toy.plan()
    for stage in plan.stages:
        stage.code = ("toy",)
    engine = lambda **kw: {n: (o.status, o.reason) for n, o in Engine(plan, log=lambda line: None, **kw).run().items()}
    engine()
    version["value"] = "v2"
    kept = engine(code_changes="keep")
    assert statuses(kept) == dict.fromkeys("abcd", "up to date")
    assert kept["a"][1] == "its code changed since it ran (kept: --code-changes keep)"
    rerun = engine()
    assert statuses(rerun) == dict.fromkeys("abcd", "ran") and rerun["a"][1] == "inputs changed: code changed"


def test_a_stage_reads_only_what_it_names(toy):
    plan = toy.plan()
    sneaky = Stage("e", "reads c without naming it", lambda ctx: Inputs(), lambda ctx: ctx.output("c"), after=("a",))
    plan.add(sneaky)
    outcomes = Engine(plan, log=lambda line: None).run()
    assert outcomes["e"].status == "failed" and "without naming it in `after`" in outcomes["e"].reason
    with pytest.raises(ValueError, match="reads \\['zz'\\], which no earlier stage is"):
        plan.add(Stage("f", "", lambda ctx: Inputs(), lambda ctx: {}, after=("zz",)))
    with pytest.raises(ValueError, match="two stages are named 'a'"):
        plan.add(toy.stage("a"))


def test_changes_are_described_briefly():
    before = {"config": {"lr": 1e-4, "steps": 10}, "files": {"queries": {"size": 1}}, "upstream": {"pretrain": "x"},
              "code": "1"}
    after = {"config": {"lr": 1e-3, "steps": 10}, "files": {"queries": {"size": 2}}, "upstream": {"pretrain": "y"},
             "code": "2"}
    assert fingerprints.changes(before, after) == ["code changed", "config.lr: 0.0001 -> 0.001",
                                                   "files.queries changed", "pretrain was rerun"]
    assert fingerprints.digest({"a": 1, "b": 2}) == fingerprints.digest({"b": 2, "a": 1})
