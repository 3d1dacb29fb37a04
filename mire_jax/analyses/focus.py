"""Where the pooling looks: the share of the query-guided pooling's attention that falls on the object, per query
type, against the object's area and against a region of the same size and shape elsewhere; how spread the attention
is (its entropy); and a gallery of heatmaps.

Measures, for one query (`Searcher.pooling_maps`: per head, the attention over the S image patches averaged over the
question's real tokens, each map summing to 1):
- the object's coverage of each patch c (the share of the patch's pixels the object covers, from a pixel mask);
- share on the object = sum_s a_s c_s, the attention mass on object pixels (uniform attention scores the object's
  area, mean(c));
- share on the same region shifted by half the picture (cyclically: the same size and shape elsewhere);
- normalised entropy of each head's map, H(a) / log S: 1 uniform, 0 one patch.
Without masks (real data) only the entropy and the gallery are reported.
"""
from __future__ import annotations

import os
from typing import Callable, Mapping

import numpy as np

from mire_jax.analyses import plots
from mire_jax.eval.benchmarks.base import Benchmark, Query

NAME = "pooling_focus"


def patch_coverage(mask: np.ndarray, grid: int) -> np.ndarray:
    """A pixel mask [size, size] (values in [0, 1]) -> the share of each of grid x grid patches it covers."""
    mask = np.asarray(mask, np.float64)
    size = mask.shape[0]
    if mask.shape != (size, size) or size % grid:
        raise ValueError(f"the mask must be square with a side divisible by {grid}, got {mask.shape}")
    step = size // grid
    return mask.reshape(grid, step, grid, step).mean(axis=(1, 3))


def share_on(attention: np.ndarray, coverage: np.ndarray) -> float:
    """The attention mass on the region: sum over patches of attention x coverage (attention normalised to 1)."""
    attention = np.asarray(attention, np.float64)
    return float((attention * coverage).sum() / max(attention.sum(), 1e-12))


