"""`python -m mire_jax.demo --quick --analyses-only` on the session's quick demo: the four analyses on the small
generated world with the real (barely trained) models, their report, and what they share with the demo."""
import json
import os
import re
import subprocess
import sys

import pytest

from mire_jax.demo.world.text import ZEROSHOT_QUESTIONS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _demo(*args):
    return subprocess.run([sys.executable, "-m", "mire_jax.demo", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800, check=False)


@pytest.fixture(scope="module")
def analyses(quick_demo):
    proc = _demo("--quick", "--analyses-only", "--out", str(quick_demo.out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    folder = quick_demo.out / "analyses"
    report = json.loads((folder / "analyses.json").read_text())
    return folder, {r["analysis"]: r for r in report["analyses"]}, report, proc.stdout


def test_every_analysis_is_in_the_report_with_its_figure(analyses):
    folder, by_name, report, stdout = analyses
    assert [r["analysis"] for r in report["analyses"]] == ["conversion_variants", "pooling_focus", "pooling_focus",
                                                           "modality_reliance", "modality_reliance", "text_dominance"]
    text = (folder / "analyses.md").read_text()
    for result in report["analyses"]:
        assert f"## {result['title']}" in text
        assert os.path.getsize(result["plot"]) > 2000, result["plot"]
        assert os.path.relpath(result["plot"], folder) in text
    assert os.path.getsize(by_name["pooling_focus"]["gallery"]) > 2000
    assert "wrote " in stdout and "analyses.md" in stdout


def test_conversion_variants_reuse_the_demo_model_and_compose_the_responses_alone(analyses, quick_demo):
    folder, by_name, _, _ = analyses
    rows = {r["variant"]: r for r in by_name["conversion_variants"]["rows"]}
    assert set(rows) == {"response_only", "k3_published"}
    assert rows["k3_published"]["model"] == str(quick_demo.out / "train" / "mire" / "model")
    alone = json.loads((folder / "variants" / "response_only" / "ViD2R.json").read_text())
    published = json.loads((quick_demo.out / "vid2r" / "ViD2R.json").read_text())
    assert [r["document"] for r in alone] == [r["answer"] for r in published]
    for row in rows.values():
        assert all(0 <= row[c] <= 100 for c in ("synthetic R@5", "synthetic MRR@5"))
    # the variant's questions' text features were taken over from the demo's cache, its passages encoded anew
    assert sorted(os.listdir(folder / "variants" / "response_only" / "run" / "text_cache")) == ["passages", "queries"]


def test_pooling_focus_reports_each_question_type(analyses):
    _, _, report, _ = analyses
    plain, trap = [r for r in report["analyses"] if r["analysis"] == "pooling_focus"]
    assert {r["query type"] for r in plain["rows"][:-1]} <= set(ZEROSHOT_QUESTIONS)
    assert [r["query type"] for r in trap["rows"]] == ["generic", "misleading", "specific", "all"]
    for result in (plain, trap):
        rows = result["rows"]
        assert rows[-1]["query type"] == "all"
        assert sum(r["queries"] for r in rows[:-1]) == rows[-1]["queries"]
        for r in rows:
            assert 0 < r["entropy"] <= 1 + 1e-9
            assert 0 <= r["on object"] <= 100 and 0 < r["object area"] < 100


def test_modality_reliance_rows_and_the_trap_world(analyses, quick_demo):
    _, _, report, _ = analyses
    plain, trap = [r for r in report["analyses"] if r["analysis"] == "modality_reliance"]
    for result in (plain, trap):
        rows = {r["model"]: r for r in result["rows"]}
        assert set(rows) == {"text_only", "mire", "mire_residual"}
        assert rows["text_only"]["image fall"] == 0 and rows["text_only"]["shuffled image"] == rows["text_only"]["R@5"]
    groups = {r["group"] for r in trap["extra_tables"][0]["rows"]}
    assert groups == {"generic", "misleading", "specific"}
    trap_manifest = json.loads((quick_demo.out / "analyses" / "trap_world" / "manifest.json").read_text())
    demo_manifest = json.loads((quick_demo.out / "data" / "manifest.json").read_text())
    assert trap_manifest["questions"] == "trap" and trap_manifest["images"] == demo_manifest["images"]


def test_text_dominance_over_two_seeds_and_the_report_prints_the_json_numbers(analyses):
    folder, by_name, _, _ = analyses
    result = by_name["text_dominance"]
    assert result["seeds"] == 2 and [len(v) for v in result["models"].values()] == [2, 2]
    assert {d["group"] for d in result["differences"]} == {"all", "generic", "misleading", "specific"}
    for d in result["differences"]:
        assert len(d["per_seed"]) == 2 and d["wins"] + d["losses"] + d["ties"] == 2
    text = (folder / "analyses.md").read_text()
    for row in result["rows"]:
        line = f"| {row['group']} | {row['model']} | {row['mean']:.1f} | {row['std']:.1f} |"
        assert line in text, line
    assert len(result["findings"]) == 4 and all(re.match(r"\w+: ", f) for f in result["findings"])


def test_analyses_only_refuses_a_folder_without_a_finished_demo(tmp_path, quick_demo):
    proc = _demo("--quick", "--analyses-only", "--out", str(tmp_path))
    assert proc.returncode == 2 and "no finished demo" in proc.stderr and "Traceback" not in proc.stderr
    proc = _demo("--quick", "--analyses-only", "--seed", "7", "--out", str(quick_demo.out))
    assert proc.returncode == 2 and "another seed" in proc.stderr
