"""The server audits its own index: a small share of live queries is searched again exactly, in the background.

An approximate index reports the recall its calibration measured (`mire_jax.index.calibrate`), on queries drawn from
the corpus or given to it; live queries may differ. So a share of the queries the server answers (`rate`, about 1% by
default) is sampled, and each sampled query's top k, as the server returned it, is compared with exact MaxSim over
every passage: a rolling recall@10 and @100 over the last `window` audited queries, with its standard error, is in
/healthz and in the log, with a warning when it is significantly below the index's targets (its mean plus two standard
errors below the target).

The audit never delays an answer:
- the exact search runs in a worker process of its own (this file run as a script: stdlib and numpy only), at the
  lowest CPU priority (SCHED_IDLE where the system allows it, else nice 19), on one thread, reading the index's
  stored tokens from the saved shards (memory-mapped, so the page cache is shared with the server);
- its CPU time is capped at `cpu_share` of one core: after an audit that took c seconds of CPU the worker rests
  c (1 / cpu_share - 1) seconds;
- the server only copies a sampled query into a bounded queue (never waiting): samples that find it full are
  dropped and counted (`dropped`), so under load the audited share falls below `rate` rather than costing time.

A passage counts as found when its exact score reaches the exact k-th best score (less a relative 1e-4: float
rounding of ties is not a miss).
"""
from __future__ import annotations

import collections
import logging
import math
import os
import pickle
import queue
import subprocess
import sys
import threading
import time

import numpy as np

log = logging.getLogger("mire_jax.serve.audit")

KS = (10, 100)
TIE_TOLERANCE = 1e-4
CHUNK_TOKENS = 1 << 15  # corpus tokens scored per product in the worker
MAX_QUERIES_PER_JOB = 8
MIN_QUERIES = 30  # audited queries before the rolling recall is judged against the targets
LOG_EVERY = 100  # audited queries between two log lines
EXACT_NOTE = "exact search: recall is 1 by construction, nothing to audit"


# The worker process --------------------------------------------------------------------------------------------


