"""python -m mire_jax.demo [--out runs/demo] [--quick] [--debug]

A user error (a bad folder, a file in the way) is reported in one line (`error: ...`, exit status 2); --debug (or
MIRE_DEBUG=1) shows the traceback instead."""
from mire_jax.cli import run_parser_main
from mire_jax.demo.run import main

run_parser_main(main)
