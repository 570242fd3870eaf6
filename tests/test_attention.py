"""Tests for companion.attention: scaled dot-product attention, masks, multi-head attention."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.attention import (
    MultiHeadAttention,
    causal_mask,
    check_attention,
    check_causal_mask,
    check_mha_parameter_count,
    fused_attention,
    padding_mask,
    scaled_dot_product_attention,
)

FAST = settings(max_examples=40, deadline=None)


def _qkv(B=2, H=3, T_q=5, T_k=7, d_k=8, d_v=6, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T_q, d_k, generator=g, dtype=dtype),
            torch.randn(B, H, T_k, d_k, generator=g, dtype=dtype),
            torch.randn(B, H, T_k, d_v, generator=g, dtype=dtype))


def _random_mask(shape, seed=0):
    """A random bool mask in which every query row keeps at least one key."""
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(shape, generator=g) > 0.5
    m[..., 0] = m[..., 0] | ~m.any(-1)
    return m


# ----------------------------------------------------------------------------- agreement with torch


def test_attention_equals_torch_sdpa_without_mask():
    q, k, v = _qkv()
    out, _ = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["causal", "padding", "random_full", "random_broadcast"])
def test_attention_equals_torch_sdpa_with_mask(kind):
    T = 7
    q, k, v = _qkv(T_q=T, T_k=T)
    mask = {
        "causal": causal_mask(T),
        "padding": padding_mask(torch.tensor([3, 7]), T),
        "random_full": _random_mask((2, 3, T, T)),
        "random_broadcast": _random_mask((2, 1, T, T)),
    }[kind]
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5, rtol=1e-5)


def test_fused_attention_equals_explicit_with_and_without_mask():
    q, k, v = _qkv(T_q=6, T_k=6)
    for mask in (None, causal_mask(6), padding_mask(torch.tensor([2, 6]), 6)):
        torch.testing.assert_close(fused_attention(q, k, v, mask), scaled_dot_product_attention(q, k, v, mask)[0],
                                   atol=1e-5, rtol=1e-5)
    both = padding_mask(torch.tensor([2, 6]), 6) & causal_mask(6)
    torch.testing.assert_close(fused_attention(q, k, v, padding_mask(torch.tensor([2, 6]), 6), is_causal=True),
                               scaled_dot_product_attention(q, k, v, both)[0], atol=1e-5, rtol=1e-5)


def test_attention_is_softmax_of_scaled_scores_by_hand():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[10.0], [20.0]])
    out, w = scaled_dot_product_attention(q, k, v)
    a = math.exp(1 / math.sqrt(2)) / (math.exp(1 / math.sqrt(2)) + 1.0)
    torch.testing.assert_close(w, torch.tensor([[a, 1 - a]]))
    torch.testing.assert_close(out, torch.tensor([[10 * a + 20 * (1 - a)]]))


# ----------------------------------------------------------------------------- properties


@FAST
@given(B=st.integers(1, 3), T_q=st.integers(1, 6), T_k=st.integers(1, 6), d_k=st.integers(1, 9),
       scale=st.floats(0.01, 30.0), seed=st.integers(0, 10_000), masked=st.booleans())
def test_attention_weights_are_probability_distributions_over_keys(B, T_q, T_k, d_k, scale, seed, masked):
    q, k, v = _qkv(B=B, H=2, T_q=T_q, T_k=T_k, d_k=d_k, d_v=3, seed=seed)
    mask = _random_mask((B, 1, T_q, T_k), seed) if masked else None
    out, w = scaled_dot_product_attention(q * scale, k, v, mask)
    assert w.shape == (B, 2, T_q, T_k) and out.shape == (B, 2, T_q, 3)
    assert torch.isfinite(w).all() and (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(B, 2, T_q), atol=1e-5, rtol=0)
    if mask is not None:
        assert (w.masked_select(~mask.expand_as(w)) == 0).all(), "a masked key received weight"


@FAST
@given(T=st.integers(2, 9), t=st.integers(0, 8), seed=st.integers(0, 10_000), fast=st.booleans())
def test_causal_mask_never_leaks_the_future(T, t, seed, fast):
    """Changing the tokens after position t leaves the outputs at positions <= t unchanged."""
    t = min(t, T - 2)
    torch.manual_seed(seed)
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(2, T, 8)
    x2 = x.clone()
    x2[:, t + 1 :] = torch.randn(2, T - t - 1, 8) * 5
    for kwargs in ({"mask": causal_mask(T)}, {"is_causal": True}):
        y, _ = mha(x, x, x, need_weights=not fast, **kwargs)
        y2, _ = mha(x2, x2, x2, need_weights=not fast, **kwargs)
        torch.testing.assert_close(y[:, : t + 1], y2[:, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(y[:, t + 1 :], y2[:, t + 1 :]), "later outputs should see the change"


@FAST
@given(T=st.integers(2, 8), seed=st.integers(0, 10_000))
def test_self_attention_without_positions_is_permutation_equivariant(T, seed):
    """MHA(P x) = P MHA(x) for every permutation P of the positions (no positional encoding)."""
    torch.manual_seed(seed)
    mha = MultiHeadAttention(12, 3).eval()
    x = torch.randn(2, T, 12)
    perm = torch.randperm(T)
    y, w = mha(x, x, x)
    yp, wp = mha(x[:, perm], x[:, perm], x[:, perm])
    torch.testing.assert_close(yp, y[:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wp, w[:, :, perm][:, :, :, perm], atol=1e-6, rtol=1e-5)


def test_causal_mask_is_lower_triangular_bool():
    m = causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    for i in range(4):
        for j in range(4):
            assert bool(m[i, j]) == (j <= i)


def test_padding_mask_marks_real_keys_and_broadcasts_over_heads_and_queries():
    m = padding_mask(torch.tensor([1, 3]), 4)
    assert m.shape == (2, 1, 1, 4) and m.dtype == torch.bool
    assert m[:, 0, 0].tolist() == [[True, False, False, False], [True, True, True, False]]
    with pytest.raises(ValueError, match="lengths must lie in"):
        padding_mask(torch.tensor([0, 3]), 4)
    with pytest.raises(ValueError, match="lengths must lie in"):
        padding_mask(torch.tensor([5]), 4)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("use_mask", [False, True])
def test_explicit_attention_passes_gradcheck_in_float64(use_mask):
    q, k, v = (t.requires_grad_() for t in _qkv(B=1, H=2, T_q=3, T_k=4, d_k=3, d_v=2, dtype=torch.float64))
    mask = _random_mask((1, 2, 3, 4), seed=3) if use_mask else None
    assert torch.autograd.gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask)[0], (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask)[1], (q, k, v))


# ----------------------------------------------------------------------------- multi-head attention


@pytest.mark.parametrize("mask_kind", [None, "causal", "padding", "per_example_3d"])
def test_mha_fast_path_equals_explicit_path(mask_kind):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(3, 6, 16)
    mask = {None: None, "causal": causal_mask(6), "padding": padding_mask(torch.tensor([2, 6, 4]), 6),
            "per_example_3d": _random_mask((3, 6, 6), seed=1)}[mask_kind]
    slow, w = mha(x, x, x, mask, need_weights=True)
    fast, none = mha(x, x, x, mask, need_weights=False)
    assert none is None and w.shape == (3, 4, 6, 6)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_mha_3d_mask_applies_to_every_head_of_its_own_example():
    """A (B, T_q, T_k) mask must not be mistaken for a per-head mask, even when B == n_heads."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(2, 5, 8)
    mask = _random_mask((2, 5, 5), seed=2)
    _, w = mha(x, x, x, mask)
    assert (w.masked_select(~mask[:, None].expand_as(w)) == 0).all()


