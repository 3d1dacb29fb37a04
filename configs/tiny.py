"""Tiny random towers on generated data: the whole training path on CPU in about a minute.

    python train/train.py --config configs/tiny.py --workdir /tmp/mire_tiny
"""
from mire_jax.train_config import base_config


def get_config():
    c = base_config()
    c.phase = "finetune"
    c.total_steps = 30
    c.batch_size = 16
    c.negatives_group = 8
    c.log_every = 5
    c.checkpoint_every = 10
    c.lr = 1e-3
    c.warmup_steps = 5
    c.temperature = 0.8
    c.model.preset = "tiny"
    c.data.builder = "image_question_jsonl"
    c.data.query_maxlen = 16
    c.data.doc_maxlen = 48
    c.data.read_threads = 2
    c.validation.split = "validation"   # new pictures of the training entities
    c.data.synthetic.enabled = True
    c.data.synthetic.sizes = dict(n_train_entities=40, views_per_train_entity=2, n_zeroshot_entities=8,
                                  n_distractors=8, n_seen_queries=16, n_extra_caption_images=0, image_size=32)
    return c
