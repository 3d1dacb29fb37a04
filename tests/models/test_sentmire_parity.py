"""float32 parity of SentMIRe (the ModernBERT text tower, PyLate's projection and the published SentMIRe paths) with
the PyTorch oracle (tests/sentmire_oracle.py, Hugging Face `ModernBertModel`), on a tiny config of odd widths whose
local window (2 either way) is much shorter than the sequences, so local attention changes the numbers."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from sentmire_oracle import SentMIReOracle, tiny_modernbert_config
from torch_oracle import maxsim as torch_maxsim
from torch_oracle import randomise_, tiny_hf_configs
from transformers import ModernBertModel

import mire_jax
from mire_jax import convert
from mire_jax.config import MIReConfig
from mire_jax.models.modernbert import ModernBert

TOL = 1e-5
B, L_Q, L_D = 3, 11, 17
N_PASSAGES = 9


def _ids(rng, vocab, rows, length, lengths):
    ids = rng.integers(3, vocab, (rows, length)).astype(np.int32)
    mask = (np.arange(length)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
    return ids, mask


def _inputs(config, seed=0):
    rng = np.random.default_rng(seed)
    vocab = config.text.vocab_size
    q_ids, q_mask = _ids(rng, vocab, B, L_Q, [L_Q, 6, 2])   # a padded query, and one padded far past the window
    d_ids, d_mask = _ids(rng, vocab, B, L_D, [L_D, 9, 3])
    keep = d_mask.astype(bool) & (rng.random((B, L_D)) > 0.2)
    pixels = rng.normal(size=(B, config.vision.image_size, config.vision.image_size, 3)).astype(np.float32)
    return q_ids, q_mask, d_ids, d_mask, keep, pixels


def _pair(projection_bias: bool):
    """(oracle, config, params): the oracle's random weights imported through the published keys."""
    _, vision, head = tiny_hf_configs()
    torch.manual_seed(0)
    oracle = SentMIReOracle(tiny_modernbert_config(), vision, head, projection_bias=projection_bias).eval()
    randomise_(oracle, seed=3)
    sd = {k: v.numpy() for k, v in oracle.state_dict().items()}
    config, params = convert.from_torch(sd, oracle.model.config.to_dict(), vision.to_dict(), head)
    return oracle, config, params


@pytest.fixture(scope="module")
def pair():
    return _pair(projection_bias=False)


def _t(x):
    return torch.from_numpy(np.asarray(x))


def _close(a, b, tol=TOL):
    diff = float(np.max(np.abs(np.asarray(a) - (b.detach().numpy() if torch.is_tensor(b) else b))))
    assert diff <= tol, f"max abs diff {diff:.2e} > {tol:.0e}"
    return diff


def test_hugging_face_config_reads_as_the_tiny_config(pair):
    _, config, _ = pair
    want = MIReConfig.tiny(text="modernbert").modernbert
    assert config.modernbert == dataclasses.replace(want, max_position_embeddings=512)
    assert [config.modernbert.is_global(i) for i in range(3)] == [True, False, False]


def test_tower_equals_modernbert_model(pair):
    """Every position of the last hidden state, padded ones included (a padded row far from any real token has no
    key in its window: both spread it uniformly). The hidden states leave the final LayerNorm at magnitudes near 5,
    so the tolerance is 1e-5 of the largest: float32 rounding (libm's cos, summation orders) is amplified there."""
    oracle, config, params = pair
    _, _, d_ids, d_mask, _, _ = _inputs(config)
    ours = ModernBert(config.modernbert).apply({"params": params["bert"]}, d_ids, d_mask)[0]
    with torch.no_grad():
        want = oracle.model(input_ids=_t(d_ids).long(), attention_mask=_t(d_mask).long()).last_hidden_state
    _close(ours, want, tol=TOL * max(1.0, float(want.abs().max())))


@pytest.mark.parametrize("pretraining", [False, True])
def test_query_with_image_from_pixels_and_from_features(pair, pretraining):
    oracle, config, params = pair
    q_ids, q_mask, _, _, _, pixels = _inputs(config, seed=1)
    with torch.no_grad():
        want = oracle.encode_query(_t(q_ids).long(), _t(q_mask).long(), _t(pixels), pretraining=pretraining)
        feats = oracle.vision_tower(_t(pixels).permute(0, 3, 1, 2))
    _close(mire_jax.encode_query(config, params, q_ids, q_mask, pixels, pretraining=pretraining), want)
    got = mire_jax.encode_query(config, params, q_ids, q_mask, vision_features=feats.numpy(), pretraining=pretraining)
    _close(got, want)


@pytest.mark.parametrize("projection_bias", [False, True], ids=["no-bias", "dense-bias"])
def test_text_only_query_and_passages(pair, projection_bias):
    """Also with a Dense layer that has a bias (PyLate's ModernColBERTs have none; the import reads it off the keys)."""
    oracle, config, params = _pair(True) if projection_bias else pair
    assert config.modernbert.projection_bias == projection_bias
    q_ids, q_mask, d_ids, d_mask, keep, _ = _inputs(config, seed=2)
    with torch.no_grad():
        want_q = oracle.encode_query(_t(q_ids).long(), _t(q_mask).long())
        want_d = oracle.encode_doc(_t(d_ids).long(), _t(d_mask).long(), _t(keep))
    _close(mire_jax.encode_query(config, params, q_ids, q_mask), want_q)
    got_d, got_keep = mire_jax.encode_doc(config, params, d_ids, d_mask, keep)
    _close(got_d, want_d)
    assert np.array_equal(np.asarray(got_keep), keep)


