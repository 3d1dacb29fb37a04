"""float32 parity of the Flax model with the PyTorch oracle on tiny configs whose parameters are all random."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_oracle import Oracle, randomise_, tiny_hf_configs
from torch_oracle import maxsim as torch_maxsim

import mire_jax
from mire_jax import convert
from mire_jax.scoring import in_batch_loss

TOL = 1e-5
B, L_Q, L_D = 3, 9, 12
N_PASSAGES = 10  # passages ranked per query in the ranking test


def _inputs(vocab, image_size, seed=0):
    rng = np.random.default_rng(seed)
    q_ids = rng.integers(5, vocab, (B, L_Q)).astype(np.int32)
    q_mask = np.zeros((B, L_Q), np.int32)
    for row, n in enumerate([L_Q, 5, 2]):  # several lengths: padded rows must matter in the pooling
        q_mask[row, :n] = 1
    d_ids = rng.integers(5, vocab, (B, L_D)).astype(np.int32)
    d_mask = np.zeros((B, L_D), np.int32)
    for row, n in enumerate([L_D, 7, 4]):
        d_mask[row, :n] = 1
    keep = d_mask.astype(bool) & (rng.random((B, L_D)) > 0.2)  # some kept tokens dropped, like punctuation
    pixels = rng.normal(size=(B, image_size, image_size, 3)).astype(np.float32)
    return q_ids, q_mask, d_ids, d_mask, keep, pixels


def _passages(vocab, count, seed):
    """`count` passages of random lengths: (ids, mask, keep) with some kept tokens dropped, [CLS] always kept."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (count, L_D)).astype(np.int32)
    lengths = rng.integers(3, L_D + 1, count)
    mask = (np.arange(L_D)[None] < lengths[:, None]).astype(np.int32)
    keep = mask.astype(bool) & (rng.random((count, L_D)) > 0.2)
    keep[:, 0] = True
    return ids, mask, keep


@pytest.fixture(scope="module", params=[False, True], ids=["fusion-free", "residual"])
def pair(request):
    bert_cfg, vis_cfg, head = tiny_hf_configs()
    head = dict(head, residual=request.param)
    torch.manual_seed(0)
    oracle = Oracle(bert_cfg, vis_cfg, head).eval()
    randomise_(oracle, seed=1)
    sd = {k: v.numpy() for k, v in oracle.state_dict().items()}
    config, params = convert.from_torch(sd, bert_cfg.to_dict(), vis_cfg.to_dict(), head)
    return oracle, config, params


def _t(x):
    return torch.from_numpy(np.asarray(x))


def _close(a, b):
    diff = float(np.max(np.abs(np.asarray(a) - b.detach().numpy())))
    assert diff <= TOL, f"max abs diff {diff:.2e} > {TOL:.0e}"
    return diff


@pytest.mark.parametrize("pretraining", [False, True])
def test_query_from_pixels_and_from_features(pair, pretraining):
    oracle, config, params = pair
    q_ids, q_mask, _, _, _, pixels = _inputs(config.bert.vocab_size, config.vision.image_size)
    with torch.no_grad():
        want = oracle.encode_query(_t(q_ids).long(), _t(q_mask).long(), _t(pixels), pretraining=pretraining)
        feats = oracle.vision_tower(_t(pixels).permute(0, 3, 1, 2))
    got = mire_jax.encode_query(config, params, q_ids, q_mask, pixels, pretraining=pretraining)
    _close(got, want)
    ours_feats = mire_jax.encode_vision(config, params, pixels)
    _close(ours_feats, feats)
    got = mire_jax.encode_query(config, params, q_ids, q_mask, vision_features=feats.numpy(), pretraining=pretraining)
    _close(got, want)
    n_visual = config.head.num_tokens + config.head.num_heads
    assert got.shape == (B, n_visual + (0 if pretraining else L_Q), config.head.dim)


def test_query_without_image_and_docs_and_maxsim(pair):
    oracle, config, params = pair
    q_ids, q_mask, d_ids, d_mask, keep, pixels = _inputs(config.bert.vocab_size, config.vision.image_size, seed=3)
    with torch.no_grad():
        q_text = oracle.encode_query(_t(q_ids).long(), _t(q_mask).long())
        q_full = oracle.encode_query(_t(q_ids).long(), _t(q_mask).long(), _t(pixels))
        docs = oracle.encode_doc(_t(d_ids).long(), _t(d_mask).long(), _t(keep))
        scores = torch_maxsim(q_full, docs, _t(keep))
    got_text = mire_jax.encode_query(config, params, q_ids, q_mask)
    _close(got_text, q_text)
    got_docs, got_keep = mire_jax.encode_doc(config, params, d_ids, d_mask, keep)
    _close(got_docs, docs)
    np.testing.assert_array_equal(got_keep, keep)
    got_full = mire_jax.encode_query(config, params, q_ids, q_mask, pixels)
    _close(mire_jax.maxsim(got_full, got_docs, got_keep), scores)


