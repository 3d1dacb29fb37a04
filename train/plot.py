"""PNG training curves from WORKDIR/metrics.jsonl.

    python train/plot.py WORKDIR [--out WORKDIR/curves.png] [--debug]

A missing or malformed metrics file is reported in one line (`error: ...`, exit status 2); --debug (or
MIRE_DEBUG=1) shows the traceback instead.
"""
from mire_jax.cli import run_parser_main
from mire_jax.train.plot import main

if __name__ == "__main__":
    run_parser_main(main)
