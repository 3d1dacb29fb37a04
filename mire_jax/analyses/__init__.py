"""The analyses a careful reader of the MIRe paper asks for, on any trained model folder and any loaded benchmark
(`mire_jax.eval.benchmarks.load_benchmark`, or the generated world's `load_synthetic`). Each entry function returns a
plain dict (title, what it measures, columns and rows, findings, the figure's path) that `report.section` renders.

  variants.py             R2P variants (responses alone, 1/2/3 hits, the response's position, plain concatenation):
                          `compose_variants` writes their ViD2R files, `conversion_variants` tabulates the
                          pre-trained models zero-shot
  focus.py                where the pooling looks: attention on the object (when masks are known) per query type,
                          its entropy, a heatmap gallery (`pooling_focus`)
  reliance.py             the score's fall with shuffled images versus a generic question, and a text-dominance
                          measure per model (`modality_reliance`)
  dominance.py            models trained with several seeds compared per query group, with the spread
                          (`text_dominance`)
  runs.py                 the retrieval runs they share (through `mire_jax.eval.runner`)
  plots.py, report.py     figures; markdown + JSON report

On the generated world, `python -m mire_jax.demo --analyses` runs all four (`mire_jax.demo.analyses`).
"""
from mire_jax.analyses.dominance import text_dominance
from mire_jax.analyses.focus import pooling_focus
from mire_jax.analyses.reliance import modality_reliance
from mire_jax.analyses.report import parts, section, write_report
from mire_jax.analyses.variants import VARIANTS, compose_variants, conversion_variants

__all__ = ["VARIANTS", "compose_variants", "conversion_variants", "modality_reliance", "parts", "pooling_focus", "section",
           "text_dominance", "write_report"]
