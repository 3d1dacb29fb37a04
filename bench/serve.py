"""Serving throughput and latency: the micro-batching server against the same server answering one request at a
time, at 1, 4 and 16 concurrent clients, on the demo's model and index (loopback only).

    python bench/serve.py [--demo runs/demo] [--clients 1,4,16] [--requests 192] [--rounds 3]
                          [--out bench/results/serve.json]

Both servers are started once; they are measured in turn (one idles while the other is loaded), client count by
client count, for several rounds, so that drifts in the machine's load hit both alike. Every client sends prepared
multipart requests (the zero-shot queries of the demo's world: image + question, k=10) over one keep-alive
connection, one at a time; its first 4 are not measured. Reported per client count: requests/s and the p50/p99
latency of each round, their medians, and the median over rounds of the ratios batched / one-at-a-time. The
answers of the two servers are checked to be the same, and neither may compile anything while serving.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from mire_jax.serve.client import Client, multipart, query_fields


def demo_paths(demo: str) -> dict:
    """The model, index and passages a `make demo` output folder names in its serve.json, and its zero-shot queries
    and images."""
    from mire_jax.retrieval.searcher import run_paths
    try:
        paths = run_paths(demo)
    except (OSError, ValueError) as e:
        sys.exit(f"{demo}: {e}; run `make demo` first")
    return {**paths, "queries": os.path.join(demo, "data", "zeroshot", "test.jsonl"),
            "images": os.path.join(demo, "data", "images")}


def start_server(args: list[str], log_path: str, timeout: float = 900) -> tuple[subprocess.Popen, str]:
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, "-u", "-m", "mire_jax.serve", *args], stdout=log,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path) as f:
            for line in f:
                if line.startswith("serving on http://"):
                    return process, line.split()[-1]
        if process.poll() is not None:
            sys.exit(f"the server exited ({process.returncode}); see {log_path}")
        time.sleep(0.2)
    process.kill()
    sys.exit(f"the server did not start in {timeout} s; see {log_path}")


def run_load(url: str, bodies: list, clients: int, total: int, warmup_per_client: int = 4) -> dict:
    """`clients` threads share `total` measured requests (each its own slice, in order), each sending
    `warmup_per_client` requests first on the same connection, unmeasured: the measurement starts from the steady
    state, not from a burst of new connections. -> figures and the answers."""
    latencies = [0.0] * total
    answers: list = [None] * total
    sent_at = [0.0] * total
    errors: list[str] = []

    def client_loop(c: int):
        client = Client(url, timeout=120)
        try:
            for w in range(warmup_per_client):
                client.post("/search", *bodies[(c + w * clients) % len(bodies)])
            for i in range(c, total, clients):
                sent_at[i] = t0 = time.perf_counter()
                answers[i] = client.post("/search", *bodies[i % len(bodies)])
                latencies[i] = time.perf_counter() - t0
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    if errors or any(t.is_alive() for t in threads):
        sys.exit(f"load at {clients} clients failed: {errors[:3]}")
    wall = max(s + lat for s, lat in zip(sent_at, latencies)) - min(sent_at)
    ms = np.asarray(latencies) * 1000
    timings = [a["timings"] for a in answers]
    per_query = lambda stage: round(float(np.mean([t[stage] / t["batch_size"] for t in timings])), 2)
    return {"figures": {"requests": total, "seconds": round(wall, 2), "requests_per_s": round(total / wall, 2),
                        "p50_ms": round(float(np.percentile(ms, 50)), 1),
                        "p99_ms": round(float(np.percentile(ms, 99)), 1),
                        "mean_batch": round(float(np.mean([t["batch_size"] for t in timings])), 2),
                        "encode_ms_per_query": per_query("encode_ms"), "search_ms_per_query": per_query("search_ms")},
            "answers": [[r["id"] for r in a["results"]] for a in answers]}


def measure_round(url: str, bodies: list, clients: int, total: int) -> tuple[dict, list]:
    result = run_load(url, bodies, clients, total)
    return result["figures"], result["answers"]


def _relative_dir(described: dict, demo: str) -> dict:
    """/healthz's description with its folder given inside the demo folder (results name no local path)."""
    out = dict(described)
    if out.get("dir"):
        out["dir"] = os.path.join("<demo>", os.path.relpath(out["dir"], os.path.abspath(demo)))
    return out


