r"""The published fine-tuning recipes (public repository yeongjoonJu/MIRe, cfgs/mire_train_*.yaml and
train_retrieval.py), one per set, selected by the arg: BERT + projection + pooling head train (CLIP frozen),
tau 0.8, AdamW (weight decay 0, eps 1e-8), linear warm-up then constant, queries 32 / passages 180 word pieces,
4 processes x 128 = global batch 512 with negatives within each 128 (A-OKVQA: 4 x 32), the same data order
every epoch, in-batch validation after every epoch on the set's published validation records.

| arg      | training data                                   | epochs | lr   | warm-up | validation                  |
|----------|-------------------------------------------------|--------|------|---------|-----------------------------|
| evqa     | M2KR EVQA train                                 | 5      | 5e-5 | 200     | the M2KR `valid` split      |
| infoseek | M2KR Infoseek train                             | 5      | 5e-5 | 200     | 512 held-out train records  |
| okvqa_gs | RA-VQA Google-Search retriever train file       | 15     | 5e-5 | 10      | retriever_testdev.json      |
| remuq    | ReMuQ train                                     | 10     | 5e-5 | 10      | the training records        |
| aokvqa   | A-OKVQA train (4 x 32 = 128, groups of 32)      | 10     | 2e-5 | 50      | 500 held-out train records  |
| jsonl    | your own `<split>.jsonl` pairs (not published)  | 5      | 5e-5 | 200     | 512 held-out train records  |

    python train/train.py --config configs/mire_base_finetune.py:evqa --workdir runs/ft_evqa \
        --config.model.dir runs/pretrain/model
"""
from mire_jax.train.config import base_config

# builder, builder config, files, image root, epochs, lr, warm-up, per-process batch, validation
RECIPES = {
    "evqa": ("m2kr", "EVQA_data", "data/m2kr", "data/evqa", 5, 5e-5, 200, 128, {"split": "valid"}),
    "infoseek": ("m2kr", "Infoseek_data", "data/m2kr", "data/infoseek_images", 5, 5e-5, 200, 128,
                 {"holdout": 512}),
    "okvqa_gs": ("okvqa_gs", "", "data/okvqa/RAVQA_v2_data/okvqa/pre-extracted_features/passages",
                 "data/vid2r/images", 15, 5e-5, 10, 128, {"split": "validation"}),
    "remuq": ("remuq", "", "data/remuq", "", 10, 5e-5, 10, 128, {"split": "train"}),
    "aokvqa": ("aokvqa", "", "data/aokvqa", "data/vid2r/images", 10, 2e-5, 50, 32, {"holdout": 500}),
    "jsonl": ("image_question_jsonl", "", "data/jsonl", "data/jsonl/images", 5, 5e-5, 200, 128, {"holdout": 512}),
}
PROCESSES = 4  # the published runs: 4 GPUs, one process each, negatives never gathered across them


def get_config(arg: str = "evqa"):
    if arg not in RECIPES:
        raise ValueError(f"unknown fine-tuning set {arg!r}; known: {sorted(RECIPES)}")
    builder, builder_config, manual_dir, images, epochs, lr, warmup, per_process, validation = RECIPES[arg]
    c = base_config()
    c.phase = "finetune"
    c.epochs = epochs
    c.batch_size, c.negatives_group = PROCESSES * per_process, per_process
    c.lr, c.weight_decay, c.warmup_steps, c.temperature = lr, 0.0, warmup, 0.8
    c.tokenizer = "runs/pretrain/model"
    c.model.dir = "runs/pretrain/model"
    c.data.builder, c.data.builder_config = builder, builder_config
    c.data.manual_dir, c.data.image_root = manual_dir, images
    c.data.data_dir = "data/tfds"              # where the dataset is built (train/cache_vision.py reads it too)
    c.data.query_maxlen, c.data.doc_maxlen = 32, 180
    c.data.reshuffle_each_epoch = False
    for key, value in validation.items():
        c.validation[key] = value
    return c
