"""Fine-tuning recipe at base size (optional phase): BERT + projection + head train, CLIP frozen, tau 0.8,
AdamW 5e-5, batch 128, warm-up 200 then constant. The arg names the dataset:

    python train/train.py --config configs/mire_base_finetune.py:evqa --workdir runs/ft_evqa \
        --config.model.dir runs/pretrain/model
"""
from mire_jax.train_config import base_config

DATASETS = {  # builder, builder config, files, images, query/doc max lengths
    "evqa": ("m2kr", "EVQA_data", "data/m2kr", "data/evqa", 40, 400),
    "infoseek": ("m2kr", "Infoseek_data", "data/m2kr", "data/infoseek_images", 40, 400),
    "okvqa": ("m2kr", "OKVQA_data", "data/m2kr", "data/vid2r/images", 32, 220),
    "jsonl": ("image_question_jsonl", "", "data/jsonl", "data/jsonl/images", 32, 220),
}


def get_config(arg: str = "evqa"):
    if arg not in DATASETS:
        raise ValueError(f"unknown fine-tuning dataset {arg!r}; known: {sorted(DATASETS)}")
    builder, builder_config, manual_dir, images, qlen, dlen = DATASETS[arg]
    c = base_config()
    c.phase = "finetune"
    c.total_steps = 10_000
    c.batch_size = 128
    c.lr, c.weight_decay, c.warmup_steps, c.temperature = 5e-5, 0.01, 200, 0.8
    c.tokenizer = "runs/pretrain/model"
    c.model.dir = "runs/pretrain/model"
    c.model.dtype = "bfloat16"
    c.data.builder, c.data.builder_config = builder, builder_config
    c.data.manual_dir, c.data.image_root = manual_dir, images
    c.data.query_maxlen, c.data.doc_maxlen = qlen, dlen
    return c
