"""The paper's pre-training recipe at base size: ViD2R, pooling head only, tau 0.3, AdamW 1e-4 (wd 0), global
batch 128, linear warm-up 300 steps then constant, 5 epochs, from cached CLIP ViT-B/32 features.

    python -m mire_jax.convert import-hf --text colbertv2.0 --vision clip-vit-base-patch32 --out models/mire_init
    python train/cache_vision.py --config configs/mire_base_pretrain.py
    python train/train.py --config configs/mire_base_pretrain.py --workdir runs/pretrain
"""
from mire_jax.train_config import base_config

VID2R_RECORDS = 1_170_000  # set to len(ViD2R.json) of your build; total_steps = 5 epochs of it


def get_config():
    c = base_config()
    c.phase = "pretrain"
    c.batch_size = 128
    c.total_steps = 5 * VID2R_RECORDS // 128
    c.checkpoint_every = 2000
    c.lr, c.weight_decay, c.warmup_steps, c.temperature = 1e-4, 0.0, 300, 0.3
    c.tokenizer = "models/mire_init"          # a folder with the bert-base-uncased vocab.txt
    c.model.dir = "models/mire_init"
    c.model.dtype = "bfloat16"
    c.data.builder = "vid2r"
    c.data.manual_dir = "data/vid2r"          # ViD2R.json
    c.data.image_root = "data/vid2r/images"
    c.data.vision_cache_dir = "data/vid2r/clip_cache"
    c.data.query_maxlen, c.data.doc_maxlen = 32, 256
    return c
