"""The SigLIP vision tower: float32 parity of the Flax tower and of whole-MIRe embeddings with the PyTorch oracle on
a tiny random config of odd sizes (width 42 over 3 heads, a 5 x 5 patch grid with 2 unused pixels), and the
oracle's feature selection checked against Hugging Face's `SiglipVisionModel` run step by step."""
import numpy as np
import pytest
import torch
from torch_oracle import Oracle, randomise_, tiny_hf_siglip_configs
from torch_oracle import maxsim as torch_maxsim

import mire_jax
from mire_jax import convert
from mire_jax.config import MIReConfig

TOL = 1e-5
B, L_Q, L_D, N_PASSAGES = 3, 9, 12, 10


@pytest.fixture(scope="module")
def pair():
    bert_cfg, vis_cfg, head = tiny_hf_siglip_configs()
    torch.manual_seed(0)
    oracle = Oracle(bert_cfg, vis_cfg, head).eval()
    randomise_(oracle, seed=1)
    sd = {k: v.numpy() for k, v in oracle.state_dict().items()}
    config, params = convert.from_torch(sd, bert_cfg.to_dict(), vis_cfg.to_dict(), head)
    return oracle, config, params


def _t(x):
    return torch.from_numpy(np.asarray(x))


def _close(got, want, tol=TOL):
    diff = float(np.max(np.abs(np.asarray(got) - want.detach().numpy())))
    assert diff <= tol, f"max abs diff {diff:.2e} > {tol:.0e}"


def _queries(config, count=B, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config.bert.vocab_size, (count, L_Q)).astype(np.int32)
    mask = (np.arange(L_Q)[None] < np.resize([L_Q, 5, 2], count)[:, None]).astype(np.int32)
    pixels = rng.normal(size=(count, config.vision.image_size, config.vision.image_size, 3)).astype(np.float32)
    return ids, mask, pixels


def _passages(config, count, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config.bert.vocab_size, (count, L_D)).astype(np.int32)
    mask = (np.arange(L_D)[None] < rng.integers(3, L_D + 1, (count, 1))).astype(np.int32)
    keep = mask.astype(bool) & (rng.random((count, L_D)) > 0.2)
    keep[:, 0] = True
    return ids, mask, keep


def test_the_config_is_the_tiny_siglip_preset(pair):
    _, config, _ = pair
    assert config.vision == MIReConfig.tiny_siglip().vision
    assert config.vision.model_type == "siglip" and config.vision.num_patches == 25
    assert config.vision.image_size % config.vision.patch_size != 0  # the convolution drops the last pixels


def test_vision_features_match_the_oracle(pair):
    oracle, config, params = pair
    _, _, pixels = _queries(config)
    with torch.no_grad():
        want = oracle.vision_tower(_t(pixels).permute(0, 3, 1, 2))
    got = mire_jax.encode_vision(config, params, pixels)
    assert got.shape == (B, 1 + 25, 42) and got.dtype == np.float32
    # features are unnormalised transformer states (|x| up to ~20 here): compare relative to their size
    _close(got / np.abs(want.numpy()).max(), want / np.abs(want.numpy()).max())


def test_oracle_selects_the_published_features_of_hugging_faces_model(pair):
    """Token 0 is `pooler_output`, the head applied to the post-LayerNorm states; tokens 1: are the last encoder
    layer's output BEFORE `post_layernorm` (`hidden_states[-1]`), recomputed here from the model's own modules."""
    oracle, config, _ = pair
    _, _, pixels = _queries(config, seed=4)
    model = oracle.vision_tower.vision_tower.vision_model
    nchw = _t(pixels).permute(0, 3, 1, 2)
    with torch.no_grad():
        feats = oracle.vision_tower(nchw)
        x = model.embeddings(nchw)
        for layer in model.encoder.layers:
            x = layer(x, None)
            x = x[0] if isinstance(x, tuple) else x
        post = model.post_layernorm(x)
        out = model(pixel_values=nchw)
    assert feats.shape == (B, 1 + config.vision.num_patches, config.vision.hidden_size)
    torch.testing.assert_close(feats[:, 1:], x, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.last_hidden_state, post, rtol=0, atol=1e-5)
    torch.testing.assert_close(feats[:, 0], model.head(post), rtol=0, atol=1e-5)
    torch.testing.assert_close(feats[:, 0], out.pooler_output, rtol=0, atol=1e-5)
    assert float((post - x).abs().max()) > 0.1  # the patch states really are the ones before the LayerNorm


@pytest.mark.parametrize("pretraining", [False, True])
def test_query_embeddings_from_pixels_and_features(pair, pretraining):
    oracle, config, params = pair
    ids, mask, pixels = _queries(config)
    with torch.no_grad():
        want = oracle.encode_query(_t(ids).long(), _t(mask).long(), _t(pixels), pretraining=pretraining)
        feats = oracle.vision_tower(_t(pixels).permute(0, 3, 1, 2))
    _close(mire_jax.encode_query(config, params, ids, mask, pixels, pretraining=pretraining), want)
    got = mire_jax.encode_query(config, params, ids, mask, vision_features=feats.numpy(), pretraining=pretraining)
    _close(got, want)
    assert got.shape == (B, 4 + 3 + (0 if pretraining else L_Q), 16)


def test_passage_embeddings_scores_and_ranking(pair):
    """Passages and MaxSim scores match; each query ranks the passages in the oracle's order, whose closest two
    scores are 100x further apart than the largest score difference."""
    oracle, config, params = pair
    ids, mask, pixels = _queries(config, seed=7)
    d_ids, d_mask, keep = _passages(config, N_PASSAGES, seed=8)
    with torch.no_grad():
        q = oracle.encode_query(_t(ids).long(), _t(mask).long(), _t(pixels))
        d = oracle.encode_doc(_t(d_ids).long(), _t(d_mask).long(), _t(keep))
        want = torch_maxsim(q, d, _t(keep)).numpy()
    docs, kept = mire_jax.encode_doc(config, params, d_ids, d_mask, keep)
    _close(docs, d)
    got = np.asarray(mire_jax.maxsim(mire_jax.encode_query(config, params, ids, mask, pixels), docs, kept))
    want_order = np.argsort(-want, axis=1)
    assert len({tuple(row) for row in want_order}) == B
    np.testing.assert_array_equal(np.argsort(-got, axis=1), want_order)
    assert np.diff(np.sort(want, axis=1), axis=1).min() > 100 * np.abs(got - want).max()
