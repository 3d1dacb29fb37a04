"""The settings of each stage: the project's recipes (configs/mire_base_pretrain.py, configs/mire_base_finetune.py,
configs/eval.py; the one place their numbers live) with their paths pointed at the data root and the output folder,
then the preset's changes, then the command line's `--set` changes. The generated world's recipes are those of
`make demo` (mire_jax/demo/run.py).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
from typing import Any, Mapping

import ml_collections

from mire_jax.reproduce.layout import BenchmarkSpec, FinetuneSpec

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
# Settings that change how a run goes, not what it computes: left out of the fingerprints.
TRAIN_NOT_RESULTS = ("log_every", "checkpoint_every", "keep_checkpoints", "distributed", "data.read_threads",
                     "data.worker_count", "vision_cache.batch_size", "vision_cache.read_threads",
                     "vision_cache.shard_size")
EVAL_NOT_RESULTS = ("batch_size", "shard_size")
EVAL_FIELDS = ("k", "query_maxlen", "doc_maxlen", "attend_to_mask_tokens", "batch_size", "shard_size", "seed", "index",
               "exact", "recall_sample")
LOADER_FIELDS = ("split", "image_root", "passages_split")


def load_config(name: str, arg: str) -> ml_collections.ConfigDict:
    """`configs/<name>:<arg>` of this checkout."""
    path = CONFIGS / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: the project's recipes are read from its configs/ folder (run from a "
                                "checkout, or an editable install)")
    spec = importlib.util.spec_from_file_location(f"mire_recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def apply(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any], where: str) -> ml_collections.ConfigDict:
    """Sets dotted keys of `cfg`; a key the config does not have is refused, naming `where` (e.g. "--set pretrain")."""
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            if part not in node:
                raise ValueError(f"{where}.{key}: the config has no {part!r}")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"{where}.{key}: the config has no setting {leaf!r}")
        if isinstance(value, list):
            value = tuple(value)
        node[leaf] = value
    return cfg


def results_view(settings: Mapping[str, Any], leave_out: tuple[str, ...] = ()) -> dict:
    """The settings flattened to dotted keys, without those of `leave_out` (and the keys under them): what a
    fingerprint records of them."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = list(value) if isinstance(value, tuple) else value
    walk("", settings)
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in leave_out)}


def config_view(cfg: ml_collections.ConfigDict) -> dict:
    """A training config as its fingerprint records it."""
    return results_view(cfg.to_dict(), TRAIN_NOT_RESULTS)


def _user(plan, section: str) -> dict:
    return dict(plan.options.sets.get(section, {}))


# Training --------------------------------------------------------------------------------------------------------

def pretrain_config(plan, *, manual_dir: str, image_root: str, data_dir: str, cache_dir: str, model_dir: str,
                    residual: bool = False, text_cache_dir: str = "") -> ml_collections.ConfigDict:
    """The pre-training config: the paper's recipe (or the demo's on the generated world) reading the ViD2R of
    `manual_dir`, from the model `model_dir`, with the residual head when `residual`."""
    preset = plan.preset
    if preset.world:
        cfg = _world_pretrain(plan.options.demo_plan, plan.options.seed)
        cfg.data.text_cache_dir = text_cache_dir
    else:
        cfg = load_config("mire_base_pretrain.py", preset.size)
    cfg.tokenizer = cfg.model.dir = model_dir
    cfg.model.residual = residual
    cfg.data.manual_dir, cfg.data.image_root, cfg.data.data_dir = manual_dir, image_root, data_dir
    cfg.data.vision_cache_dir = cache_dir
    cfg.data.splits = ("train",)
    apply(cfg, preset.train, f"preset {preset.name}")
    apply(cfg, preset.pretrain, f"preset {preset.name}")
    return apply(cfg, _user(plan, "pretrain"), "--set pretrain")


def finetune_config(plan, spec: FinetuneSpec, *, model_dir: str, data_dir: str) -> ml_collections.ConfigDict:
    """The fine-tuning config of set `spec`: its published recipe (the demo's for the world) from `model_dir`."""
    preset = plan.preset
    manual_dir, image_root = plan.layout.finetune_dirs(spec)
    if preset.world:
        cfg = _world_finetune(plan.options.demo_plan, plan.options.seed)
    else:
        cfg = load_config("mire_base_finetune.py", spec.key)
    cfg.tokenizer = cfg.model.dir = model_dir
    cfg.data.manual_dir, cfg.data.image_root, cfg.data.data_dir = manual_dir, image_root, data_dir
    apply(cfg, preset.train, f"preset {preset.name}")
    apply(cfg, preset.finetune, f"preset {preset.name}")
    apply(cfg, _user(plan, "finetune"), "--set finetune")
    return apply(cfg, _user(plan, f"finetune.{spec.key}"), f"--set finetune.{spec.key}")


