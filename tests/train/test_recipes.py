"""Every number of every published recipe, pinned against the published training configs and script (public
repository yeongjoonJu/MIRe: cfgs/mire_train_*.yaml, cfgs/sentmire_train_vid2r.yaml, train_retrieval.py,
retrievers/mire.py)."""
import importlib.util
import pathlib

import pytest

from mire_jax.train.optim import TRAINABLE

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"

PRETRAIN = dict(phase="pretrain", epochs=5, batch_size=512, negatives_group=128, lr=1e-4, warmup_steps=300,
                weight_decay=0.0, temperature=0.3, query_maxlen=40, doc_maxlen=400, builder="vid2r",
                reshuffle_each_epoch=False, trainable=("pooling",), validation={"holdout": 512, "split": ""})
FINETUNE = dict(phase="finetune", batch_size=512, negatives_group=128, lr=5e-5, weight_decay=0.0, temperature=0.8,
                query_maxlen=32, doc_maxlen=180, reshuffle_each_epoch=False, trainable=("bert", "linear", "pooling"))

RECIPES = {
    ("mire_base_pretrain.py", "base"): dict(PRETRAIN, model_dir="models/mire_base_init"),
    ("mire_base_pretrain.py", "large"): dict(PRETRAIN, model_dir="models/mire_large_init"),
    ("mire_base_pretrain.py", "siglip"): dict(PRETRAIN, model_dir="models/mire_siglip_init"),
    # SentMIRe's freeze of its projection is a no-op (`self.dense.requires_grad = ...`): the projection trains
    ("sentmire_pretrain.py", ""): dict(PRETRAIN, model_dir="models/sentmire_base_init", trainable=("pooling", "linear")),
    ("mire_base_finetune.py", "evqa"): dict(FINETUNE, epochs=5, warmup_steps=200, builder="m2kr",
                                            builder_config="EVQA_data", validation={"holdout": 0, "split": "valid"}),
    ("mire_base_finetune.py", "infoseek"): dict(FINETUNE, epochs=5, warmup_steps=200, builder="m2kr",
                                                builder_config="Infoseek_data",
                                                validation={"holdout": 512, "split": ""}),
    ("mire_base_finetune.py", "okvqa_gs"): dict(FINETUNE, epochs=15, warmup_steps=10, builder="okvqa_gs",
                                                validation={"holdout": 0, "split": "validation"}),
    ("mire_base_finetune.py", "remuq"): dict(FINETUNE, epochs=10, warmup_steps=10, builder="remuq",
                                             validation={"holdout": 0, "split": "train"}),
    ("mire_base_finetune.py", "aokvqa"): dict(FINETUNE, epochs=10, warmup_steps=50, batch_size=128,
                                              negatives_group=32, lr=2e-5, builder="aokvqa",
                                              validation={"holdout": 500, "split": ""}),
}


def _load(name, arg):
    spec = importlib.util.spec_from_file_location(name[:-3], CONFIGS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("name,arg", list(RECIPES), ids=[f"{n[:-3]}:{a}" for n, a in RECIPES])
def test_recipe_numbers(name, arg):
    want, c = RECIPES[(name, arg)], _load(name, arg)
    got = dict(phase=c.phase, epochs=c.epochs, batch_size=c.batch_size, negatives_group=c.negatives_group, lr=c.lr,
               warmup_steps=c.warmup_steps, weight_decay=c.weight_decay, temperature=c.temperature,
               query_maxlen=c.data.query_maxlen, doc_maxlen=c.data.doc_maxlen, builder=c.data.builder,
               reshuffle_each_epoch=c.data.reshuffle_each_epoch, trainable=tuple(c.trainable) or TRAINABLE[c.phase],
               validation={"holdout": c.validation.holdout, "split": c.validation.split})
    for key in ("model_dir", "builder_config"):
        if key in want:
            got[key] = c.model.dir if key == "model_dir" else c.data.builder_config
    assert got == want
    # Shared by every published run: dropout on (PyTorch train mode), [MASK] query padding attends in
    # training, no clipping, one micro-batch, the whole run in float32 (autocast to float32 in the script).
    assert (c.dropout, c.data.attend_to_mask_tokens, c.clip_norm, c.accum_steps) == (True, True, 0.0, 1)
    assert c.model.dtype == "float32" and c.epochs > 0
    assert c.batch_size // c.negatives_group == 4  # the published 4 processes, negatives never gathered


def test_evaluation_lengths_and_query_mask():
    """Evaluation: queries 64 / passages 384 word pieces, [MASK] padding neither attended nor kept."""
    for benchmark in ("okvqa_gs", "okvqa_wk11m", "remuq", "evqa", "infoseek", "aokvqa"):
        c = _load("eval.py", benchmark)
        assert (c.query_maxlen, c.doc_maxlen, c.attend_to_mask_tokens, c.protocol, c.k) == (64, 384, False,
                                                                                          "published", 100)


def test_unknown_recipe_is_refused_by_name():
    with pytest.raises(ValueError, match="no_such_set"):
        _load("mire_base_finetune.py", "no_such_set")


def test_training_takes_the_tokenizer_from_the_model_and_refuses_another_vocabulary(tmp_path, tiny_model_dir):
    from mire_jax.train.config import base_config
    from mire_jax.train.loop import build_tokenizer

    cfg = base_config()
    cfg.model.dir = str(tiny_model_dir)
    assert build_tokenizer(cfg).vocab_size == 30522  # the model folder's own vocabulary
    other = tmp_path / "vocab.txt"
    other.write_text("\n".join(["[PAD]", "[unused0]", "[unused1]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "a", "b"]))
    cfg.tokenizer = str(other)
    with pytest.raises(ValueError, match="has another vocabulary than the model folder"):
        build_tokenizer(cfg)
    cfg.model.dir = ""
    assert build_tokenizer(cfg).vocab_size == 9
