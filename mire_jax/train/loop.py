"""The training loop: model, data, optimizer and checkpoints from a config, run to `total_steps`.

Rerunning on a workdir with a checkpoint resumes exactly (params, optimizer, step, RNG and the data iterator).
A preemption (SIGTERM; on several hosts, JAX's preemption sync point) saves a checkpoint and returns normally.
Validation (in-batch loss and accuracy on held-out records, dropout off) runs after every epoch or every
`validation.every_steps`. Only process 0 writes logs.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from typing import Any, Callable

import jax
import numpy as np

import mire_jax
from mire_jax import hosts
from mire_jax.config import EncodingSettings, MIReConfig
from mire_jax.files import write_json
from mire_jax.retrieval.model_folder import has_tokenizer, load_model, save_model
from mire_jax.tokenization import load as load_tokenizer
from mire_jax.tokenization.colbert import DROP_PUNCTUATION, ColbertTokenizer
from mire_jax.train.checkpoint import Checkpointer
from mire_jax.train.metrics_log import MetricsLogger
from mire_jax.train.optim import is_trainable, learning_rate_schedule, make_optimizer
from mire_jax.train.step import BatchLayout, DataParallelStep, StepConfig, ValidationStep, full_params, init_state

log = logging.getLogger("mire_jax.train")


class TrainingDiverged(FloatingPointError):
    pass


def _all_processes_reach(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def build_tokenizer(cfg) -> ColbertTokenizer:
    """The run's tokenizer: the model folder's (`config.model.dir`) when `config.tokenizer` is empty. A
    `config.tokenizer` whose vocabulary differs from the model folder's is refused: the token ids would mean other
    words to the model."""
    model_dir = cfg.model.dir
    own = load_tokenizer(model_dir) if model_dir and has_tokenizer(model_dir) else None
    if not cfg.tokenizer:
        if own is None:
            raise ValueError("config.tokenizer must name a vocab.txt or tokenizer folder (config.model.dir holds "
                             "none)")
        return own
    tokenizer = load_tokenizer(cfg.tokenizer)
    if own is not None and own.fingerprint() != tokenizer.fingerprint():
        raise ValueError(f"--config.tokenizer {cfg.tokenizer} has another vocabulary than the model folder "
                         f"{model_dir}: leave config.tokenizer empty to use the model's")
    return tokenizer


def initial_model(m, vocab_size: int | None = None) -> tuple[MIReConfig, dict]:
    """The model a run starts from (`config.model`): the model folder `m.dir`, or random towers of size
    `m.preset` ("base" | "tiny" | "tiny_siglip") from `m.seed` with a vocabulary of `vocab_size` (smoke tests
    only)."""
    if m.dir:
        return load_model(m.dir)
    presets = {"base": MIReConfig, "tiny": MIReConfig.tiny, "tiny_siglip": MIReConfig.tiny_siglip}
    if m.preset not in presets:
        raise ValueError(f"config.model.preset must be one of {sorted(presets)}, got {m.preset!r}")
    config = presets[m.preset]()
    if vocab_size:
        config = config.replace_text(vocab_size=vocab_size)
    log.warning("config.model.dir is not set: random %s towers from seed %d", m.preset, m.seed)
    return config, jax.device_get(mire_jax.init_params(config, jax.random.PRNGKey(m.seed)))


def build_model(cfg, tokenizer) -> tuple[MIReConfig, dict]:
    m = cfg.model
    config, params = initial_model(m, tokenizer.vocab_size)
    if config.text.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model's vocabulary only "
                         f"{config.text.vocab_size}")
    head = config.head.__class__(**{**config.head.__dict__, "residual": bool(m.residual)})
    return config.replace(dtype=m.dtype, head=head), params


@dataclasses.dataclass
class TrainingData:
    """The training pipeline, its size, and where validation batches come from (None: no validation)."""
    pipeline: Any
    num_records: int
    validation: Callable[[int], Any] | None = None  # global batch size -> a one-pass pipeline over the records
    num_validation_records: int = 0


def build_data(cfg, tokenizer, workdir, model_cfg: MIReConfig, params) -> TrainingData:
    from mire_jax.data import builders
    from mire_jax.data.feature_cache import check_vision_tower
    from mire_jax.data.pipeline import PipelineConfig, holdout_split, make_pipeline
    d, v = cfg.data, cfg.validation
    manual_dir, image_root = d.manual_dir, d.image_root
    data_dir = d.data_dir or os.path.join(workdir, "tfds")
    if hosts.is_writer() and manual_dir:
        builders.prepare(d.builder, data_dir=data_dir, manual_dir=manual_dir, config=d.builder_config or None,
                         image_root=image_root or None)
    _all_processes_reach("dataset prepared")
    builder = builders.make_builder(d.builder, data_dir=data_dir, config=d.builder_config or None,
                                    image_root=image_root or None)
    sources = builder.as_data_source()
    for name in [d.split] + ([v.split] if v.split else []):
        if name not in sources:
            raise ValueError(f"the {d.builder} data set has no split {name!r}; it has {sorted(sources)}")
    source = sources[d.split]
    train_indices = held = None
    if v.holdout:
        train_indices, held = holdout_split(len(source), v.holdout, cfg.seed)
    if d.vision_cache_dir:  # features of another vision tower than the model's are refused
        check_vision_tower(d.vision_cache_dir, model_cfg.vision)
    if d.text_cache_dir:
        prepare_text_cache(cfg, tokenizer, model_cfg, params, source)
    processes = jax.process_count()
    pcfg = PipelineConfig(batch_size=cfg.batch_size // processes, accum_steps=cfg.accum_steps,
                          image=model_cfg.vision.image_processing(), query_maxlen=d.query_maxlen,
                          doc_maxlen=d.doc_maxlen, attend_to_mask_tokens=d.attend_to_mask_tokens,
                          use_instruction=d.use_instruction, seed=cfg.seed,
                          reshuffle_each_epoch=d.reshuffle_each_epoch, image_policy=d.image_policy,
                          image_root=image_root or None, vision_cache_dir=d.vision_cache_dir or None,
                          text_cache_dir=d.text_cache_dir or None, read_threads=d.read_threads,
                          worker_count=d.worker_count)
    data = TrainingData(make_pipeline(source, tokenizer, pcfg, record_indices=train_indices),
                        len(source) if train_indices is None else len(train_indices))
    if held is not None or v.split:
        val_source, val_indices = (source, held) if held is not None else (sources[v.split], None)
        data.num_validation_records = len(val_source) if val_indices is None else len(val_indices)

        def validation(global_batch: int):
            vcfg = dataclasses.replace(pcfg, batch_size=global_batch // processes, accum_steps=1, shuffle=False,
                                       num_epochs=1, batch_prefetch=0, text_cache_dir=None)
            return make_pipeline(val_source, tokenizer, vcfg, record_indices=val_indices)
        data.validation = validation
    return data


def prepare_text_cache(cfg, tokenizer, model_cfg: MIReConfig, params, source) -> None:
    """Fills `data.text_cache_dir` with the frozen text tower's outputs of every training record (each process its
    share, resumable), then checks it was made with this run's model, tokenizer and lengths."""
    from mire_jax.data.text_cache import TextCache, fill_text_cache, settings_of
    d = cfg.data
    settings = settings_of(model_cfg, params, tokenizer, d.query_maxlen, d.doc_maxlen, d.attend_to_mask_tokens)
    written = fill_text_cache(d.text_cache_dir, source, tokenizer, model_cfg, params, settings,
                              use_instruction=d.use_instruction, process_index=jax.process_index(),
                              process_count=jax.process_count(), progress=hosts.is_writer(),
                              length_bucket=d.text_cache_length_bucket)
    _all_processes_reach("text features cached")
    TextCache(d.text_cache_dir, settings)
    log.info("text features of %d records cached in %s", written, d.text_cache_dir)


