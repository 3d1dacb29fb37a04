"""The paper's pipeline as a graph of stages, for a preset and a data root:

    vid2r -> vision_cache -> pretrain -> zeroshot/<benchmark>                     (the zero-shot table)
                                      -> finetune/<set> -> finetuned/<set>       (the fine-tuned table)
    init model ---------------------> finetune_scratch/<set> -> finetuned_scratch/<set>   ("w/o pre-training")
                         pretrain -> ablations/<benchmark>  (text-only, w/o E_t, w/o E_g & E_m, shuffled, blank)
           vision_cache -> pretrain_residual -> residual/<benchmark>              ("w/ Residual")

Benchmarks: OKVQA-GS, OKVQA-WK11M, ReMuQ, E-VQA, InfoSeek, A-OKVQA (each stage runs when its files are in the data
root). With --init the published checkpoint (stage `init`) takes the place of `pretrain`, and the pre-trainings
are skipped. --preset demo runs the same graph on the generated world, after `world` and `init_model`.
Plug-ins (`mire_jax.reproduce.registry`) add their stages after these.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from mire_jax.reproduce import recipes, registry
from mire_jax.reproduce.graph import Plan
from mire_jax.reproduce.layout import (
    PAPER_BENCHMARKS,
    PAPER_FINETUNE,
    WORLD_BENCHMARKS,
    WORLD_FINETUNE,
    DataLayout,
)
from mire_jax.reproduce.presets import Preset
from mire_jax.reproduce.stage_data import init_model_stage, init_stage, vid2r_stage, vision_cache_stage, world_stage
from mire_jax.reproduce.stage_eval import ABLATION_RUNS, EvalRun, eval_stage, main_runs
from mire_jax.reproduce.stage_train import finetune_stage, pretrain_stage


@dataclasses.dataclass
class Options:
    """The command line's choices that shape the plan.

    Attributes:
      init: a published checkpoint (model folder, training workdir, or .pth/.bin/.safetensors) to start from
        instead of pre-training ("" = pre-train).
      init_vision: the CLIP tower of a checkpoint file ("base" | "large").
      tokenizer: the vocabulary of a checkpoint file ("" = the data root's starting model's).
      init_config: a mire-jax config.json giving the sizes of a checkpoint file ("" = `init_vision`'s base/large).
      sets: the `--set` changes ({section: {key: value}}).
      seed: the generated world's seed.
      demo_plan: the demo's sizes and steps (`mire_jax.demo.stages.DemoPlan`), for the world presets.
      protocols: the protocols of the main evaluations (None: the preset's).
    """
    init: str = ""
    init_vision: str = "base"
    tokenizer: str = ""
    init_config: str = ""
    sets: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    demo_plan: Any = None
    protocols: tuple[str, ...] | None = None


def build_plan(preset: Preset, layout: DataLayout, out: str, options: Options) -> Plan:
    """The stages of one run, core ones then the plug-ins'."""
    if preset.world and options.demo_plan is None:
        from mire_jax.demo.stages import DemoPlan
        options.demo_plan = DemoPlan.quick() if preset.demo_plan == "quick" else DemoPlan.full()
    plan = Plan(preset, layout, os.path.abspath(out), options)
    (_world_graph if preset.world else _paper_graph)(plan)
    registry.load_plugins()
    for factory in registry.stage_factories():
        for stage in factory(plan) or ():
            plan.add(stage)
    return plan


def _protocols(plan: Plan) -> tuple[str, ...]:
    return tuple(plan.options.protocols or plan.preset.protocols)


def _model_graph(plan: Plan, benchmarks: dict, finetune: dict, start: str, pretrained: str, init_skip: str) -> None:
    """What follows the vision cache in both graphs: the pre-trainings, evaluations and fine-tunings."""
    start_stage = start if plan.has(start) else ""
    start_path = "" if start_stage else start
    pretrain_skip = init_skip
    plan.add(pretrain_stage("pretrain", model_stage=start_stage, model_path=start_path, skip=pretrain_skip))
    protocols = _protocols(plan)
    for key, spec in benchmarks.items():
        plan.add(eval_stage(f"zeroshot/{key}", spec, main_runs(protocols), model_stage=pretrained,
                            title=f"zero-shot evaluation on {key}", tags=("zeroshot",)))
    for key, spec in finetune.items():
        plan.add(finetune_stage(f"finetune/{key}", spec, model_stage=pretrained))
        plan.add(eval_stage(f"finetuned/{key}", benchmarks[spec.benchmark], main_runs(protocols),
                            model_stage=f"finetune/{key}", title=f"evaluation after fine-tuning on {key}",
                            tags=("finetuned",)))
    for key in plan.preset.scratch_sets:
        spec = finetune[key]
        plan.add(finetune_stage(f"finetune_scratch/{key}", spec, model_stage=start_stage, model_path=start_path))
        plan.add(eval_stage(f"finetuned_scratch/{key}", benchmarks[spec.benchmark], main_runs(protocols),
                            model_stage=f"finetune_scratch/{key}",
                            title=f"evaluation after fine-tuning on {key} without pre-training",
                            tags=("finetuned",)))
    for key, spec in benchmarks.items():
        plan.add(eval_stage(f"ablations/{key}", spec, ABLATION_RUNS, model_stage=pretrained,
                            title=f"inference ablations and image probes on {key}", tags=("ablations",)))
    plan.add(pretrain_stage("pretrain_residual", model_stage=start_stage, model_path=start_path, residual=True,
                            skip=init_skip and init_skip.replace("replaces pre-training",
                                                                 "replaces pre-training; the residual ablation needs "
                                                                 "pre-training of its own")))
    for key, spec in benchmarks.items():
        plan.add(eval_stage(f"residual/{key}", spec, [EvalRun("mire")], model_stage="pretrain_residual",
                            title=f"the residual-fusion model on {key}", tags=("ablations",)))


def _init(plan: Plan) -> tuple[str, str]:
    """(the stage holding the pre-trained model, the reason pre-training is skipped or "")."""
    if not plan.options.init:
        return "pretrain", ""
    plan.add(init_stage(plan.options.init, vision=plan.options.init_vision, tokenizer=plan.options.tokenizer,
                        config=plan.options.init_config))
    return "init", f"--init {plan.options.init} replaces pre-training"


def _paper_graph(plan: Plan) -> None:
    layout = plan.layout
    start = layout.init_model(plan.preset.size)
    pretrained, init_skip = _init(plan)
    prebuilt = layout.vid2r_prebuilt()
    use_prebuilt = not layout.dialogues() and os.path.exists(prebuilt)
    plan.add(vid2r_stage(dialogues=lambda ctx: ctx.layout.dialogues(), knowledge_base=lambda ctx:
                         ctx.layout.knowledge_base(), model_path=start,
                         skip=f"no dialogues in {layout.path('llava')}: the ViD2R of {prebuilt} is used" if use_prebuilt
                         else init_skip))
    plan.add(vision_cache_stage(vid2r="" if use_prebuilt else "vid2r", prebuilt=prebuilt if use_prebuilt else "",
                                image_root=lambda ctx: ctx.layout.vid2r_images(), model_path=start, skip=init_skip))
    _model_graph(plan, PAPER_BENCHMARKS, PAPER_FINETUNE, start, pretrained, init_skip)
    recipes.validate_sets(plan, PAPER_BENCHMARKS, PAPER_FINETUNE)


def _world_graph(plan: Plan) -> None:
    plan.add(world_stage())
    plan.add(init_model_stage())
    pretrained, init_skip = _init(plan)
    world = plan.layout.world()
    plan.add(vid2r_stage(dialogues=lambda ctx: [os.path.join(world, "llava", "synthetic_dialogues.json")],
                         knowledge_base=lambda ctx: os.path.join(world, "kb", "Wiki6M_synthetic.jsonl"),
                         model_stage="init_model", after=("world",), skip=init_skip,
                         options={"doc_maxlen": plan.options.demo_plan.doc_maxlen, "query_maxlen": 64,
                                  "batch_size": 64, "save_negative": False}))
    plan.add(vision_cache_stage(image_root=lambda ctx: os.path.join(world, "images"), model_stage="init_model",
                                skip=init_skip))
    _model_graph(plan, WORLD_BENCHMARKS, WORLD_FINETUNE, "init_model", pretrained, init_skip)
    recipes.validate_sets(plan, WORLD_BENCHMARKS, WORLD_FINETUNE)
