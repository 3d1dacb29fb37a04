"""Command line: `python -m mire_jax.demo.world --out DIR [--preset demo|tiny] [--questions generic|trap] [--seed N]
[--n-train-entities N ...] [--debug]`.

`--preset tiny` writes the small world `configs/tiny.py` trains on (`--out runs/tiny_data`). A size out of range or
an --out that is not the generator's is reported in one line (`error: ...`, exit status 2); --debug (or
MIRE_DEBUG=1) shows the traceback instead."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from mire_jax import cli
from mire_jax.demo.world.text import QUESTION_STYLES
from mire_jax.demo.world.world import SyntheticSizes
from mire_jax.demo.world.writer import generate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mire_jax.demo.world",
        description="Generate the synthetic multimodal retrieval benchmark (pictures, LLaVA dialogues, a "
                    "Wiki6M-like knowledge base, zero-shot queries on unseen attribute combinations, warm-up "
                    "captions and text pairs) and print its manifest summary.",
    )
    parser.add_argument("--out", required=True, help="output directory (absent, empty, or a previous output)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--force", action="store_true", help="regenerate even if --out is already current")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help=cli.DEBUG_HELP)
    parser.add_argument("--questions", choices=QUESTION_STYLES, default="generic",
                        help="generic zero-shot questions (default), or the text-dominance trap: dialogues that name "
                             "the kind, zero-shot questions that name it, say 'object', or name a wrong kind")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo",
                        help="sizes to start from: the demo's world or the tiny training config's")
    for field in dataclasses.fields(SyntheticSizes):
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=int, default=None,
                            help=f"(demo preset: {getattr(SyntheticSizes(), field.name)})")
    return parser


PRESETS = {"demo": SyntheticSizes, "tiny": SyntheticSizes.tiny}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return cli.user_error_status(lambda: write_world(args), debug=args.debug)


def write_world(args: argparse.Namespace) -> None:
    """Generates the world the parsed command line `args` describes and prints its manifest summary."""
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticSizes)
                 if getattr(args, f.name) is not None}
    sizes = dataclasses.replace(PRESETS[args.preset](), **overrides)
    manifest = generate(args.out, seed=args.seed, sizes=sizes, force=args.force, progress=not args.quiet,
                        questions=args.questions)
    summary = {
        "out": args.out,
        "images": manifest["images"]["count"],
        "entities": manifest["entities"],
        "files": {name: entry["count"] for name, entry in manifest["files"].items()},
        "zeroshot_chance_recall_at_5": manifest["zeroshot_chance_recall_at_5"],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
