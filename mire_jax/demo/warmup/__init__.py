"""The two warm-ups of the demo path: the ColBERT projection on text pairs, and a small vision tower trained
CLIP-style against the frozen text tower; plus linear probes that check what the vision tower learnt."""
from mire_jax.demo.warmup.probe import attribute_probe, linear_probe_accuracy, vision_probe_features
from mire_jax.demo.warmup.text_projection import (
                                             TextPairCache,
                                             encode_text_pairs,
                                             text_projection_metrics,
                                             train_projection_on_cache,
                                             warmup_text_projection,
)
from mire_jax.demo.warmup.vision_contrastive import sentence_embeddings, warmup_vision

__all__ = ["TextPairCache", "attribute_probe", "encode_text_pairs", "linear_probe_accuracy", "sentence_embeddings",
           "text_projection_metrics", "train_projection_on_cache", "vision_probe_features", "warmup_text_projection",
           "warmup_vision"]
