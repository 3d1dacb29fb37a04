"""fast-plaid (PyPI `fast-plaid`, LightOn's Rust PLAID engine) as the benchmark's peer: the caller's side.

fast-plaid pins its own torch, so it lives in its own virtual environment, `.venv-fast-plaid` at the repo root
(git-ignored), and runs there as `bench/peers/fast_plaid_worker.py`; this module (standard library and numpy
only, importable from the project's environment) sets that environment up, writes the corpus, queries and
exact truth for it, runs it and reads its result back.

    from bench.peers import fast_plaid as peer

    try:
        python = peer.ensure_venv(repo)
    except peer.PeerUnavailable as e:
        print(f"fast-plaid skipped: {e}")
    else:
        peer.write_inputs(folder, tokens, offsets, queries, mask, truth)
        result = peer.run(folder, python, timeout=3600, threads=2)   # dict, or a one-line reason (str)

See bench/peers/README.md for what is swept and measured.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import venv

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
WORKER = HERE / "fast_plaid_worker.py"
REPO = HERE.parents[1]
VENV_NAME = ".venv-fast-plaid"
REQUIREMENT = "fast-plaid>=1.7"
TARGETS = {"recall@10": 0.99, "recall@100": 0.95}
TRUTH_K = 100


class PeerUnavailable(RuntimeError):
    """fast-plaid cannot be installed or run here; the message is one line, fit to print as the skip reason."""


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """bench/search.py's `_recall`: overlap of the top-k sets / k, averaged over queries."""
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def _one_line(text: str, limit: int = 300) -> str:
    lines = [x.strip() for x in (text or "").strip().splitlines() if x.strip()]
    line = lines[-1] if lines else "no output"
    return line if len(line) <= limit else line[:limit - 3] + "..."


def venv_python(repo: str | os.PathLike = REPO) -> pathlib.Path:
    return pathlib.Path(repo).absolute() / VENV_NAME / "bin" / "python"


def _check(python: pathlib.Path, timeout: float = 300) -> str:
    """fast-plaid's version if it imports under `python` (and is >= 1.7); raises PeerUnavailable otherwise."""
    code = ("import importlib.metadata as m, fast_plaid.search as s; v = m.version('fast-plaid'); "
            "print('VERSION', v); assert tuple(int(x) for x in v.split('.')[:2]) >= (1, 7), v")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    try:
        proc = subprocess.run([str(python), "-P", "-c", code], check=False, capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=str(HERE.parent))
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PeerUnavailable(f"fast-plaid does not start under {python.name}: {_one_line(str(e))}") from e
    version = next((x.split()[1] for x in proc.stdout.splitlines() if x.startswith("VERSION ")), None)
    if proc.returncode != 0 or version is None:
        raise PeerUnavailable(f"fast-plaid does not import: {_one_line(proc.stderr or proc.stdout)}")
    return version


def ensure_venv(repo: str | os.PathLike = REPO, *, install: bool = True, timeout: float = 3600) -> str:
    """The python of `<repo>/.venv-fast-plaid`, created and given fast-plaid (`pip install fast-plaid>=1.7`, which
    brings the torch it pins: several GB) when missing.

    Raises:
        PeerUnavailable: with a one-line reason, when the environment cannot be made or fast-plaid does not
            install or import (no network, no wheel for this platform, ...).
    """
    python = venv_python(repo)
    if python.exists():
        try:
            _check(python)
            return str(python)
        except PeerUnavailable:
            if not install:
                raise
    elif not install:
        raise PeerUnavailable(f"{VENV_NAME} does not exist (install=False)")
    try:
        if not python.exists():
            venv.EnvBuilder(with_pip=True).create(python.parents[1])
        proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", REQUIREMENT],
                              check=False, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as e:
        raise PeerUnavailable(f"could not create {VENV_NAME}: {_one_line(str(e))}") from e
    if proc.returncode != 0:
        raise PeerUnavailable(f"pip install {REQUIREMENT} failed: {_one_line(proc.stderr or proc.stdout)}")
    _check(python)
    return str(python)


