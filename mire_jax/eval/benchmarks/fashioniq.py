"""FashionIQ (docs/data_formats.md): composed image retrieval, the one published benchmark whose candidates are
images alone. A query is a reference image and a relative caption; the candidates are product images, each an
image-only passage (encoded as the published `MIRe.doc` encodes a passage image), and the target is relevant.

Two layouts are read:

* The FashionIQ release (github.com/XiaoxiaoGuo/fashion-iq, images from its metadata repository), root holding
      captions/cap.{dress,shirt,toptee}.{train,val,test}.json   [{"target", "candidate", "captions": [2 str]}]
      image_splits/split.{dress,shirt,toptee}.{train,val,test}.json   [image name, ...]
      images/<image name>.{png,jpg,jpeg}
  Queries: the caption records of the split, reference = `candidate`, gold = `target`; query id
  `<candidate>_<record index>` (index over the categories in the order dress, shirt, toptee), as the published
  loader names ids. The two captions are joined as `"<first> and <second>"`, each stripped of ".?, " at its ends
  and the first passed through `str.capitalize` (the join CLIP4Cir and most composed-retrieval code use; the
  published evaluation read a converted file, see below, whose join we could not see). Corpus: the split's images
  of the chosen categories (`image_splits`), in file order, duplicates collapsed. Images absent from `images/` are
  left out of the corpus, and queries whose reference image is absent or whose target is not in the corpus are
  dropped (both noted).

* The converted files the published loader (`dataset/fashioniq.py`, `FashionIQLoader`) reads, from VISTA's
  evaluation data (huggingface.co/datasets/JUNJIE99/VISTA_Evaluation, folder FashionIQ/): JSON Lines queries
  `{"q_img", "q_text", "positive"}` and a JSON Lines corpus `{"image", "content"}`. As published: the query id is
  `<basename(q_img) without its 4-character extension>_<line index>`, the query image `images/basename(q_img)`,
  a candidate's id is its `content` and its image `images/basename(image)`, gold = `positive`. Used when the root
  holds `mm_it_query.jsonl` (or `queries_file=` is given); the corpus file is the root's other `*.jsonl` file (or
  `corpus_file=`).

Relevance (published `FashionIQLoader.create_qrels`): the passage whose id equals the query's gold id.
"""
from __future__ import annotations

import glob
import os
import pathlib

from mire_jax.eval import metrics
from mire_jax.eval.benchmarks.base import Benchmark, Query, collapse_by_id
from mire_jax.eval.benchmarks.corpus import MemoryCorpus
from mire_jax.eval.benchmarks.image_refs import ImageFile
from mire_jax.eval.benchmarks.readers import BenchmarkFormatError, get_field
from mire_jax.files import iter_json_lines, read_json_array

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
FASHIONIQ_SPLITS = ("train", "val", "test")
VISTA_QUERY_FILE = "mm_it_query.jsonl"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".JPEG", ".JPG", ".PNG")


def join_captions(captions: list[str]) -> str:
    """The relative captions of one query as one text: `"<first> and <second>"`, ".?, " stripped at the ends, the
    first through `str.capitalize` (upper-case first letter, the rest lower-cased); one caption: itself."""
    parts = [c.strip(".?, ") for c in captions]
    parts = [p for p in parts if p]
    if not parts:
        return ""
    return " and ".join([parts[0].capitalize()] + parts[1:])


def _image_files(image_root: pathlib.Path) -> dict[str, str]:
    """Image name (file name without extension) -> file name, for the files of `image_root`."""
    if not image_root.is_dir():
        raise FileNotFoundError(f"fashioniq: no image folder {image_root} (the release's images/; pass image_root=)")
    found: dict[str, str] = {}
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    for name in os.listdir(image_root):
        stem, ext = os.path.splitext(name)
        if ext in rank and (stem not in found or rank[ext] < rank[os.path.splitext(found[stem])[1]]):
            found[stem] = name
    return found