def _world_pretrain(demo, seed: int) -> ml_collections.ConfigDict:
    """`make demo`'s pre-training (mire_jax/demo/stages.py: pretrain)."""
    from mire_jax.train.config import base_config
    c = base_config()
    steps = demo.pretrain_steps
    c.phase, c.temperature = "pretrain", 0.3
    c.total_steps, c.batch_size, c.negatives_group = steps, demo.batch_size, demo.batch_size
    c.lr, c.warmup_steps, c.weight_decay = 1e-3, max(1, steps // 10), 0.0
    c.log_every, c.checkpoint_every = max(1, steps // 30), steps
    c.seed, c.dropout = seed, False
    c.data.builder = "vid2r"
    c.data.query_maxlen, c.data.doc_maxlen, c.data.read_threads = demo.query_maxlen, demo.doc_maxlen, 4
    c.vision_cache.dtype = "float32"
    return c


def _world_finetune(demo, seed: int) -> ml_collections.ConfigDict:
    """Fine-tuning on the world's training pictures (finetune/train.jsonl; validation: new pictures of the same
    entities): the whole model but the frozen vision tower (text tower included: the costly part on a CPU), a sixth
    of pre-training's steps with half its batch."""
    from mire_jax.train.config import base_config
    c = base_config()
    steps, batch = max(2, demo.pretrain_steps // 6), max(2, demo.batch_size // 2)
    c.phase, c.temperature = "finetune", 0.8
    c.total_steps, c.batch_size, c.negatives_group = steps, batch, batch
    c.lr, c.warmup_steps, c.weight_decay = 1e-4, max(1, steps // 10), 0.0
    c.log_every, c.checkpoint_every = max(1, steps // 30), steps
    c.seed, c.dropout = seed, False
    c.data.builder = "image_question_jsonl"
    c.data.query_maxlen, c.data.doc_maxlen, c.data.read_threads = demo.query_maxlen, demo.doc_maxlen, 4
    from mire_jax.demo.world import SyntheticSizes
    seen = demo.sizes.get("n_seen_queries", SyntheticSizes().n_seen_queries)
    c.validation.split = "validation" if seen >= c.batch_size else ""  # a world too small for one batch: none
    return c


# Evaluation ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class EvalBase:
    """An evaluation's shared settings: EvalSettings fields and the loader's options."""
    settings: dict
    loader: dict


def eval_base(plan, spec: BenchmarkSpec) -> EvalBase:
    """configs/eval.py's settings of the benchmark (the demo's on the world), then the preset's and `--set eval` /
    `--set eval.<benchmark>` changes."""
    if spec.loader == "synthetic":
        demo = plan.options.demo_plan
        settings = {"k": 100, "query_maxlen": demo.eval_query_maxlen, "doc_maxlen": demo.doc_maxlen,
                    "batch_size": 32, "index": {"mode": "scann"}, "recall_sample": 128}
        loader = {}
    else:
        c = load_config("eval.py", spec.key)
        settings = {"k": c.k, "query_maxlen": c.query_maxlen, "doc_maxlen": c.doc_maxlen,
                    "attend_to_mask_tokens": c.attend_to_mask_tokens, "batch_size": c.batch_size,
                    "shard_size": c.shard_size, "seed": c.seed,
                    "index": {k: v for k, v in c.index.to_dict().items() if v is not None},
                    "recall_sample": c.index_recall_sample}
        loader = {key: c[key] for key in LOADER_FIELDS if c.get(key)}
    for where, changes in ((f"preset {plan.preset.name}", plan.preset.evaluation), ("--set eval", _user(plan, "eval")),
                           (f"--set eval.{spec.key}", _user(plan, f"eval.{spec.key}"))):
        for key, value in changes.items():
            if key in LOADER_FIELDS:
                loader[key] = value
            elif key in EVAL_FIELDS:
                settings[key] = value
            else:
                raise ValueError(f"{where}.{key}: not an evaluation setting ({', '.join(EVAL_FIELDS + LOADER_FIELDS)})")
    return EvalBase(settings, loader)


# The command line's changes, checked before anything runs ---------------------------------------------------------

def validate_sets(plan, benchmarks: Mapping[str, BenchmarkSpec], finetune: Mapping[str, FinetuneSpec]) -> None:
    """Refuses, naming it, a `--set` change no stage of the plan would apply: an unknown section, set, benchmark or
    setting (each recipe is built once here, so a misspelt key fails now, not hours into a run)."""
    sets = plan.options.sets
    for section in sets:
        kind, _, name = section.partition(".")
        if name and name not in (finetune if kind == "finetune" else benchmarks if kind == "eval" else {}):
            known = ", ".join(finetune if kind == "finetune" else benchmarks)
            raise ValueError(f"--set {section}: preset {plan.preset.name} has no {name!r} (known: {known})")
    pretrain_config(plan, manual_dir="", image_root="", data_dir="", cache_dir="", model_dir="")
    for spec in finetune.values():
        finetune_config(plan, spec, model_dir="", data_dir="")
    for spec in benchmarks.values():
        eval_base(plan, spec)
    if "vid2r" in sets:
        from mire_jax.vid2r.pipeline import PipelineOptions
        known = {f.name for f in dataclasses.fields(PipelineOptions)} - {"dialogues", "work_dir", "out", "kb"}
        unknown = sorted(set(sets["vid2r"]) - known)
        if unknown:
            raise ValueError(f"--set vid2r.{unknown[0]}: not a ViD2R option ({', '.join(sorted(known))})")
    if "world" in sets:
        from mire_jax.demo.world import SyntheticSizes
        known = {f.name for f in dataclasses.fields(SyntheticSizes)}
        unknown = sorted(set(sets["world"]) - known)
        if unknown or not plan.preset.world:
            raise ValueError(f"--set world.{(unknown or list(sets['world']))[0]}: " +
                             ("the generated world is only in the demo presets" if not plan.preset.world else
                              f"not a size of the generated world ({', '.join(sorted(known))})"))