def test_passage_ranking_matches_torch(pair):
    """Every query ranks the passages by MaxSim in the same order as the oracle. The order is meaningful: the
    closest two scores of a query are at least 100x further apart than the largest JAX-PyTorch score difference,
    and the queries do not all share one order."""
    oracle, config, params = pair
    q_ids, q_mask, _, _, _, pixels = _inputs(config.bert.vocab_size, config.vision.image_size, seed=7)
    d_ids, d_mask, keep = _passages(config.bert.vocab_size, N_PASSAGES, seed=8)
    with torch.no_grad():
        q = oracle.encode_query(_t(q_ids).long(), _t(q_mask).long(), _t(pixels))
        want = torch_maxsim(q, oracle.encode_doc(_t(d_ids).long(), _t(d_mask).long(), _t(keep)), _t(keep)).numpy()
    docs, kept = mire_jax.encode_doc(config, params, d_ids, d_mask, keep)
    got = np.asarray(mire_jax.maxsim(mire_jax.encode_query(config, params, q_ids, q_mask, pixels), docs, kept))
    assert got.shape == want.shape == (B, N_PASSAGES)
    want_order = np.argsort(-want, axis=1)
    assert len({tuple(row) for row in want_order}) == B
    np.testing.assert_array_equal(np.argsort(-got, axis=1), want_order)
    closest = np.diff(np.sort(want, axis=1), axis=1).min()
    assert closest > 100 * np.abs(got - want).max(), f"scores {closest:.2e} apart: the order could be noise"


def test_the_padded_row_quirk_is_exercised(pair):
    """Padded query rows enter the pooling's sum (each as the mean of the values), so the same 2-token query
    pooled at two padded lengths gives different visual tokens; the parity tests above use such rows."""
    _, config, params = pair
    q_ids, q_mask, _, _, _, pixels = _inputs(config.bert.vocab_size, config.vision.image_size)
    assert q_mask[2].sum() == 2
    feats = mire_jax.encode_vision(config, params, pixels)
    n_visual = config.head.num_tokens + config.head.num_heads
    long_pad = mire_jax.encode_query(config, params, q_ids, q_mask, vision_features=feats, pretraining=True)
    short_pad = mire_jax.encode_query(config, params, q_ids[:, :4], q_mask[:, :4], vision_features=feats,
                                      pretraining=True)
    pooled = slice(config.head.num_tokens, n_visual)
    assert float(jnp.max(jnp.abs(long_pad[2, pooled] - short_pad[2, pooled]))) > 1e-3
    np.testing.assert_allclose(long_pad[2, :config.head.num_tokens], short_pad[2, :config.head.num_tokens], atol=1e-6)


def test_zero_vectors_normalise_to_zero_with_finite_gradients(pair):
    _, config, params = pair
    _, _, d_ids, d_mask, _, _ = _inputs(config.bert.vocab_size, config.vision.image_size)
    none_kept = np.zeros_like(d_mask, dtype=bool)
    docs, _ = mire_jax.encode_doc(config, params, d_ids, d_mask, none_kept)
    assert np.all(np.asarray(docs) == 0)

    def loss(p):
        return mire_jax.encode_doc(config, p, d_ids, d_mask, none_kept)[0].sum()
    grads = jax.grad(loss)(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))


def test_bfloat16_compute_stays_close(pair):
    """bf16 matmuls with float32 params: measured max abs diff on unit-norm embeddings ~1e-2 (tiny random
    model, all-random LayerNorms); 0.05 leaves headroom. Each query's best passage stays its best: on this batch
    the best leads the runner-up by more than 0.06 in float32, twice the measured bf16 score error (<= 0.03)."""
    _, config, params = pair
    q_ids, q_mask, d_ids, d_mask, keep, pixels = _inputs(config.bert.vocab_size, config.vision.image_size)
    bf16 = dataclasses.replace(config, dtype="bfloat16")
    q32 = mire_jax.encode_query(config, params, q_ids, q_mask, pixels)
    q16 = mire_jax.encode_query(bf16, params, q_ids, q_mask, pixels)
    d32, _ = mire_jax.encode_doc(config, params, d_ids, d_mask, keep)
    d16, _ = mire_jax.encode_doc(bf16, params, d_ids, d_mask, keep)
    assert q16.dtype == jnp.float32 and d16.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(q32 - q16))) < 0.05
    assert float(jnp.max(jnp.abs(d32 - d16))) < 0.05
    s32, s16 = np.asarray(mire_jax.maxsim(q32, d32, keep)), np.asarray(mire_jax.maxsim(q16, d16, keep))
    np.testing.assert_array_equal(s16.argmax(axis=1), s32.argmax(axis=1))


