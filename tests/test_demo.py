"""Smoke test of `make demo`: the whole path (data -> warm-ups -> ViD2R -> cache -> pre-training -> zero-shot
evaluation -> export -> report) at tiny sizes and a few steps."""
import json
import os
import pathlib
import subprocess
import sys

from mire_jax import convert

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROWS = ["text_only", "text_only_shuffled", "mire", "mire_shuffled", "mire_residual", "mire_residual_shuffled"]


def test_quick_demo_runs_the_whole_path(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "mire_jax.demo", "--quick", "--out", str(out)], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert list(results["results"]) == ROWS
    for row in results["results"].values():
        assert set(row) == {"R@1", "R@5", "R@10", "MRR@5"} and all(0.0 <= v <= 1.0 for v in row.values())
    # the text-only baseline does not look at the picture, so shuffling pictures cannot change it
    assert results["results"]["text_only"] == results["results"]["text_only_shuffled"]
    report = (out / "report.md").read_text()
    assert "| mire_residual_shuffled |" in report and "mire_residual" in proc.stdout
    for name in ("curves_mire.png", "curves_mire_residual.png", "attention_0.png", "attention_1.png"):
        assert (out / name).stat().st_size > 2000, name
    exported = convert.load_state_dict(out / "mire_pytorch.safetensors")
    assert "query_fusion.k_state.weight" in exported and "model.bert.pooler.dense.weight" in exported
    assert (out / "vid2r" / "ViD2R.json").exists() and any((out / "vision_cache").iterdir())