def _check_config(cfg):
    if cfg.phase not in ("pretrain", "finetune"):
        raise ValueError(f"phase must be 'pretrain' or 'finetune', got {cfg.phase!r}")
    if cfg.temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {cfg.temperature}")
    if cfg.epochs < 0 or (not cfg.epochs and cfg.total_steps < 1):
        raise ValueError(f"set epochs > 0 or total_steps > 0 (epochs={cfg.epochs}, total_steps={cfg.total_steps})")
    if cfg.data.text_cache_dir and (cfg.phase != "pretrain" or cfg.dropout):
        raise ValueError("config.data.text_cache_dir: cached text features need a frozen text tower without "
                         "dropout (phase 'pretrain', dropout False)")
    is_trainable(cfg.phase, tuple(cfg.trainable))  # names the unknown parts
    if cfg.data.text_cache_dir and {"bert", "linear"} & set(cfg.trainable):
        raise ValueError(f"config.data.text_cache_dir: cached text features need a frozen text tower and "
                         f"projection, but config.trainable trains {sorted({'bert', 'linear'} & set(cfg.trainable))}")
    if cfg.validation.holdout and cfg.validation.split:
        raise ValueError("validation: give holdout (records held out of the training split) or split, not both")
    BatchLayout(cfg.batch_size, jax.device_count(), cfg.accum_steps, cfg.negatives_group)


