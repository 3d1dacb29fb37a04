"""WebQA (docs/data_formats.md): questions over a pool of image sources (an image with its caption) and text
sources (snippets), from the release (github.com/WebQnA/WebQA), root holding
    WebQA_train_val.json   {guid: {"Q", "A": [str], "split": "train"|"val", "Qcate", "topic",
                                   "img_posFacts"|"img_negFacts": [{"image_id", "title", "caption", "url", ...}],
                                   "txt_posFacts"|"txt_negFacts": [{"snippet_id", "title", "fact", "url"}]}}
    imgs.tsv, imgs.lineidx  "<image_id>\\t<base64 JPEG>" lines, and the byte offset of each line
(the image of `image_id` is the line at `lineidx[int(image_id) % 10_000_000]`, as the published
`dataset/webqa.py` reads it). `WebQA_test.json` has no sources and cannot be evaluated.

The published `WebQADataset` (training only; MIRe evaluates no WebQA split) takes a question as `Q` without double
quotes, an image source as its caption (stripped) with its image, a text source as its `fact` (stripped), titles
left out: so do we. Queries carry no image (they are text questions). The candidate pool follows VISTA's zero-shot
WebQA evaluation (the published evaluation's data source for FashionIQ): every source, positive or negative, of
every train and val question (`pool="train_val"`; `pool="split"`: the evaluated split's only), one passage per
source id (`image_id`, `snippet_id`: WebQA's own source ids), a repeated id keeping its first position and its
last text. Queries: the records of the split with at least one positive source; relevant: their positive sources'
ids (WebQA's own source labels). The published protocol reports a hit rate per cut-off; the textbook protocol the
recall over all positive sources (what VISTA reports as Recall@k).
"""
from __future__ import annotations

import os
import pathlib

from mire_jax.eval import metrics
from mire_jax.eval.benchmarks.base import Benchmark, Query
from mire_jax.eval.benchmarks.corpus import MemoryCorpus
from mire_jax.eval.benchmarks.image_refs import WebQATsvImage
from mire_jax.eval.benchmarks.readers import BenchmarkFormatError, get_field
from mire_jax.files import read_json

WEBQA_SPLITS = ("train", "val")
WEBQA_POOLS = ("train_val", "split")
WEBQA_FILE = "WebQA_train_val.json"


def load_webqa(root: os.PathLike | str, split: str = "val", *, pool: str = "train_val",
               data_file: os.PathLike | str | None = None, image_dir: os.PathLike | str | None = None) -> Benchmark:
    """WebQA (see the module docstring).

    Args:
      root: folder holding `WebQA_train_val.json`, `imgs.tsv` and `imgs.lineidx`.
      split: "val" (default) or "train".
      pool: "train_val" (every source of the file) or "split" (the split's sources only).
      data_file, image_dir: overrides (the JSON; the folder of imgs.tsv / imgs.lineidx).
    """
    root = pathlib.Path(root)
    if split not in WEBQA_SPLITS:
        raise ValueError(f"webqa: unknown split {split!r}; expected one of {WEBQA_SPLITS} (the test file has no "
                         "sources)")
    if pool not in WEBQA_POOLS:
        raise ValueError(f"webqa: unknown pool {pool!r}; expected one of {WEBQA_POOLS}")
    data_file = os.fspath(data_file or root / WEBQA_FILE)
    image_dir = pathlib.Path(image_dir) if image_dir else root
    tsv, lineidx = os.fspath(image_dir / "imgs.tsv"), os.fspath(image_dir / "imgs.lineidx")
    for path in (tsv, lineidx):
        if not os.path.exists(path):
            raise FileNotFoundError(f"webqa: {path} not found (the release's image files; pass image_dir=)")
    data = read_json(data_file, error=BenchmarkFormatError)
    if not isinstance(data, dict):
        raise BenchmarkFormatError(f"{data_file}: expected a JSON object keyed by guid, found {type(data).__name__}")

    texts: dict[str, str] = {}
    images: dict[str, WebQATsvImage | None] = {}
    queries, without_positives, sources = [], 0, 0
    for guid, record in data.items():
        where = f"{data_file}: record {guid!r}"
        record_split = get_field(record, "split", where, str)
        in_split = record_split == split
        positives = []
        for field, is_image, positive in (("img_posFacts", True, True), ("img_negFacts", True, False),
                                          ("txt_posFacts", False, True), ("txt_negFacts", False, False)):
            facts = record.get(field, [])
            if not isinstance(facts, list):
                raise BenchmarkFormatError(f"{where}: field {field!r} should be a list")
            for i, fact in enumerate(facts):
                fact_where = f"{where}: {field}[{i}]"
                if is_image:
                    pid = str(get_field(fact, "image_id", fact_where, (int, str)))
                    if not pid.isdigit():
                        raise BenchmarkFormatError(f"{fact_where}: image_id {pid!r} is not a WebQA image number")
                    text = get_field(fact, "caption", fact_where, str).strip()
                    image = WebQATsvImage(tsv, lineidx, pid)
                else:
                    pid = str(get_field(fact, "snippet_id", fact_where, (int, str)))
                    text, image = get_field(fact, "fact", fact_where, str).strip(), None
                if positive:
                    positives.append(pid)
                if pool == "train_val" or in_split:
                    sources += 1
                    texts[pid] = text
                    images[pid] = image
        if not in_split:
            continue
        if not positives:
            without_positives += 1
            continue
        question = get_field(record, "Q", where, str).replace('"', "")
        answers = get_field(record, "A", where, list)
        queries.append(Query(qid=str(guid), question=question, image=None,
                             answers=[str(a).replace('"', "") for a in answers[:1]],
                             gold_pids=list(dict.fromkeys(positives))))
    pids = list(texts)
    corpus = MemoryCorpus(pids, [texts[p] for p in pids], source=data_file, images=[images[p] for p in pids])
    notes = [f"corpus: {len(pids)} sources of the {'train and val' if pool == 'train_val' else split} records "
             f"({sum(1 for p in pids if images[p] is not None)} images with captions, "
             f"{sum(1 for p in pids if images[p] is None)} snippets)"]
    if sources != len(pids):
        notes.append(f"collapsed {sources - len(pids)} repeated source id(s) (first position, last text)")
    if without_positives:
        notes.append(f"dropped {without_positives} {split} record(s) without positive sources")
    return Benchmark(name="webqa", split=split, queries=queries, corpus=corpus, relevance=metrics.GOLD_ID,
                     notes=tuple(notes))
