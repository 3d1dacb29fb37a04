"""`--preset demo-quick` on the generated world with a tiny random model given by --init, a plug-in that adds a stage
and a report section, the same run on two processes, and the command line's checks (`--list`, --init files)."""
import json
import os
import socket
import subprocess
import sys

import pytest
from reproduce_helpers import make_data_root, reproduce

from mire_jax.reproduce import registry
from mire_jax.reproduce.graph import Inputs, Stage
from mire_jax.reproduce.report_context import Section

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORLD_STAGES = "world,init,zeroshot,plugin,ablations/world_zeroshot,analyses/*/world_zeroshot"
ANALYSES = {"ablations/world_zeroshot", "analyses/reliance/world_zeroshot", "analyses/focus/world_zeroshot"}
# Exact search over index shards of a few passages: deterministic, and enough shards for two processes to serve some
# each (under jax.distributed every process must serve at least one index shard).
SHARDED = ["--set", "eval.shard_size=6", "--set", 'eval.index={"mode": "exact", "shard_tokens": 200}']


def _plugin_stages(plan):
    """A plug-in stage reading a core stage's results: the number of zero-shot queries it evaluated."""
    def run(ctx):
        record = ctx.record("zeroshot/world_zeroshot")
        first = next(iter(record.outputs["results"].values()))
        data = json.loads(open(os.path.join(ctx.plan.out, first)).read())
        return {"queries": data["num_queries"]}
    yield Stage("plugin/count", "counts the zero-shot queries", lambda ctx: Inputs(config={"what": "count"}), run,
                after=("zeroshot/world_zeroshot",), tags=("plugin",))


def _plugin_section(report):
    if not report.usable("plugin/count"):
        return None
    queries = report.record("plugin/count").outputs["queries"]
    return Section("Plug-in", [f"{queries} zero-shot queries"], data={"queries": queries})


@pytest.fixture(scope="module")
def world_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("world") / "R"
    with registry.temporarily(stages=[_plugin_stages], sections=[("plugin", _plugin_section, 60)]):
        return reproduce(out, "--preset", "demo-quick", "--init", str(tiny_model_dir), "--stages", WORLD_STAGES,
                         *SHARDED)


def test_the_world_preset_runs_from_a_given_checkpoint(world_run, tiny_model_dir):
    assert world_run.status == 0, world_run.stderr[-3000:]
    outcomes = world_run.outcomes()
    ran = {stage for stage, (status, _) in outcomes.items() if status == "ran"}
    assert ran == {"world", "init", "zeroshot/world_zeroshot", "zeroshot/world_seen", "plugin/count"} | ANALYSES
    assert outcomes["pretrain"] == ("skipped", f"--init {tiny_model_dir} replaces pre-training")
    assert "residual ablation needs pre-training of its own" in outcomes["pretrain_residual"][1]
    assert outcomes["finetune/world"][0] == "not selected (out of date)"
    report = world_run.report
    assert "paper_tables" not in report["sections"] and report["data_root"] == str(world_run.out / "data")
    rows = report["world"]
    main = [r for r in rows if r["stage"].startswith("zeroshot/")]
    assert {(r["split"], r["protocol"]) for r in main} == {(s, p) for s in ("zeroshot", "seen")
                                                           for p in ("published", "textbook")}
    assert {r["model"] for r in rows} == {"MIRe, pre-trained"} and {r["run"] for r in main} == {"image + question"}
    assert {r["run"] for r in rows if r["stage"] == "analyses/reliance/world_zeroshot"} == \
        {"generic question", "question only, generic question"}
    for r in rows:
        data = json.loads((world_run.out / r["results"]).read_text())
        assert r["R@5"] == data["metrics"][r["protocol"]]["R@5"]
    markdown = (world_run.out / "reproduction.md").read_text()
    assert "## Generated world" in markdown and "## The paper's tables" not in markdown
    assert (world_run.out / "data" / "world" / "manifest.json").exists()


