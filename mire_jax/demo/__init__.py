"""`make demo`: the whole path of the paper on a generated world, imported by nothing outside this folder.

  world/    the generated entities, pictures, dialogues, knowledge base and benchmarks
  warmup/   quick warm-ups that stand in for the published pre-trained towers
  vocab.py  a small WordPiece vocabulary for tiny random towers
  run.py    the orchestration: data, warm-ups, ViD2R, vision cache, pre-training, evaluation, export
  analyses/ `--analyses`: the analyses of `mire_jax.analyses` on the generated world (variants, trap world)
"""
