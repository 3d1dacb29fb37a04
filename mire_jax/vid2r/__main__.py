"""Build ViD2R (MIRe's pre-training data) from visual-instruction dialogues.

Stages (each resumable in --work-dir; a rerun skips what is up to date):
  split    LLaVA JSON / JSONL dialogues -> (image, question, response) turn pairs
  filter   clean and filter (the published rules; each one a flag) -> vid2r_wo_conversion.json, filter_counts.json
           (--published: the published script's loop exactly, values left over from earlier turns included)
  index    encode the knowledge base with the text tower of --model (skipped with --hits)
  search   the top-k passages of each RESPONSE (checkpointed in chunks)
  compose  passage = cut(hit1) + response + cut(hit2) + cut(hit3) -> ViD2R.json (the vid2r builder's input)

Example:
  python -m mire_jax.vid2r llava_v1_5_mix665k.json lvis_instruct4v_220k.json \\
      --kb Wiki6M_ver_1_0.jsonl --model models/colbertv2 --work-dir runs/vid2r --out data/vid2r/ViD2R.json

A malformed record or a missing file is reported in one line naming the file and record (`error: ...`, exit
status 1); --debug (or MIRE_DEBUG=1) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import sys

from mire_jax import cli
from mire_jax.vid2r import filtering
from mire_jax.vid2r.conversion import CUT_MODES, NEGATIVE_MODES, STYLES, ConversionConfig
from mire_jax.vid2r.pipeline import STAGES, PipelineOptions, run
from mire_jax.vid2r.retrieval import QUERY_MASK_MODES, SEARCH_MODES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mire_jax.vid2r", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dialogues", nargs="+", help="LLaVA-format dialogue files (.json array or .jsonl, optionally .gz)")
    p.add_argument("--work-dir", required=True, help="folder of the stage outputs and markers")
    p.add_argument("--out", help="the ViD2R JSON to write (default: <work-dir>/ViD2R.json)")
    p.add_argument("--until", choices=STAGES, default="compose", help="last stage to run (default: compose)")
    p.add_argument("--force", action="store_true", help="rerun every stage even when up to date")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="a malformed dialogue record: stop naming file and record (default), or skip and count it")
    p.add_argument("--debug", action="store_true", help=cli.DEBUG_HELP)

    f = p.add_argument_group("filter (defaults: the published runs/data_filtering.py)")
    f.add_argument("--min-chars", type=int, default=30, help="length floor of the cleaned response (default 30)")
    f.add_argument("--keep-text-only", action="store_true", help="keep records without an image")
    f.add_argument("--skip-image-substring", action="append", metavar="S",
                   help="skip images whose path contains S (repeatable; default: VG_100K)")
    f.add_argument("--no-skip-image-substring", action="store_true", help="skip no image by its path")
    f.add_argument("--no-lowercase", action="store_true", help="keep the response's casing")
    f.add_argument("--unanswerable-marker", action="append", metavar="S",
                   help="drop responses containing S (repeatable; default: 'unanswerable.', "
                        "'answering does not require reading')")
    f.add_argument("--no-unanswerable-filter", action="store_true")
    f.add_argument("--no-digit-filter", action="store_true", help="keep digits-only responses")
    f.add_argument("--boilerplate", choices=filtering.BOILERPLATE_MODES, default="published",
                   help="delete boilerplate anywhere (published), only as openers, or not at all")
    f.add_argument("--noun-hint-max-words", type=int, default=4,
                   help="responses of at most this many words get the question's nouns appended (0: never)")
    f.add_argument("--nouns", choices=("auto", "spacy", "heuristic", "none"), default="auto",
                   help="noun extractor of that hint (auto: spaCy if its model loads, else a heuristic)")
    f.add_argument("--spacy-model", default="en_core_web_sm")
    f.add_argument("--bad-question", action="append", metavar="S",
                   help="drop questions containing S (repeatable; default: the published counting/colour list)")
    f.add_argument("--no-bad-question-filter", action="store_true")
    f.add_argument("--no-capitalize", action="store_true", help="do not upper-case the first character")
    f.add_argument("--no-question-lead-removal", action="store_true",
                   help="do not delete the question's text before its first ', ' from the response")
    f.add_argument("--published", action="store_true",
                   help="reproduce runs/data_filtering.py exactly, including its reuse of `ref`/`phrase` left over "
                        "from earlier turns; stops with an error naming the record where the script would crash; "
                        "the other filter flags must keep their defaults. Exact noun hints need spaCy's "
                        "en_core_web_sm (requirements-vid2r.txt): without it this warns and uses the heuristic, "
                        "add --nouns spacy to refuse instead (see filtering.py)")
    f.add_argument("--seed", type=int, default=0, help="seed of the random suffixes of repeated ids")
    f.add_argument("--no-unique-ids", action="store_true", help="leave repeated ids as they are")
    f.add_argument("--save-negative", action="store_true",
                   help="add 'negs': the other records of the same image (hard negatives)")

    r = p.add_argument_group("knowledge base and retrieval")
    r.add_argument("--kb", help="knowledge base: .jsonl(.gz) (Wiki6M), .csv, .parquet, or a folder of them")
    r.add_argument("--kb-text-field", help="text key/column (default: wikipedia_content / text / passage_content)")
    r.add_argument("--kb-id-field", help="id key/column (default: wikidata_id / kid / passage_id; '' = position)")
    r.add_argument("--model", dest="model_dir", help="mire-jax model folder whose text tower retrieves")
    r.add_argument("--tokenizer", help="tokenizer folder or vocab.txt (default: the model folder)")
    r.add_argument("--hits", dest="hits_file",
                   help="precomputed hits instead of --model: JSONL of {\"id\": record id, \"pids\": [...]} ")
    r.add_argument("--query-maxlen", type=int, default=80)
    r.add_argument("--doc-maxlen", type=int, default=256)
    r.add_argument("--query-mask", choices=QUERY_MASK_MODES, default="colbert",
                   help="[MASK] query padding: ColBERTv2's (not attended, kept), attended, or dropped")
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--search", choices=SEARCH_MODES, default="auto",
                   help="the late-interaction index's search: exact MaxSim, ScaNN candidates reranked exactly, or "
                        "auto (exact for a small knowledge base, ScaNN for a big one; 'index' is the same)")
    r.add_argument("--shard-size", type=int, default=10_000, help="passages per index shard")
    r.add_argument("--chunk-size", type=int, default=1024, help="responses per search checkpoint")

    c = p.add_argument_group("composition (defaults: the published runs/convert_tasks.py)")
    c.add_argument("-k", type=int, default=3, help="hits per response (default 3; 0: the response alone)")
    c.add_argument("--position", type=int, default=1,
                   help="where the response goes among the hits: 0 before them, 1 after the first (default, "
                        "published), k after the last")
    c.add_argument("--sentences", type=int, default=2, help="sentences kept of each hit (default 2)")
    c.add_argument("--cut", choices=CUT_MODES, default="published",
                   help="published: text before the n-th '.', no final period; sentences: real sentence ends; "
                        "none: the whole hit")
    c.add_argument("--style", choices=STYLES, default="published",
                   help="published: hit1 response hit2 hit3; title: the --remove_bracket variant")
    c.add_argument("--no-dedupe-periods", action="store_true", help="skip .replace('..', '.')")
    c.add_argument("--negatives", choices=NEGATIVE_MODES, default="response",
                   help="with --save-negative: keep negatives' responses (published) or use their converted passages")
    return p


def options_from_args(args: argparse.Namespace) -> PipelineOptions:
    skip_images = () if args.no_skip_image_substring else tuple(args.skip_image_substring or
                                                                filtering.SKIP_IMAGE_SUBSTRINGS)
    markers = () if args.no_unanswerable_filter else tuple(args.unanswerable_marker or filtering.UNANSWERABLE_MARKERS)
    bad = () if args.no_bad_question_filter else tuple(args.bad_question or filtering.BAD_QUESTION_SUBSTRINGS)
    filter_config = filtering.FilterConfig(
        skip_text_only=not args.keep_text_only, skip_image_substrings=skip_images, lowercase=not args.no_lowercase,
        unanswerable_markers=markers, drop_digit_responses=not args.no_digit_filter, boilerplate=args.boilerplate,
        noun_hint_max_words=args.noun_hint_max_words, min_chars=args.min_chars, bad_question_substrings=bad,
        capitalize_first=not args.no_capitalize, remove_question_lead=not args.no_question_lead_removal,
        published=args.published)
    conversion = ConversionConfig(k=args.k, sentences=args.sentences, cut=args.cut, style=args.style,
                                  dedupe_periods=not args.no_dedupe_periods, negatives=args.negatives,
                                  position=args.position)
    return PipelineOptions(
        dialogues=args.dialogues, work_dir=args.work_dir, out=args.out, until=args.until, force=args.force,
        progress=not args.no_progress, on_error=args.on_error, filter=filter_config, nouns=args.nouns,
        spacy_model=args.spacy_model, seed=args.seed, unique_ids=not args.no_unique_ids,
        save_negative=args.save_negative, kb=args.kb, kb_text_field=args.kb_text_field,
        kb_id_field=args.kb_id_field, model_dir=args.model_dir, tokenizer=args.tokenizer, hits_file=args.hits_file,
        query_maxlen=args.query_maxlen, doc_maxlen=args.doc_maxlen, query_mask=args.query_mask,
        batch_size=args.batch_size, search=args.search, shard_size=args.shard_size, chunk_size=args.chunk_size,
        conversion=conversion)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # the readers' format errors name the file and record
    return cli.user_error_status(lambda: run(options_from_args(args)), debug=args.debug, status=1)


if __name__ == "__main__":
    sys.exit(main())
