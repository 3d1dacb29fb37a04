"""Foreign checkpoints <-> mire-jax params.

The published layout is the key set of the reference PyTorch model's `state_dict()`:

    model.bert.*                                BERT (Hugging Face BertModel, pooler included)
    model.linear.weight                         hidden -> dim projection, no bias
    vision_tower.vision_tower[.vision_model].*  CLIP vision model (the `vision_model.` level: transformers < 5)
    query_fusion.*                              the pooling head

Also imports separate Hugging Face checkpoints: a CLIP (vision) model, a ColBERTv2 folder (`bert.*` +
`linear.weight`) or a plain BERT. Run `python -m mire_jax.convert --help` for the command line.
"""
from mire_jax.convert.checkpoint_files import load_state_dict, save_state_dict
from mire_jax.convert.huggingface import from_hf_parts, hf_text_state, hf_vision_state
from mire_jax.convert.published import (
                                        CheckpointError,
                                        from_torch,
                                        make_config,
                                        param_shapes,
                                        published_entries,
                                        to_numpy,
                                        to_torch,
)

__all__ = ["CheckpointError", "from_hf_parts", "from_torch", "hf_text_state", "hf_vision_state", "load_state_dict",
           "make_config", "param_shapes", "published_entries", "save_state_dict", "to_numpy", "to_torch"]