def median_figures(rounds: list[dict]) -> dict:
    keys = ("requests_per_s", "p50_ms", "p99_ms", "mean_batch", "encode_ms_per_query", "search_ms_per_query")
    return {**{k: round(float(np.median([r[k] for r in rounds])), 2) for k in keys}, "rounds": rounds}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default="runs/demo", help="a `make demo` output folder")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--requests", type=int, default=192, help="measured requests per client count")
    p.add_argument("--batch-sizes", default="1,2,4,8,12,16")
    p.add_argument("--window-ms", type=float, default=10.0)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="measurements of each server at each client count")
    p.add_argument("--out", default="bench/results/serve.json")
    a = p.parse_args(argv)
    client_counts = [int(c) for c in a.clients.split(",")]
    paths = demo_paths(a.demo)
    with open(paths["queries"]) as f:
        queries = [json.loads(line) for line in f if line.strip()]
    bodies = []
    for q in queries:
        with open(os.path.join(paths["images"], q["image"]), "rb") as f:
            bodies.append(multipart(query_fields(f.read(), q["question"], a.k)))
    common = ["--model", paths["model"], "--index", paths["index"], "--passages", paths["passages"],
              "--host", "127.0.0.1", "--port", "0", "--log-level", "warning"]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    log_dir = tempfile.mkdtemp(prefix="serve_bench_")  # the servers' logs, named in any failure message
    modes = {"batched": common + ["--batch-sizes", a.batch_sizes, "--window-ms", str(a.window_ms)],
             "one_at_a_time": common + ["--no-batching"]}
    load_before = os.getloadavg()
    servers = {}
    try:
        for name, args in modes.items():
            servers[name] = start_server(args, os.path.join(log_dir, f"serve_{name}.log"))
        health = Client(servers["batched"][1]).health()
        figures = {name: {str(c): [] for c in client_counts} for name in modes}
        answers = {name: {} for name in modes}
        for r in range(a.rounds):
            for c in client_counts:
                order = list(modes) if r % 2 == 0 else list(reversed(modes))
                for name in order:
                    f, answers[name][str(c)] = measure_round(servers[name][1], bodies, c, a.requests)
                    figures[name][str(c)].append(f)
                    print(f"round {r + 1} {name:>14} {c:>3} clients: {f}", flush=True)
        compiled = {name: Client(url).health()["compilations_since_warm_up"] for name, (_, url) in servers.items()}
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(60)
    if any(compiled.values()):
        sys.exit(f"programs compiled while serving: {compiled}")
    batched = {c: median_figures(rounds) for c, rounds in figures["batched"].items()}
    single = {c: median_figures(rounds) for c, rounds in figures["one_at_a_time"].items()}
    per_round = lambda c, key: [b[key] / s[key] for b, s in zip(figures["batched"][c], figures["one_at_a_time"][c])]
    ratios = {c: {"throughput": round(float(np.median(per_round(c, "requests_per_s"))), 2),
                  "p50": round(float(np.median(per_round(c, "p50_ms"))), 3),
                  "p99": round(float(np.median(per_round(c, "p99_ms"))), 3)} for c in batched}
    same_answers = answers["batched"] == answers["one_at_a_time"]
    top = str(max(client_counts))
    result = {
        "what": f"POST /search (image + question, k={a.k}) over loopback HTTP; clients send one request at a time "
                "each",
        "setup": {"model": _relative_dir(health["model"], a.demo), "index": _relative_dir(health["index"], a.demo),
                  "device": health["device"],
                  "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                           "load_average_1_5_15_min": {"before": [round(x, 2) for x in load_before],
                                                       "after": [round(x, 2) for x in os.getloadavg()]}},
                  "batched_server": {"batch_sizes": a.batch_sizes, "window_ms": a.window_ms},
                  "one_at_a_time_server": {"batch_sizes": "1", "window_ms": 0},
                  "requests_per_client_count": a.requests, "rounds": a.rounds, "distinct_queries": len(bodies)},
        "batched": batched, "one_at_a_time": single, "ratios_batched_over_one_at_a_time": ratios,
        "same_answers": same_answers, "compilations_while_serving": compiled,
        f"goal_at_{top}_clients": {"throughput_ratio_at_least_3": ratios[top]["throughput"] >= 3,
                                     "p99_ratio_at_most_one_third": ratios[top]["p99"] <= 1 / 3},
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({"ratios": ratios, "same_answers": same_answers}, indent=1))
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
