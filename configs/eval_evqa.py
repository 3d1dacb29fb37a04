"""Zero-shot evaluation on m2kr_evqa (see mire_jax/data/benchmarks for the expected layout under the root)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_common import eval_config  # noqa: E402


def get_config():
    return eval_config("m2kr_evqa", "data/m2kr")