def test_mha_heads_are_attention_of_column_blocks_of_the_projections():
    """head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V); MultiHead = Concat(head_1..h) W^O (the seed omits head_i)."""
    torch.manual_seed(0)
    d, h = 12, 3
    dk = d // h
    mha = MultiHeadAttention(d, h).eval()
    x, mem = torch.randn(2, 4, d), torch.randn(2, 6, d)
    heads = []
    for i in range(h):
        cols = slice(i * dk, (i + 1) * dk)
        q = x @ mha.w_q.weight[cols].T + mha.w_q.bias[cols]
        k = mem @ mha.w_k.weight[cols].T + mha.w_k.bias[cols]
        v = mem @ mha.w_v.weight[cols].T + mha.w_v.bias[cols]
        heads.append((q @ k.transpose(1, 2) / math.sqrt(dk)).softmax(-1) @ v)
    expected = mha.w_o(torch.cat(heads, -1))
    out, _ = mha(x, mem, mem)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_mha_equals_torch_multihead_attention_with_the_same_weights():
    torch.manual_seed(0)
    d, h = 16, 4
    ours = MultiHeadAttention(d, h).eval()
    ref = torch.nn.MultiheadAttention(d, h, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.w_q.weight, ours.w_k.weight, ours.w_v.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.w_q.bias, ours.w_k.bias, ours.w_v.bias]))
        ref.out_proj.weight.copy_(ours.w_o.weight)
        ref.out_proj.bias.copy_(ours.w_o.bias)
    x = torch.randn(2, 5, d)
    mask = causal_mask(5)
    y, w = ours(x, x, x, mask)
    y_ref, w_ref = ref(x, x, x, attn_mask=~mask, average_attn_weights=False)  # torch's nn.MHA: True = blocked
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, w_ref, atol=1e-6, rtol=1e-5)