def test_training_gradients_match_torch_autograd(pair):
    """The gradient of the in-batch loss (full query mode, padded queries and passages) w.r.t. every parameter
    matches PyTorch autograd: the custom backward passes of the blocked attention and of MaxSim included."""
    oracle, config, params = pair
    q_ids, q_mask, d_ids, d_mask, keep, pixels = _inputs(config.bert.vocab_size, config.vision.image_size, seed=5)
    temperature = 0.8
    oracle.zero_grad()
    q = oracle.encode_query(_t(q_ids).long(), _t(q_mask).long(), _t(pixels))
    scores = torch_maxsim(q, oracle.encode_doc(_t(d_ids).long(), _t(d_mask).long(), _t(keep)), _t(keep))
    torch.nn.functional.cross_entropy(scores / temperature, torch.arange(B)).backward()
    want = {k: p.grad.numpy() for k, p in oracle.named_parameters() if p.grad is not None}

    def loss(p):
        q = mire_jax.encode_query(config, p, q_ids, q_mask, pixels)
        d, kept = mire_jax.encode_doc(config, p, d_ids, d_mask, keep)
        return in_batch_loss(q, d, kept, temperature)[0]
    got = convert.to_torch(config, jax.grad(loss)(params))
    assert len(want) > 50
    for key, w in want.items():
        scale = max(1.0, float(np.max(np.abs(w))))
        diff = float(np.max(np.abs(got[key] - w)))
        assert diff <= 2e-5 * scale, f"{key}: max abs diff {diff:.2e} (largest gradient {scale:.2e})"


def _group_inputs(vocab, image_size, count, seed):
    rng = np.random.default_rng(seed)
    q_ids = rng.integers(5, vocab, (count, L_Q)).astype(np.int32)
    q_mask = (np.arange(L_Q)[None] < rng.integers(2, L_Q + 1, (count, 1))).astype(np.int32)
    d_ids, d_mask, keep = _passages(vocab, count, seed + 1)
    pixels = rng.normal(size=(count, image_size, image_size, 3)).astype(np.float32)
    return q_ids, q_mask, d_ids, d_mask, keep, pixels


@pytest.mark.parametrize("phase,group", [("pretrain", 2), ("pretrain", 6), ("finetune", 3)])
def test_negatives_group_loss_and_gradients_match_a_torch_loop_over_groups(pair, phase, group):
    """The in-batch loss with negatives groups (each query against its own group's passages only, the mean
    over all queries) and its gradient w.r.t. every parameter equal PyTorch autograd over a plain loop of the
    groups, in pre-training mode (visual query tokens only, tau 0.3) and fine-tuning mode (tau 0.8)."""
    oracle, config, params = pair
    count = 6
    q_ids, q_mask, d_ids, d_mask, keep, pixels = _group_inputs(config.bert.vocab_size, config.vision.image_size,
                                                               count, seed=11)
    pretraining, temperature = phase == "pretrain", 0.3 if phase == "pretrain" else 0.8
    oracle.zero_grad()
    q = oracle.encode_query(_t(q_ids).long(), _t(q_mask).long(), _t(pixels), pretraining=pretraining)
    d = oracle.encode_doc(_t(d_ids).long(), _t(d_mask).long(), _t(keep))
    losses = []
    for start in range(0, count, group):
        part = slice(start, start + group)
        scores = torch_maxsim(q[part], d[part], _t(keep[part])) / temperature
        losses.append(torch.nn.functional.cross_entropy(scores, torch.arange(group), reduction="sum"))
    want_loss = torch.stack(losses).sum() / count
    want_loss.backward()
    want = {k: p.grad.numpy() for k, p in oracle.named_parameters() if p.grad is not None}

    def loss(p):
        q = mire_jax.encode_query(config, p, q_ids, q_mask, pixels, pretraining=pretraining)
        d, kept = mire_jax.encode_doc(config, p, d_ids, d_mask, keep)
        return in_batch_loss(q, d, kept, temperature, group_size=group)[0]
    got_loss, grads = jax.value_and_grad(loss)(params)
    assert abs(float(got_loss) - float(want_loss)) <= 1e-5 * max(1.0, abs(float(want_loss)))
    got = convert.to_torch(config, grads)
    trained = [k for k in want if k.startswith("query_fusion.")]
    assert len(trained) >= 10 and (pretraining or len(want) > 50)
    for key, w in want.items():
        scale = max(1.0, float(np.max(np.abs(w))))
        diff = float(np.max(np.abs(got[key] - w)))
        assert diff <= 2e-5 * scale, f"{key}: max abs diff {diff:.2e} (largest gradient {scale:.2e})"
    whole = in_batch_loss(mire_jax.encode_query(config, params, q_ids, q_mask, pixels, pretraining=pretraining),
                          *mire_jax.encode_doc(config, params, d_ids, d_mask, keep), temperature)[0]
    if group < count:  # a smaller group has fewer negatives: the loss is not the whole-batch one
        assert float(whole) > float(got_loss) + 1e-3