def shifted(coverage: np.ndarray) -> np.ndarray:
    """The same region moved by half the picture in both directions (cyclically): same size and shape, elsewhere."""
    g = coverage.shape[0]
    return np.roll(coverage, (g // 2, g // 2), axis=(0, 1))


def normalized_entropy(attention: np.ndarray) -> float:
    """H(a) / log S of a map over S patches: 1 for uniform attention, 0 for all of it on one patch."""
    a = np.asarray(attention, np.float64).ravel()
    a = a / max(a.sum(), 1e-12)
    nz = a[a > 0]
    return float(-(nz * np.log(nz)).sum() / np.log(a.size)) if a.size > 1 else 0.0


def query_measures(maps: np.ndarray, mask: np.ndarray | None) -> dict:
    """The measures of one query's maps [H, g, g] (and its object mask, if known)."""
    maps = np.asarray(maps, np.float64)
    mean = maps.mean(0)
    out = {"entropy": float(np.mean([normalized_entropy(m) for m in maps])),
           "entropy_of_mean": normalized_entropy(mean)}
    if mask is not None:
        c = patch_coverage(mask, maps.shape[-1])
        heads = [share_on(m, c) for m in maps]
        out.update({"object": share_on(mean, c), "elsewhere": share_on(mean, shifted(c)),
                    "area": float(c.mean()), "best_head": int(np.argmax(heads)), "best_head_object": max(heads)})
    return out


def first_word(query: Query) -> str:
    """A query type for real data: the question's first word, lower-cased ("what", "who", "which", ...)."""
    words = query.question.strip().lower().split()
    return words[0].strip("?,.!") if words else "(empty)"


def pooling_focus(model_dir: str | os.PathLike, benchmark: Benchmark, out_dir: str | None = None, *,
                  regions: Mapping[str, np.ndarray] | None = None,
                  query_types: Mapping[str, str] | Callable[[Query], str] | None = None,
                  max_queries: int | None = None, gallery: int = 6, settings: Mapping | None = None,
                  searcher=None) -> dict:
    """Where the pooling of the model in `model_dir` looks, on the benchmark's queries.

    Args:
        model_dir: a model folder.
        benchmark: any loaded benchmark whose queries have images.
        out_dir: where the bar chart and the gallery go (None: no figures).
        regions: qid -> the object's pixel mask in the query's picture ([size, size], values in [0, 1], the picture's
            own size); None (real data): entropy and gallery only.
        query_types: qid -> type, or a function of the Query (default: the question's first word).
        max_queries: the first this many queries with an image (None: all).
        gallery: pictures in the gallery (spread over the query types).
        settings: encoding settings for `Searcher.load` (e.g. {"query_maxlen": 32}).
        searcher: a `Searcher` to use instead of loading one.

    Returns:
        A plain dict: "rows" (one per query type and one for all: queries, share of attention on the object, on the
        same region elsewhere, the object's area, their ratio, the entropies), "per_query", "plot", "gallery".
    """
    from mire_jax.retrieval.searcher import Searcher

    searcher = searcher or Searcher.load(model_dir, settings=dict(settings or {}))
    type_of = query_types if callable(query_types) else (
        (lambda q: query_types.get(q.qid, "other")) if query_types is not None else first_word)
    queries = [q for q in benchmark.queries if q.image is not None][:max_queries]
    per_query, shown = [], {}
    for q in queries:
        image = q.image.load()
        maps = searcher.pooling_maps(image, q.question)
        mask = regions.get(q.qid) if regions is not None else None
        if mask is not None and np.asarray(mask).shape != (image.size[1], image.size[0]):
            raise ValueError(f"query {q.qid}: the mask is {np.asarray(mask).shape}, the picture {image.size[::-1]}")
        row = {"qid": q.qid, "type": str(type_of(q)), **query_measures(maps, mask)}
        per_query.append(row)
        shown.setdefault(row["type"], []).append((q, image, maps, mask, row))
    if not per_query:
        raise ValueError(f"{benchmark.name}: no query with an image to look at")
    with_regions = regions is not None
    types = sorted(shown)
    rows = [_summary(t, [r for r in per_query if r["type"] == t], with_regions) for t in types]
    rows.append(_summary("all", per_query, with_regions))
    columns = ["query type", "queries", "entropy"]
    if with_regions:
        columns[2:2] = ["on object", "same region elsewhere", "object area", "object / area"]
    result = {
        "analysis": NAME,
        "title": "Where the pooling looks",
        "what": ("Share of the query-guided pooling's attention (head-averaged, over the question's real tokens) on "
                 "the object's pixels, on the same region moved by half the picture, and the object's area (what "
                 "uniform attention would give), in %; entropy = mean over heads of H / log(patches) (1 = uniform)."
                 if with_regions else
                 "Entropy of the query-guided pooling's attention: mean over heads of H / log(patches) (1 = uniform); "
                 "the benchmark has no object masks, so no share on the object."),
        "benchmark": f"{benchmark.name}/{benchmark.split}", "model": os.fspath(model_dir),
        "columns": columns, "rows": rows, "per_query": per_query, "findings": _findings(rows, with_regions),
        "plot": None, "gallery": None,
    }
    if out_dir is not None:
        if with_regions:
            result["plot"] = plots.grouped_bars(
                [r["query type"] for r in rows],
                {"on object": [r["on object"] for r in rows],
                 "same region elsewhere": [r["same region elsewhere"] for r in rows],
                 "object area (uniform)": [r["object area"] for r in rows]},
                os.path.join(out_dir, f"{NAME}.png"), ylabel="attention mass (%)",
                title=f"{benchmark.name}: pooling attention on the object, by query type")
        picks = _gallery_picks(shown, gallery)
        if picks:
            items = [{"image": image, "maps": maps, "mask": mask,
                      "head": row.get("best_head", int(np.argmin([normalized_entropy(m) for m in maps]))),
                      "label": f"{row['type']}: {q.question}"} for q, image, maps, mask, row in picks]
            scale = f"colour: attention / uniform, 0 to {plots.UNIFORM_SCALE:g}"
            result["gallery"] = plots.attention_gallery(items, os.path.join(out_dir, f"{NAME}_gallery.png"),
                                                        f"pooling attention (outline: the object; {scale})"
                                                        if with_regions else f"pooling attention ({scale})")
    return result


def _summary(name: str, rows: list[dict], with_regions: bool) -> dict:
    out = {"query type": name, "queries": len(rows), "entropy": float(np.mean([r["entropy"] for r in rows]))}
    if with_regions:
        on, elsewhere, area = (100 * float(np.mean([r[k] for r in rows])) for k in ("object", "elsewhere", "area"))
        out.update({"on object": on, "same region elsewhere": elsewhere, "object area": area,
                    "object / area": on / area if area else None,
                    "best head on object": 100 * float(np.mean([r["best_head_object"] for r in rows]))})
    return out


def _gallery_picks(shown: dict, count: int) -> list:
    picks, depth = [], 0
    while len(picks) < count and any(len(v) > depth for v in shown.values()):
        picks += [v[depth] for _, v in sorted(shown.items()) if len(v) > depth][:count - len(picks)]
        depth += 1
    return picks


def _findings(rows: list[dict], with_regions: bool) -> list[str]:
    overall = rows[-1]
    if not with_regions:
        return [f"mean normalised entropy {overall['entropy']:.2f} over {overall['queries']} queries"]
    return [f"{r['query type']}: {r['on object']:.1f}% of the attention on the object (area {r['object area']:.1f}%, "
            f"the same region elsewhere {r['same region elsewhere']:.1f}%), entropy {r['entropy']:.2f}"
            for r in rows]