def _validate(validation_step, data: TrainingData, state, frozen) -> dict:
    """In-batch loss and accuracy over the validation records, whole negatives groups (the remainder of a
    validation batch, fewer than `validation_step.batch_size` records, is left out)."""
    sums, batches = {"loss": 0.0, "accuracy": 0.0}, 0
    iterator = iter(data.validation(validation_step.batch_size))
    try:
        for batch in iterator:
            metrics = validation_step(state, frozen, batch)
            for key in sums:
                sums[key] += float(metrics[key])
            batches += 1
    finally:
        iterator.close()
    if not batches:
        raise ValueError(f"{data.num_validation_records} validation records make no validation batch of "
                         f"{validation_step.batch_size}")
    return {"val_loss": sums["loss"] / batches, "val_accuracy": sums["accuracy"] / batches,
            "val_examples": batches * validation_step.batch_size}


def train(cfg, workdir: str) -> dict:
    """Runs (or resumes) training; returns the last logged metrics."""
    _check_config(cfg)
    os.makedirs(workdir, exist_ok=True)
    tokenizer = build_tokenizer(cfg)
    model_cfg, params = build_model(cfg, tokenizer)
    data = build_data(cfg, tokenizer, workdir, model_cfg, params)
    steps_per_epoch = data.num_records // cfg.batch_size
    if cfg.epochs and not steps_per_epoch:
        raise ValueError(f"{data.num_records} training records make no batch of {cfg.batch_size}")
    total_steps = cfg.epochs * steps_per_epoch if cfg.epochs else cfg.total_steps
    validate_every = cfg.validation.every_steps or (steps_per_epoch or total_steps)
    log.info("%d training records, %d steps per epoch, %d steps; negatives groups of %d", data.num_records,
             steps_per_epoch, total_steps, cfg.negatives_group)

    schedule = learning_rate_schedule(cfg.lr, cfg.warmup_steps)
    tx = make_optimizer(cfg.lr, cfg.warmup_steps, cfg.weight_decay, cfg.clip_norm or None)
    step_cfg = StepConfig.from_config(cfg)
    step_fn = DataParallelStep(model_cfg, step_cfg, tx, schedule, cfg.batch_size)
    validation_step = ValidationStep(model_cfg, step_cfg) if data.validation else None
    state, frozen_host = init_state(params, cfg.phase, tx, jax.random.PRNGKey(cfg.seed), tuple(cfg.trainable) or None)

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.keep_checkpoints)
    data_iter = iter(data.pipeline)
    start = ckpt.latest_step() or 0
    if start:
        state = ckpt.restore(start, jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), state), data_iter)
        log.info("resumed from step %d", start)
    state, frozen = step_fn.prepare(state), step_fn.prepare(frozen_host)

    logger = MetricsLogger(workdir, total_steps=total_steps, start_step=start, enabled=hosts.is_writer())
    if hosts.is_writer():
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(cfg.to_json_best_effort(indent=2))
        write_json(os.path.join(workdir, "model_config.json"), model_cfg.to_dict(), indent=2)

    preemption = PreemptionWatch()

    def check_finite():
        first_nan = int(jax.device_get(state["first_nan_step"]))
        if first_nan >= 0:
            raise TrainingDiverged(f"loss or gradient became NaN/inf at step {first_nan}; stopped (params of the "
                                   f"last finite step kept in memory, no checkpoint written after it)")

    def save(step):
        check_finite()
        ckpt.save(step, state, data_iter)

    pending, last = [], {}
    t_last, n_last = time.perf_counter(), start
    step = start
    try:
        for step in range(start + 1, total_steps + 1):
            state, metrics = step_fn(state, frozen, next(data_iter))
            pending.append(metrics)
            if step % cfg.log_every == 0 or step == total_steps:
                check_finite()
                means = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
                now = time.perf_counter()
                means["samples_per_s"] = (step - n_last) * cfg.batch_size / max(now - t_last, 1e-9)
                t_last, n_last, pending = now, step, []
                last = dict(step=step, **means, skipped_records=data_iter.num_skipped)
                logger.log(last)
            else:
                logger.advance()
            if validation_step is not None and (step % validate_every == 0 or step == total_steps):
                check_finite()
                row = dict(step=step, epoch=step / steps_per_epoch if steps_per_epoch else None,
                           **_validate(validation_step, data, state, frozen))
                logger.log_validation(row)
                last.update(row)
                t_last = time.perf_counter()
            if step % cfg.checkpoint_every == 0 and step != total_steps:
                save(step)
            if preemption.reached(step):
                log.warning("preempted at step %d: saving a checkpoint and exiting", step)
                save(step)
                break
        else:
            if start < total_steps:
                save(total_steps)
            if hosts.is_writer():  # the trained model as a portable model folder (evaluation, export)
                save_model(os.path.join(workdir, "model"), model_cfg,
                           jax.device_get(full_params(state, frozen_host)), tokenizer=cfg.tokenizer or cfg.model.dir,
                           encoding=trained_encoding(cfg, model_cfg))
    finally:
        preemption.close()
        ckpt.close()
        logger.close()
        data_iter.close()
    return last


