"""Zero-shot retrieval evaluation: encode (or reuse) the corpus index, encode the queries, retrieve the top k,
score with the published protocol and the textbook metrics.

Modes: "mire" (image + question), "text_only" (the question alone: the ColBERT text baseline). Image
ablations: "shuffle" (each query gets another query's image, a fixed permutation) and "blank" (a uniform grey
image), which together measure how much the model relies on the image. Inference ablations of the paper
(`EvalSettings.query_rows`, `mire_jax.retrieval.searcher.QUERY_ROWS`): "visual" searches with the pooled tokens
[E_g ; E_m] alone ("w/o E_t at inference"), "text" with the text tokens T alone of the same image query
("w/o E_g & E_m at inference"). The question ablation "generic" gives every query the same generic question
(`EvalSettings.generic_question`), which measures how much it relies on the words.

Protocols (`EvalSettings.protocol`) decide how the run is made and which metrics are its headline:
  - "published" (default): as MIRe's published evaluation. Its indexer stores every non-padding passage token,
    punctuation included (passage keep "padding_only"; MIRe's training, like ColBERT, drops punctuation), and
    the metrics follow its evaluation script (`mire_jax.eval.metrics.evaluate_published`).
  - "textbook": passages indexed as ColBERT does, punctuation dropped (passage keep
    "punctuation_and_padding"), scored with the standard definitions (`mire_jax.eval.metrics.evaluate_textbook`).
The encoded corpus is cached per model, doc_maxlen and passage keep policy, so the protocols never share an
index. `score` returns every metric set the benchmark supports: the run's own protocol's, and the other one's
computed on the same run (published metrics always; textbook metrics only where every query has gold ids).
Each set is labelled with its metric protocol ("protocol") and with the protocol of the run it was computed on
("run_protocol"), so e.g. textbook metrics of a published run are never mistaken for a textbook run's.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from mire_jax.config import EncodingSettings, MIReConfig
from mire_jax.files import write_json
from mire_jax.index import LateInteractionIndex
from mire_jax.retrieval.searcher import QUERY_ROWS, Searcher
from mire_jax.tokenization.colbert import DROP_PADDING_ONLY, DROP_PUNCTUATION

MODES = ("mire", "text_only")
ABLATIONS = (None, "shuffle", "blank")
QUESTION_ABLATIONS = (None, "generic")
GENERIC_QUESTION = "What is shown in this picture?"
KS = (1, 5, 10, 20, 50, 100)
PROTOCOLS = ("published", "textbook")
# The passage tokens each protocol indexes: MIRe's indexer keeps punctuation, ColBERT's skiplist drops it.
PASSAGE_KEEP = {"published": DROP_PADDING_ONLY, "textbook": DROP_PUNCTUATION}


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    mode: str = "mire"
    image_ablation: str | None = None
    question_ablation: str | None = None  # "generic": every query asks `generic_question`
    generic_question: str = GENERIC_QUESTION
    protocol: str = "published"
    k: int = 100
    query_maxlen: int = 64
    doc_maxlen: int = 384
    attend_to_mask_tokens: bool = False  # the published evaluation tokenizer
    batch_size: int = 32
    shard_size: int = 10_000
    seed: int = 0
    index: dict | None = None           # LateInteractionIndex config (None: defaults by corpus size)
    exact: bool = False                 # exact MaxSim over every passage instead of the index's own search
    recall_sample: int = 256            # benchmark queries on which the index's recall against exact is measured
    query_rows: str = "all"             # "all" | "visual" (w/o E_t) | "text" (w/o E_g & E_m): the rows searched with

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.query_rows not in QUERY_ROWS:
            raise ValueError(f"query_rows must be one of {QUERY_ROWS}, got {self.query_rows!r}")
        if self.query_rows != "all" and self.mode != "mire":
            raise ValueError(f"query_rows={self.query_rows!r} drops rows of an image query: it needs mode 'mire'")
        if self.image_ablation not in ABLATIONS:
            raise ValueError(f"image_ablation must be one of {ABLATIONS[1:]} or None, got {self.image_ablation!r}")
        if self.question_ablation not in QUESTION_ABLATIONS:
            raise ValueError(f"question_ablation must be one of {QUESTION_ABLATIONS[1:]} or None, got "
                             f"{self.question_ablation!r}")
        if self.question_ablation and not self.generic_question.strip():
            raise ValueError("generic_question is empty: the generic-question ablation needs a question")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")

    @property
    def passage_keep(self) -> str:
        """The passage keep policy of the protocol (`mire_jax.config.PASSAGE_KEEP_POLICIES`)."""
        return PASSAGE_KEEP[self.protocol]

    def encoding(self, config: MIReConfig) -> EncodingSettings:
        """The encoding settings of this evaluation for a model of `config` (its own image preprocessing)."""
        return EncodingSettings(query_maxlen=self.query_maxlen, doc_maxlen=self.doc_maxlen,
                                attend_to_mask_tokens=self.attend_to_mask_tokens, passage_keep=self.passage_keep,
                                image=config.vision.image_processing())

    @property
    def run_name(self) -> str:
        """<mode>[_<image ablation>][_question_<ablation>][_<rows>_rows]_<protocol>: names a run's files, distinct
        for every mode, ablation, query rows and protocol."""
        ablation = f"_{self.image_ablation}" if self.image_ablation else ""
        if self.question_ablation:
            ablation += f"_question_{self.question_ablation}"
        rows = f"_{self.query_rows}_rows" if self.query_rows != "all" else ""
        return f"{self.mode}{ablation}{rows}_{self.protocol}"



def make_searcher(config, params, tokenizer, settings: EvalSettings, model_dir: str = "") -> Searcher:
    """The searcher of an evaluation: the model with this evaluation's encoding settings."""
    return Searcher(config, params, tokenizer, settings.encoding(config), batch_size=settings.batch_size,
                    model_dir=model_dir)


