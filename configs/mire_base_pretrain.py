r"""The paper's pre-training recipe, as the published runs train it (public repository yeongjoonJu/MIRe,
cfgs/mire_train_vid2r.yaml and train_retrieval.py): ViD2R, the pooling head only (BERT, projection and CLIP
frozen), tau 0.3, AdamW lr 1e-4 (weight decay 0, eps 1e-8), 4 processes x 128 = global batch 512 with negatives
within each 128, linear warm-up 300 steps then constant, 5 epochs, queries 40 / passages 400 word pieces,
512 training records held out for in-batch validation after every epoch, the same data order every epoch.
The arg picks the vision tower: `base` (CLIP ViT-B/32, 224 px), `large` (CLIP ViT-L/14, 336 px, as
cfgs/mire_train_vid2r_large.yaml) or `siglip` (SigLIP so400m/14, 384 px: google/siglip-so400m-patch14-384, the
tower cfgs/mire_train_vid2r_large.yaml names in a comment as the alternative); the text tower is BERT-base
(ColBERTv2) in all three.

    python -m mire_jax.convert import-hf --text colbertv2.0 --vision clip-vit-base-patch32 --out models/mire_base_init
    python train/cache_vision.py --config configs/mire_base_pretrain.py        # the frozen tower, once
    python train/train.py --config configs/mire_base_pretrain.py --workdir runs/pretrain

Large: `--vision clip-vit-large-patch14-336 --out models/mire_large_init`, then the same two commands with
`--config configs/mire_base_pretrain.py:large`. SigLIP: `--vision siglip-so400m-patch14-384 --out
models/mire_siglip_init` (a SigLIP or SiglipVision folder), then `--config configs/mire_base_pretrain.py:siglip`.
"""
from mire_jax.train.config import base_config

VISION = {"base": "models/mire_base_init", "large": "models/mire_large_init", "siglip": "models/mire_siglip_init"}
CACHE = {"base": "clip_cache_base", "large": "clip_cache_large", "siglip": "siglip_cache"}


def get_config(arg: str = "base"):
    if arg not in VISION:
        raise ValueError(f"unknown vision tower {arg!r}; known: {sorted(VISION)}")
    c = base_config()
    c.phase = "pretrain"
    c.epochs = 5
    c.batch_size, c.negatives_group = 512, 128
    c.checkpoint_every = 2000
    c.lr, c.weight_decay, c.warmup_steps, c.temperature = 1e-4, 0.0, 300, 0.3
    c.tokenizer = VISION[arg]                 # the model folder holds the bert-base-uncased vocab.txt
    c.model.dir = VISION[arg]
    c.data.builder = "vid2r"
    c.data.data_dir = "data/tfds"             # where the dataset is built (train/cache_vision.py reads it too)
    c.data.manual_dir = "data/vid2r"          # ViD2R.json (or ViD2R_all.json)
    c.data.image_root = "data/vid2r/images"
    c.data.vision_cache_dir = f"data/vid2r/{CACHE[arg]}"
    c.data.query_maxlen, c.data.doc_maxlen = 40, 400
    c.data.reshuffle_each_epoch = False
    c.validation.holdout = 512
    return c
