"""The fast-plaid peer's project side (bench/peers/fast_plaid.py) without fast-plaid: inputs, recall, and how `run`
reads a worker's output (a stand-in interpreter plays the worker)."""
import importlib.util
import pathlib
import stat
import sys
import textwrap

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load(name: str, path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peer = _load("fast_plaid_peer", ROOT / "bench" / "peers" / "fast_plaid.py")


def _inputs(folder, num_queries=3, passages=150):
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 9, size=passages)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = rng.standard_normal((int(offsets[-1]), 16)).astype(np.float16)
    queries = rng.standard_normal((num_queries, 4, 16)).astype(np.float32)
    mask = np.ones((num_queries, 4), bool)
    truth = np.stack([rng.permutation(passages)[:100] for _ in range(num_queries)])
    peer.write_inputs(folder, tokens, offsets, queries, mask, truth)
    return truth


def test_recall_is_the_benchmarks():
    search = _load("bench_search", ROOT / "bench" / "search.py")
    rng = np.random.default_rng(1)
    truth = np.stack([rng.permutation(300)[:100] for _ in range(5)])
    found = np.where(rng.random((5, 100)) < 0.7, truth, rng.integers(0, 300, (5, 100)))
    found[0, 50:] = -1
    for k in (10, 100):
        assert peer.recall(found, truth, k) == search._recall(found, truth, k)


def test_write_inputs_checks(tmp_path):
    _inputs(tmp_path)
    assert np.load(tmp_path / "offsets.npy").dtype == np.int64
    assert set(np.load(tmp_path / "queries.npz").files) == {"queries", "mask"}
    with pytest.raises(ValueError, match="truth"):
        peer.write_inputs(tmp_path, np.zeros((4, 8), np.float32), [0, 2, 4], np.zeros((2, 3, 8)), np.ones((2, 3)),
                          np.zeros((2, 10), np.int64))
    with pytest.raises(ValueError, match="offsets"):
        peer.write_inputs(tmp_path, np.zeros((4, 8), np.float32), [0, 2, 2, 4], np.zeros((2, 3, 8)),
                          np.ones((2, 3)), np.zeros((2, 100), np.int64))


def _fake_python(tmp_path, body: str) -> pathlib.Path:
    """An 'interpreter' that ignores the worker's path and runs `body` with `data` (the --data folder) and `truth`."""
    path = tmp_path / "fake-python"
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent("""
        import json, pathlib, sys, time
        import numpy as np
        data = pathlib.Path(sys.argv[sys.argv.index("--data") + 1])
        truth = np.load(data / "truth.npy")
        (data / "found").mkdir(exist_ok=True)
        def row(name, found, qps, r10=None, r100=None):
            np.save(data / "found" / f"{name}.npy", found)
            recall = lambda k: float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k
                                              for f, t in zip(found, truth)]))
            r = {"setting": name, "nbits": 2, "n_ivf_probe": 1, "n_full_scores": 512, "queries_per_s": qps,
                 "recall@10": recall(10) if r10 is None else r10, "recall@100": recall(100) if r100 is None else r100,
                 "single_query_ms_median": 1.0, "build_s": 1.0, "bytes_per_token": 40.0}
            r["reaches_targets"] = r["recall@10"] >= 0.99 and r["recall@100"] >= 0.95
            print("ROW " + json.dumps(r), flush=True)
            return r
    """) + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_run_reads_the_result_and_rechecks_recall(tmp_path):
    _inputs(tmp_path / "data")
    python = _fake_python(tmp_path, """
        half = truth.copy(); half[:, 5:] = -1
        rows = [row("exact", truth, 10.0), row("fast", half, 50.0)]
        print("RESULT " + json.dumps({"rows": rows, "builds": {}, "best": rows[0]}))
    """)
    result = peer.run(tmp_path / "data", python, 60)
    assert isinstance(result, dict)
    assert [r["recall@10"] for r in result["rows"]] == [1.0, 0.5]
    assert result["rows"][1]["recall@100"] == pytest.approx(0.05)

    bad = _fake_python(tmp_path, """
        rows = [row("lies", truth[:, ::-1], 10.0, r10=1.0)]
        print("RESULT " + json.dumps({"rows": rows, "builds": {}, "best": rows[0]}))
    """)
    with pytest.raises(RuntimeError, match="recall@10"):
        peer.run(tmp_path / "data", bad, 60)


def test_run_keeps_what_finished_before_a_timeout(tmp_path):
    _inputs(tmp_path / "data")
    python = _fake_python(tmp_path, """
        half = truth.copy(); half[:, 5:] = -1
        row("slow", truth, 5.0); row("fast", half, 50.0)
        time.sleep(60)
    """)
    result = peer.run(tmp_path / "data", python, 5)
    assert result["incomplete"].startswith("fast-plaid timed out after 5 s")
    assert len(result["rows"]) == 2
    assert result["best"]["setting"] == "slow"  # neither reaches the targets: the best recall


def test_run_failures_are_one_line(tmp_path):
    _inputs(tmp_path / "data")
    crash = _fake_python(tmp_path, """
        print("Traceback ...", file=sys.stderr); print("RuntimeError: boom", file=sys.stderr); sys.exit(3)
    """)
    why = peer.run(tmp_path / "data", crash, 60)
    assert why == "fast-plaid failed (exit 3): RuntimeError: boom"
    silent = _fake_python(tmp_path, "time.sleep(60)\n")
    assert peer.run(tmp_path / "data", silent, 2) == "fast-plaid timed out after 2 s"
    empty = _fake_python(tmp_path, """
        print("RESULT " + json.dumps({"rows": [], "builds": {"2": "build (nbits=2) stopped after 9 s"}}))
    """)
    assert peer.run(tmp_path / "data", empty, 60) == "fast-plaid gave no result: build (nbits=2) stopped after 9 s"


def test_ensure_venv_without_install(tmp_path):
    with pytest.raises(peer.PeerUnavailable, match="does not exist"):
        peer.ensure_venv(tmp_path, install=False)
    fake = tmp_path / peer.VENV_NAME / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named fast_plaid' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(peer.PeerUnavailable, match="fast-plaid does not import: ModuleNotFoundError"):
        peer.ensure_venv(tmp_path, install=False)
