"""Zero-shot evaluation on okvqa_wk11m (see mire_jax/data/benchmarks for the expected layout under the root)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_common import eval_config  # noqa: E402


def get_config():
    return eval_config("okvqa_wk11m", "data/okvqa")
