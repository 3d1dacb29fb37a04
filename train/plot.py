"""PNG training curves from WORKDIR/metrics.jsonl.

    python train/plot.py WORKDIR [--out WORKDIR/curves.png]
"""
from mire_jax.cli import user_errors
from mire_jax.train.plot import main

if __name__ == "__main__":
    with user_errors():
        main()
