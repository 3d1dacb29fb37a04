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

RECIPES = {
    "evqa": dict(builder="m2kr", builder_config="EVQA_data", manual_dir="data/m2kr", image_root="data/evqa",
                 epochs=5, lr=5e-5, warmup_steps=200, per_process_batch=128, validation={"split": "valid"}),
    "infoseek": dict(builder="m2kr", builder_config="Infoseek_data", manual_dir="data/m2kr",
                     image_root="data/infoseek_images", epochs=5, lr=5e-5, warmup_steps=200, per_process_batch=128,
                     validation={"holdout": 512}),
    "okvqa_gs": dict(builder="okvqa_gs", builder_config="",
                     manual_dir="data/okvqa/RAVQA_v2_data/okvqa/pre-extracted_features/passages",
                     image_root="data/vid2r/images", epochs=15, lr=5e-5, warmup_steps=10, per_process_batch=128,
                     validation={"split": "validation"}),
    "remuq": dict(builder="remuq", builder_config="", manual_dir="data/remuq", image_root="", epochs=10, lr=5e-5,
                  warmup_steps=10, per_process_batch=128, validation={"split": "train"}),
    "aokvqa": dict(builder="aokvqa", builder_config="", manual_dir="data/aokvqa", image_root="data/vid2r/images",
                   epochs=10, lr=2e-5, warmup_steps=50, per_process_batch=32, validation={"holdout": 500}),
    "jsonl": dict(builder="image_question_jsonl", builder_config="", manual_dir="data/jsonl",
                  image_root="data/jsonl/images", epochs=5, lr=5e-5, warmup_steps=200, per_process_batch=128,
                  validation={"holdout": 512}),
}
PROCESSES = 4  # the published runs: 4 GPUs, one process each, negatives never gathered across them


def get_config(arg: str = "evqa"):
    if arg not in RECIPES:
        raise ValueError(f"unknown fine-tuning set {arg!r}; known: {sorted(RECIPES)}")
    r = RECIPES[arg]
    c = base_config()
    c.phase = "finetune"
    c.epochs = r["epochs"]
    c.batch_size, c.negatives_group = PROCESSES * r["per_process_batch"], r["per_process_batch"]
    c.lr, c.weight_decay, c.warmup_steps, c.temperature = r["lr"], 0.0, r["warmup_steps"], 0.8
    c.tokenizer = "runs/pretrain/model"
    c.model.dir = "runs/pretrain/model"
    c.data.builder, c.data.builder_config = r["builder"], r["builder_config"]
    c.data.manual_dir, c.data.image_root = r["manual_dir"], r["image_root"]
    c.data.data_dir = "data/tfds"              # where the dataset is built (train/cache_vision.py reads it too)
    c.data.query_maxlen, c.data.doc_maxlen = 32, 180
    c.data.reshuffle_each_epoch = False
    for key, value in r["validation"].items():
        c.validation[key] = value
    return c
