"""The analyses' measures on hand-made inputs: attention shares and entropy, the text-dominance ratio, the spread and
paired differences over seeds, and the report's rendering."""
import math

import numpy as np
import pytest

from mire_jax.analyses import dominance, focus, reliance, report


def test_patch_coverage_share_and_the_shifted_region():
    mask = np.zeros((8, 8))
    mask[:4, :4] = 1  # the top-left patch of a 2 x 2 grid
    mask[4:6, 4:8] = 1  # half of the bottom-right patch
    c = focus.patch_coverage(mask, 2)
    np.testing.assert_allclose(c, [[1, 0], [0, 0.5]])
    np.testing.assert_allclose(focus.shifted(c), [[0.5, 0], [0, 1]])
    assert focus.shifted(c).sum() == c.sum()  # the same size, elsewhere
    uniform = np.full((2, 2), 0.25)
    assert focus.share_on(uniform, c) == pytest.approx(c.mean())  # uniform attention scores the area
    assert focus.share_on(np.array([[1, 0], [0, 0]]), c) == 1.0
    assert focus.share_on(np.array([[0, 0], [0, 2]]), c) == 0.5  # normalised
    with pytest.raises(ValueError, match="divisible by 3"):
        focus.patch_coverage(mask, 3)


def test_normalized_entropy_and_query_measures():
    assert focus.normalized_entropy(np.full((4, 4), 1 / 16)) == pytest.approx(1.0)
    one = np.zeros((4, 4))
    one[1, 2] = 1
    assert focus.normalized_entropy(one) == 0.0
    half = np.zeros(4)
    half[:2] = 0.5
    assert focus.normalized_entropy(half) == pytest.approx(0.5)
    mask = np.zeros((8, 8))
    mask[:4, :4] = 1
    maps = np.stack([one[:2, :2] * 0 + np.array([[1.0, 0], [0, 0]]), np.full((2, 2), 0.25)])
    m = focus.query_measures(maps, mask)
    assert m["best_head"] == 0 and m["best_head_object"] == 1.0
    assert m["object"] == pytest.approx((1 + 0.25) / 2) and m["area"] == 0.25 and m["elsewhere"] == pytest.approx(
        0.125)
    assert set(focus.query_measures(maps, None)) == {"entropy", "entropy_of_mean"}


def test_text_dominance_ratio():
    assert reliance.dominance_ratio(image_fall=30, question_fall=10) == 0.25
    assert reliance.dominance_ratio(0, 12) == 1.0
    assert reliance.dominance_ratio(20, -5) == 0.0  # a question ablation that helps counts as no fall
    assert reliance.dominance_ratio(-1, 0) is None


def test_spread_paired_difference_and_verdict():
    s = dominance.spread([50, 54, 52])
    assert s["mean"] == 52 and s["std"] == pytest.approx(2.0) and (s["min"], s["max"], s["n"]) == (50, 54, 3)
    assert dominance.spread([7])["std"] == 0.0
    d = dominance.paired_difference([50, 54, 52], [49, 56, 47])
    assert d["per_seed"] == [1, -2, 5] and (d["wins"], d["losses"], d["ties"]) == (2, 1, 0)
    assert d["mean"] == pytest.approx(4 / 3)
    assert dominance.verdict("mire", "residual", d, "R@5", "all") == \
        "all: mire beats residual by 1.3 points of R@5 (+-3.5 over 3 seed(s); ahead on 2 of 3)"
    worse = dominance.paired_difference([40, 41], [45, 44])
    assert dominance.verdict("mire", "residual", worse, "R@5", "misleading").startswith(
        "misleading: residual beats mire by 4.0 points")
    assert "tie" in dominance.verdict("a", "b", dominance.paired_difference([1], [1]), "R@5", "all")
    even = dominance.paired_difference([52, 57.3, 56.7], [57.3, 54, 54.7])  # mean 0.0 at one decimal
    assert dominance.verdict("mire", "residual", even, "R@5", "all") == (
        "all: mire and residual tie on R@5 on average (mean difference 0.0 +-4.6 over 3 seed(s); mire ahead on 2, "
        "residual on 1)")
    with pytest.raises(ValueError, match="paired seeds"):
        dominance.paired_difference([1, 2], [1])


def test_report_renders_tables_findings_and_figures(tmp_path):
    result = {"analysis": "x", "title": "A title", "what": "What it is.", "benchmark": "synthetic/zeroshot",
              "columns": ["model", "R@5", "text dominance", "note"],
              "rows": [{"model": "mire", "R@5": 52.04, "text dominance": 0.123, "note": "a|b"},
                       {"model": "text_only", "R@5": 1, "text dominance": None, "note": math.nan}],
              "extra_tables": [{"title": "more", "columns": ["k"], "rows": [{"k": 3}]}],
              "findings": ["one finding"], "plot": str(tmp_path / "x.png"), "gallery": None}
    md, js = report.write_report(str(tmp_path), [result], title="T", preamble=["Intro."])
    text = open(md).read()
    assert "# T\n\nIntro.\n" in text and "## A title" in text and "Benchmark: synthetic/zeroshot." in text
    assert "| mire | 52.0 | 0.12 | a\\|b |" in text and "| text_only | 1 | - | - |" in text
    assert "**more**" in text and "| 3 |" in text and "- one finding" in text and "![x plot](x.png)" in text
    assert "gallery" not in text
    assert report.section(result, level=3).startswith("### A title")
    p = report.parts(result, relative_to=str(tmp_path))
    assert p["title"] == "A title" and p["figures"] == ["x.png"] and p["data"]["rows"] == result["rows"]
    assert p["lines"][0] == "What it is." and not any(line.startswith("![") for line in p["lines"])
    assert "| mire | 52.0 | 0.12 | a\\|b |" in p["lines"]