def load_fashioniq(root: os.PathLike | str, split: str = "val", *, category: str = "all",
                   image_root: os.PathLike | str | None = None, queries_file: os.PathLike | str | None = None,
                   corpus_file: os.PathLike | str | None = None) -> Benchmark:
    """FashionIQ (see the module docstring).

    Args:
      root: the release folder (captions/, image_splits/, images/) or the folder of the converted files.
      split: "val" (the split composed-retrieval papers report; "test" captions carry no targets) or "train".
      category: "dress", "shirt", "toptee", or "all" (the three, one corpus). Release layout only.
      image_root: the images (default `root/images`).
      queries_file, corpus_file: the converted files (published loader's layout).
    """
    root = pathlib.Path(root)
    image_root = pathlib.Path(image_root) if image_root else root / "images"
    if queries_file is not None or (root / VISTA_QUERY_FILE).exists():
        return _load_converted(root, split, image_root, queries_file, corpus_file)
    if split not in FASHIONIQ_SPLITS:
        raise ValueError(f"fashioniq: unknown split {split!r}; expected one of {FASHIONIQ_SPLITS}")
    categories = FASHIONIQ_CATEGORIES if category == "all" else (category,)
    if category != "all" and category not in FASHIONIQ_CATEGORIES:
        raise ValueError(f"fashioniq: unknown category {category!r}; expected one of {FASHIONIQ_CATEGORIES} or "
                         "'all'")
    files = _image_files(image_root)
    names: list[str] = []
    for cat in categories:
        split_file = os.fspath(root / "image_splits" / f"split.{cat}.{split}.json")
        for index, name in enumerate(read_json_array(split_file, error=BenchmarkFormatError, what="image names")):
            if not isinstance(name, str) or not name:
                raise BenchmarkFormatError(f"{split_file}: record {index}: expected an image name, found {name!r}")
            names.append(name)
    names = list(dict.fromkeys(names))
    missing_images = [name for name in names if name not in files]
    in_corpus = [name for name in names if name in files]
    images = [ImageFile(os.fspath(image_root / files[name]), files[name]) for name in in_corpus]
    corpus = MemoryCorpus(in_corpus, [""] * len(in_corpus), source=os.fspath(root / "image_splits"), images=images)
    corpus_ids = set(in_corpus)

    queries, dropped_reference, dropped_target, index = [], 0, 0, 0
    for cat in categories:
        captions_file = os.fspath(root / "captions" / f"cap.{cat}.{split}.json")
        for record_no, record in enumerate(read_json_array(captions_file, error=BenchmarkFormatError)):
            where = f"{captions_file}: record {record_no}"
            candidate = get_field(record, "candidate", where, str)
            if "target" not in record:
                raise BenchmarkFormatError(f"{where}: missing field 'target' (the FashionIQ test captions carry no "
                                           "targets; evaluate split 'val')")
            target = get_field(record, "target", where, str)
            captions = get_field(record, "captions", where, list)
            if not all(isinstance(c, str) for c in captions):
                raise BenchmarkFormatError(f"{where}: field 'captions' should be a list of str")
            qid = f"{candidate}_{index}"
            index += 1
            if candidate not in files:
                dropped_reference += 1
                continue
            if target not in corpus_ids:
                dropped_target += 1
                continue
            queries.append(Query(qid=qid, question=join_captions(captions),
                                 image=ImageFile(os.fspath(image_root / files[candidate]), files[candidate]),
                                 answers=[], gold_pids=[target]))
    notes = []
    if missing_images:
        notes.append(f"left {len(missing_images)} image(s) of the split out of the corpus: not in {image_root} "
                     f"(e.g. {missing_images[:3]})")
    if dropped_reference:
        notes.append(f"dropped {dropped_reference} query(ies) whose reference image is not in {image_root}")
    if dropped_target:
        notes.append(f"dropped {dropped_target} query(ies) whose target is not in the corpus")
    name = "fashioniq" if category == "all" else f"fashioniq_{category}"
    return Benchmark(name=name, split=split, queries=queries, corpus=corpus, relevance=metrics.GOLD_ID,
                     notes=tuple(notes))


def _load_converted(root: pathlib.Path, split: str, image_root: pathlib.Path, queries_file, corpus_file) -> Benchmark:
    """The published loader's layout: VISTA's converted JSON Lines files (module docstring)."""
    queries_file = os.fspath(queries_file or root / VISTA_QUERY_FILE)
    if corpus_file is None:
        others = sorted(p for p in glob.glob(os.fspath(root / "*.jsonl")) if os.path.abspath(p)
                        != os.path.abspath(queries_file))
        if len(others) != 1:
            raise BenchmarkFormatError(f"fashioniq: cannot tell the corpus file among {others or 'no other .jsonl'} "
                                       f"in {root}: pass corpus_file=")
        corpus_file = others[0]
    corpus_file = os.fspath(corpus_file)
    pids, images = [], []
    for _, where, record in iter_json_lines(corpus_file, error=BenchmarkFormatError):
        image = os.path.basename(get_field(record, "image", where, str))
        pids.append(str(get_field(record, "content", where, (str, int))))
        images.append(ImageFile(os.fspath(image_root / image), image))
    table = dict(zip(pids, images))  # as the published id2passage dict: first position, last image
    corpus = MemoryCorpus(list(table), [""] * len(table), source=corpus_file, images=list(table.values()))
    queries = []
    for line_no, (_, where, record) in enumerate(iter_json_lines(queries_file, error=BenchmarkFormatError)):
        image = os.path.basename(get_field(record, "q_img", where, str))
        queries.append(Query(qid=f"{image[:-4]}_{line_no}", question=get_field(record, "q_text", where, str),
                             image=ImageFile(os.fspath(image_root / image), image), answers=[],
                             gold_pids=[str(get_field(record, "positive", where, (str, int)))]))
    queries, _ = collapse_by_id(queries, key=lambda q: q.qid)
    notes = [f"collapsed {len(pids) - len(table)} duplicate candidate id(s) (first position, last image)"] \
        if len(pids) != len(table) else []
    return Benchmark(name="fashioniq", split=split, queries=queries, corpus=corpus, relevance=metrics.GOLD_ID,
                     notes=tuple(notes))
