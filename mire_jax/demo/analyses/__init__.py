"""`python -m mire_jax.demo --analyses`: the analyses of `mire_jax.analyses` on the generated world, after the demo.

  plan.py      what runs (conversion variants, trap-world seeds), the finished demo run, evaluation settings
  variants.py  analysis 1: the demo's ViD2R in each conversion variant, pre-trained like the demo's `mire`
  trap.py      analysis 4: the trap world (questions that mislead) and its MIRe / residual models per seed
  main.py      all four analyses (2: pooling focus and 3: modality reliance need only the demo's models) -> report
"""
from mire_jax.demo.analyses.main import run_analyses
from mire_jax.demo.analyses.plan import AnalysesPlan, DemoRun

__all__ = ["AnalysesPlan", "DemoRun", "run_analyses"]