def corpus_index(benchmark, searcher: Searcher, workdir: str, settings: EvalSettings,
                 calibration_queries=None) -> LateInteractionIndex:
    """Encode the benchmark's corpus into shards (resumable) and build or load its index, cached under
    `workdir/<benchmark>_<split>/model_<fingerprint>_d<doc_maxlen>_<passage keep policy>/`.

    `calibration_queries` ((embeddings, mask) of some of the benchmark's queries) calibrate a new index's
    search settings on real queries instead of queries drawn from the corpus."""
    return searcher.build_index(benchmark.corpus.items(), corpus_folder(benchmark, searcher, workdir, settings),
                                index_config=settings.index, calibration_queries=calibration_queries,
                                shard_size=settings.shard_size, total=len(benchmark.corpus),
                                extra={"benchmark": benchmark.name, "split": benchmark.split,
                                       "passage_keep": settings.passage_keep})


def corpus_folder(benchmark, searcher: Searcher, workdir: str, settings: EvalSettings) -> str:
    """Where the benchmark's corpus, encoded by this model under these settings, and its index are cached."""
    return os.path.join(workdir, f"{benchmark.name}_{benchmark.split}",
                        f"model_{searcher.fingerprint}_d{settings.doc_maxlen}_{settings.passage_keep}")


def _blank_image(size: int) -> Image.Image:
    return Image.new("RGB", (size, size), (128, 128, 128))


def query_images(queries: Sequence, settings: EvalSettings) -> list:
    """The image source of each query after the ablation: a query, or None for the blank image."""
    if settings.image_ablation == "blank":
        return [None] * len(queries)
    if settings.image_ablation == "shuffle":
        order = np.random.default_rng(settings.seed).permutation(len(queries))
        if len(queries) > 1:  # a derangement: no query keeps its own image
            for i in np.flatnonzero(order == np.arange(len(queries))):
                j = (i + 1) % len(queries)
                order[i], order[j] = order[j], order[i]
        return [queries[j] for j in order]
    return list(queries)


def query_questions(queries: Sequence, settings: EvalSettings) -> list[str]:
    """The question each query is encoded with after the question ablation: its own, or the generic one."""
    if settings.question_ablation == "generic":
        return [settings.generic_question] * len(queries)
    return [q.question for q in queries]


def encode_queries(queries: Sequence, searcher: Searcher, settings: EvalSettings):
    """-> (embeddings [Q, N, dim] float32, mask [Q, N] bool), in query order; images read batch by batch.

    A benchmark whose queries have no image (WebQA: questions over image and text sources) is queried with the
    questions alone in every mode; an image ablation of it is refused."""
    text_queries = settings.mode == "text_only" or all(q.image is None for q in queries)
    if text_queries and settings.mode != "text_only" and settings.image_ablation and len(queries):
        raise ValueError(f"the queries have no images: the image ablation {settings.image_ablation!r} does not "
                         "apply")
    sources = query_images(queries, settings)
    questions = query_questions(queries, settings)
    blank = _blank_image(searcher.settings.image.size)
    embs, masks = [], []
    bs = settings.batch_size
    for start in tqdm(range(0, len(queries), bs), desc="queries", unit="batch", leave=False):
        images = None
        if not text_queries:
            images = [blank if s is None else _load(s) for s in sources[start:start + bs]]
        e, m = searcher.encode_queries(questions[start:start + bs], images, rows=settings.query_rows)
        embs.append(e)
        masks.append(m)
    return np.concatenate(embs), np.concatenate(masks)


def _load(query) -> Image.Image:
    if query.image is None:
        raise ValueError(f"query {query.qid} has no image; use mode='text_only'")
    return query.image.load()


def retrieve(benchmark, searcher: Searcher, workdir: str, settings: EvalSettings,
             index: LateInteractionIndex | None = None) -> dict[str, dict[str, float]]:
    """-> run {qid: {pid: score}} with the top `settings.k` passages of every query."""
    return retrieve_with_index_report(benchmark, searcher, workdir, settings, index, measure=False)[0]


