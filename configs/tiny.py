r"""Tiny random towers on a generated world: the whole training path on CPU in about a minute. The arg is the
world's folder (default runs/tiny_data); write it once with the demo's generator:

    python -m mire_jax.demo.world --preset tiny --out runs/tiny_data
    python train/train.py --config configs/tiny.py --workdir runs/tiny        # or configs/tiny.py:OTHER_FOLDER
"""
import os

from mire_jax.train.config import base_config


def get_config(arg: str = "runs/tiny_data"):
    c = base_config()
    c.phase = "finetune"
    c.total_steps = 30
    c.batch_size, c.negatives_group = 16, 8
    c.log_every = 5
    c.checkpoint_every = 10
    c.lr = 1e-3
    c.warmup_steps = 5
    c.temperature = 0.8
    c.tokenizer = os.path.join(arg, "vocab.txt")
    c.model.preset = "tiny"
    c.data.builder = "image_question_jsonl"
    c.data.manual_dir = os.path.join(arg, "finetune")
    c.data.image_root = os.path.join(arg, "images")
    c.data.query_maxlen = 16
    c.data.doc_maxlen = 48
    c.data.read_threads = 2
    c.validation.split = "validation"   # new pictures of the training entities
    return c
