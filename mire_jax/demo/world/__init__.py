"""A generated multimodal retrieval benchmark for the demo and for tests.

Pictured entities (a shape of some colour and pattern on a background) have invented names and facts;
their passages describe the appearance in words. Zero-shot queries ask generic questions ("Who designed
the object in this picture?") about entities whose attribute combinations never occur in training, so a
text-only retriever is at chance while one that reads the picture can find the passage.

    from mire_jax.demo.world import generate
    manifest = generate("runs/demo/data", seed=0)          # or: python -m mire_jax.demo.world --out DIR
    bench = load_synthetic("runs/demo/data", "zeroshot")   # a mire_jax.eval.benchmarks.Benchmark
    masks = object_masks("runs/demo/data")                 # image path -> where the object is, [size, size]

`generate(..., questions="trap")` writes the paper's text-dominance trap instead of generic questions (writer.py).
"""

from mire_jax.demo.world.attributes import Appearance, AttributeSpace
from mire_jax.demo.world.benchmark import load_synthetic
from mire_jax.demo.world.world import SyntheticSizes
from mire_jax.demo.world.writer import generate, object_masks, verify

__all__ = ["Appearance", "AttributeSpace", "SyntheticSizes", "generate", "load_synthetic", "object_masks", "verify"]
