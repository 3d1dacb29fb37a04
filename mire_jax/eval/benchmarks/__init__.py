"""Evaluation benchmarks of MIRe, read from their real download layouts (docs/data_formats.md).

    from mire_jax.eval.benchmarks import load_benchmark
    bench = load_benchmark("okvqa_gs", "data/okvqa")             # split defaults to MIRe's evaluation split
    for q in bench.queries: q.qid, q.question, q.image.load(), q.answers, q.gold_pids
    for pid, text in bench.corpus: ...                            # streamed in file order; len(bench.corpus)
    result = bench.evaluate_published(run)                        # run = {qid: {pid: score}}, top 100
    result.as_dict()  # {"protocol": "published", "relevance": "whole_word_or_substring", ..., "R@5": ...}

| name           | default split | root (MIRe path)             | relevance (published)        |
|----------------|---------------|------------------------------|------------------------------|
| okvqa_gs       | test          | data/okvqa (RAVQA_v2_data/)  | whole_word_or_substring      |
| okvqa_wk11m    | test          | data/okvqa                   | whole_word                   |
| remuq          | test          | data/remuq (+ webqa/)        | gold_id                      |
| m2kr_evqa      | test          | M2KR hub copy                | substring                    |
| m2kr_infoseek  | test          | M2KR hub copy                | substring                    |
| m2kr_okvqa     | test          | M2KR hub copy                | substring (not in MIRe)      |
| aokvqa         | val           | A-OKVQA json folder          | gold_id                      |
| vid2r_val      | val           | data/vid2r                   | gold_id                      |
| fashioniq      | val           | FashionIQ release (or VISTA) | gold_id (image candidates)   |
| fashioniq_{dress,shirt,toptee} | val | the same, one category  | gold_id (image candidates)   |
| webqa          | val           | WebQA release (json + tsv)   | gold_id (image+text, text)   |
| fvqa           | all           | FVQA release                 | gold_id                      |
| wit            | val           | data/wit (VL-ICT)            | gold_id                      |

A corpus may carry an image per passage (`bench.corpus.items()` yields `(pid, text, image)` for those).

Each loader also takes keyword overrides of its sub-paths (see the loader's docstring).
"""
from __future__ import annotations

import functools
import os
from typing import Callable

from mire_jax.eval.benchmarks.aokvqa import load_aokvqa
from mire_jax.eval.benchmarks.base import Benchmark, Query
from mire_jax.eval.benchmarks.corpus import Corpus, CsvCorpus, JsonlBlocksCorpus, MemoryCorpus
from mire_jax.eval.benchmarks.fashioniq import load_fashioniq
from mire_jax.eval.benchmarks.fvqa import load_fvqa
from mire_jax.eval.benchmarks.image_refs import ImageFile, ImageRef, WebQATsvImage
from mire_jax.eval.benchmarks.m2kr import load_m2kr
from mire_jax.eval.benchmarks.okvqa import load_okvqa_gs, load_okvqa_wk11m
from mire_jax.eval.benchmarks.readers import BenchmarkFormatError
from mire_jax.eval.benchmarks.remuq import load_remuq
from mire_jax.eval.benchmarks.vid2r_val import load_vid2r_val
from mire_jax.eval.benchmarks.webqa import load_webqa
from mire_jax.eval.benchmarks.wit import load_wit

LOADERS: dict[str, Callable[..., Benchmark]] = {
    "okvqa_gs": load_okvqa_gs,
    "okvqa_wk11m": load_okvqa_wk11m,
    "remuq": load_remuq,
    "m2kr_evqa": functools.partial(load_m2kr, task="EVQA"),
    "m2kr_infoseek": functools.partial(load_m2kr, task="Infoseek"),
    "m2kr_okvqa": functools.partial(load_m2kr, task="OKVQA"),
    "aokvqa": load_aokvqa,
    "vid2r_val": load_vid2r_val,
    "fashioniq": load_fashioniq,
    "fashioniq_dress": functools.partial(load_fashioniq, category="dress"),
    "fashioniq_shirt": functools.partial(load_fashioniq, category="shirt"),
    "fashioniq_toptee": functools.partial(load_fashioniq, category="toptee"),
    "webqa": load_webqa,
    "fvqa": load_fvqa,
    "wit": load_wit,
}
BENCHMARK_NAMES = tuple(LOADERS)

_ALIASES = {"okvqa_wiki": "okvqa_wk11m", "okvqa_wiki11m": "okvqa_wk11m", "evqa": "m2kr_evqa",
            "infoseek": "m2kr_infoseek", "vid2r": "vid2r_val", "fiq": "fashioniq", "vl_ict": "wit"}


def load_benchmark(name: str, root: os.PathLike | str, split: str | None = None, **overrides) -> Benchmark:
    """Load a benchmark by registry name (case and "-" ignored; e.g. "OKVQA-GS", "EVQA").

    Args:
      name: one of BENCHMARK_NAMES (or an alias such as "evqa", "infoseek", "okvqa_wiki").
      root: the benchmark's data folder, laid out as the real download.
      split: the split; None = the split MIRe evaluates.
      **overrides: sub-path overrides and options of the loader.
    """
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in LOADERS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARK_NAMES)}")
    kwargs = dict(overrides)
    if split is not None:
        kwargs["split"] = split
    return LOADERS[key](root, **kwargs)


__all__ = ["BENCHMARK_NAMES", "Benchmark", "BenchmarkFormatError", "Corpus", "CsvCorpus", "ImageFile", "ImageRef",
           "JsonlBlocksCorpus", "LOADERS", "MemoryCorpus", "Query", "WebQATsvImage", "load_aokvqa",
           "load_benchmark", "load_fashioniq", "load_fvqa", "load_m2kr", "load_okvqa_gs", "load_okvqa_wk11m",
           "load_remuq", "load_vid2r_val", "load_webqa", "load_wit"]