def write_inputs(folder: str | os.PathLike, tokens: np.ndarray, offsets: np.ndarray, queries: np.ndarray,
                 mask: np.ndarray, truth: np.ndarray) -> pathlib.Path:
    """The worker's inputs in `folder`: tokens.npy ([T, dim] float16/float32 as given), offsets.npy (int64 [N + 1]),
    queries.npz (queries [B, Nq, dim] float32, mask [B, Nq] bool) and truth.npy (int64 [B, 100], exact MaxSim top
    100 passage positions, best first)."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokens = np.asarray(tokens)
    if tokens.dtype not in (np.float16, np.float32):
        tokens = tokens.astype(np.float32)
    offsets = np.asarray(offsets, np.int64)
    truth = np.asarray(truth, np.int64)
    if offsets[0] != 0 or offsets[-1] != len(tokens) or np.any(np.diff(offsets) <= 0):
        raise ValueError("offsets must start at 0, end at the token count and give every passage a token")
    if truth.shape != (len(queries), TRUTH_K):
        raise ValueError(f"truth must be [{len(queries)}, {TRUTH_K}], not {list(truth.shape)}")
    np.save(folder / "tokens.npy", tokens)
    np.save(folder / "offsets.npy", offsets)
    np.savez(folder / "queries.npz", queries=np.asarray(queries, np.float32), mask=np.asarray(mask, bool))
    np.save(folder / "truth.npy", truth)
    return folder


def _parse(stdout: str) -> tuple[dict | None, list[dict], list[str]]:
    result, rows, notes = None, [], []
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
        elif line.startswith("ROW "):
            rows.append(json.loads(line[len("ROW "):]))
        elif line.startswith("NOTE "):
            notes.append(line[len("NOTE "):])
    return result, rows, notes


def _verify_recall(folder: pathlib.Path, rows: list[dict]) -> None:
    """Recompute every row's recall from the ids the worker saved, with this module's `recall`; they must agree."""
    truth = np.load(folder / "truth.npy")
    for row in rows:
        path = folder / "found" / f"{row['setting']}.npy"
        if not path.exists():
            continue
        found = np.load(path)
        for k in (10, 100):
            ours = recall(found, truth, k)
            if abs(ours - row[f"recall@{k}"]) > 1e-9:
                raise RuntimeError(f"{row['setting']}: worker's recall@{k} {row[f'recall@{k}']} != {ours}")
            row[f"recall@{k}"] = ours


def _worker_module():
    """The worker as a module, for its selection rule (it imports only the standard library at import time)."""
    spec = importlib.util.spec_from_file_location("fast_plaid_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(folder: str | os.PathLike, python: str | os.PathLike, timeout: float, *, threads: int | None = None,
        max_build_seconds: float | None = None, max_search_seconds: float | None = None,
        nbits: tuple[int, ...] = (2, 4), probes: tuple[int, ...] | None = None,
        full_scores: tuple[int, ...] | None = None, single_queries: int = 16, kmeans_niters: int | None = None,
        keep: bool = False) -> dict | str:
    """Run the worker on `folder` (written by `write_inputs`) under fast-plaid's `python`.

    Args:
        timeout: seconds for the whole run (builds and sweeps).
        threads: CPU threads (torch, OpenMP, the engine's rayon pool, joblib search workers); default all.
        max_build_seconds: one build's limit; default a third of `timeout` (two builds, and time to search).
        max_search_seconds: a batch search slower than this ends its n_ivf_probe sweep (worker's default: 120).
        nbits, probes, full_scores: the grid (None: the worker's defaults; see bench/peers/README.md).
        single_queries: queries searched one at a time for the median latency.

    Returns:
        The worker's result (dict: "rows", "builds", "best", ...; recall rechecked here from the saved ids), or a
        one-line reason (str) when it failed or timed out before finishing any setting. A run that timed out
        after some settings returns what it had, with "incomplete" set to the reason and "best" chosen among them.
    """
    folder = pathlib.Path(folder)
    threads = threads or os.cpu_count() or 1
    max_build_seconds = max_build_seconds if max_build_seconds is not None else timeout / 3
    cmd = [str(python), "-P", str(WORKER), "--data", str(folder), "--threads", str(threads),
           "--max-build-seconds", str(max_build_seconds), "--nbits", ",".join(map(str, nbits)),
           "--single-queries", str(single_queries)]
    if probes:
        cmd += ["--probes", ",".join(map(str, probes))]
    if full_scores:
        cmd += ["--full-scores", ",".join(map(str, full_scores))]
    if max_search_seconds is not None:
        cmd += ["--max-search-seconds", str(max_search_seconds)]
    if kmeans_niters is not None:
        cmd += ["--kmeans-niters", str(kmeans_niters)]
    if keep:
        cmd.append("--keep")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("PYTHONPATH", None)  # the project's path has nothing for the worker
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        timed_out = None
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the worker and its build child
        stdout, stderr = proc.communicate()
        timed_out = f"fast-plaid timed out after {timeout:.0f} s"
        if not keep:
            shutil.rmtree(folder / "indexes", ignore_errors=True)  # what the killed worker left
    result, rows, notes = _parse(stdout)
    if result is None:
        if timed_out is None:
            tail = stderr.strip() or stdout.strip() or "no output"
            return f"fast-plaid failed (exit {proc.returncode}): {_one_line(tail)}"
        if not rows:
            return f"{timed_out}{': ' + notes[-1] if notes else ''}"
        result = {"engine": "fast-plaid", "rows": rows, "notes": notes, "incomplete": timed_out}
        result["best"] = _worker_module().choose(rows)
    else:
        result["notes"] = notes
    _verify_recall(folder, result["rows"])
    if not result["rows"]:
        why = next((v for v in result.get("builds", {}).values() if isinstance(v, str)), "no setting ran")
        return f"fast-plaid gave no result: {_one_line(why)}"
    return result
