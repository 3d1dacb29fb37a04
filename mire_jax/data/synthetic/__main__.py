"""Command line: `python -m mire_jax.data.synthetic --out DIR [--seed N] [--n-train-entities N ...]`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from mire_jax.data.synthetic.world import SyntheticSizes
from mire_jax.data.synthetic.writer import generate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mire_jax.data.synthetic",
        description="Generate the synthetic multimodal retrieval benchmark (pictures, LLaVA dialogues, a "
                    "Wiki6M-like knowledge base, zero-shot queries on unseen attribute combinations, warm-up "
                    "captions and text pairs) and print its manifest summary.",
    )
    parser.add_argument("--out", required=True, help="output directory (absent, empty, or a previous output)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--force", action="store_true", help="regenerate even if --out is already current")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    defaults = SyntheticSizes()
    for field in dataclasses.fields(SyntheticSizes):
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=int,
                            default=getattr(defaults, field.name),
                            help=f"(default {getattr(defaults, field.name)})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = SyntheticSizes(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticSizes)})
    try:
        manifest = generate(args.out, seed=args.seed, sizes=sizes, force=args.force, progress=not args.quiet)
    except (ValueError, TypeError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = {
        "out": args.out,
        "images": manifest["images"]["count"],
        "entities": manifest["entities"],
        "files": {name: entry["count"] for name, entry in manifest["files"].items()},
        "zeroshot_chance_recall_at_5": manifest["zeroshot_chance_recall_at_5"],
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
