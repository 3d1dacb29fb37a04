"""Analysis 4 on the generated world: the text-dominance trap of the paper's introduction. The trap world is the
demo's world (same seed and sizes: the same pictures, passages and knowledge base) with the questions of
`generate(..., questions="trap")`: the dialogues name the pictured entity's kind, and each zero-shot question names
the right kind, says "object", or names a wrong kind. MIRe and the residual-fusion ablation are pre-trained on its
ViD2R with several seeds."""
from __future__ import annotations

import os

from mire_jax.demo.analyses.plan import AnalysesPlan, DemoRun
from mire_jax.demo.analyses.shared import LENGTH_BUCKET, demo_text_cache, fresh_run, run_inputs, seed_text_cache
from mire_jax.demo.stages import pretrain


def build_trap_world(run: DemoRun) -> tuple[str, str]:
    """-> (the trap world's folder, its ViD2R folder). The responses, and so the knowledge-base hits, are the demo's:
    its hits are reused instead of searched again."""
    import json

    from mire_jax.demo.world import generate
    from mire_jax.vid2r.pipeline import PipelineOptions
    from mire_jax.vid2r.pipeline import run as build

    manifest = json.loads(open(os.path.join(run.data, "manifest.json"), encoding="utf-8").read())
    data = os.path.join(run.analyses, "trap_world")
    trap = generate(data, seed=manifest["seed"], questions="trap", progress=False, **manifest["sizes"])
    if trap["images"]["sha256"] != manifest["images"]["sha256"]:
        raise RuntimeError(f"{data}: the trap world's pictures differ from the demo's ({run.data}); they must be the "
                           "same for the demo's vision cache to serve it")
    vid2r = os.path.join(run.analyses, "trap_vid2r")
    build(PipelineOptions(dialogues=[os.path.join(data, "llava", "synthetic_dialogues.json")], work_dir=vid2r,
                          out=os.path.join(vid2r, "ViD2R.json"), kb=os.path.join(data, "kb", "Wiki6M_synthetic.jsonl"),
                          hits_file=os.path.join(run.vid2r, "hits.jsonl"), save_negative=False, progress=False),
          log=lambda s: None)
    return data, vid2r


def train_trap_models(run: DemoRun, plan: AnalysesPlan, vid2r: str) -> dict[str, list[str]]:
    """-> {"mire": [model folder per seed], "mire_residual": [...]}, pre-trained as the demo's models."""


    work = fresh_run(os.path.join(run.analyses, "trap_train"),
                     run_inputs(os.path.join(vid2r, "ViD2R.json"), run, length_bucket=LENGTH_BUCKET))
    tfds, text_cache = os.path.join(work, "tfds"), os.path.join(work, "text_cache")
    seed_text_cache(demo_text_cache(run.out), text_cache, "passages", os.path.join(run.vid2r, "ViD2R.json"),
                    os.path.join(vid2r, "ViD2R.json"))
    models: dict[str, list[str]] = {"mire": [], "mire_residual": []}
    for seed in plan.trap_seeds:
        for name, residual in (("mire", False), ("mire_residual", True)):
            models[name].append(pretrain(f"{name} on the trap world, seed {seed}", residual, vid2r, run.images,
                                         run.models["text_only"], tfds, run.vision_cache,
                                         os.path.join(work, f"{name}_seed{seed}"), run.plan,
                                         seed, text_cache_dir=text_cache, length_bucket=LENGTH_BUCKET))
    return models
