"""A small demonstration of the fast-plaid peer: a generated corpus, its exact MaxSim truth, fast-plaid's sweep.

    PYTHONPATH=. python bench/peers/try_fast_plaid.py                       # uniform128, 3000 passages
    PYTHONPATH=. python bench/peers/try_fast_plaid.py --shape short64 --passages 2000 --threads 2

Sets up `.venv-fast-plaid` when missing (pip install fast-plaid), or prints why fast-plaid is skipped. Prints one
table row per search setting, the builds and the chosen setting. Timings on a shared machine are indicative only.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.peers import fast_plaid as peer


def _ints(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(x) for x in text.split(",")) if text else None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="uniform128")
    p.add_argument("--passages", type=int, default=3000)
    p.add_argument("--queries", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--nbits", default="2,4")
    p.add_argument("--probes", default=None, help="n_ivf_probe values (default: the worker's)")
    p.add_argument("--full-scores", default=None, help="n_full_scores values (default: the worker's)")
    p.add_argument("--no-install", action="store_true", help="skip fast-plaid unless its venv already works")
    args = p.parse_args(argv)

    from mire_jax.index import exact_search
    from mire_jax.index.synthetic import SHAPES, SyntheticCorpus

    try:
        python = peer.ensure_venv(REPO, install=not args.no_install)
    except peer.PeerUnavailable as e:
        print(f"fast-plaid skipped: {e}")
        return
    spec = SHAPES[args.shape].scaled(args.passages)
    corpus = SyntheticCorpus(spec, seed=0)
    tokens = corpus.embeddings()
    queries, mask, _ = corpus.queries(args.queries, seed=1)
    t0 = time.perf_counter()
    truth, _ = exact_search(tokens, corpus.offsets, queries, mask, peer.TRUTH_K, progress=False)
    exact_s = time.perf_counter() - t0
    print(f"{args.shape}: {spec.num_passages} passages, {corpus.num_tokens} tokens, dim {spec.dim}, "
          f"{len(queries)} queries; exact MaxSim (JAX) {len(queries) / exact_s:.1f} q/s incl. compile")
    with tempfile.TemporaryDirectory(prefix="fast-plaid-") as folder:
        peer.write_inputs(folder, tokens, corpus.offsets, queries, mask, truth)
        result = peer.run(folder, python, args.timeout, threads=args.threads, nbits=_ints(args.nbits) or (2, 4),
                          probes=_ints(args.probes), full_scores=_ints(args.full_scores))
    if isinstance(result, str):
        print(f"fast-plaid skipped: {result}")
        return
    print(f"fast-plaid {result.get('version')} (torch {result.get('torch')}, {result.get('device')}, "
          f"{result.get('threads')} threads)")
    for nbits, build in result.get("builds", {}).items():
        if isinstance(build, str):
            print(f"  build nbits={nbits}: {build}")
        else:
            print(f"  build nbits={nbits}: {build['build_s']:.1f} s ({build['build_s_per_million_tokens']:.0f} "
                  f"s/Mtoken), {build['bytes_per_token']:.1f} bytes/token on disk, "
                  f"{build['num_partitions']} centroids")
    print(f"  {'nbits':>5} {'probe':>5} {'full':>6} {'R@10':>6} {'R@100':>6} {'q/s':>8} {'1-query ms':>10}")
    for r in result["rows"]:
        print(f"  {r['nbits']:>5} {r['n_ivf_probe']:>5} {r['n_full_scores']:>6} {r['recall@10']:>6.3f} "
              f"{r['recall@100']:>6.3f} {r['queries_per_s']:>8.1f} {r['single_query_ms_median']:>10.2f}"
              f"{'  *' if r['reaches_targets'] else ''}")
    for note in result.get("notes", []):
        print(f"  note: {note}")
    if result.get("incomplete"):
        print(f"  incomplete: {result['incomplete']}")
    b = result["best"]
    print(f"  chosen ({b['chosen_because']}): nbits={b['nbits']} n_ivf_probe={b['n_ivf_probe']} "
          f"n_full_scores={b['n_full_scores']}: recall@10 {b['recall@10']:.3f}, recall@100 {b['recall@100']:.3f}, "
          f"{b['queries_per_s']:.1f} q/s, {b['single_query_ms_median']:.2f} ms/query, build {b['build_s']:.1f} s, "
          f"{b['bytes_per_token']:.1f} bytes/token")


if __name__ == "__main__":
    main()
