"""Every evaluation result carries its search's error: eval/evaluate.py writes the index's recall against
exact search (and the sample it was measured on) beside the metrics; --exact searches exactly."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mire_jax.eval import runner

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


def _evaluate(model_dir, workdir, *extra):
    return subprocess.run([sys.executable, str(ROOT / "eval" / "evaluate.py"), "--config",
                           str(ROOT / "configs" / "eval.py") + ":okvqa_gs", f"--config.root={FIXTURES / 'okvqa_gs'}",
                           "--config.query_maxlen=16", "--config.doc_maxlen=48", "--checkpoint", str(model_dir),
                           "--workdir", str(workdir), *extra],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_results_carry_the_search_error(model_dir, tmp_path):
    out = _evaluate(model_dir, tmp_path, "--config.index_recall_sample=1")
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "okvqa_gs_test" / "results_mire_published.json").read_text())
    index = results["index"]
    assert set(index) >= {"search", "recall@10", "recall@100", "sample_size", "calibration", "note"}
    assert index["sample_size"] == 1 and 0.0 <= index["recall@100"] <= 1.0
    assert index["search"] == index["calibration"]["mode"] and not index["exact_requested"]
    assert "recall against exact search on 1 queries" in out.stdout

    exact = _evaluate(model_dir, tmp_path, "--exact")
    assert exact.returncode == 0, exact.stderr[-3000:]
    results = json.loads((tmp_path / "okvqa_gs_test" / "results_mire_published.json").read_text())
    assert results["index"]["search"] == "exact" and results["index"]["sample_size"] == 0
    assert results["index"]["exact_requested"] and "search: exact MaxSim (--exact" in exact.stdout


def test_calibration_and_measurement_samples_are_disjoint():
    for count in (80, 300, 5000):
        calibrate, measure = runner._query_samples(count, runner.EvalSettings(recall_sample=256))
        assert len(calibrate) == min(64, count // 2) and len(measure) == min(256, count - len(calibrate))
        assert not set(calibrate) & set(measure) and np.all(np.diff(measure) > 0)
    # Too few queries for two samples: the recall is measured on all of them.
    calibrate, measure = runner._query_samples(7, runner.EvalSettings(recall_sample=256))
    assert len(calibrate) == 3 and measure.tolist() == list(range(7))