def test_the_world_analyses_use_the_object_masks_and_say_what_they_lack(world_run):
    report = world_run.report
    focus = report["pooling_focus"]["benchmarks"]["world_zeroshot"]
    queries = next(r for r in report["results"] if r["stage"] == "zeroshot/world_zeroshot")["num_queries"]
    assert "on object" in focus["columns"] and focus["rows"][-1]["queries"] == min(24, queries)  # demo-quick: 24
    assert {r["query type"] for r in focus["rows"]} <= {"designer", "year", "town", "material", "owner", "name", "all"}
    data = json.loads((world_run.out / focus["results"]).read_text())
    assert data["rows"] == focus["rows"] and (world_run.out / data["gallery"]).exists()
    reliance = report["modality_reliance"]
    assert {(r["benchmark"], r["model"]) for r in reliance["rows"]} == {("world_zeroshot", "MIRe"),
                                                                        ("world_zeroshot", "text only")}
    missing = {(m["benchmark"], m["model"]): m["reason"] for m in reliance["not_computed"]}
    assert missing[("world_zeroshot", "residual fusion")] == "residual/world_zeroshot not selected (out of date): " \
                                                            "never ran"
    assert world_run.outcomes()["analyses/reliance_residual/world_zeroshot"][1].startswith(
        "needs pretrain_residual (skipped: --init")
    assert missing[("world_seen", "MIRe")].startswith("ablations/world_seen not selected (out of date)")
    not_run = {r["stage"]: r for r in report["analyses_not_run"]}
    assert "python -m mire_jax.demo --analyses" in not_run["analyses/variants"]["reason"]
    assert not_run["analyses/trap"]["status"] == "skipped"


def test_a_plugin_adds_a_stage_and_a_report_section(world_run):
    queries = world_run.report["plugin"]["queries"]
    record = json.loads((world_run.out / "stages/plugin/count/record.json").read_text())
    assert record["status"] == "done" and record["outputs"]["queries"] == queries > 0
    assert world_run.report["sections"][-1] == "plugin"
    assert f"## Plug-in\n\n{queries} zero-shot queries" in (world_run.out / "reproduction.md").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_run_the_same_graph_and_agree_with_one(world_run, tiny_model_dir, tmp_path):
    """The same command on two processes (jax.distributed on loopback): the corpus encoded and indexed over both,
    the searches collective, one report written by process 0; the results are those of one process."""
    port, out = _free_port(), tmp_path / "R2"
    procs = []
    for rank in range(2):
        env = {**os.environ, "MIRE_COORDINATOR": f"127.0.0.1:{port}", "MIRE_NUM_PROCESSES": "2",
               "MIRE_PROCESS_ID": str(rank)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "mire_jax.reproduce", "--out", str(out), "--preset", "demo-quick", "--init",
             str(tiny_model_dir), "--stages", "world,init,zeroshot/world_zeroshot", "--no-progress", *SHARDED],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "wrote" in outputs[0][0] and "wrote" not in outputs[1][0] and "[ran" not in outputs[1][0]
    report = json.loads((out / "reproduction.json").read_text())
    assert report["hardware"]["processes"] == 2
    two = {(r["split"], r["protocol"]): r for r in report["world"]}
    one = {(r["split"], r["protocol"]): r for r in world_run.report["world"]
           if r["stage"] == "zeroshot/world_zeroshot"}
    assert set(two) == set(one)
    for key, row in one.items():
        assert {m: two[key][m] for m in ("R@1", "R@5", "R@10", "MRR@5")} == \
            {m: row[m] for m in ("R@1", "R@5", "R@10", "MRR@5")}


