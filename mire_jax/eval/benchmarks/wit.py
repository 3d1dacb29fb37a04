"""WIT as the published code uses it (docs/data_formats.md): VL-ICT, an inverse cloze task over WIT's English pages
(`dataset/wit.py`, config `cfgs/mire_train_vl_ict.yaml`). A query is the page's entity image with the first
sentence of the page description that names the page, the name blanked to "_"; the candidate is the rest of the
description. The candidates are texts.

Root (MIRe: data/wit) holds either
  vl_ict_{split}.json     the published conversion's output: a JSON array of {"question", "document", "image_id"}
or the WIT release's TSV shards (github.com/google-research-datasets/wit)
  wit_v1.{split}.all-NNNNN-of-NNNNN.tsv[.gz]   columns language, page_title, context_page_description,
                                              caption_reference_description, ... (tab-separated, with a header)
with the Wiki6M title list `Wiki6M_ver_1_0_title_only.jsonl` ({"wikidata_id", "wikipedia_title"} per line, from
OVEN; `kb_file=`) to find each page's entity. Entity images: `wikipedia_images_full/` (`image_root=`), the image of
Q<n> at `Q<first 3 digits>/Q<n>.jpg` (`Q<n>/Q<n>.jpg` for 2 digits), as the published `kb_id2img_path`.

The conversion from TSV rows follows the published `inverse_cloze_task` step by step: English rows only; the page's
entity from its title (a title listed twice takes its last entity); the name looked for in the description as the
title, else the title without "(...)" groups, else the caption (an empty caption matches everywhere, as published);
every occurrence replaced, the description split at ". "; the question is the first piece naming the entity (the
last piece when none does) plus ".", the document the pieces after it joined with ". ", both with the name put back
(the question with "_"); pairs with an empty document dropped. Shards are read in name order (the published script
globs them unsorted). As published (`VL_ICT`), pairs whose entity image is missing are dropped. Query and passage
ids are the pair's index; only the query's own document is relevant.
"""
from __future__ import annotations

import glob
import os
import pathlib
import re

from mire_jax.eval import metrics
from mire_jax.eval.benchmarks.base import Benchmark, Query
from mire_jax.eval.benchmarks.corpus import MemoryCorpus
from mire_jax.eval.benchmarks.image_refs import ImageFile
from mire_jax.eval.benchmarks.readers import BenchmarkFormatError, get_field
from mire_jax.files import iter_json_lines, read_json_array

WIT_SPLITS = ("train", "val", "test")
KB_TITLES_FILE = "Wiki6M_ver_1_0_title_only.jsonl"
TSV_COLUMNS = ("language", "page_title", "context_page_description", "caption_reference_description")
_PARENTHESES = re.compile(r"\([\w\s]+\)")
_SENTENCE_END = re.compile(r"[.]\s")


def entity_image_path(wikidata_id: str) -> str:
    """The published `kb_id2img_path`: Q<n> -> Q<first 3 digits of n>/Q<n>.jpg (Q<n>/Q<n>.jpg for 2 digits)."""
    if not wikidata_id.startswith("Q"):
        raise ValueError(f"{wikidata_id!r} is not a Wikidata id (Q...)")
    number = wikidata_id[1:]
    if len(number) == 2:
        return f"Q{number}/Q{number}.jpg"
    return f"Q{number[:3]}/Q{number}.jpg"


def inverse_cloze(title: str, context: str, caption: str) -> tuple[str, str] | None:
    """(question, document) of one page as the published `inverse_cloze_task` makes them, or None when it skips
    the page."""
    if title not in context:
        title = _PARENTHESES.sub("", title).strip()
        if title not in context:
            title = caption.strip()
            if title not in context:
                return None
    pieces = _SENTENCE_END.split(re.sub(re.escape(title), "_rep_", context))
    if len(pieces) <= 1:
        return None
    k = 0
    for k, piece in enumerate(pieces):  # noqa: B007 (the last index when no piece names the entity, as published)
        if "_rep_" in piece:
            break
    question = (pieces[k].strip() + ".").replace("_rep_", "_")
    document = ". ".join(pieces[k + 1:]).strip().replace("_rep_", title)
    return (question, document) if document else None


