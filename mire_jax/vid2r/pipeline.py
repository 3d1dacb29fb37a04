"""The ViD2R construction pipeline: split -> filter -> index -> search -> compose, each stage resumable.

Work folder layout:
  triples.jsonl                 stage "split": (record_id, turn, image, question, response) per turn pair
  split_counts.json
  vid2r_wo_conversion.json      stage "filter": the published filter's output (JSON array, indent 2)
  filter_counts.json            kept / dropped per rule, the noun extractor, and a note when it was the heuristic
  kb_index/                     stage "index": passage token embeddings in `mire_jax.index` shards (resumable per
                                shard) and their LateInteractionIndex (`retrieval.MireTextRetriever.build_index`)
  search_chunks/chunk_*.jsonl   stage "search": hits of `chunk_size` records per file (resumable per chunk)
  hits.jsonl                    {"id", "pids", ["scores"]} per filtered record, in record order
  ViD2R.json                    stage "compose" (or `out`): the converted records
  <stage>.done.json             completion markers with the stage fingerprints (see `stages.py`)
"""
from __future__ import annotations

import collections
import dataclasses
import os
import shutil
from typing import Callable, Sequence

from mire_jax import files
from mire_jax.vid2r import stages
from mire_jax.vid2r.conversion import ConversionConfig, convert_records, cut_passage
from mire_jax.vid2r.dialogues import SplitCounts, Triple, read_triples
from mire_jax.vid2r.filtering import DROP_REASONS, FilterConfig, filter_triples
from mire_jax.vid2r.knowledge_base import KnowledgeBase
from mire_jax.vid2r.nouns import heuristic_notice, make_noun_extractor
from mire_jax.vid2r.retrieval import INDEX_FORMAT, Retriever

STAGES = ("split", "filter", "index", "search", "compose")


@dataclasses.dataclass
class PipelineOptions:
    """Everything the pipeline needs; see `python -m mire_jax.vid2r --help` for each option."""

    dialogues: Sequence[str]
    work_dir: str
    out: str | None = None
    until: str = "compose"
    force: bool = False
    progress: bool = True
    on_error: str = "raise"
    # filter
    filter: FilterConfig = FilterConfig()
    nouns: str = "auto"
    spacy_model: str = "en_core_web_sm"
    seed: int = 0
    unique_ids: bool = True
    save_negative: bool = False
    # knowledge base and retrieval
    kb: str | None = None
    kb_text_field: str | None = None
    kb_id_field: str | None = None
    model_dir: str | None = None
    tokenizer: str | None = None
    hits_file: str | None = None
    query_maxlen: int = 80
    doc_maxlen: int = 256
    query_mask: str = "colbert"
    batch_size: int = 32
    search: str = "auto"
    shard_size: int = 10_000
    chunk_size: int = 1024
    # composition
    conversion: ConversionConfig = ConversionConfig()

    def __post_init__(self):
        if self.until not in STAGES:
            raise ValueError(f"until must be one of {STAGES}, got {self.until!r}")
        if not self.dialogues:
            raise ValueError("no dialogue file given")
        if self.filter.published:
            self._check_published_nouns()

    def _check_published_nouns(self) -> None:
        """The published script tags with spaCy's en_core_web_sm; refuse settings that never can."""
        if self.nouns in ("heuristic", "none"):
            raise ValueError(f"--published reproduces the published noun hints (spaCy's en_core_web_sm); "
                             f"--nouns {self.nouns} cannot: use --nouns auto or spacy")
        if self.spacy_model != "en_core_web_sm":
            raise ValueError(f"--published loads en_core_web_sm as the published script does, not "
                             f"--spacy-model {self.spacy_model}")


def _summary_table(counts: dict, title: str) -> str:
    width = max(len(k) for k in counts) if counts else 0
    lines = [title]
    lines += [f"  {k:<{width}}  {v}" for k, v in counts.items() if not isinstance(v, (list, dict))]
    return "\n".join(lines)