def test_scores_rank_passages_alike(pair):
    oracle, config, params = pair
    q_ids, q_mask, _, _, _, pixels = _inputs(config, seed=4)
    rng = np.random.default_rng(5)
    d_ids, d_mask = _ids(rng, config.text.vocab_size, N_PASSAGES, L_D, rng.integers(3, L_D + 1, N_PASSAGES))
    keep = d_mask.astype(bool)
    with torch.no_grad():
        q = oracle.encode_query(_t(q_ids).long(), _t(q_mask).long(), _t(pixels))
        d = oracle.encode_doc(_t(d_ids).long(), _t(d_mask).long(), _t(keep))
        want = torch_maxsim(q, d, _t(keep)).numpy()
    ours_q = mire_jax.encode_query(config, params, q_ids, q_mask, pixels)
    ours_d, _ = mire_jax.encode_doc(config, params, d_ids, d_mask, keep)
    got = np.asarray(mire_jax.maxsim(ours_q, ours_d, keep))
    _close(got, want, tol=1e-4)
    assert (np.argsort(-got, axis=1) == np.argsort(-want, axis=1)).all()
    assert np.ptp(want, axis=1).min() > 1e-3  # the passages are told apart: the ranking test can fail


def test_local_attention_matters(pair):
    """With every layer global, the same weights give other hidden states: the window is exercised above."""
    _, config, params = pair
    _, _, d_ids, d_mask, _, _ = _inputs(config)
    local = ModernBert(config.modernbert).apply({"params": params["bert"]}, d_ids, d_mask)[0]
    everywhere = dataclasses.replace(config.modernbert, layer_types=("full_attention",) * 3)
    full = ModernBert(everywhere).apply({"params": params["bert"]}, d_ids, d_mask)[0]
    assert float(jnp.max(jnp.abs(local - full))) > 1e-2


def test_gradients_through_the_tower_equal_torch(pair):
    """The backward pass (the blocked attention's, with the window) against PyTorch autograd."""
    oracle, config, params = pair
    _, _, d_ids, d_mask, keep, _ = _inputs(config, seed=6)
    weights = np.random.default_rng(7).normal(size=(B, L_D, config.head.dim)).astype(np.float32)

    def loss(p):
        d = mire_jax.api.model(config).apply({"params": p}, d_ids, d_mask, jnp.asarray(keep),
                                             method=mire_jax.api.MIRe.encode_doc)
        return jnp.sum(d * weights)
    grads = jax.grad(loss)(params)
    oracle.zero_grad()
    (oracle.encode_doc(_t(d_ids).long(), _t(d_mask).long(), _t(keep)) * _t(weights)).sum().backward()
    torch_grads = dict(oracle.named_parameters())
    for key, path in (("model.layers.1.attn.Wqkv.weight", ("bert", "layer_1", "attn", "Wqkv", "kernel")),
                      ("model.layers.0.mlp.Wi.weight", ("bert", "layer_0", "mlp", "Wi", "kernel")),
                      ("model.embeddings.norm.weight", ("bert", "embeddings_norm", "scale")),
                      ("dense.weight", ("linear", "kernel"))):
        got = grads
        for p in path:
            got = got[p]
        want = torch_grads[key].grad.numpy()
        _close(np.asarray(got), want.T if want.ndim == 2 else want, tol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_oracle_text_tower_equals_hugging_face_sdpa(pair):
    """The oracle (eager attention) against Hugging Face's ModernBertModel on its SDPA path, loaded with the same
    weights, and its paths against the model's output projected by hand: the oracle is wired as published."""
    oracle, config, _ = pair
    q_ids, q_mask, d_ids, d_mask, keep, _ = _inputs(config, seed=8)
    sdpa = ModernBertModel(tiny_modernbert_config(attn_implementation="sdpa")).eval()
    sdpa.load_state_dict({k[len("model."):]: v for k, v in oracle.state_dict().items() if k.startswith("model.")})
    with torch.no_grad():
        for ids, mask in ((q_ids, q_mask), (d_ids, d_mask)):
            eager = oracle.model(input_ids=_t(ids).long(), attention_mask=_t(mask).long()).last_hidden_state
            other = sdpa(input_ids=_t(ids).long(), attention_mask=_t(mask).long()).last_hidden_state
            real = mask.astype(bool)
            _close(eager[real].numpy(), other[real], tol=1e-5)
        hidden = sdpa(input_ids=_t(d_ids).long(), attention_mask=_t(d_mask).long()).last_hidden_state
        by_hand = oracle.dense(hidden) * _t(keep)[..., None].float()
        by_hand = by_hand / by_hand.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        _close(oracle.encode_doc(_t(d_ids).long(), _t(d_mask).long(), _t(keep)).numpy(), by_hand, tol=1e-5)


def test_passages_with_images_are_refused(pair):
    """The published SentMIRe.doc encodes a passage's image unlike MIRe.doc (no prompt-guided pooling): a SentMIRe
    model refuses image passages in one line instead of encoding them MIRe's way."""
    _, config, params = pair
    _, _, d_ids, d_mask, keep, pixels = _inputs(config, seed=4)
    with pytest.raises(ValueError, match="passages with images are not supported for SentMIRe"):
        mire_jax.encode_doc(config, params, d_ids, d_mask, keep, pixel_values=pixels,
                            prompt_ids=np.array([101, 2054, 102]))