def trained_encoding(cfg, model_cfg: MIReConfig) -> EncodingSettings:
    """The encoding settings a run trains with, recorded in its model folder (passages drop punctuation in training,
    ColBERT's skiplist, as the published training does)."""
    d = cfg.data
    return EncodingSettings(query_maxlen=d.query_maxlen, doc_maxlen=d.doc_maxlen,
                            attend_to_mask_tokens=d.attend_to_mask_tokens, passage_keep=DROP_PUNCTUATION,
                            image=model_cfg.vision.image_processing())


class PreemptionWatch:
    """Whether to save and stop now. One process: after a SIGTERM. Several processes: at JAX's preemption sync
    point, the same step on every host (the notice reaches all hosts through the coordination service, whichever
    host got the signal), so a preempted pod writes one consistent checkpoint."""

    def __init__(self):
        self._multihost = jax.process_count() > 1
        self._signal = None
        if not self._multihost:  # with several processes JAX's own SIGTERM handler feeds the sync point
            self._previous = signal.signal(signal.SIGTERM, lambda signum, frame: setattr(self, "_signal", signum))

    def reached(self, step: int) -> bool:
        if self._multihost:
            from jax.experimental import multihost_utils
            return multihost_utils.reached_preemption_sync_point(step)
        return self._signal is not None

    def close(self) -> None:
        if not self._multihost:
            signal.signal(signal.SIGTERM, self._previous)