class Vid2rPipeline:
    """Runs the stages of `PipelineOptions`; `retriever` replaces the model-folder retriever when given."""

    def __init__(self, options: PipelineOptions, retriever: Retriever | None = None,
                 log: Callable[[str], None] = print):
        self.o = options
        self.retriever = retriever
        self.log = log
        self.markers = stages.StageMarkers(options.work_dir, force=options.force)
        self.out_path = options.out or self.markers.path("ViD2R.json")
        self.fingerprints: dict[str, str] = {}
        self.results: dict = {}

    def _skip(self, stage: str, fp: str) -> dict | None:
        self.fingerprints[stage] = fp
        marker = self.markers.done(stage, fp)
        if marker is not None:
            self.log(f"[{stage}] up to date, skipped ({self.markers.path(stage + '.done.json')})")
        return marker

    def _wants(self, stage: str) -> bool:
        return STAGES.index(stage) <= STAGES.index(self.o.until)

    # --- stages ---------------------------------------------------------------------------------------------

    def split(self) -> str:
        o = self.o
        fp = stages.fingerprint("split", [stages.file_signature(p) for p in o.dialogues], o.on_error)
        path = self.markers.path("triples.jsonl")
        if self._skip("split", fp) is None:
            counts = SplitCounts()
            triples = read_triples(o.dialogues, on_error=o.on_error, counts=counts, progress=o.progress)
            files.write_json_lines(path, (t.to_json() for t in triples))
            summary = counts.to_json()
            files.write_json(self.markers.path("split_counts.json"), summary, indent=2)
            self.markers.mark("split", fp, [path], summary)
            self.log(_summary_table(summary, "[split] records -> turn pairs"))
            for example in counts.malformed_examples[:5]:
                self.log(f"  skipped malformed: {example}")
        return path

    def filter(self) -> str:
        o = self.o
        extractor, extractor_name = make_noun_extractor(o.nouns, o.spacy_model, full_pipeline=o.filter.published)
        notice = heuristic_notice(extractor_name, o.nouns, published=o.filter.published)
        if notice:
            self.log(notice)  # before a long filtering run, and once per run
        fp = stages.fingerprint("filter", self.fingerprints["split"], o.filter.to_json(), extractor_name, o.seed,
                                o.unique_ids, o.save_negative)
        path = self.markers.path("vid2r_wo_conversion.json")
        marker = self._skip("filter", fp)
        if marker is not None:
            counts = marker.get("summary") or {}
        else:
            triples = (Triple.from_json(d) for d in _iter_json_lines(self.markers.path("triples.jsonl")))
            records, counts = filter_triples(triples, o.filter, extractor, seed=o.seed, unique_ids=o.unique_ids,
                                             save_negative=o.save_negative, progress=o.progress)
            counts = {"noun_extractor": extractor_name, "published": o.filter.published, **counts}
            if notice:
                counts["notes"] = [notice]
            files.write_json(path, records, indent=2)
            files.write_json(self.markers.path("filter_counts.json"), counts, indent=2)
            self.markers.mark("filter", fp, [path], counts)
            self.log(_summary_table(counts, f"[filter] {counts['triples']} turn pairs -> {counts['kept']} kept"))
        self.results["filter_counts"] = counts
        return path

    def _kb(self) -> KnowledgeBase:
        if not self.o.kb:
            raise ValueError("the knowledge base (--kb) is needed for this stage")
        return KnowledgeBase(self.o.kb, self.o.kb_text_field, self.o.kb_id_field)

    def _model_retriever(self):
        from mire_jax.vid2r.retrieval import MireTextRetriever
        o = self.o
        if not o.model_dir:
            raise ValueError("give a retriever: --model (a mire-jax model folder) or --hits (precomputed hits)")
        return MireTextRetriever.from_model_dir(o.model_dir, o.tokenizer, query_maxlen=o.query_maxlen,
                                                doc_maxlen=o.doc_maxlen, query_mask=o.query_mask,
                                                batch_size=o.batch_size, search=o.search, progress=o.progress)

    def index(self) -> str | None:
        """Encode the KB with the model's text tower (only for the model-folder retriever)."""
        o = self.o
        if self.retriever is not None or o.hits_file or o.conversion.k == 0:
            self.fingerprints["index"] = ""
            return None
        self.retriever = self._model_retriever()
        kb = self._kb()
        index_dir = self.markers.path("kb_index")
        encoding_fp = stages.fingerprint("index", kb.signature(), stages.file_signature(
            os.path.join(o.model_dir, "params.safetensors")), self.retriever.describe(), o.shard_size)
        # The search mode and the folder's format change the index, not the encoded shards.
        fp = stages.fingerprint(encoding_fp, self.retriever.search_mode, INDEX_FORMAT)
        if self._skip("index", fp) is None:
            if o.force and os.path.isdir(index_dir):
                shutil.rmtree(index_dir)
            n = self.retriever.build_index(kb.iter_passages(o.progress, "knowledge base"), index_dir,
                                           fingerprint=encoding_fp, shard_size=o.shard_size)
            self.markers.mark("index", fp, [os.path.join(index_dir, "manifest.json")], {"passages": n})
            self.log(f"[index] {n} passages encoded into {index_dir}")
        return index_dir

    def _retriever_identity(self):
        if self.o.hits_file:
            return {"hits_file": stages.file_signature(self.o.hits_file)}
        if "index" in self.fingerprints and self.fingerprints["index"]:
            return {"index": self.fingerprints["index"]}
        r = self.retriever
        describe = getattr(r, "describe", None)
        return {"retriever": getattr(r, "name", type(r).__qualname__), "describe": describe() if describe else None}

    def search(self) -> str:
        o = self.o
        k = o.conversion.k
        fp = stages.fingerprint("search", self.fingerprints["filter"], self._retriever_identity(), k)
        path = self.markers.path("hits.jsonl")
        if self._skip("search", fp) is not None:
            return path
        records = files.read_json(self.markers.path("vid2r_wo_conversion.json"))
        if k == 0:  # the responses alone: nothing to search for
            rows = [{"id": r["id"], "pids": []} for r in records]
        elif o.hits_file:
            rows = self._hits_from_file(records)
        else:
            if self.retriever is None:
                raise ValueError("no retriever")
            if self.fingerprints.get("index"):
                self.retriever.load_index(self.markers.path("kb_index"))
            rows = self._search_in_chunks(records, fp, k)
        files.write_json_lines(path, rows)
        self.markers.mark("search", fp, [path], {"records": len(rows)})
        self.log(f"[search] top-{k} hits of {len(rows)} responses -> {path}")
        return path

    def _hits_from_file(self, records: list[dict]) -> list[dict]:
        """Each filtered record's row of the hits file. Rows are found by record id; where an id is not enough (the
        published filter numbers records per image, so two images can both give `x_0`), by the row's "image" or
        "document" (the response searched) as well. A record no row, or more than one row, fits is refused by name:
        a record never takes another record's hits."""
        path = self.o.hits_file
        by_id: dict[str, list[dict]] = {}
        for _, where, row in files.iter_json_lines(path, objects_only=False):
            if not isinstance(row, dict) or not isinstance(row.get("pids"), list) or "id" not in row:
                raise ValueError(f"{where}: expected {{\"id\": ..., \"pids\": [...]}}")
            by_id.setdefault(str(row["id"]), []).append({**row, "pids": [str(p) for p in row["pids"]]})
        shared = collections.Counter(r["id"] for r in records)
        missing, out = [], []
        for r in records:
            rows = by_id.get(r["id"], [])
            if len(rows) > 1 or (rows and shared[r["id"]] > 1):
                keys = ("image", "document")
                rows = [row for row in rows if any(k in row for k in keys)
                        and all(row[k] == r.get(k) for k in keys if k in row)]
                if len(rows) != 1:
                    images = sorted(str(x["image"]) for x in records if x["id"] == r["id"])
                    raise ValueError(f"{path}: record id {r['id']!r} is shared by {shared[r['id']]} filtered records "
                                     f"(images {images}) and {len(by_id[r['id']])} hit rows; give each row the "
                                     "\"image\" (or the \"document\") of its record, so that no record takes "
                                     "another's hits")
            if not rows:
                missing.append(r["id"])
                continue
            out.append({"id": r["id"], "pids": rows[0]["pids"]})
        if missing:
            raise KeyError(f"{path}: no hits for {len(missing)} filtered record(s), e.g. {missing[:5]}")
        return out

    def _search_in_chunks(self, records: list[dict], fp: str, k: int) -> list[dict]:
        from tqdm.auto import tqdm
        chunk_dir = self.markers.path("search_chunks")
        manifest_path = os.path.join(chunk_dir, "manifest.json")
        size = self.o.chunk_size
        manifest = {"fingerprint": fp, "chunk_size": size}
        current = None
        if os.path.exists(manifest_path):
            current = files.read_json(manifest_path)
        if current != manifest or self.o.force:
            shutil.rmtree(chunk_dir, ignore_errors=True)
            os.makedirs(chunk_dir)
            files.write_json(manifest_path, manifest, indent=2)
        starts = range(0, len(records), size)
        scored = hasattr(self.retriever, "search_with_scores")
        rows = []
        for chunk, start in enumerate(tqdm(starts, desc="searching responses", unit="chunk",
                                           disable=not self.o.progress)):
            chunk_path = os.path.join(chunk_dir, f"chunk_{chunk:06d}.jsonl")
            batch = records[start:start + size]
            if not os.path.exists(chunk_path):
                texts = [r["document"] for r in batch]
                if scored:
                    pids, scores = self.retriever.search_with_scores(texts, k)
                    chunk_rows = [{"id": r["id"], "pids": p, "scores": s} for r, p, s in zip(batch, pids, scores)]
                else:
                    pids = self.retriever.search(texts, k)
                    chunk_rows = [{"id": r["id"], "pids": list(p)} for r, p in zip(batch, pids)]
                files.write_json_lines(chunk_path, chunk_rows)
            chunk_rows = _read_json_lines(chunk_path)
            if [row["id"] for row in chunk_rows] != [r["id"] for r in batch]:
                raise ValueError(f"{chunk_path} does not match the filtered records: delete {chunk_dir} and rerun")
            rows.extend(chunk_rows)
        return rows

    def compose(self) -> str:
        o = self.o
        kb = self._kb() if o.conversion.k else None
        fp = stages.fingerprint("compose", self.fingerprints["filter"], self.fingerprints["search"],
                                kb.signature() if kb else None, o.conversion.to_json(), os.path.abspath(self.out_path))
        if self._skip("compose", fp) is None:
            records = files.read_json(self.markers.path("vid2r_wo_conversion.json"))
            hits = [row["pids"] for row in _read_json_lines(self.markers.path("hits.jsonl"))]
            needed = {p for pids in hits for p in pids[:o.conversion.k]}
            # Only the cut of each hit is kept in memory (cutting is idempotent, compose cuts again).
            c = o.conversion
            texts = kb.texts_for(needed, progress=o.progress,
                                 transform=lambda t: cut_passage(t, c.sentences, c.cut)) if kb else {}
            converted = convert_records(records, hits, texts, o.conversion)
            files.write_json(self.out_path, converted, indent=2)
            short = sum(len(h) < o.conversion.k for h in hits)
            self.markers.mark("compose", fp, [self.out_path], {"records": len(converted),
                                                               "records_with_fewer_hits_than_k": short})
            self.log(f"[compose] {len(converted)} ViD2R records -> {self.out_path}")
        return self.out_path

    def run(self) -> dict:
        """Run the stages up to `options.until`; -> {"outputs": {stage: path}, "filter_counts": {...}}."""
        outputs = {"split": self.split()}
        if self._wants("filter"):
            outputs["filter"] = self.filter()
        if self._wants("index"):
            outputs["index"] = self.index()
        if self._wants("search"):
            outputs["search"] = self.search()
        if self._wants("compose"):
            outputs["compose"] = self.compose()
        self.results["outputs"] = outputs
        return self.results


def run(options: PipelineOptions, retriever: Retriever | None = None, log: Callable[[str], None] = print) -> dict:
    """Build ViD2R as `options` say; `retriever` (any `search(texts, k)` object) replaces `--model`/`--hits`."""
    return Vid2rPipeline(options, retriever, log).run()


__all__ = ["DROP_REASONS", "PipelineOptions", "STAGES", "Vid2rPipeline", "run"]


def _iter_json_lines(path: str):
    return (record for _, _, record in files.iter_json_lines(path, objects_only=False))


def _read_json_lines(path: str) -> list:
    return list(_iter_json_lines(path))
