"""Analysis 1 on the generated world: the demo's ViD2R composed in each conversion variant (same filtered records,
same hits) and the pooling head pre-trained on each as the demo's `mire` (same init, seed and steps; the questions'
text features taken over from the demo, the passages' encoded trimmed to their length: the same up to float
rounding)."""
from __future__ import annotations

import os

from mire_jax.analyses.variants import PUBLISHED, VARIANTS, compose_variants
from mire_jax.demo.analyses.plan import AnalysesPlan, DemoRun
from mire_jax.demo.analyses.shared import LENGTH_BUCKET, demo_text_cache, fresh_run, run_inputs, seed_text_cache
from mire_jax.demo.stages import pretrain


def train_variants(run: DemoRun, plan: AnalysesPlan) -> dict[str, str]:
    """-> variant name -> pre-trained model folder. The published variant is the demo's own `mire` (the same ViD2R,
    init, seed and steps), not trained again."""


    root = os.path.join(run.analyses, "variants")
    wanted = {name: VARIANTS[name] for name in plan.variants if name != PUBLISHED}
    paths = compose_variants(run.vid2r, os.path.join(run.data, "kb", "Wiki6M_synthetic.jsonl"), root, wanted,
                             progress=False)
    models = {}
    for name in plan.variants:
        if name == PUBLISHED:
            models[name] = run.models["mire"]
            continue
        folder = os.path.dirname(paths[name])
        work = fresh_run(os.path.join(folder, "run"), run_inputs(paths[name], run, length_bucket=LENGTH_BUCKET))
        text_cache = os.path.join(work, "text_cache")
        seed_text_cache(demo_text_cache(run.out), text_cache, "queries", os.path.join(run.vid2r, "ViD2R.json"),
                        paths[name])
        models[name] = pretrain(f"{name} (conversion variant)", False, folder, run.images, run.models["text_only"],
                                os.path.join(work, "tfds"), run.vision_cache, os.path.join(work, "train"),
                                run.plan, run.seed, text_cache_dir=text_cache, length_bucket=LENGTH_BUCKET)
    return models
