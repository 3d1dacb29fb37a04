"""Training stages: pre-training on ViD2R (fusion-free, or with the residual head of the paper's fusion ablation) and
fine-tuning on one benchmark's training set, each with `mire_jax.train.loop.train` in the stage's work folder (so an
interrupted stage resumes from its last checkpoint, and a stage whose inputs changed starts from a clean folder).
"""
from __future__ import annotations

import os

from mire_jax.reproduce import recipes
from mire_jax.reproduce.graph import Inputs, Stage, StageContext
from mire_jax.reproduce.layout import FinetuneSpec
from mire_jax.reproduce.stage_data import MODEL_CODE, model_input

TRAIN_CODE = ("train", "data", "hosts.py", *MODEL_CODE, "reproduce/stage_train.py")


def _train(cfg, workdir: str) -> dict:
    from mire_jax.train.loop import train
    last = train(cfg, workdir)
    model = os.path.join(workdir, "model")
    if not os.path.exists(os.path.join(model, "params.safetensors")):
        raise RuntimeError(f"training in {workdir} stopped before its last step (preempted?): run the same command "
                           "again to resume from its last checkpoint")
    summary = {k: v for k, v in (last or {}).items() if isinstance(v, (int, float))}
    return {"model": model, "workdir": workdir, "summary": summary}


def pretrain_stage(name: str = "pretrain", *, vision_cache: str = "vision_cache", model_stage: str = "",
                   model_path: str = "", residual: bool = False, skip: str = "") -> Stage:
    """Pre-training on the ViD2R (and the features) of the `vision_cache` stage, from the starting model
    (`model_stage`'s output or `model_path`); `residual`: the fusion ablation's head (text added back)."""

    def config(ctx: StageContext):
        cache = ctx.output(vision_cache)
        model, _ = model_input(ctx, model_stage, model_path)
        return recipes.pretrain_config(ctx.plan, manual_dir=cache["manual_dir"], image_root=cache["image_root"],
                                       data_dir=cache["tfds"], cache_dir=cache["features"], model_dir=model,
                                       residual=residual, text_cache_dir=os.path.join(ctx.work_dir, "text_cache"))

    def inputs(ctx: StageContext) -> Inputs:
        _, model_files = model_input(ctx, model_stage, model_path)
        return Inputs(config=recipes.config_view(config(ctx)), files=model_files)

    def run(ctx: StageContext) -> dict:
        return _train(config(ctx), ctx.work_dir)

    kind = "with the residual head (fusion ablation)" if residual else "fusion-free (MIRe)"
    after = (vision_cache,) + ((model_stage,) if model_stage else ())
    return Stage(name, f"pre-training on ViD2R, {kind}", inputs, run, after=after, code=TRAIN_CODE, skip=skip,
                 tags=("train", "ablations") if residual else ("train",))


def finetune_stage(name: str, spec: FinetuneSpec, *, model_stage: str = "", model_path: str = "",
                   skip: str = "") -> Stage:
    """Fine-tuning on the training set of `spec` (its published recipe) from `model_stage`'s model or
    `model_path`."""

    def config(ctx: StageContext):
        model, _ = model_input(ctx, model_stage, model_path)
        return recipes.finetune_config(ctx.plan, spec, model_dir=model, data_dir=os.path.join(ctx.work_dir, "tfds"))

    def inputs(ctx: StageContext) -> Inputs:
        _, model_files = model_input(ctx, model_stage, model_path)
        _, image_root = ctx.layout.finetune_dirs(spec)
        return Inputs(config=recipes.config_view(config(ctx)), files={**ctx.layout.finetune_files(spec), **model_files},
                      present={"images": image_root} if image_root else {})

    def run(ctx: StageContext) -> dict:
        return _train(config(ctx), ctx.work_dir)

    start = "the pre-trained model" if model_stage else "the starting model (no pre-training)"
    return Stage(name, f"fine-tuning on {spec.key} from {start}", inputs, run,
                 after=(model_stage,) if model_stage else (), code=TRAIN_CODE, skip=skip, tags=("train",))
