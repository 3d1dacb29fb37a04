"""Presets of `python -m mire_jax.reproduce --preset NAME`: which data, which model size, and how far each recipe
is shrunk.

  full        the paper: the published recipes (configs/mire_base_pretrain.py, configs/mire_base_finetune.py,
              configs/eval.py) unchanged, on the real data, CLIP ViT-B/32 (the paper's "base" rows)
  large       the same with CLIP ViT-L/14-336 (the paper's "large" rows)
  smoke       the paper's graph on the real data layout with every recipe cut to a few steps and short sequences:
              checks in minutes that a data root is complete and every stage runs (numbers are meaningless)
  demo        the generated world of `make demo` (data, warm-ups, ViD2R, pre-training, fine-tuning, evaluations),
              its numbers reported as "generated world" rows with no paper numbers; a whole report in minutes
  demo-quick  the same at the sizes of `python -m mire_jax.demo --quick` (the tests)

`--set SECTION.KEY=VALUE` changes one setting on top of a preset, e.g. `--set finetune.remuq.lr=1e-4 --set eval.k=50`:
  pretrain.KEY, finetune.KEY, finetune.<set>.KEY   a field of the training config (mire_jax/train/config.py)
  eval.KEY, eval.<benchmark>.KEY                   an EvalSettings field or a loader option (split, image_root,
                                                   passages_split)
  vid2r.KEY                                        a PipelineOptions field of mire_jax.vid2r
  world.KEY                                        a size of the generated world (demo presets)
Every change is checked against its recipe before anything runs.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

SECTIONS = ("pretrain", "finetune", "eval", "vid2r", "world")


@dataclasses.dataclass(frozen=True)
class Preset:
    """What a preset changes.

    Attributes:
      name, description: for the command line and the report.
      world: the generated world instead of the paper's data; `demo_plan` names the demo's sizes ("full" | "quick").
      size: the vision tower of the paper's rows ("base" | "large").
      train: dotted overrides of every training config (pre-training and fine-tuning).
      pretrain, finetune: dotted overrides of the pre-training / every fine-tuning config.
      evaluation: EvalSettings fields of every evaluation.
      vid2r: `mire_jax.vid2r.pipeline.PipelineOptions` fields.
      protocols: the protocols of the main evaluations (the ablations use "published", the paper's).
      scratch_sets: fine-tuning sets also fine-tuned without pre-training (the paper's "w/o pre-training" row).
      recipes_changed: a line for the report when the preset departs from the paper's recipes.
    """
    name: str
    description: str
    world: bool = False
    demo_plan: str = ""
    size: str = "base"
    train: dict = dataclasses.field(default_factory=dict)
    pretrain: dict = dataclasses.field(default_factory=dict)
    finetune: dict = dataclasses.field(default_factory=dict)
    evaluation: dict = dataclasses.field(default_factory=dict)
    vid2r: dict = dataclasses.field(default_factory=dict)
    protocols: tuple[str, ...] = ("published", "textbook")
    scratch_sets: tuple[str, ...] = ("okvqa_gs", "remuq")
    recipes_changed: str = ""


_SMOKE_TRAIN = {"epochs": 0, "total_steps": 2, "batch_size": 2, "negatives_group": 2, "warmup_steps": 1,
                "log_every": 1, "checkpoint_every": 2, "validation.holdout": 0, "validation.split": "",
                "data.query_maxlen": 16, "data.doc_maxlen": 48, "data.read_threads": 2, "vision_cache.batch_size": 8,
                "vision_cache.dtype": "float32", "vision_cache.read_threads": 2}

PRESETS = {
    "full": Preset("full", "the paper's recipes on the real data, CLIP ViT-B/32 (base)"),
    "large": Preset("large", "the paper's recipes on the real data, CLIP ViT-L/14-336 (large)", size="large"),
    "smoke": Preset("smoke", "the paper's graph on the real data layout, every recipe cut to a few steps",
                    train=_SMOKE_TRAIN,
                    evaluation={"k": 10, "query_maxlen": 32, "doc_maxlen": 64, "batch_size": 8, "recall_sample": 16,
                                "shard_size": 1000},
                    vid2r={"query_maxlen": 32, "doc_maxlen": 64, "batch_size": 8, "nouns": "heuristic",
                           "progress": False},
                    recipes_changed="smoke: every training cut to 2 steps of 2 examples, sequences shortened, "
                                    "evaluation at k = 10 with queries of 32 and passages of 64 word pieces"),
    "demo": Preset("demo", "the generated world of make demo, at its sizes", world=True, demo_plan="full",
                   scratch_sets=("world",),
                   recipes_changed="generated world: small towers warmed up on the world, short trainings"),
    "demo-quick": Preset("demo-quick", "the generated world at the sizes of the demo's --quick", world=True,
                         demo_plan="quick", scratch_sets=("world",),
                         recipes_changed="generated world at --quick sizes: a few steps each"),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def parse_value(text: str) -> Any:
    """A --set value: JSON when it parses (numbers, true/false, null, lists), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_sets(items: list[str], names: dict[str, set[str]] | None = None) -> dict[str, dict[str, Any]]:
    """`--set SECTION[.NAME].KEY=VALUE` items -> {"pretrain": {...}, "finetune": {...}, "finetune.remuq": {...},
    "eval": {...}, "eval.remuq": {...}, ...}. `names`: per section, the names that address one of its items (the
    fine-tuning sets, the benchmarks). A malformed item or an unknown section is refused by name."""
    names = names or {}
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE (sections: {', '.join(SECTIONS)})")
        section, rest = key.split(".", 1)
        if section not in SECTIONS:
            raise ValueError(f"--set {item!r}: unknown section {section!r}; known: {', '.join(SECTIONS)}")
        first, dot, field = rest.partition(".")
        if dot and first in names.get(section, ()):
            section, rest = f"{section}.{first}", field
        out.setdefault(section, {})[rest] = parse_value(value)
    return out
