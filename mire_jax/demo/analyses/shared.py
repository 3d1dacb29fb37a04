"""What the analyses' pre-trainings take over from the demo's instead of computing again: the frozen text tower's
features of the records' questions (conversion variants: the same questions, other passages) or passages (the trap
world: the same passages, other questions), copied only where every record's text is the same; and the folder of a
pre-training's data set, caches and checkpoints, started afresh when what it was made from changed (the builder, the
caches and a finished training would otherwise be reused as they are)."""
from __future__ import annotations

import hashlib
import os
import shutil

from mire_jax.files import read_json, write_json

LENGTH_BUCKET = 16  # the analyses cache passages trimmed to a multiple of this (`fill_text_cache`)
FIELDS = {"queries": "question", "passages": "document"}


def demo_text_cache(run_out: str) -> str:
    """Where the demo's pre-training cached its text features (`mire_jax.demo.stages.pretrain`'s default)."""
    return os.path.join(run_out, "text_cache")


def same_texts(vid2r_a: str, vid2r_b: str, field: str) -> bool:
    """True when the two ViD2R files hold the same record ids, each id once, with the same `field` text."""
    a, b = read_json(vid2r_a), read_json(vid2r_b)
    texts_a = {r["id"]: r[field].strip() for r in a}
    texts_b = {r["id"]: r[field].strip() for r in b}
    return len(texts_a) == len(a) and len(texts_b) == len(b) and texts_a == texts_b


def seed_text_cache(source_cache: str, target_cache: str, part: str, source_vid2r: str, target_vid2r: str) -> bool:
    """Copies `part` ("queries" or "passages") of a text-feature cache into another run's cache when both runs'
    ViD2R files have the same texts for it; -> whether it did. The training then encodes only the other part (the
    cache's settings, checked by the training, still have to match)."""
    source, target = os.path.join(source_cache, part), os.path.join(target_cache, part)
    if os.path.exists(target) or not os.path.isdir(source):
        return False
    if not same_texts(source_vid2r, target_vid2r, FIELDS[part]):
        return False
    os.makedirs(target_cache, exist_ok=True)
    shutil.copytree(source, target + ".partial", dirs_exist_ok=True)
    os.replace(target + ".partial", target)
    return True


def run_inputs(vid2r_json: str, run, **extra) -> dict:
    """What a pre-training folder is made from: the ViD2R file's content, the start model's parameters file, the
    demo's plan and seed, and `extra`."""
    digest = hashlib.sha256()
    with open(vid2r_json, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    params = os.path.join(run.models["text_only"], "params.safetensors")
    plan = run.plan
    return {"vid2r_sha256": digest.hexdigest(), "start": [os.path.abspath(params), os.path.getsize(params),
                                                          os.stat(params).st_mtime_ns],
            "plan": [plan.pretrain_steps, plan.batch_size, plan.query_maxlen, plan.doc_maxlen], "seed": run.seed,
            **extra}


def fresh_run(folder: str, inputs: dict) -> str:
    """`folder`, emptied first when it was made from other inputs (its `inputs.json` records them); -> folder."""
    record = os.path.join(folder, "inputs.json")
    if os.path.exists(record) and read_json(record) == inputs:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    write_json(record, inputs, indent=2)
    return folder
