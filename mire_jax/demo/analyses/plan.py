"""What `python -m mire_jax.demo --analyses` runs on top of the demo: which conversion variants it pre-trains, how many
seeds the trap world's two models get, and the evaluation settings every analysis shares."""
from __future__ import annotations

import dataclasses
import os

from mire_jax.analyses.variants import PUBLISHED, VARIANTS


@dataclasses.dataclass(frozen=True)
class AnalysesPlan:
    """variants: conversion variants to pre-train (PUBLISHED is the demo's own `mire` model, not trained again; by
    default every one but `response_last`, to keep within the time budget: `response_first` moves the response, and
    `plain_concatenation` differs from it by the hits' cut alone); trap_seeds: training seeds of MIRe and of the
    residual ablation on the trap world; gallery: heatmaps shown."""
    variants: tuple[str, ...] = tuple(name for name in VARIANTS if name != "response_last")
    trap_seeds: tuple[int, ...] = (0, 1, 2)
    gallery: int = 6

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown conversion variant(s) {unknown}; known: {', '.join(VARIANTS)}")
        if not self.trap_seeds:
            raise ValueError("trap_seeds: at least one seed")

    @classmethod
    def full(cls) -> "AnalysesPlan":
        return cls()

    @classmethod
    def quick(cls) -> "AnalysesPlan":
        return cls(variants=("response_only", PUBLISHED), trap_seeds=(0, 1), gallery=2)


@dataclasses.dataclass(frozen=True)
class DemoRun:
    """The finished demo the analyses build on: its folders and models (name -> model folder: text_only, mire,
    mire_residual), its plan (a `mire_jax.demo.stages.DemoPlan`) and seed."""
    out: str
    data: str
    vid2r: str
    images: str
    vision_cache: str
    models: dict
    plan: object
    seed: int

    @property
    def analyses(self) -> str:
        return os.path.join(self.out, "analyses")


def eval_settings(run: DemoRun):
    """The analyses' evaluation: the demo's query and passage lengths, exact MaxSim search over the small corpus (no
    index error in any comparison)."""
    from mire_jax.eval.runner import EvalSettings
    return EvalSettings(mode="mire", protocol="published", k=100, query_maxlen=run.plan.eval_query_maxlen,
                        doc_maxlen=run.plan.doc_maxlen, batch_size=32, index={"mode": "exact"}, exact=True)