def test_mha_parameter_count_does_not_depend_on_heads():
    for h in (1, 2, 4, 8):
        n = sum(p.numel() for p in MultiHeadAttention(32, h).parameters())
        assert n == 4 * 32 * 32 + 4 * 32


def test_mha_dropout_in_training_keeps_returned_weights_distributions():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, dropout=0.5).train()
    x = torch.randn(2, 5, 8)
    _, w = mha(x, x, x)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 5), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- errors


def test_error_for_mismatched_d_k():
    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 5, 7), torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match=r"q has d_k = 8 but k has d_k = 7"):
        scaled_dot_product_attention(q, k, v)
    with pytest.raises(ValueError, match=r"d_k"):
        fused_attention(q, k, v)


def test_error_for_mismatched_key_and_value_lengths():
    with pytest.raises(ValueError, match="T_k = 5 positions but v has 4"):
        scaled_dot_product_attention(torch.randn(3, 8), torch.randn(5, 8), torch.randn(4, 8))


@pytest.mark.parametrize("path", ["explicit", "fused", "mha_fast", "mha_explicit"])
def test_errors_for_bad_masks(path):
    q, k, v = _qkv(B=2, H=2, T_q=4, T_k=4, d_k=8, d_v=8)
    mha = MultiHeadAttention(16, 2)
    x = torch.randn(2, 4, 16)

    def run(mask):
        if path == "explicit":
            return scaled_dot_product_attention(q, k, v, mask)
        if path == "fused":
            return fused_attention(q, k, v, mask)
        return mha(x, x, x, mask, need_weights=path == "mha_explicit")

    with pytest.raises(ValueError, match=r"mask has shape \(4, 7\) but scores have shape"):
        run(torch.ones(4, 7, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.bool"):
        run(torch.ones(4, 4))
    with pytest.raises(TypeError, match="torch.bool"):
        run(causal_mask(4).int())
    fully_masked = causal_mask(4).clone()
    fully_masked[2] = False
    if path in ("explicit", "mha_explicit"):
        with pytest.raises(ValueError, match="every key masked"):
            run(fully_masked)
    else:  # documented: the fast path returns zeros for such a row (torch's convention), never NaN
        out = run(fully_masked)
        out = out[0] if isinstance(out, tuple) else out
        assert torch.isfinite(out).all()
        if path == "fused":
            assert (out[..., 2, :] == 0).all()


def test_mha_rejects_bad_sizes():
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 3)
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"query must have shape \(B, T, 8\)"):
        mha(torch.randn(2, 3, 6), torch.randn(2, 3, 8), torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="is_causal needs T_q == T_k"):
        mha(torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 8), is_causal=True)


# ----------------------------------------------------------------------------- exercise checkers


def test_check_causal_mask_accepts_right_and_rejects_wrong(capsys):
    assert check_causal_mask(lambda T: torch.ones(T, T, dtype=torch.bool).tril())
    assert not check_causal_mask(lambda T: torch.ones(T, T, dtype=torch.bool).triu())
    assert not check_causal_mask(lambda T: torch.ones(T, T).tril())
    assert "Not yet:" in capsys.readouterr().out


def test_check_attention_accepts_right_and_rejects_unscaled(capsys):
    assert check_attention(scaled_dot_product_attention)
    assert not check_attention(lambda q, k, v, mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0))
    assert "sqrt(d_k)" in capsys.readouterr().out


def test_check_mha_parameter_count():
    assert check_mha_parameter_count(4 * 64 * 64 + 4 * 64, 64, 8)
    assert not check_mha_parameter_count(8 * (3 * 64 * 8 + 3 * 8) + 64 * 64 + 64 + 1, 64, 8)
