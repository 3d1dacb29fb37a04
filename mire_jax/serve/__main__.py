"""python -m mire_jax.serve RUN_DIR | --model DIR --index DIR --passages FILE  [--host 127.0.0.1 --port 8024]

Loads the model, the saved index and the passage texts (RUN_DIR: a run folder whose serve.json names them, as
`make demo` writes one), compiles every program serving needs, then serves the search API and the page with uvicorn.
Queries are encoded with the settings the index records; a setting given here that contradicts them, or an index
built with another model, is refused in one line. It prints `serving on http://HOST:PORT` once it accepts requests
(with --port 0 the port is the one the system picked).
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys
import time


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes are comma-separated integers, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return sizes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mire_jax.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", default=None,
                   help="a run folder naming its model, index and passages in serve.json (e.g. runs/demo)")
    p.add_argument("--model", help="model folder (config.json + params.safetensors) or training workdir")
    p.add_argument("--index", help="a saved LateInteractionIndex folder built with this model")
    p.add_argument("--passages", help="the passage texts: JSON Lines {id, text, image?} or parquet")
    p.add_argument("--image-root", default=None,
                   help="the folder the passages' image paths are relative to (default: the passages file's)")
    p.add_argument("--tokenizer", default="", help="vocab.txt or tokenizer folder (default: the model folder's)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8024, help="0: any free port")
    p.add_argument("--query-maxlen", type=int, default=None,
                   help="query word pieces (default: as the index records; a different value needs --force-settings)")
    p.add_argument("--force-settings", action="store_true",
                   help="encode queries with the settings given here even where they contradict the index's")
    p.add_argument("--batch-sizes", type=_sizes, default=[1, 2, 4, 8, 12, 16],
                   help="padded batch sizes compiled at start-up; the largest is the most queries per batch")
    p.add_argument("--window-ms", type=float, default=10.0,
                   help="how long a batch being formed waits for its next request (see mire_jax/serve/batcher.py)")
    p.add_argument("--no-batching", action="store_true", help="one query at a time (batch size 1, no window)")
    p.add_argument("--max-k", type=int, default=100, help="most results per query")
    p.add_argument("--max-queue", type=int, default=512, help="queries waiting before requests get 503")
    p.add_argument("--max-image-bytes", type=int, default=10 * 2 ** 20)
    p.add_argument("--max-image-pixels", type=int, default=40_000_000)
    p.add_argument("--audit-rate", type=float, default=0.01,
                   help="share of live queries also searched exactly in the background to measure the index's recall "
                        "(shown in /healthz and the log; 0: off; see mire_jax/serve/audit.py)")
    p.add_argument("--audit-cpu", type=float, default=0.2,
                   help="the most CPU the audit may use, as a fraction of one core (it runs at the lowest priority)")
    p.add_argument("--no-verify-index", action="store_true", help="skip the sha256 check of the index files")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    paths = (a.model, a.index, a.passages)
    if a.run is None and not all(paths):
        p.error("give a run folder, or all of --model, --index and --passages")
    if a.run is not None and any(paths):
        p.error("give a run folder or --model/--index/--passages, not both")
    if not 0.0 <= a.audit_rate <= 1.0:
        p.error(f"--audit-rate is a share of queries in [0, 1], got {a.audit_rate}")
    if not 0.0 < a.audit_cpu <= 1.0:
        p.error(f"--audit-cpu is a fraction of one core in (0, 1], got {a.audit_cpu}")
    if a.no_batching:
        a.batch_sizes, a.window_ms = [1], 0.0
    return a


def main(argv=None) -> None:
    a = parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("jax").setLevel(logging.WARNING)  # not its search for absent accelerator plug-ins
    log = logging.getLogger("mire_jax.serve")

    import uvicorn

    from mire_jax.retrieval.searcher import Searcher, run_paths
    from mire_jax.serve.app import create_app
    from mire_jax.serve.engine import Engine
    from mire_jax.serve.inputs import Limits

    # Bind first: a busy port fails before minutes of loading and compiling.
    sock = socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((a.host, a.port))
    except OSError as e:
        sys.exit(f"mire_jax.serve: cannot listen on {a.host}:{a.port}: {e.strerror or e}")
    host, port = sock.getsockname()[:2]

    t0 = time.perf_counter()
    try:
        paths = run_paths(a.run) if a.run is not None else {"model": a.model, "index": a.index, "passages": a.passages}
        searcher = Searcher.load(**paths, tokenizer=a.tokenizer, verify_index=not a.no_verify_index,
                                 settings={"query_maxlen": a.query_maxlen}, force_settings=a.force_settings,
                                 image_root=a.image_root)
        engine = Engine(searcher, batch_sizes=a.batch_sizes, max_k=a.max_k, audit_rate=a.audit_rate,
                        audit_cpu=a.audit_cpu)
    except (OSError, ValueError) as e:  # missing files, a mismatched index or passages file: one line, no trace
        sys.exit(f"mire_jax.serve: {' '.join(str(e).split())}")
    log.info("loaded %s passages in %.1f s; compiling batch sizes %s", engine.index.num_passages,
             time.perf_counter() - t0, list(engine.batch_sizes))
    warm = engine.warm_up()
    log.info("compiled %d programs in %.1f s on %s", warm["programs"], warm["seconds"],
             engine.describe()["device"]["platform"])

    audit = engine.audit.report()
    if "note" in audit:
        log.info("index audit: %s", audit["note"])
    elif audit.get("mode") != "exact":
        log.info("index audit: %.2f%% of queries searched exactly too, at most %.2f of a core",
                 100 * a.audit_rate, a.audit_cpu)

    limits = Limits(max_image_bytes=a.max_image_bytes, max_image_pixels=a.max_image_pixels, max_k=a.max_k)
    app = create_app(engine, limits=limits, window_ms=a.window_ms, max_queue=a.max_queue)
    config = uvicorn.Config(app, log_level=a.log_level.lower(), access_log=a.access_log, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    sock.listen(2048)  # from here on, connections wait in the backlog until uvicorn takes them
    shown = f"[{host}]" if ":" in host else host
    print(f"serving on http://{shown}:{port}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
