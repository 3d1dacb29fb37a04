"""`python -m mire_jax.reproduce` end to end on the fixtures (real download layouts) with a tiny random model: the whole
graph runs, a rerun skips every finished stage, a changed setting reruns only what reads it, a failing stage names
itself and leaves the other results alone, and every number of the report is a results file's number. The tests
share one output folder and run in file order, each starting from the state the one before left."""
import json
import math

import pytest
from reproduce_helpers import reproduce

from mire_jax.reproduce.comparisons import METRICS
from mire_jax.reproduce.paper import PaperNumbers

pytestmark = pytest.mark.slow

# The smoke preset with the fixtures' sizes: one training example per batch (A-OKVQA and InfoSeek have one training
# record), and one learning rate for every fine-tuning, so their steps compile once.
FIXTURE_SETS = ["--preset", "smoke", "--set", "finetune.batch_size=1", "--set", "finetune.negatives_group=1",
                "--set", "finetune.lr=5e-05"]
PAPER_BENCHMARKS = ("OKVQA-GS", "OKVQA-WK11M", "ReMuQ", "E-VQA")
# Every kind of stage and every benchmark; of the fine-tunings (a training each, the slow part on two cores) those
# of the paper's fine-tuned table. The other fine-tuning sets' builders have their own tests (tests/data).
KEYS = ("okvqa_gs", "okvqa_wk11m", "remuq", "evqa", "infoseek", "aokvqa")
SELECTED = {"vid2r", "vision_cache", "pretrain", "pretrain_residual"} | \
    {f"{group}/{key}" for group in ("zeroshot", "ablations", "residual") for key in KEYS} | \
    {f"{group}/{key}" for group in ("finetune", "finetuned") for key in ("okvqa_gs", "remuq")} | \
    {"finetune_scratch/remuq", "finetuned_scratch/remuq"} | \
    {f"analyses/{group}/{key}" for group in ("reliance", "reliance_residual", "focus") for key in KEYS}
STAGES = ["--stages", "vid2r,vision_cache,pretrain,zeroshot,ablations,pretrain_residual,residual,"
          "finetune*/remuq,finetuned*/remuq,finetune/okvqa_gs,finetuned/okvqa_gs,analyses"]
# The analyses that pre-train models of their own: skipped, with the reason in the report.
NOT_RUN_ANALYSES = {"analyses/variants", "analyses/trap"}


