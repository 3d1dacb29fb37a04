r"""The published SentMIRe pre-training recipe (public repository yeongjoonJu/MIRe, cfgs/sentmire_train_vid2r.yaml,
train_retrieval.py and retrievers/mire.py `SentMIRe`): MIRe's ViD2R pre-training with a PyLate ModernColBERT as the
text tower. Every number is `mire_base_pretrain.py`'s (the two yaml files differ only in the text tower): tau 0.3,
AdamW lr 1e-4 (weight decay 0, eps 1e-8), 4 processes x 128 = global batch 512 with negatives within each 128,
linear warm-up 300 steps then constant, 5 epochs, queries 40 / passages 400 tokens, 512 held-out records, the same
data order every epoch, CLIP ViT-B/32 frozen.

One difference from MIRe's recipe is the published code's, kept: the pooling head AND the projection train. The
yaml freezes the text tower (`frozen: True`, `linear_frozen: True`), but `SentMIRe.freeze_parameters` freezes the
ModernBERT module only; its `self.dense.requires_grad = ...` sets an attribute of the Dense module, not of its
weight, so PyLate's projection stays trainable (in MIRe the projection lives inside the frozen module).

The yaml names its text checkpoint by a local path (`ckpts/colbert-bert-large`); what it must hold is a PyLate
ModernColBERT folder (a sentence-transformers model: modules.json, ModernBERT, 1_Dense) with a 768-wide encoder and
128-d output, such as Y-J-Ju/ModernBERT-base-ColBERT (published by MIRe's first author) or
lightonai/GTE-ModernColBERT-v1:

    python -m mire_jax.convert import-hf --text ModernBERT-base-ColBERT --vision clip-vit-base-patch32 \
        --out models/sentmire_base_init
    python train/cache_vision.py --config configs/sentmire_pretrain.py        # the frozen tower, once
    python train/train.py --config configs/sentmire_pretrain.py --workdir runs/sentmire_pretrain

The model folder holds the tokenizer (tokenizer.json + pylate_conventions.json: PyLate's prefixes and skiplist in
the published SentMIRe framing), so `c.tokenizer` names the same folder.
"""
from mire_jax.train.config import base_config

MODEL = "models/sentmire_base_init"


def get_config(arg: str = ""):
    del arg
    c = base_config()
    c.phase = "pretrain"
    c.trainable = ("pooling", "linear")        # as published: the projection's freeze is a no-op (docstring)
    c.epochs = 5
    c.batch_size, c.negatives_group = 512, 128
    c.checkpoint_every = 2000
    c.lr, c.weight_decay, c.warmup_steps, c.temperature = 1e-4, 0.0, 300, 0.3
    c.tokenizer = MODEL
    c.model.dir = MODEL
    c.data.builder = "vid2r"
    c.data.data_dir = "data/tfds"
    c.data.manual_dir = "data/vid2r"
    c.data.image_root = "data/vid2r/images"
    c.data.vision_cache_dir = "data/vid2r/clip_cache_base"  # the same frozen CLIP as MIRe's base pre-training
    c.data.query_maxlen, c.data.doc_maxlen = 40, 400
    c.data.reshuffle_each_epoch = False
    c.validation.holdout = 512
    return c
