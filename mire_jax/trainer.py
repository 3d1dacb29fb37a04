"""The training loop: model, data, optimizer and checkpoints from a config, run to `total_steps`.

Rerunning on a workdir with a checkpoint resumes exactly (params, optimizer, step, RNG and the data iterator).
SIGTERM saves a checkpoint and returns normally. Only process 0 writes logs.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time

import jax
import numpy as np

import mire_jax
from mire_jax import parallel
from mire_jax.checkpoint import Checkpointer
from mire_jax.config import MIReConfig
from mire_jax.model_io import load_model, save_model
from mire_jax.optim import learning_rate_schedule, make_optimizer
from mire_jax.tokenizer import ColbertTokenizer
from mire_jax.train_step import DataParallelStep, StepConfig, full_params, init_state
from mire_jax.train_logging import MetricsLogger

log = logging.getLogger("mire_jax.train")


class TrainingDiverged(FloatingPointError):
    pass


def _synthetic_root(cfg, workdir):
    from mire_jax.data.synthetic import generate
    root = cfg.data.synthetic.dir or os.path.join(workdir, "synthetic")
    if parallel.is_writer():
        sizes = {k: v for k, v in cfg.data.synthetic.sizes.items()}
        generate(root, seed=cfg.data.synthetic.seed, progress=False, **sizes)
    return root


def build_tokenizer(cfg, workdir) -> ColbertTokenizer:
    if cfg.tokenizer:
        return ColbertTokenizer.from_pretrained(cfg.tokenizer)
    if not cfg.data.synthetic.enabled:
        raise ValueError("config.tokenizer must name a vocab file or tokenizer folder")
    from mire_jax.data.vocab import write_vocab
    root = _synthetic_root(cfg, workdir)
    texts = []
    for name in ("kb/Wiki6M_synthetic.jsonl", "finetune/train.jsonl", "zeroshot/test.jsonl"):
        with open(os.path.join(root, name)) as f:
            texts += [line for line in f]
    return ColbertTokenizer.from_vocab(write_vocab(texts, os.path.join(workdir, "vocab.txt")))


def build_model(cfg, tokenizer) -> tuple[MIReConfig, dict]:
    m = cfg.model
    if m.dir:
        config, params = load_model(m.dir)
    else:
        config = getattr(MIReConfig, m.preset)()
        config = config.replace(bert=config.bert.__class__(**{**config.bert.__dict__,
                                                              "vocab_size": tokenizer.vocab_size}))
        params = jax.device_get(mire_jax.init_params(config, jax.random.PRNGKey(m.seed)))
    if config.bert.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model's vocabulary only "
                         f"{config.bert.vocab_size}")
    head = config.head.__class__(**{**config.head.__dict__, "residual": bool(m.residual)})
    return config.replace(dtype=m.dtype, head=head), params


def build_data(cfg, tokenizer, workdir, image_size: int):
    from mire_jax.data import builders
    from mire_jax.data.pipeline import PipelineConfig, make_pipeline
    d = cfg.data
    manual_dir, image_root = d.manual_dir, d.image_root
    if d.synthetic.enabled:
        root = _synthetic_root(cfg, workdir)
        manual_dir, image_root = os.path.join(root, d.synthetic.queries), os.path.join(root, "images")
    data_dir = d.data_dir or os.path.join(workdir, "tfds")
    if parallel.is_writer() and manual_dir:
        builders.prepare(d.builder, data_dir=data_dir, manual_dir=manual_dir, config=d.builder_config or None,
                         image_root=image_root)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("dataset prepared")
    builder = builders.make_builder(d.builder, data_dir=data_dir, config=d.builder_config or None,
                                    image_root=image_root)
    source = builder.as_data_source()[d.split]
    per_process = cfg.batch_size // jax.process_count()
    pcfg = PipelineConfig(batch_size=per_process, image_size=image_size, query_maxlen=d.query_maxlen,
                          doc_maxlen=d.doc_maxlen, attend_to_mask_tokens=d.attend_to_mask_tokens,
                          use_instruction=d.use_instruction, seed=cfg.seed, image_policy=d.image_policy,
                          image_root=image_root, vision_cache_dir=d.vision_cache_dir or None,
                          read_threads=d.read_threads, worker_count=d.worker_count)
    return make_pipeline(source, tokenizer, pcfg)


def _check_config(cfg):
    n = jax.device_count()
    if cfg.batch_size % (n * cfg.accum_steps):
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by devices ({n}) x accum_steps "
                         f"({cfg.accum_steps})")
    if cfg.phase not in ("pretrain", "finetune"):
        raise ValueError(f"phase must be 'pretrain' or 'finetune', got {cfg.phase!r}")
    if cfg.temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {cfg.temperature}")


def train(cfg, workdir: str) -> dict:
    """Runs (or resumes) training; returns the last logged metrics."""
    _check_config(cfg)
    os.makedirs(workdir, exist_ok=True)
    tokenizer = build_tokenizer(cfg, workdir)
    model_cfg, params = build_model(cfg, tokenizer)
    pipeline = build_data(cfg, tokenizer, workdir, model_cfg.vision.image_size)

    schedule = learning_rate_schedule(cfg.lr, cfg.warmup_steps)
    tx = make_optimizer(cfg.lr, cfg.warmup_steps, cfg.weight_decay, cfg.clip_norm or None)
    step_cfg = StepConfig(phase=cfg.phase, temperature=cfg.temperature, maxsim_block=cfg.maxsim_block,
                          accum_steps=cfg.accum_steps, dropout=cfg.dropout)
    mesh = parallel.data_mesh()
    step_fn = DataParallelStep(model_cfg, step_cfg, tx, schedule, mesh, cfg.parallel)
    state, frozen_host = init_state(params, cfg.phase, tx, jax.random.PRNGKey(cfg.seed))

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.keep_checkpoints)
    data_iter = iter(pipeline)
    start = ckpt.latest_step() or 0
    if start:
        state, data_state = ckpt.restore(start, jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), state))
        data_iter.set_state(data_state)
        log.info("resumed from step %d", start)
    state, frozen = step_fn.prepare(state), step_fn.prepare(frozen_host)

    logger = MetricsLogger(workdir, total_steps=cfg.total_steps, start_step=start, enabled=parallel.is_writer())
    if parallel.is_writer():
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(cfg.to_json_best_effort(indent=2))
        with open(os.path.join(workdir, "model_config.json"), "w") as f:
            json.dump(model_cfg.to_dict(), f, indent=2)

    stop = {"signal": None}
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))

    def host_state():
        return step_fn.host_state(state)

    def check_finite():
        first_nan = int(jax.device_get(host_state()["first_nan_step"]))
        if first_nan >= 0:
            raise TrainingDiverged(f"loss or gradient became NaN/inf at step {first_nan}; stopped (params of the "
                                   f"last finite step kept in memory, no checkpoint written after it)")

    def save(step):
        check_finite()
        ckpt.save(step, host_state(), data_iter.get_state())

    pending, last = [], {}
    t_last, n_last = time.perf_counter(), start
    step = start
    try:
        for step in range(start + 1, cfg.total_steps + 1):
            state, metrics = step_fn(state, frozen, next(data_iter))
            pending.append(metrics)
            if step % cfg.log_every == 0 or step == cfg.total_steps:
                check_finite()
                means = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
                now = time.perf_counter()
                means["samples_per_s"] = (step - n_last) * cfg.batch_size / max(now - t_last, 1e-9)
                t_last, n_last, pending = now, step, []
                last = dict(step=step, **means, skipped_records=data_iter.num_skipped)
                logger.log(last)
            else:
                logger.advance()
            if step % cfg.checkpoint_every == 0 and step != cfg.total_steps:
                save(step)
            if stop["signal"] is not None:
                log.warning("SIGTERM at step %d: saving a checkpoint and exiting", step)
                save(step)
                break
        else:
            if start < cfg.total_steps:
                save(cfg.total_steps)
            if parallel.is_writer():  # the trained model as a portable model folder (evaluation, export)
                save_model(os.path.join(workdir, "model"), model_cfg,
                           jax.device_get(full_params(host_state(), frozen_host)))
    finally:
        signal.signal(signal.SIGTERM, previous)
        ckpt.close()
        logger.close()
        data_iter.close()
    return last
