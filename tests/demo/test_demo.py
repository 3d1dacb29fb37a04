"""Smoke test of `make demo`: the whole path (data -> warm-ups -> ViD2R -> cache -> pre-training -> zero-shot
evaluation -> export -> report) at tiny sizes and a few steps."""
import re

from mire_jax import convert

ROWS = ["text_only", "text_only_shuffled", "mire", "mire_shuffled", "mire_residual", "mire_residual_shuffled"]


def _check_hit_rates(row: dict, num_queries: int) -> None:
    """One gold passage per query (published protocol): R@k is the share of queries with the gold passage in the
    top k, so it counts whole queries and grows with k; MRR@5 averages 1/rank over the hits in the top 5, so it
    lies between R@1 and R@5, each hit below rank 1 adding at least 1/5."""
    assert set(row) == {"R@1", "R@5", "R@10", "MRR@5"}
    for k in ("R@1", "R@5", "R@10"):
        hits = row[k] * num_queries
        assert abs(hits - round(hits)) < 1e-6 and 0 <= round(hits) <= num_queries, (k, row[k])
    assert row["R@1"] <= row["R@5"] <= row["R@10"]
    assert row["R@1"] + (row["R@5"] - row["R@1"]) / 5 - 1e-9 <= row["MRR@5"] <= row["R@5"] + 1e-9
    reciprocal_ranks = row["MRR@5"] * num_queries * 60  # a sum of 1/1 .. 1/5, in sixtieths
    assert abs(reciprocal_ranks - round(reciprocal_ranks)) < 1e-6, row["MRR@5"]


def test_quick_demo_runs_the_whole_path(quick_demo):
    """The quick demo (run once per session by the `quick_demo` fixture, shared with the serving tests)."""
    out, stdout = quick_demo.out, (quick_demo.out / "stdout.txt").read_text()
    results = quick_demo.results
    assert list(results["results"]) == ROWS
    sizes = re.search(r"\((\d+) queries, (\d+) passages", results["benchmark"])
    num_queries, num_passages = int(sizes[1]), int(sizes[2])
    assert results["chance_R@5"] == 5 / num_passages
    for row in results["results"].values():
        _check_hit_rates(row, num_queries)
    # the text-only baseline does not look at the picture, so shuffling pictures cannot change it
    assert results["results"]["text_only"] == results["results"]["text_only_shuffled"]
    report = (out / "report.md").read_text()
    assert "| mire_residual_shuffled |" in report and "mire_residual" in stdout
    assert quick_demo.serve_args == [str(out)]
    assert quick_demo.paths["model"] == str(out / "train" / "mire" / "model")
    for name in ("curves_mire.png", "curves_mire_residual.png", "attention_0.png", "attention_1.png"):
        assert (out / name).stat().st_size > 2000, name
    exported = convert.load_state_dict(out / "mire_pytorch.safetensors")
    assert "query_fusion.k_state.weight" in exported and "model.bert.pooler.dense.weight" in exported
    assert (out / "vid2r" / "ViD2R.json").exists() and any((out / "vision_cache").iterdir())
