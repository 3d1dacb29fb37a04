"""What the analyses' pre-trainings take over from the demo's instead of computing again: the frozen text tower's
features of the records' questions (conversion variants: the same questions, other passages) or passages (the trap
world: the same passages, other questions), copied only where every record's text is the same."""
from __future__ import annotations

import os
import shutil

from mire_jax.files import read_json

LENGTH_BUCKET = 16  # the analyses cache passages trimmed to a multiple of this (`fill_text_cache`)
FIELDS = {"queries": "question", "passages": "document"}


def demo_text_cache(run_out: str) -> str:
    """Where the demo's pre-training cached its text features (`mire_jax.demo.run.pretrain`'s default)."""
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
