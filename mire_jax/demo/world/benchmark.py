"""The generated evaluation splits as `mire_jax.eval.benchmarks.Benchmark` objects (gold-id relevance)."""

from __future__ import annotations

import json
import os
import pathlib

from mire_jax.eval import metrics
from mire_jax.eval.benchmarks.base import Benchmark, Query
from mire_jax.eval.benchmarks.corpus import MemoryCorpus
from mire_jax.eval.benchmarks.image_refs import ImageFile
from mire_jax.eval.benchmarks.readers import BenchmarkFormatError
from mire_jax.files import iter_json_lines


def _records(path: pathlib.Path, fields: tuple[str, ...]) -> list[dict]:
    records = []
    for _, where, record in iter_json_lines(path, error=BenchmarkFormatError):
        missing = [name for name in fields if not isinstance(record.get(name), str)]
        if missing:
            raise BenchmarkFormatError(f"{where}: missing or non-string field(s) {', '.join(missing)}")
        records.append(record)
    return records


def load_synthetic(root: os.PathLike | str, split: str = "zeroshot") -> Benchmark:
    """One evaluation split of a generated benchmark.

    Args:
        root: the directory `generate` wrote (holding manifest.json).
        split: "zeroshot" (unseen attribute combinations, with distractors) or "seen" (new pictures of
            training entities).

    Returns:
        A `Benchmark` whose queries carry their gold passage id and answer; relevance is "gold_id".

    Raises:
        FileNotFoundError: if the manifest is missing.
        ValueError: for an unknown split.
        BenchmarkFormatError: for a malformed record (file and line named).
    """
    root = pathlib.Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: missing; run `python -m mire_jax.demo.world --out {root}`")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    splits = manifest["evaluation"]
    if split not in splits:
        raise ValueError(f"synthetic: unknown split {split!r}; known: {', '.join(splits)}")
    image_root = root / manifest["image_root"]
    queries_path, corpus_path = root / splits[split]["queries"], root / splits[split]["corpus"]
    corpus, duplicates = MemoryCorpus.from_pairs(
        ((r["id"], r["text"]) for r in _records(corpus_path, ("id", "text"))), str(corpus_path)
    )
    if duplicates:
        raise BenchmarkFormatError(f"{corpus_path}: {duplicates} duplicate passage ids")
    queries = [
        Query(qid=r["id"], question=r["question"], image=ImageFile(os.fspath(image_root / r["image"]), r["image"]),
              answers=[r["answer"]], gold_pids=[r["document_id"]])
        for r in _records(queries_path, ("id", "question", "image", "document_id", "answer"))
    ]
    return Benchmark(name="synthetic", split=split, queries=queries, corpus=corpus, relevance=metrics.GOLD_ID)