def _lowest_priority() -> str:
    """Put this process at the lowest CPU priority the system allows; -> what was set."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "SCHED_IDLE"
    except (AttributeError, OSError):
        pass
    try:
        os.nice(19 - os.nice(0))
        return "nice 19"
    except OSError:
        return "default"


def _token_store_module():
    """`mire_jax.index.token_store` loaded from its file: it needs only numpy, while importing the package would
    bring jax into the worker."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "index", "token_store.py")
    spec = importlib.util.spec_from_file_location("_mire_token_store", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


class _Corpus:
    """The saved index's shards: their stored tokens (memory-mapped, as the index's exact search reads them)."""

    def __init__(self, shards: list[tuple[str, int]]):
        import json
        import pathlib

        token_store = _token_store_module()
        self.parts = []
        for folder, first_passage in shards:
            with open(os.path.join(folder, "shard.json")) as f:
                description = json.load(f)["tokens"]
            lengths = np.diff(np.load(os.path.join(folder, "offsets.npy")).astype(np.int64))
            store = token_store.TokenStore.open(pathlib.Path(folder), lengths, description)
            self.parts.append((store, int(first_passage)))

    def _passage_scores(self, store, flat: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Exact MaxSim [passages, B] of one shard's passages (-inf for a passage without tokens)."""
        b, nq = mask.shape
        out = np.full((store.num_passages, b), -np.inf, np.float32)
        for bucket in store.layout.buckets:
            codes, scales = store.bucket_arrays(bucket)
            step = max(1, CHUNK_TOKENS // bucket.length)
            for i in range(0, bucket.count, step):
                c = codes[i:i + step]
                tokens = store.codec.decode(c, None if scales is None else scales[i:i + step], store.dim)
                sims = tokens.reshape(-1, store.dim) @ flat  # [chunk * length, B * Nq]
                maxima = sims.reshape(len(c), bucket.length, b, nq).max(axis=1)
                passages = store.layout.order[bucket.start + i:bucket.start + i + len(c)]
                out[passages] = (maxima * mask[None]).sum(-1)
        return out

    def scores(self, q: np.ndarray, mask: np.ndarray, width: int, found: np.ndarray):
        """Exact MaxSim of every passage: (the best `width` scores per query [B, width] descending, the exact score of
        every passage of `found` [B, k] (-inf for -1))."""
        b, nq, dim = q.shape
        mask = np.asarray(mask, np.float32)
        flat = (q * mask[..., None]).reshape(b * nq, dim).astype(np.float32).T  # [dim, B * Nq]
        best = np.full((b, width), -np.inf, np.float32)
        found_scores = np.full(found.shape, -np.inf, np.float32)
        for store, first in self.parts:
            shard = self._passage_scores(store, flat, mask)
            cut = min(width, len(shard))
            if cut:
                top = np.argpartition(-shard, cut - 1, axis=0)[:cut].T  # [B, cut]
                merged = np.concatenate([best, np.take_along_axis(shard.T, top, 1)], axis=1)
                best = -np.sort(-merged, axis=1)[:, :width]
            inside = (found >= first) & (found < first + len(shard))
            found_scores[inside] = shard[found[inside] - first, np.nonzero(inside)[0]]
        return best, found_scores


def _recalls(best: np.ndarray, found_scores: np.ndarray, ks) -> list[dict]:
    """Per query {"recall@k": share of the exact top k that the returned top k holds}, ties within tolerance."""
    out = []
    for b in range(len(best)):
        row = {}
        for k in ks:
            truth = best[b, :k]
            valid = int(np.isfinite(truth).sum())
            if valid == 0 or found_scores.shape[1] < k:
                continue
            kth = truth[valid - 1]
            bar = kth - TIE_TOLERANCE * max(1.0, abs(float(kth)))
            row[f"recall@{k}"] = min(int((found_scores[b, :k] >= bar).sum()), valid) / valid
        out.append(row)
    return out


def worker_main() -> None:
    """The worker: reads (shards, cpu_share, ks, lowest priority) then jobs (queries, mask, found) from stdin as pickles; answers each
    job with (per-query recalls, CPU seconds) on stdout, then rests to keep within its CPU share."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    shards, cpu_share, ks, lowest = pickle.load(stdin)
    priority = _lowest_priority() if lowest else "default"
    corpus = _Corpus(shards)
    pickle.dump({"ready": True, "priority": priority}, stdout)
    stdout.flush()
    width = max(ks)
    while True:
        try:
            q, mask, found = pickle.load(stdin)
        except EOFError:
            return
        c0 = time.process_time()
        best, found_scores = corpus.scores(q, mask, width, found)
        recalls = _recalls(best, found_scores, ks)
        cpu = time.process_time() - c0
        pickle.dump({"recalls": recalls, "cpu_s": cpu}, stdout)
        stdout.flush()
        time.sleep(cpu * (1.0 / cpu_share - 1.0))


# The server's side ---------------------------------------------------------------------------------------------


def _mean_and_error(values) -> tuple[float, float]:
    x = np.asarray(values, np.float64)
    if len(x) == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


class Audit:
    """Samples live queries and has a worker process search them exactly (see the module docstring).

    Args:
        index: the served index (a `LateInteractionIndex` loaded from disk: the worker reads its shard folders).
        rate: share of live queries sampled (0 turns the audit off).
        cpu_share: the most CPU the worker may use, as a fraction of one core.
        window: audited queries the rolling recall is over.
        max_pending: sampled queries waiting for the worker; a sample finding the queue full is dropped.
        seed: seed of the sampling.
        lowest_priority: run the worker at the lowest CPU priority (tests on a busy machine may turn it off: an idle
            priority worker may wait there for minutes).
    """

    def __init__(self, index, *, rate: float = 0.01, cpu_share: float = 0.2, window: int = 1000, max_pending: int = 32,
                 seed: int = 0, lowest_priority: bool = True):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"the audit rate is a share of queries in [0, 1], got {rate}")
        if not 0.0 < cpu_share <= 1.0:
            raise ValueError(f"the audit's CPU share is a fraction of one core in (0, 1], got {cpu_share}")
        self.index = index
        self.rate, self.cpu_share, self.window = float(rate), float(cpu_share), int(window)
        self.lowest_priority = bool(lowest_priority)
        self.mode = "exact" if index.config.mode == "exact" or index.searcher is None else index.config.mode
        self.targets = {"recall@10": float(index.config.target_recall_at_10),
                        "recall@100": float(index.config.target_recall_at_100)}
        folders = [getattr(s, "folder", None) for s in index.shards]
        self.unavailable = None
        if self.mode == "exact":
            self.unavailable = EXACT_NOTE
        elif rate == 0:
            self.unavailable = "turned off (audit rate 0)"
        elif any(f is None for f in folders) or index.layout.distributed:
            self.unavailable = "the index is not a saved index opened whole in this process: nothing to read"
        self._shards = [(str(f), int(s.first_passage)) for f, s in zip(folders, index.shards)]
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._results = collections.deque(maxlen=self.window)
        self.counts = {"offered": 0, "sampled": 0, "dropped": 0, "audited": 0}
        self.cpu_s = 0.0
        self.priority = None
        self.failure = None
        self.status = "not started"
        self._process = None
        self._thread = None
        self._stopping = threading.Event()
        self._started_at = None
        self._last_logged = 0

    @property
    def active(self) -> bool:
        return self._thread is not None and self.failure is None and not self._stopping.is_set()

    def start(self) -> None:
        """Start the worker process and the thread that feeds it (no-op when there is nothing to audit)."""
        if self.unavailable is not None or self._thread is not None:
            return
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        # -I: isolated (no script folder, user site or PYTHON* variables on the path): stdlib and numpy only.
        self._process = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, env=env)
        pickle.dump((self._shards, self.cpu_share, KS, self.lowest_priority), self._process.stdin)
        self._process.stdin.flush()
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="mire-audit", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the feeding thread and the worker."""
        self._stopping.set()
        if self._thread is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            self._thread.join(timeout)
        if self._process is not None and self._process.poll() is None:
            try:
                self._process.stdin.close()
            except OSError:
                pass
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def offer(self, queries: np.ndarray, mask: np.ndarray, positions: np.ndarray) -> None:
        """A batch the server answered: queries [B, Nq, dim], mask [B, Nq], returned passage positions [B, k]. Each
        query is sampled with probability `rate` and queued without waiting (dropped when the queue is full)."""
        if not self.active:
            return
        picked = np.flatnonzero(self._rng.random(len(queries)) < self.rate)
        with self._lock:
            self.counts["offered"] += len(queries)
            self.counts["sampled"] += len(picked)
        for i in picked:
            keep = np.asarray(mask[i], bool)
            last = int(np.flatnonzero(keep)[-1]) + 1 if keep.any() else 1
            item = (np.array(queries[i, :last], np.float32), keep[:last].copy(), np.array(positions[i], np.int64))
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                with self._lock:
                    self.counts["dropped"] += 1

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # this thread only (Linux)
        except (AttributeError, OSError):
            pass
        try:
            hello = pickle.load(self._process.stdout)
            self.priority = hello.get("priority")
            self.status = self.report()["status"]
            while not self._stopping.is_set():
                items = [self._queue.get()]
                while len(items) < MAX_QUERIES_PER_JOB:
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                items = [it for it in items if it is not None]
                if not items or self._stopping.is_set():
                    continue
                nq = max(len(it[1]) for it in items)
                k = max(len(it[2]) for it in items)
                q = np.zeros((len(items), nq, items[0][0].shape[1]), np.float32)
                m = np.zeros((len(items), nq), bool)
                found = np.full((len(items), k), -1, np.int64)
                for j, (qq, mm, ff) in enumerate(items):
                    q[j, :len(mm)], m[j, :len(mm)], found[j, :len(ff)] = qq, mm, ff
                pickle.dump((q, m, found), self._process.stdin)
                self._process.stdin.flush()
                answer = pickle.load(self._process.stdout)
                self._record(answer)
        except (EOFError, OSError, pickle.UnpicklingError, ValueError) as e:
            if not self._stopping.is_set():
                code = self._process.poll()
                self.failure = f"the audit worker stopped ({type(e).__name__}{f', exit {code}' if code else ''})"
                self.status = "failed"
                log.warning("index audit: %s; no more queries are audited", self.failure)

    def _record(self, answer: dict) -> None:
        with self._lock:
            self._results.extend(answer["recalls"])
            self.counts["audited"] += len(answer["recalls"])
            self.cpu_s += float(answer["cpu_s"])
            audited = self.counts["audited"]
        report = self.report()
        previous, self.status = self.status, report["status"]
        if audited >= MIN_QUERIES and (audited - self._last_logged >= LOG_EVERY or self.status != previous):
            self._last_logged = audited
            line = self.summary(report)
            if self.status == "below target":
                log.warning("index audit: %s", line)
            else:
                log.info("index audit: %s", line)

    @staticmethod
    def summary(report: dict) -> str:
        parts = [f"{k} {v['mean']:.4f} +- {v['stderr']:.4f} (target {v['target']})"
                 for k, v in report.items() if k.startswith("recall@") and v.get("mean") is not None]
        text = f"{', '.join(parts)} over the last {report['window']} of {report['audited']} audited queries"
        return text + (f": {report['warning']}" if report.get("warning") else "")

    def report(self) -> dict:
        """What /healthz shows: the audit's settings and counts, and the rolling recall with its standard error."""
        if self.unavailable is not None:
            return {"mode": self.mode, "audited": 0, "note": self.unavailable}
        with self._lock:
            results = list(self._results)
            counts = dict(self.counts)
            cpu = self.cpu_s
        out = {"mode": self.mode, "rate": self.rate, "cpu_share_limit": self.cpu_share, **counts,
               "window": len(results), "worker": {"priority": self.priority, "cpu_s": round(cpu, 3)}}
        if self._started_at is not None:
            out["worker"]["cpu_share_used"] = round(cpu / max(time.monotonic() - self._started_at, 1e-9), 4)
        below = []
        for key, target in self.targets.items():
            values = [r[key] for r in results if key in r]
            mean, error = _mean_and_error(values)
            out[key] = {"mean": None if not values else round(mean, 5), "stderr": None if not values else
                        round(error, 5), "target": target, "queries": len(values)}
            if len(values) >= MIN_QUERIES and mean + 2 * error < target:
                below.append(f"{key} {mean:.4f} +- {error:.4f} < {target}")
        if self.failure:
            out.update(status="failed", warning=self.failure)
        elif self._thread is None:
            out["status"] = "not started"
        elif self.priority is None:
            out["status"] = "starting"
        elif len(results) < MIN_QUERIES:
            out.update(status="collecting", note=f"judged from {MIN_QUERIES} audited queries on")
        elif below:
            out.update(status="below target", warning=(
                f"the index's recall on live queries is below its targets ({'; '.join(below)}): recalibrate it on "
                "real queries (python -m mire_jax.index calibrate INDEX --queries FILE) or search exactly"))
        else:
            out["status"] = "ok"
        return out


if __name__ == "__main__":
    worker_main()