def _titles(kb_file: str) -> dict[str, str]:
    table = {}
    for _, where, record in iter_json_lines(kb_file, error=BenchmarkFormatError):
        table[str(get_field(record, "wikipedia_title", where))] = str(get_field(record, "wikidata_id", where))
    return table


def _pairs_from_tsv(shards: list[str], kb_file: str) -> list[tuple[str, str, str, str]]:
    """(question, document, entity id, where) of every converted row of the shards."""
    import pandas as pd

    titles = _titles(kb_file)
    pairs = []
    for shard in shards:
        try:
            table = pd.read_csv(shard, delimiter="\t", keep_default_na=False, usecols=list(TSV_COLUMNS), dtype=str)
        except ValueError as e:
            raise BenchmarkFormatError(f"{shard}: {e}") from e
        table = table[table["language"] == "en"]
        rows = zip(table.index, table["page_title"], table["context_page_description"],
                   table["caption_reference_description"])
        for row, title, context, caption in rows:
            if title not in titles:
                continue
            converted = inverse_cloze(title, context, caption)
            if converted is not None:
                pairs.append((*converted, titles[title], f"{shard}: row {row}"))
    return pairs


def load_wit(root: os.PathLike | str, split: str = "val", *, pairs_file: os.PathLike | str | None = None,
             kb_file: os.PathLike | str | None = None, image_root: os.PathLike | str | None = None) -> Benchmark:
    """WIT VL-ICT (see the module docstring).

    Args:
      root: folder holding `vl_ict_{split}.json`, or the split's WIT TSV shards (and the Wiki6M title list).
      split: "val" (the published validation file), "train" or "test".
      pairs_file, kb_file, image_root: overrides.
    """
    root = pathlib.Path(root)
    if split not in WIT_SPLITS:
        raise ValueError(f"wit: unknown split {split!r}; expected one of {WIT_SPLITS}")
    image_root = pathlib.Path(image_root) if image_root else root / "wikipedia_images_full"
    pairs_file = os.fspath(pairs_file or root / f"vl_ict_{split}.json")
    if os.path.exists(pairs_file):
        pairs = []
        for index, record in enumerate(read_json_array(pairs_file, error=BenchmarkFormatError, what="pairs")):
            where = f"{pairs_file}: record {index}"
            pairs.append((get_field(record, "question", where, str), get_field(record, "document", where, str),
                          get_field(record, "image_id", where, str), where))
        source = pairs_file
    else:
        shards = sorted(glob.glob(os.fspath(root / f"wit_v1.{split}.all-*.tsv"))
                        + glob.glob(os.fspath(root / f"wit_v1.{split}.all-*.tsv.gz")))
        if not shards:
            raise FileNotFoundError(f"wit: neither {pairs_file} nor WIT shards wit_v1.{split}.all-*.tsv[.gz] in "
                                    f"{root}")
        kb_file = os.fspath(kb_file or root / KB_TITLES_FILE)
        pairs = _pairs_from_tsv(shards, kb_file)
        source = os.fspath(root / f"wit_v1.{split}.all-*.tsv")
    queries, pids, texts, missing = [], [], [], 0
    for index, (question, document, entity, where) in enumerate(pairs):
        try:
            rel = entity_image_path(entity)
        except ValueError as e:
            raise BenchmarkFormatError(f"{where}: {e}") from None
        if not (image_root / rel).exists():
            missing += 1
            continue
        pid = str(index)
        pids.append(pid)
        texts.append(document.strip())
        queries.append(Query(qid=pid, question=question, image=ImageFile(os.fspath(image_root / rel), rel),
                             answers=[], gold_pids=[pid]))
    notes = [f"{len(pairs)} pairs from {os.path.basename(source)}"]
    if missing:
        notes.append(f"dropped {missing} pair(s) whose entity image is not in {image_root}")
    return Benchmark(name="wit", split=split, queries=queries, corpus=MemoryCorpus(pids, texts, source=source),
                     relevance=metrics.GOLD_ID, notes=tuple(notes))
