"""Tests for companion.positional: the sinusoidal table, its shift property, the seed's wrong formula."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    check_pe_shift_matrix,
    check_rotary_embedding,
    count_collisions,
    pe_shift_matrix,
    rotary_embedding,
    seed003_wrong_positional_encoding,
    sinusoidal_positional_encoding,
)


def test_sinusoidal_table_matches_the_formula_entry_by_entry():
    n, d = 50, 16
    pe = sinusoidal_positional_encoding(n, d, dtype=torch.float64)
    assert pe.shape == (n, d)
    for pos in (0, 1, 7, 49):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-12)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-12)


def test_position_zero_is_alternating_zeros_and_ones():
    pe = sinusoidal_positional_encoding(3, 8)
    assert pe[0].tolist() == [0.0, 1.0] * 4


def test_odd_d_model_ends_with_a_sine_column():
    pe = sinusoidal_positional_encoding(20, 7, dtype=torch.float64)
    assert pe.shape == (20, 7)
    torch.testing.assert_close(pe[:, 6], torch.sin(torch.arange(20.0, dtype=torch.float64) / 10000 ** (6 / 7)))


@settings(max_examples=40, deadline=None)
@given(half_d=st.integers(1, 64), k=st.integers(0, 200))
def test_shift_by_k_is_a_fixed_block_rotation(half_d, k):
    """PE(pos + k) = M_k PE(pos) for every pos, with one M_k that does not depend on pos."""
    d = 2 * half_d
    pe = sinusoidal_positional_encoding(300, d, dtype=torch.float64)
    m = pe_shift_matrix(k, d)
    torch.testing.assert_close(pe[: 300 - k] @ m.T, pe[k:], atol=1e-9, rtol=0)


def test_shift_matrices_are_rotations_that_compose():
    m3, m4, m7 = (pe_shift_matrix(k, 16) for k in (3, 4, 7))
    torch.testing.assert_close(m3 @ m3.T, torch.eye(16, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(m3 @ m4, m7, atol=1e-12, rtol=0)
    assert torch.linalg.det(m7).item() == pytest.approx(1.0, abs=1e-12)


def test_rotary_embedding_rotates_each_pair_by_the_transposed_shift_matrix():
    """R_m x = M_m^T x: the rotation of pair i by m * omega_i, the transpose of the sinusoidal shift matrix."""
    x = torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pos = torch.tensor([0, 1, 7, 30, 255])
    out = rotary_embedding(x, pos)
    for j, m in enumerate(pos.tolist()):
        torch.testing.assert_close(out[:, j], x[:, j] @ pe_shift_matrix(m, 12), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), atol=1e-6, rtol=0)  # a rotation
    torch.testing.assert_close(rotary_embedding(x, torch.zeros(5)), x)  # position 0: the identity


@settings(max_examples=30, deadline=None)
@given(m=st.integers(0, 500), n=st.integers(0, 500), shift=st.integers(0, 500))
def test_rotary_attention_logits_depend_on_the_offset_only(m, n, shift):
    """<R_m q, R_n k> = <R_{m+s} q, R_{n+s} k> for every shift s, and = <q, R_{n-m} k>."""
    g = torch.Generator().manual_seed(m * 1000 + n)
    q, k = torch.randn(1, 16, generator=g, dtype=torch.float64), torch.randn(1, 16, generator=g, dtype=torch.float64)

    def logit(a, b):
        return float((rotary_embedding(q, torch.tensor([a])) * rotary_embedding(k, torch.tensor([b]))).sum())

    scale = float(q.norm() * k.norm())
    assert logit(m, n) == pytest.approx(logit(m + shift, n + shift), abs=1e-4 * scale)
    relative = float((q * rotary_embedding(k, torch.tensor([n - m]))).sum())
    assert logit(m, n) == pytest.approx(relative, abs=1e-4 * scale)


def test_rotary_embedding_rejects_odd_sizes_and_mismatched_positions():
    with pytest.raises(ValueError, match="d even"):
        rotary_embedding(torch.zeros(4, 5), torch.arange(4))
    with pytest.raises(ValueError, match=r"positions must have shape \(T,\) = \(4,\)"):
        rotary_embedding(torch.zeros(4, 6), torch.arange(3))


def test_sinusoidal_positions_are_all_distinct_but_seed_formula_collides():
    good = sinusoidal_positional_encoding(512, 32)
    bad = seed003_wrong_positional_encoding(512, 32)
    assert count_collisions(good) == 0
    # a third of the positions (pos mod 3 == 1) are the zero vector: they all collide
    assert count_collisions(bad) >= 512 // 3 - 1
    assert (bad[1::3] == 0).all()


def test_seed_formula_has_no_dimension_index():
    bad = seed003_wrong_positional_encoding(30, 16)
    assert (bad == bad[:, :1]).all(), "every column is the same: the formula ignores the dimension"
    assert torch.linalg.matrix_rank(bad.double()).item() == 1
    assert torch.linalg.matrix_rank(sinusoidal_positional_encoding(30, 16).double()).item() == 16
    torch.testing.assert_close(bad[2, 0], torch.tensor(math.sin(2 / 10000 ** (2 / 3)), dtype=torch.float32))
    torch.testing.assert_close(bad[3, 0], torch.tensor(math.cos(3 / 10000 ** (2 / 3)), dtype=torch.float32))


def test_count_collisions_counts_repeated_rows():
    pe = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert count_collisions(pe) == 2


@pytest.mark.parametrize("module", [SinusoidalPositionalEncoding(8, max_len=10), LearnedPositionalEmbedding(10, 8)])
def test_modules_add_the_table_and_reject_sequences_longer_than_it(module):
    x = torch.randn(2, 6, 8)
    torch.testing.assert_close(module(x), x + module.table()[:6])
    module(torch.randn(1, 10, 8))  # exactly max_len is fine
    with pytest.raises(ValueError, match="11 positions but the positional table has only max_len = 10"):
        module(torch.randn(1, 11, 8))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, T, 8\)"):
        module(torch.randn(2, 6, 9))


def test_sinusoidal_module_has_no_parameters_and_learned_one_has_a_table():
    assert sum(p.numel() for p in SinusoidalPositionalEncoding(8, 10).parameters()) == 0
    assert "pe" not in SinusoidalPositionalEncoding(8, 10).state_dict()
    assert sum(p.numel() for p in LearnedPositionalEmbedding(10, 8).parameters()) == 80


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="n_positions"):
        sinusoidal_positional_encoding(0, 8)
    with pytest.raises(ValueError, match="d_model"):
        sinusoidal_positional_encoding(5, 0)


def test_check_pe_shift_matrix(capsys):
    assert check_pe_shift_matrix(pe_shift_matrix)
    assert not check_pe_shift_matrix(lambda k, d: pe_shift_matrix(k, d).T)
    assert "Not yet:" in capsys.readouterr().out


def test_check_rotary_embedding_accepts_the_rotation_and_rejects_common_mistakes(capsys):
    def rotate(x, pos, sign=1.0, half=False):
        d = x.shape[-1]
        omega = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        a = sign * pos.double()[:, None] * omega
        x1, x2 = (x[:, : d // 2], x[:, d // 2 :]) if half else (x[:, 0::2], x[:, 1::2])
        y1, y2 = x1 * a.cos() - x2 * a.sin(), x1 * a.sin() + x2 * a.cos()
        return torch.cat([y1, y2], 1) if half else torch.stack([y1, y2], -1).flatten(1)

    assert check_rotary_embedding(rotate)
    assert not check_rotary_embedding(lambda x, p: rotate(x, p, sign=-1.0))  # clockwise
    assert not check_rotary_embedding(lambda x, p: rotate(x, p, half=True))  # pairs (i, i + d/2)
    assert not check_rotary_embedding(lambda x, p: rotate(x, p + 1))  # positions from 1
    assert not check_rotary_embedding(lambda x, p: x[:3])  # wrong shape
    out = capsys.readouterr().out
    assert out.startswith("Correct: ") and out.count("Not yet: ") == 4
    assert "position 0 must leave x unchanged" in out and "(x_2i, x_2i+1)" in out