@pytest.fixture(scope="module")
def first(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "R"
    return reproduce(out, "--data-root", str(data_root), *FIXTURE_SETS, *STAGES)


def _again(first, *extra):
    stages = [] if "--stages" in extra else STAGES
    return reproduce(first.out, "--data-root", str(first.report["data_root"]), *FIXTURE_SETS, *stages, *extra)


def _run_ids(out) -> dict:
    return {p.parent.relative_to(out / "stages").as_posix(): json.loads(p.read_text())["run_id"]
            for p in (out / "stages").rglob("record.json")}


def test_the_whole_graph_runs_on_the_fixtures(first):
    assert first.status == 0, first.stderr[-3000:]
    outcomes = first.outcomes()
    assert {stage for stage, (status, _) in outcomes.items() if status == "ran"} == SELECTED, outcomes
    others = {stage: outcome for stage, outcome in outcomes.items() if stage not in SELECTED | NOT_RUN_ANALYSES}
    assert {outcomes[stage][0] for stage in NOT_RUN_ANALYSES} == {"skipped"}
    assert "pre-trains one more model per conversion variant" in outcomes["analyses/variants"][1]
    assert set(others) == {"finetune/evqa", "finetuned/evqa", "finetune/infoseek", "finetuned/infoseek",
                           "finetune/aokvqa", "finetuned/aokvqa", "finetune_scratch/okvqa_gs",
                           "finetuned_scratch/okvqa_gs"}
    assert {status for status, _ in others.values()} == {"not selected (out of date)"}
    assert all(reason.startswith("never ran") for _, reason in others.values())
    report = first.report
    assert report["preset"] == "smoke" and report["wall_s"] > 0 and report["hardware"]["devices"] >= 1
    tables = {t["table"]: t for t in report["paper_tables"]}
    assert set(tables) == {"zero-shot main", "fine-tuned", "ablation"}
    rows = {(t, r["row"]): r for t, table in tables.items() for r in table["rows"]}
    for key in [("zero-shot main", "MIRe (ours)"), ("ablation", "MIRe (full)"), ("ablation", "w/ Residual"),
                ("ablation", "w/o E_t at inference"), ("ablation", "w/o E_g & E_m at inference")]:
        cells = {c["benchmark"]: c for c in rows[key]["cells"]}
        assert all(cells[b]["ours"]["published"] is not None for b in PAPER_BENCHMARKS), key
    assert all(c["ours"]["published"] is not None for c in rows[("fine-tuned", "MIRe (ours)")]["cells"])
    scratch = {c["benchmark"]: c for c in rows[("fine-tuned", "MIRe w/o pre-training")]["cells"]}
    assert scratch["ReMuQ"]["ours"]["published"] is not None and scratch["OKVQA-GS"]["ours"]["published"] is None
    assert "never ran" in scratch["OKVQA-GS"]["where"]["published"]["note"]
    # rows the core graph cannot make stay empty, and say why
    r2p = rows[("ablation", "w/o R2P")]
    assert "conversion" in r2p["absent"] and all(c["ours"]["published"] is None for c in r2p["cells"])
    # the published protocol's M2KR corpus is named
    assert any("test_passages" in item for item in report["choices"])
    assert {row["stage"] for row in report["index"]} >= {"zeroshot/remuq", "finetuned/remuq", "ablations/evqa"}
    assert all(0 <= row["recall@10"] <= 1 for row in report["index"])
    markdown = (first.out / "reproduction.md").read_text()
    for title in ("## The paper's tables and ours", "## Every evaluation", "## The index against exact search",
                  "## Evaluation choices", "## Trainings", "## Stages"):
        assert title in markdown
    assert (first.out / "figures" / "paper_vs_ours.png").stat().st_size > 2000


def test_report_numbers_are_the_results_files_numbers(first):
    """Every value of ours in the report is read back from the results file it names; the paper's are the data
    file's; the Average is the mean of the row's own values."""
    paper = {(c.table, c.row, c.model, c.benchmark, c.metric): c.value for c in PaperNumbers().cells}
    checked = 0
    for table in first.report["paper_tables"]:
        for row in table["rows"]:
            for cell in row["cells"]:
                assert cell["paper"] == paper[(table["table"], row["row"], row["model"], cell["benchmark"],
                                               cell["metric"])]
                for protocol, value in cell["ours"].items():
                    where = cell["where"][protocol]
                    if value is None:
                        assert where.get("note"), (row["row"], cell["benchmark"], protocol)
                        continue
                    if cell["benchmark"] == "Average":
                        others = [c["ours"][protocol] for c in row["cells"] if c["benchmark"] != "Average"]
                        assert value == pytest.approx(sum(others) / len(others))
                        continue
                    data = json.loads((first.out / where["results"]).read_text())
                    _, metric_protocol, metric = where["metric"].split(".")
                    assert metric == METRICS[protocol][cell["metric"]] and metric_protocol == protocol
                    assert value == 100 * data["metrics"][protocol][metric]
                    if cell["paper"] is not None:
                        assert cell["diff"][protocol] == value - cell["paper"]
                    checked += 1
    assert checked >= 30
    for row in first.report["results"]:
        data = json.loads((first.out / row["results"]).read_text())
        own = data["metrics"][row["metrics_protocol"]]
        assert (row["MRR@5"], row["R@5"]) == (own["MRR@5"], own["R@5"])
        assert row["stage"] in row["results"]


def test_the_analyses_numbers_are_the_results_files_numbers(first):
    """Modality reliance on every zero-shot benchmark for MIRe, residual fusion and text only, each value read back
    from the results file its row names; the pooling focus's entropy per query type and gallery, from its file."""
    report = first.report
    assert report["sections"].index("modality_reliance") < report["sections"].index("stages")
    reliance = report["modality_reliance"]
    assert reliance["not_computed"] == []
    assert {(r["benchmark"], r["model"]) for r in reliance["rows"]} == \
        {(key, model) for key in KEYS for model in ("MIRe", "residual fusion", "text only")}
    columns = {"as is": "R@5", "shuffled image": "shuffled image", "generic question": "generic question"}
    for row in reliance["rows"]:
        values = {}
        for part, column in columns.items():
            path = row["results"].get(part) or row["results"]["as is"]  # text only: its own value, by construction
            data = json.loads((first.out / path).read_text())
            values[part] = 100 * data["metrics"]["published"]["R@5"]
            assert row[column] == values[part], (row["benchmark"], row["model"], part)
            if part == "generic question":
                assert data["question_ablation"] == "generic" and path.startswith("stages/analyses/reliance")
        assert row["image fall"] == pytest.approx(values["as is"] - values["shuffled image"])
        assert row["question fall"] == pytest.approx(values["as is"] - values["generic question"])
    assert (first.out / reliance["plot"]).stat().st_size > 2000
    markdown = (first.out / "reproduction.md").read_text()
    assert "## Modality reliance: shuffled images versus a generic question" in markdown
    assert f"![modality_reliance.png]({reliance['plot']})" in markdown
    focus = report["pooling_focus"]
    assert set(focus["benchmarks"]) == set(KEYS) and focus["not_computed"] == []
    for key, result in focus["benchmarks"].items():
        data = json.loads((first.out / result["results"]).read_text())
        assert result["rows"] == data["rows"] and data["rows"][-1]["query type"] == "all"
        assert 0 < data["rows"][-1]["entropy"] <= 1 and "on object" not in data["columns"]  # no masks: entropy only
        assert (first.out / data["gallery"]).exists() and f"### {key}" in markdown
    assert {r["stage"] for r in report["analyses_not_run"]} == NOT_RUN_ANALYSES
    assert "## Analyses not run" in markdown


def test_a_missing_results_file_is_reported_not_computed(first):
    """The analyses' sections name what they could not read instead of failing: a results file gone, a stage that
    did not run."""
    from mire_jax.reproduce import analyses
    from mire_jax.reproduce.engine import Outcome
    from mire_jax.reproduce.layout import DataLayout
    from mire_jax.reproduce.plan import Options, build_plan
    from mire_jax.reproduce.presets import get_preset
    from mire_jax.reproduce.report_context import ReportContext
    report = first.report
    plan = build_plan(get_preset("smoke"), DataLayout(report["data_root"]), str(first.out), Options())
    outcomes = {r["stage"]: Outcome(r["stage"], r["status"], r["reason"]) for r in report["stages"]}
    outcomes["analyses/reliance_residual/evqa"] = Outcome("analyses/reliance_residual/evqa", "failed", "boom")
    row = next(r for r in report["modality_reliance"]["rows"] if (r["benchmark"], r["model"]) == ("remuq", "MIRe"))
    gone = first.out / row["results"]["generic question"]
    focus = first.out / report["pooling_focus"]["benchmarks"]["aokvqa"]["results"]
    record = first.out / "stages/analyses/reliance_residual/evqa/record.json"  # as if it never finished
    moved = [(p, p.with_suffix(".moved")) for p in (gone, focus, record)]
    for path, aside in moved:
        path.rename(aside)
    try:
        context = ReportContext(plan, outcomes)
        reliance, pooling = analyses.modality_reliance(context), analyses.pooling_focus(context)
    finally:
        for path, aside in moved:
            aside.rename(path)
    reasons = {(m["benchmark"], m["model"]): m["reason"] for m in reliance.data["not_computed"]}
    assert reasons[("remuq", "MIRe")] == f"results file {row['results']['generic question']} of " \
                                         "analyses/reliance/remuq is missing"
    assert reasons[("evqa", "residual fusion")] == "analyses/reliance_residual/evqa failed: boom"
    assert len(reasons) == 2 and len(reliance.data["rows"]) == 3 * len(KEYS) - 2
    text = "\n".join(reliance.lines)
    assert "Not computed (no results to read):" in text and "- evqa, residual fusion: analyses/reliance_residual" \
        "/evqa failed: boom" in text
    assert [m["benchmark"] for m in pooling.data["not_computed"]] == ["aokvqa"]
    assert "is missing" in pooling.data["not_computed"][0]["reason"] and "aokvqa" not in pooling.data["benchmarks"]


def test_a_rerun_skips_every_finished_stage(first):
    before = _run_ids(first.out)
    again = _again(first)
    assert again.status == 0, again.stderr[-3000:]
    statuses = {stage: status for stage, (status, _) in again.outcomes().items()}
    assert {statuses[stage] for stage in SELECTED} == {"up to date"}
    assert _run_ids(first.out) == before
    assert "[up to date] pretrain" in again.stdout and "[running]" not in again.stdout


def test_a_changed_setting_reruns_only_what_reads_it(first):
    before = _run_ids(first.out)
    changed = _again(first, "--set", "finetune.remuq.total_steps=3")  # ReMuQ's recipe: both its fine-tunings
    assert changed.status == 0, changed.stderr[-3000:]
    outcomes = changed.outcomes()
    ran = {stage for stage, (status, _) in outcomes.items() if status == "ran"}
    assert ran == {"finetune/remuq", "finetuned/remuq", "finetune_scratch/remuq", "finetuned_scratch/remuq"}
    for stage in ("finetune/remuq", "finetune_scratch/remuq"):
        assert "config.total_steps: 2 -> 3" in outcomes[stage][1]
        assert f"{stage} was rerun" in outcomes[stage.replace("finetune", "finetuned")][1]
    assert {status for stage, (status, _) in outcomes.items() if stage in SELECTED - ran} == {"up to date"}
    after = _run_ids(first.out)
    assert {stage for stage in before if before[stage] != after[stage]} == ran
    assert any("finetune.remuq" in item for item in changed.report["choices"])


def test_a_failing_stage_names_itself_and_leaves_the_other_results(first):
    before = _run_ids(first.out)
    results = sorted((first.out / "stages").rglob("results_*.json"))
    bad = _again(first, "--set", "finetune.remuq.total_steps=3", "--set", "eval.remuq.split=no_such_split",
                 "--stages", "zeroshot/remuq,zeroshot/evqa", "--keep-going")
    assert bad.status == 1
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: stage zeroshot/remuq failed:")
    assert "no_such_split" in errors[0]
    outcomes = bad.outcomes()
    assert outcomes["zeroshot/remuq"][0] == "failed" and outcomes["zeroshot/evqa"][0] == "up to date"
    assert outcomes["ablations/remuq"][0] == "not selected (out of date)"
    assert json.loads((first.out / "stages/zeroshot/remuq/record.json").read_text())["status"] == "failed"
    after = _run_ids(first.out)
    assert {s: after[s] for s in after if s != "zeroshot/remuq"} == {s: before[s] for s in before
                                                                     if s != "zeroshot/remuq"}
    kept = [p for p in results if "zeroshot/remuq" not in p.as_posix()]
    assert all(p.exists() for p in kept)
    # the report marks what it cannot vouch for, and the next run repairs the failed stage
    row = next(r for r in bad.report["stages"] if r["stage"] == "zeroshot/remuq")
    assert row["status"] == "failed"
    fixed = _again(first, "--set", "finetune.remuq.total_steps=3", "--stages", "zeroshot/remuq")
    assert fixed.status == 0 and fixed.outcomes()["zeroshot/remuq"][0] == "ran"
    assert "loader.split: no_such_split" in fixed.outcomes()["zeroshot/remuq"][1]


def test_values_are_percentages_of_fractions(first):
    """The scale the paper prints: our published MRR@5 lies in [0, 100] and is finite everywhere."""
    for table in first.report["paper_tables"]:
        for row in table["rows"]:
            for cell in row["cells"]:
                for value in cell["ours"].values():
                    assert value is None or (math.isfinite(value) and 0 <= value <= 100)
