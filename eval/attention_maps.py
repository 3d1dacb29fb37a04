r"""PNG heatmaps of the pooling's attention over the image for a query, per head and averaged over heads.

    python eval/attention_maps.py --checkpoint runs/pretrain/model --image photo.jpg \
        --question "Who designed this building?" --out attention.png [--tokenizer vocab.txt] [--debug]

A missing or unreadable file is reported in one line (`error: ...`, exit status 2); --debug shows the traceback.
"""
from __future__ import annotations

import argparse

from mire_jax import cli


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model folder or training workdir")
    p.add_argument("--image", required=True)
    p.add_argument("--question", required=True)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--tokenizer", default="", help="vocab.txt or tokenizer folder (default: the checkpoint's)")
    p.add_argument("--query-maxlen", type=int, default=None,
                   help="query word pieces (default: the index's with --index, else 64, as at evaluation)")
    p.add_argument("--index", default=None, help="an index built with this model: its query settings are used")
    p.add_argument("--debug", action="store_true", help=cli.DEBUG_HELP)
    a = p.parse_args(argv)
    with cli.user_errors(a.debug):
        draw(a)


def draw(a) -> None:
    """Writes the heatmaps the parsed command line `a` asks for and prints the PNG's path."""
    from PIL import Image

    from mire_jax.eval.heatmaps import save_heatmaps
    from mire_jax.retrieval.searcher import Searcher

    searcher = Searcher.load(a.checkpoint, index=a.index, tokenizer=a.tokenizer,
                             settings={"query_maxlen": a.query_maxlen})
    image = Image.open(a.image).convert("RGB")
    maps = searcher.pooling_maps(image, a.question)
    print(save_heatmaps(image, maps, a.question, a.out))


if __name__ == "__main__":
    main()
