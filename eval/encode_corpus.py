"""Encode a passage corpus into index shards (and optionally build the late-interaction index).

    python eval/encode_corpus.py --passages passages.parquet --model MODEL_DIR --out shards/ \
        [--index index/] [--doc-maxlen 384] [--batch-size 64] [--shard-size 10000] [--protocol published] \
        [--debug]

Input: JSON Lines (`{"id", "text"}` per line) or parquet (`passage_id`, `passage_content`), other field
names via --id-field / --text-field. A passage may name an image (field or column `image`, --image-field): a path
relative to --image-root (default: the passages file's folder); it is encoded as the published MIRe encodes a
passage with an image (docs/model.md), image-only when it has no text, and text, image-only and image+text passages
run in fixed-size batches of their own. Model: a mire-jax model folder (`config.json` + `params.safetensors`,
see `mire_jax.retrieval.model_folder`; `python -m mire_jax.convert` writes one from a published checkpoint). Every
process (`jax.process_index()` of `jax.process_count()`, multi-host via MIRE_COORDINATOR /
MIRE_NUM_PROCESSES / MIRE_PROCESS_ID) encodes its own shards, data-parallel over its local devices.
Rerunning the same command resumes: finished shards are kept. `--protocol` picks which passage tokens are
stored: `published` (default) keeps punctuation as MIRe's published indexer does (only padding is dropped),
`textbook` drops it like ColBERT; the choice is part of the shard settings, so a resumed run never mixes them.
A missing model folder or a malformed passage (file and line) is reported in one line (`error: ...`, exit
status 2); --debug (or MIRE_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os

from mire_jax import cli


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Encode passages into late-interaction index shards.")
    parser.add_argument("--passages", required=True, help=".jsonl or .parquet file of passages")
    parser.add_argument("--model", "--checkpoint", dest="model", required=True, help="mire-jax model folder")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder or vocab.txt (default: --model)")
    parser.add_argument("--out", required=True, help="shard directory")
    parser.add_argument("--index", default=None, help="also build the index from the shards and save it here")
    parser.add_argument("--index-mode", default="auto", choices=("auto", "scann", "exact"))
    parser.add_argument("--id-field", default=None, help="id field/column (id | passage_id)")
    parser.add_argument("--text-field", default=None, help="text field/column (text | passage_content)")
    parser.add_argument("--image-field", default=None, help="image path field/column (default: image)")
    parser.add_argument("--image-root", default=None,
                        help="folder the image paths are relative to (default: the passages file's folder)")
    parser.add_argument("--doc-maxlen", type=int, default=384)
    parser.add_argument("--query-maxlen", type=int, default=64,
                        help="the query length the index records for its searches (default 64, as evaluated)")
    parser.add_argument("--batch-size", type=int, default=64, help="passages per step (all local devices)")
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--protocol", default="published", choices=("published", "textbook"),
                        help="published: keep punctuation tokens (MIRe's indexer); textbook: drop them (ColBERT)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--debug", action="store_true", help=cli.DEBUG_HELP)
    args = parser.parse_args(argv)
    with cli.user_errors(args.debug):
        encode_corpus(args)


def encode_corpus(args) -> None:
    """Encodes the passages of the parsed command line `args` into shards (and the index, when asked)."""
    import jax

    from mire_jax.eval.runner import PASSAGE_KEEP
    from mire_jax.hosts import initialize_distributed
    from mire_jax.index import LateInteractionIndex
    from mire_jax.index.encode import encode_to_shards
    from mire_jax.index.encoded_corpus import write_manifest
    from mire_jax.retrieval.passages import count_passages, iter_passages
    from mire_jax.retrieval.searcher import Searcher

    initialize_distributed()
    process, processes = jax.process_index(), jax.process_count()
    searcher = Searcher.load(args.model, tokenizer=args.tokenizer or "", batch_size=args.batch_size,
                             settings={"doc_maxlen": args.doc_maxlen, "query_maxlen": args.query_maxlen,
                                       "passage_keep": PASSAGE_KEEP[args.protocol]})
    settings = {"model": searcher.fingerprint, **searcher.settings.passage_fields(),
                "passages": os.path.basename(args.passages), "id_field": args.id_field,
                "text_field": args.text_field}
    if args.image_field:
        settings["image_field"] = args.image_field
    passages = iter_passages(args.passages, args.id_field, args.text_field, args.image_field, args.image_root)
    summary = encode_to_shards(
        passages, args.out, searcher.passage_encoder(),
        shard_size=args.shard_size, batch_size=args.batch_size, process_index=process,
        process_count=processes, settings=settings, total=count_passages(args.passages),
        progress=not args.no_progress)
    print(f"process {process}: wrote {len(summary.shards_written)} shard(s), kept "
          f"{len(summary.shards_skipped)} finished one(s); {summary.num_shards} shard(s) in all")
    if processes > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("encode_corpus: all shards written")
    if process != 0:
        return
    manifest = write_manifest(args.out, summary.num_shards, extra={"settings": settings})
    print(f"{args.out}: {manifest['num_passages']} passages, {manifest['num_tokens']} tokens")
    if args.index:
        index = LateInteractionIndex.from_shards(args.out, {"mode": args.index_mode}, progress=not args.no_progress,
                                                 encoding=searcher.encoding_record())
        index.save(args.index)
        print(f"{args.index}: {index.config.mode} index saved")


if __name__ == "__main__":
    main()
