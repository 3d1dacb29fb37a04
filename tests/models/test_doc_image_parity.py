"""float32 parity of passages that carry an image (the published `MIRe.doc`: the image's global tokens, the tokens
pooled under the fixed prompt, then the passage text) with the PyTorch oracle, for image-only and image+text
passages of several lengths, from pixels and from cached vision features, with the fusion-free and residual heads."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_oracle import Oracle, randomise_, tiny_hf_configs
from torch_oracle import maxsim as torch_maxsim

import mire_jax
from mire_jax import convert

TOL = 1e-5
PROMPT_LEN = 13  # the published prompt's length on bert-base-uncased ([CLS] [Q] 10 word pieces [SEP])


@pytest.fixture(scope="module", params=[False, True], ids=["fusion-free", "residual"])
def pair(request):
    bert_cfg, vis_cfg, head = tiny_hf_configs()
    head = dict(head, residual=request.param)
    torch.manual_seed(0)
    oracle = Oracle(bert_cfg, vis_cfg, head).eval()
    randomise_(oracle, seed=2)
    sd = {k: v.numpy() for k, v in oracle.state_dict().items()}
    config, params = convert.from_torch(sd, bert_cfg.to_dict(), vis_cfg.to_dict(), head)
    return oracle, config, params


def _t(x):
    return torch.from_numpy(np.asarray(x))


def _close(a, b):
    diff = float(np.max(np.abs(np.asarray(a) - b.detach().numpy())))
    assert diff <= TOL, f"max abs diff {diff:.2e} > {TOL:.0e}"
    return diff


def _prompt(vocab, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([[2], [1], rng.integers(5, vocab, PROMPT_LEN - 3), [3]]).astype(np.int32)


def _passages(vocab, image_size, count, length, lengths, seed):
    """`count` passages with text of the given real lengths (some kept tokens dropped) and an image each."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (count, length)).astype(np.int32)
    mask = (np.arange(length)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
    keep = mask.astype(bool) & (rng.random((count, length)) > 0.2)
    keep[:, 0] = True
    pixels = rng.normal(size=(count, image_size, image_size, 3)).astype(np.float32)
    return ids, mask, keep, pixels


@pytest.mark.parametrize("length,lengths,from_features", [(12, [12, 7, 4], True), (5, [5, 3, 1], False)])
def test_image_and_text_passages_from_pixels_and_from_features(pair, length, lengths, from_features):
    oracle, config, params = pair
    prompt = _prompt(config.bert.vocab_size)
    ids, mask, keep, pixels = _passages(config.bert.vocab_size, config.vision.image_size, 3, length, lengths,
                                        seed=length)
    with torch.no_grad():
        want, want_keep = oracle.encode_doc_with_image(_t(prompt).long(), _t(ids).long(), _t(mask).long(), _t(keep),
                                                       pixels_nhwc=_t(pixels))
        feats = oracle.vision_tower(_t(pixels).permute(0, 3, 1, 2)).numpy()
    n_visual = config.head.num_tokens + config.head.num_heads
    got, got_keep = mire_jax.encode_doc(config, params, ids, mask, keep, pixel_values=pixels, prompt_ids=prompt)
    assert got.shape == (3, n_visual + length, config.head.dim)
    _close(got, want)
    np.testing.assert_array_equal(got_keep, want_keep.numpy())
    assert np.asarray(got_keep)[:, :n_visual].all()
    np.testing.assert_array_equal(np.asarray(got_keep)[:, n_visual:], keep)
    if from_features:
        got, _ = mire_jax.encode_doc(config, params, ids, mask, keep, vision_features=feats, prompt_ids=prompt)
        _close(got, want)


def test_image_only_passages(pair):
    oracle, config, params = pair
    prompt = _prompt(config.bert.vocab_size, seed=1)
    _, _, _, pixels = _passages(config.bert.vocab_size, config.vision.image_size, 3, 3, [3] * 3, seed=5)
    with torch.no_grad():
        want, want_keep = oracle.encode_doc_with_image(_t(prompt).long(), pixels_nhwc=_t(pixels))
    got, got_keep = mire_jax.encode_doc(config, params, pixel_values=pixels, prompt_ids=prompt)
    n_visual = config.head.num_tokens + config.head.num_heads
    assert got.shape == (3, n_visual, config.head.dim) and np.asarray(got_keep).all()
    _close(got, want)
    assert want_keep.all()
    # the image rows do not depend on the passage's text: an image+text passage starts with the image-only rows
    ids, mask, keep, _ = _passages(config.bert.vocab_size, config.vision.image_size, 3, 12, [12, 2, 1], seed=6)
    with_text, _ = mire_jax.encode_doc(config, params, ids, mask, keep, pixel_values=pixels, prompt_ids=prompt)
    np.testing.assert_allclose(np.asarray(with_text)[:, :n_visual], got, atol=1e-6)


def test_the_prompt_matters(pair):
    """The pooled tokens follow the prompt (a different prompt pools differently), the global tokens do not."""
    _, config, params = pair
    _, _, _, pixels = _passages(config.bert.vocab_size, config.vision.image_size, 3, 3, [3] * 3, seed=9)
    a, _ = mire_jax.encode_doc(config, params, pixel_values=pixels, prompt_ids=_prompt(config.bert.vocab_size, 0))
    b, _ = mire_jax.encode_doc(config, params, pixel_values=pixels, prompt_ids=_prompt(config.bert.vocab_size, 3))
    g = config.head.num_tokens
    np.testing.assert_allclose(a[:, :g], b[:, :g], atol=1e-6)
    assert float(jnp.max(jnp.abs(a[:, g:] - b[:, g:]))) > 1e-3


def test_ranking_of_mixed_passages_matches_torch(pair):
    """Image queries rank image-only, image+text and text-only passages (each kind encoded apart, padded to one
    width with masked rows) in the oracle's order; the order is meaningful (closest scores 100x further apart
    than the JAX-PyTorch difference) and differs between queries."""
    oracle, config, params = pair
    vocab, size = config.bert.vocab_size, config.vision.image_size
    prompt = _prompt(vocab, seed=4)
    rng = np.random.default_rng(11)
    q_ids = rng.integers(5, vocab, (3, 9)).astype(np.int32)
    q_mask = (np.arange(9)[None] < np.array([[9], [5], [3]])).astype(np.int32)
    q_pixels = rng.normal(size=(3, size, size, 3)).astype(np.float32)
    ids, mask, keep, pixels = _passages(vocab, size, 3, 12, [12, 6, 3], seed=12)
    t_ids, t_mask, t_keep, _ = _passages(vocab, size, 3, 12, [9, 4, 12], seed=13)
    _, _, _, only_pixels = _passages(vocab, size, 3, 3, [3] * 3, seed=14)
    n_visual = config.head.num_tokens + config.head.num_heads
    width = n_visual + 12

    def pad(d, k):
        d, k = np.asarray(d, np.float32), np.asarray(k, bool)
        extra = width - d.shape[1]
        return np.pad(d, ((0, 0), (0, extra), (0, 0))), np.pad(k, ((0, 0), (0, extra)))

    with torch.no_grad():
        q = oracle.encode_query(_t(q_ids).long(), _t(q_mask).long(), _t(q_pixels))
        kinds = [oracle.encode_doc_with_image(_t(prompt).long(), _t(ids).long(), _t(mask).long(), _t(keep),
                                              pixels_nhwc=_t(pixels)),
                 oracle.encode_doc_with_image(_t(prompt).long(), pixels_nhwc=_t(only_pixels)),
                 (oracle.encode_doc(_t(t_ids).long(), _t(t_mask).long(), _t(t_keep)), _t(t_keep))]
        docs = [pad(d.numpy(), k.numpy()) for d, k in kinds]
        want = torch_maxsim(q, _t(np.concatenate([d for d, _ in docs])),
                            _t(np.concatenate([k for _, k in docs]))).numpy()
    got_kinds = [mire_jax.encode_doc(config, params, ids, mask, keep, pixel_values=pixels, prompt_ids=prompt),
                 mire_jax.encode_doc(config, params, pixel_values=only_pixels, prompt_ids=prompt),
                 mire_jax.encode_doc(config, params, t_ids, t_mask, t_keep)]
    got_docs = [pad(d, k) for d, k in got_kinds]
    got = np.asarray(mire_jax.maxsim(mire_jax.encode_query(config, params, q_ids, q_mask, q_pixels),
                                     np.concatenate([d for d, _ in got_docs]),
                                     np.concatenate([k for _, k in got_docs])))
    assert got.shape == want.shape == (3, 9)
    want_order = np.argsort(-want, axis=1)
    assert len({tuple(row) for row in want_order}) > 1
    np.testing.assert_array_equal(np.argsort(-got, axis=1), want_order)
    closest = np.diff(np.sort(want, axis=1), axis=1).min()
    assert closest > 100 * np.abs(got - want).max(), f"scores {closest:.2e} apart: the order could be noise"


def test_encode_doc_refuses_an_image_without_the_prompt(pair):
    _, config, params = pair
    pixels = np.zeros((1, config.vision.image_size, config.vision.image_size, 3), np.float32)
    with pytest.raises(ValueError, match="prompt_ids"):
        mire_jax.encode_doc(config, params, pixel_values=pixels)
    with pytest.raises(ValueError, match="give the passage's text"):
        mire_jax.encode_doc(config, params)