def test_list_says_what_would_run_and_why_a_stage_cannot(tmp_path, tiny_model_dir):
    data = make_data_root(tmp_path / "D", tiny_model_dir, leave_out=("aokvqa", "llava"))
    run = reproduce(tmp_path / "R", "--data-root", str(data), "--preset", "smoke", "--list")
    assert run.status == 0 and not (tmp_path / "R" / "stages").exists()
    lines = run.stdout.splitlines()
    said = {lines[i].split()[0]: lines[i + 1].strip() for i in range(0, len(lines), 2)}
    assert said["vid2r"].startswith("[skipped] no dialogue files")
    assert said["vision_cache"] == "[skipped] needs vid2r (skipped: no dialogue files (llava_v1_5_mix665k.json, " \
                                   f"lvis_instruct4v_220k.json) in {data / 'llava'})"
    assert said["zeroshot/aokvqa"].startswith("[skipped] needs pretrain")
    assert said["finetune_scratch/remuq"] == "[would run]"
    assert said["finetuned_scratch/remuq"] == "[would run] after finetune_scratch/remuq"
    assert said["finetune_scratch/okvqa_gs"] == "[would run]"
    init = ["--data-root", str(data), "--preset", "smoke", "--init", str(tiny_model_dir)]
    run = reproduce(tmp_path / "R", *init, "--list")
    lines = run.stdout.splitlines()
    said = {lines[i].split()[0]: lines[i + 1].strip() for i in range(0, len(lines), 2)}
    assert said["init"] == "[would run]" and said["zeroshot/aokvqa"] == "[would run] after init"
    assert said["pretrain"] == f"[skipped] --init {tiny_model_dir} replaces pre-training"
    assert reproduce(tmp_path / "R", *init, "--stages", "init").status == 0
    run = reproduce(tmp_path / "R", *init, "--list")
    lines = run.stdout.splitlines()
    said = {lines[i].split()[0]: lines[i + 1].strip() for i in range(0, len(lines), 2)}
    assert said["init"] == "[up to date]"
    assert said["zeroshot/aokvqa"].startswith(f"[skipped] missing {data / 'aokvqa' / 'aokvqa_v1p0_val.json'}")
    assert said["zeroshot/remuq"] == "[would run]"


def test_an_init_checkpoint_file_is_converted(tmp_path, tiny_model_dir, data_root):
    from mire_jax import convert
    from mire_jax.retrieval.model_folder import load_model
    config, params = load_model(tiny_model_dir)
    checkpoint = tmp_path / "published.safetensors"
    convert.save_state_dict(convert.to_torch(config, params), checkpoint)
    args = ["--data-root", str(data_root), "--preset", "smoke", "--init", str(checkpoint), "--stages", "init",
            "--init-config", str(tiny_model_dir / "config.json")]
    no_vocab = reproduce(tmp_path / "R", *args, "--tokenizer", str(tmp_path / "absent"))
    assert no_vocab.status == 0 and no_vocab.outcomes()["init"][1].startswith(f"--init {checkpoint} is a checkpoint")
    run = reproduce(tmp_path / "R", *args, "--tokenizer", str(tiny_model_dir / "vocab.txt"))
    assert run.status == 0 and run.outcomes()["init"][0] == "ran", run.stderr[-2000:]
    converted = tmp_path / "R" / "stages" / "init" / "work" / "model"
    _, again = load_model(converted)
    import jax
    import numpy as np
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (converted / "vocab.txt").exists()


@pytest.mark.parametrize("args,message", [
    (["--set", "pretrain.no_such=1"], "--set pretrain.no_such: the config has no setting 'no_such'"),
    (["--set", "eval.k"], "--set 'eval.k': expected SECTION.KEY=VALUE"),
    (["--set", "model.lr=1"], "unknown section 'model'"),
    (["--set", "eval.remuq.foo=1"], "--set eval.remuq.foo: not an evaluation setting"),
    (["--stages", "nope"], "--stages/--force 'nope' names no stage"),
    (["--protocols", "mine"], "--protocols: unknown protocol 'mine'"),
])
def test_a_bad_command_line_is_refused_in_one_line(tmp_path, data_root, args, message):
    run = reproduce(tmp_path / "R", "--data-root", str(data_root), "--preset", "smoke", "--list", *args)
    assert run.status == 2 and run.stderr.count("\n") == 1 and message in run.stderr, run.stderr