def _query_samples(num_queries: int, settings: EvalSettings) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint samples of the benchmark's queries (a fixed permutation): one to calibrate a new index on,
    one to measure the index's recall on (they overlap only when there are too few queries)."""
    order = np.random.default_rng(settings.seed).permutation(num_queries)
    calibrate = order[:min(64, num_queries // 2)]
    rest = order[len(calibrate):]
    measure = rest[:settings.recall_sample] if len(rest) >= min(settings.recall_sample, 32) else \
        order[:settings.recall_sample]
    return np.sort(calibrate), np.sort(measure)


def retrieve_with_index_report(benchmark, searcher: Searcher, workdir: str, settings: EvalSettings,
                               index: LateInteractionIndex | None = None, measure: bool = True):
    """-> (run, index report): the run of `retrieve`, and the error of the search that made it.

    The report holds the search ("exact" with `settings.exact`, else the index's mode), its recall@10 and
    recall@100 against exact search measured on a sample of the benchmark's own queries (`sample_size` of
    them), and the index's calibration record.
    """
    embs, mask = encode_queries(benchmark.queries, searcher, settings)
    calibrate, sample = _query_samples(len(embs), settings)
    index = index or corpus_index(benchmark, searcher, workdir, settings,
                                  calibration_queries=(embs[calibrate], mask[calibrate]) if len(calibrate) else None)
    k = min(settings.k, index.num_passages)
    ids, scores = index.search(embs, mask, k=k, exact=settings.exact)
    run = {}
    for q, row_ids, row_scores in zip(benchmark.queries, ids, scores):
        run[q.qid] = {str(p): float(s) for p, s in zip(row_ids, row_scores) if p is not None and p != -1}
    report = {"search": "exact" if settings.exact else index.config.mode, "exact_requested": settings.exact,
              "calibration": index.calibration}
    if settings.exact:
        report.update({"recall@10": 1.0, "recall@100": 1.0, "sample_size": 0,
                       "note": "exact MaxSim over every passage: no approximation error"})
    elif measure:
        recall = index.measure_recall(embs[sample], mask[sample], ks=(10, 100))
        report.update({"recall@10": recall["recall@10"], "recall@100": recall["recall@100"],
                       "sample_size": int(len(sample)), "note": "recall of the index's search against exact "
                       "MaxSim search on a sample of this benchmark's queries"})
    return run, report


def evaluate(benchmark, searcher: Searcher, workdir: str, settings: EvalSettings, *, checkpoint: str = "",
             index: LateInteractionIndex | None = None) -> tuple[dict, dict]:
    """One evaluation run -> (results, run): the results as `eval/evaluate.py` writes them (the settings, the
    corpus searched, every metric set of `score`, and the index report of `retrieve_with_index_report`) and the run
    {qid: {pid: score}}. The encoded corpus and its index are cached under `workdir` (`corpus_folder`)."""
    run, index_report = retrieve_with_index_report(benchmark, searcher, workdir, settings, index)
    results = {"benchmark": benchmark.name, "split": benchmark.split, "checkpoint": checkpoint,
               "mode": settings.mode, "image_ablation": settings.image_ablation,
               "question_ablation": settings.question_ablation,
               **({"generic_question": settings.generic_question} if settings.question_ablation else {}),
               "query_rows": settings.query_rows,
               "protocol": settings.protocol, "passage_keep": settings.passage_keep,
               "corpus": getattr(benchmark.corpus, "source", None), "num_queries": len(benchmark.queries),
               "num_passages": len(benchmark.corpus), "notes": list(benchmark.notes),
               "metrics": score(benchmark, run, run_protocol=settings.protocol), "index": index_report}
    return results, run


def write_results(out_dir: str, settings: EvalSettings, results: dict, run: dict) -> str:
    """Writes `results_<run name>.json` (indented) and `run_<run name>.json` into `out_dir`; -> the results path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"results_{settings.run_name}.json")
    write_json(os.path.join(out_dir, f"run_{settings.run_name}.json"), run, indent=None)
    write_json(path, results, indent=2)
    return path


def score(benchmark, run, ks: Sequence[int] = KS, *, run_protocol: str = "published") -> dict:
    """The metric sets of a run: {"published": {...}, "textbook": {...} (when every query has gold ids)}.

    Each set names its metric protocol ("protocol") and `run_protocol`, the protocol the run was made under
    (see the module docstring); the run's own protocol's set comes first.
    """
    if run_protocol not in PROTOCOLS:
        raise ValueError(f"run_protocol must be one of {PROTOCOLS}, got {run_protocol!r}")
    sets = {"published": benchmark.evaluate_published(run, ks).as_dict()}
    if all(q.gold_pids for q in benchmark.queries):
        sets["textbook"] = benchmark.evaluate_textbook(run, ks).as_dict()
    order = sorted(sets, key=lambda name: name != run_protocol)
    return {name: {**sets[name], "run_protocol": run_protocol} for name in order}


def format_table(rows: dict[str, dict], columns: Sequence[str]) -> str:
    """A plain-text table: one row per name, metrics as percentages."""
    width = max(len(n) for n in rows) + 2
    lines = ["".ljust(width) + "".join(c.rjust(9) for c in columns)]
    for name, metrics in rows.items():
        lines.append(name.ljust(width) + "".join(
            (f"{100 * metrics[c]:9.1f}" if isinstance(metrics.get(c), (int, float)) else "        -") for c in columns))
    return "\n".join(lines)
