"""The text tower is chosen by the model config: BERT configs (and config.json files written before SentMIRe) load
unchanged, a ModernBERT config round-trips, and Hugging Face's two spellings of a ModernBERT config.json read alike."""
import dataclasses
import json

import pytest

from mire_jax.config import MIReConfig, ModernBertConfig

# config.json of transformers 4 (GTE-ModernColBERT-v1, ModernBERT-base with PyLate's two prefix tokens)
TRANSFORMERS4 = {"model_type": "modernbert", "vocab_size": 50370, "hidden_size": 768, "intermediate_size": 1152,
                 "num_hidden_layers": 22, "num_attention_heads": 12, "hidden_activation": "gelu",
                 "global_attn_every_n_layers": 3, "global_rope_theta": 160000.0, "local_attention": 128,
                 "local_rope_theta": 10000.0, "norm_eps": 1e-05, "norm_bias": False, "attention_bias": False,
                 "mlp_bias": False, "embedding_dropout": 0.0, "attention_dropout": 0.0, "mlp_dropout": 0.0,
                 "pad_token_id": 50283, "layer_norm_eps": 1e-05, "classifier_pooling": "mean"}


def test_config_json_written_before_sentmire_loads_unchanged():
    old = MIReConfig.tiny().to_dict()
    old.pop("modernbert")
    config = MIReConfig.from_dict(json.loads(json.dumps(old)))
    assert config == MIReConfig.tiny() and config.text_tower == "bert" and config.text is config.bert


def test_sentmire_config_round_trips_through_json():
    config = MIReConfig.tiny(text="modernbert")
    assert config.text_tower == "modernbert" and config.text is config.modernbert
    assert MIReConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.replace_text(vocab_size=7).modernbert.vocab_size == 7 and config.replace_text(vocab_size=7).bert == \
        config.bert


def test_both_hugging_face_spellings_read_alike():
    four = ModernBertConfig.from_dict(TRANSFORMERS4)
    five = dict(TRANSFORMERS4, layer_types=["full_attention" if i % 3 == 0 else "sliding_attention" for i in range(22)],
                rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 160000.0},
                                 "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})
    for key in ("global_attn_every_n_layers", "global_rope_theta", "local_rope_theta"):
        five.pop(key)
    assert ModernBertConfig.from_dict(five) == four == ModernBertConfig(vocab_size=50370)
    assert [four.is_global(i) for i in range(7)] == [True, False, False, True, False, False, True]
    assert four.window == 64


def test_an_explicit_layer_pattern_and_a_missing_local_base():
    odd = ModernBertConfig.from_dict(dict(TRANSFORMERS4, num_hidden_layers=3,
                                          layer_types=["sliding_attention", "full_attention", "full_attention"]))
    assert [odd.is_global(i) for i in range(3)] == [False, True, True]
    # transformers 4 reads a null local base as the global one
    assert ModernBertConfig.from_dict(dict(TRANSFORMERS4, local_rope_theta=None)).local_rope_theta == 160000.0


def test_unsupported_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="rope_type 'yarn' of the full_attention layers"):
        ModernBertConfig.from_dict(dict(TRANSFORMERS4, rope_parameters={"full_attention": {"rope_type": "yarn"}}))
    with pytest.raises(ValueError, match="layer_types names 2 layers"):
        dataclasses.replace(ModernBertConfig(), layer_types=("full_attention", "sliding_attention"))
    with pytest.raises(ValueError, match="rotary embeddings rotate pairs"):
        ModernBertConfig(hidden_size=60, num_attention_heads=4)
