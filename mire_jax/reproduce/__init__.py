"""Reproduce the paper with one command: `python -m mire_jax.reproduce --data-root D --out R [--preset ...]`.

The paper's pipeline as a graph of stages, each run when its inputs exist, recorded with the fingerprints of its
inputs so that a rerun skips what is done and reruns what changed, and a report that sets every number of ours beside
the paper's (docs/reproduce.md).

  plan             the core graph for a preset and a data root (vid2r -> vision_cache -> pretrain -> evaluations,
                   fine-tunings, ablations)
  stage_data, stage_train, stage_eval
                   the stage constructors (parametrised: a plug-in builds variants with them)
  graph, engine    Stage / Inputs / Plan, and the runner (fingerprints, skip, rerun, failure, several hosts)
  records, fingerprints, multihost
                   a stage's record and folders; input signatures and code versions; agreement between hosts
  layout, presets, recipes
                   the data root; the presets; each stage's settings from the project's configs/
  paper, comparisons, report_context, report_sections, report
                   the paper's numbers; our rows against them; the report
  registry         the extension point: `register_stages`, `register_section`, plug-in modules
  analyses         the project's own plug-in: modality reliance and pooling focus stages and sections (the
                   analyses of `mire_jax.analyses` that need no pre-training of their own)
"""
