"""companion.divergences: KL, JSD and the Gaussian KL against independent computations."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.divergences import (
    check_gaussian_kl,
    cross_entropy,
    entropy,
    gaussian_kl,
    gaussian_kl_full,
    js_divergence,
    kl_divergence,
)


def pair(n):
    return st.tuples(*(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).filter(lambda v: sum(v) > 1e-3)
                       for _ in range(2)))


def normalise(v):
    t = torch.tensor(v, dtype=torch.float64)
    return t / t.sum()


@given(st.integers(2, 8).flatmap(pair))
def test_kl_is_nonnegative_and_zero_only_on_equal_arguments(vs):
    p, q = map(normalise, vs)
    kl = kl_divergence(p, q)
    assert kl >= -1e-12
    assert kl_divergence(p, p).abs() < 1e-12


@given(st.integers(2, 8).flatmap(pair))
def test_jsd_is_symmetric_and_bounded_by_log2(vs):
    p, q = map(normalise, vs)
    a, b = js_divergence(p, q), js_divergence(q, p)
    assert abs(a - b) < 1e-12
    assert -1e-12 <= a <= math.log(2) + 1e-12


def test_kl_matches_a_hand_computation_and_is_asymmetric():
    p = torch.tensor([0.5, 0.5], dtype=torch.float64)
    q = torch.tensor([0.9, 0.1], dtype=torch.float64)
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert kl_divergence(p, q).item() == pytest.approx(expected, rel=1e-12)
    assert kl_divergence(q, p).item() != pytest.approx(expected, rel=1e-3)


def test_kl_equals_cross_entropy_minus_entropy():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(5, 7, generator=g, dtype=torch.float64).softmax(-1)
    q = torch.rand(5, 7, generator=g, dtype=torch.float64).softmax(-1)
    torch.testing.assert_close(kl_divergence(p, q), cross_entropy(p, q) - entropy(p))


def test_zero_log_zero_is_zero_and_missing_support_is_infinite():
    p = torch.tensor([0.5, 0.5, 0.0])
    q = torch.tensor([0.5, 0.0, 0.5])
    assert torch.isinf(kl_divergence(p, q))
    assert kl_divergence(p, torch.tensor([0.25, 0.25, 0.5])).isfinite()
    assert js_divergence(p, q).isfinite()


def test_jsd_reaches_log2_on_disjoint_supports():
    p = torch.tensor([1.0, 0.0])
    q = torch.tensor([0.0, 1.0])
    assert js_divergence(p, q).item() == pytest.approx(math.log(2), abs=1e-7)


def test_batched_rows_are_independent():
    p = torch.tensor([[0.2, 0.8], [0.5, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.5, 0.5], [0.5, 0.5]], dtype=torch.float64)
    out = kl_divergence(p, q)
    assert out.shape == (2,)
    assert out[1] == 0 and out[0] == kl_divergence(p[0], q[0])


@pytest.mark.parametrize(
    "p, q, message",
    [
        (torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5]), "shape mismatch"),
        (torch.tensor([1.5, -0.5]), torch.tensor([0.5, 0.5]), "negative entries"),
        (torch.tensor([0.5, 0.6]), torch.tensor([0.5, 0.5]), "does not sum to 1"),
        (torch.tensor([0.5, float("nan")]), torch.tensor([0.5, 0.5]), "NaN"),
    ],
)
def test_bad_distributions_raise_clear_errors(p, q, message):
    with pytest.raises(ValueError, match=message):
        kl_divergence(p, q)
    with pytest.raises(ValueError, match=message):
        js_divergence(p, q)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mu_q, mu_p = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    lv_q, lv_p = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    q = torch.distributions.Independent(torch.distributions.Normal(mu_q, (0.5 * lv_q).exp()), 1)
    p = torch.distributions.Independent(torch.distributions.Normal(mu_p, (0.5 * lv_p).exp()), 1)
    torch.testing.assert_close(gaussian_kl(mu_q, lv_q, mu_p, lv_p), torch.distributions.kl_divergence(q, p))


def test_gaussian_kl_against_monte_carlo():
    g = torch.Generator().manual_seed(2)
    mu_q, lv_q = torch.tensor([0.3, -1.0], dtype=torch.float64), torch.tensor([-0.5, 0.4], dtype=torch.float64)
    q = torch.distributions.Normal(mu_q, (0.5 * lv_q).exp())
    p = torch.distributions.Normal(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    z = mu_q + (0.5 * lv_q).exp() * torch.randn(400_000, 2, generator=g, dtype=torch.float64)
    mc = (q.log_prob(z) - p.log_prob(z)).sum(-1)
    exact = gaussian_kl(mu_q, lv_q).item()
    stderr = mc.std().item() / math.sqrt(len(mc))
    assert abs(mc.mean().item() - exact) < 4 * stderr


def test_gaussian_kl_closed_form_is_the_symbolic_integral():
    """Derive KL(N(m1, s1^2) || N(m2, s2^2)) with sympy and compare with the code's formula."""
    x, m1, m2 = sp.symbols("x m1 m2", real=True)
    s1, s2 = sp.symbols("s1 s2", positive=True)
    q = sp.exp(-((x - m1) ** 2) / (2 * s1**2)) / sp.sqrt(2 * sp.pi * s1**2)
    p2 = sp.exp(-((x - m2) ** 2) / (2 * s2**2)) / sp.sqrt(2 * sp.pi * s2**2)
    log_ratio = sp.expand(sp.expand_log(sp.log(q / p2), force=True))
    kl = sp.simplify(sp.integrate(q * log_ratio, (x, -sp.oo, sp.oo)))
    code = sp.Rational(1, 2) * (sp.log(s2**2) - sp.log(s1**2) + s1**2 / s2**2 + (m1 - m2) ** 2 / s2**2 - 1)
    assert sp.simplify(sp.expand_log(kl - code, force=True)) == 0


def test_gaussian_kl_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"mu_q has shape \(2, 3\) but logvar_q has shape \(2, 4\)"):
        gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="mu_p has shape"):
        gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(5))


@settings(max_examples=50)
@given(st.floats(-3, 3), st.floats(-3, 3))
def test_gaussian_kl_is_zero_iff_equal(mu, logvar):
    t = torch.tensor([[mu]], dtype=torch.float64)
    lv = torch.tensor([[logvar]], dtype=torch.float64)
    assert gaussian_kl(t, lv, t, lv).abs().item() < 1e-12


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(*[st.floats(-3.0, 3.0)] * 4), min_size=1, max_size=6))
def test_gaussian_kl_agrees_with_torch_distributions_in_float64(rows):
    t = torch.tensor(rows, dtype=torch.float64).T  # (4, D)
    mu_q, logvar_q, mu_p, logvar_p = t
    q = torch.distributions.Independent(torch.distributions.Normal(mu_q, torch.exp(0.5 * logvar_q)), 1)
    p = torch.distributions.Independent(torch.distributions.Normal(mu_p, torch.exp(0.5 * logvar_p)), 1)
    want = torch.distributions.kl_divergence(q, p)
    torch.testing.assert_close(gaussian_kl(mu_q, logvar_q, mu_p, logvar_p), want, rtol=1e-9, atol=1e-10)


# ------------------------------------------------------------------ full-covariance Gaussian KL


def random_spd(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    A = torch.randn(n, d, d, generator=g, dtype=torch.float64)
    return A @ A.mT + 0.1 * torch.eye(d, dtype=torch.float64)


def test_full_covariance_kl_agrees_with_torch_distributions():
    g = torch.Generator().manual_seed(0)
    S0, S1 = random_spd(2, 3, g)
    m0, m1 = torch.randn(2, 3, generator=g, dtype=torch.float64)
    want = torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(m0, S0),
                                             torch.distributions.MultivariateNormal(m1, S1))
    torch.testing.assert_close(gaussian_kl_full(m0, S0, m1, S1), want, rtol=1e-9, atol=1e-10)


def test_full_covariance_kl_is_batched_and_broadcasts_and_reduces_to_the_diagonal_kl():
    g = torch.Generator().manual_seed(1)
    S0, S1 = random_spd(5, 4, g), random_spd(5, 4, g)
    m0, m1 = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    got = gaussian_kl_full(m0, S0, m1, S1)
    want = torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(m0, S0),
                                             torch.distributions.MultivariateNormal(m1, S1))
    assert got.shape == (5,)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    # one S1 for the whole batch broadcasts; a KL to itself is 0
    torch.testing.assert_close(gaussian_kl_full(m0, S0, m1, S1[0]), gaussian_kl_full(m0, S0, m1, S1[0].expand(5, 4, 4)))
    torch.testing.assert_close(gaussian_kl_full(m0, S0, m0, S0), torch.zeros(5, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    # diagonal covariances: the same number as gaussian_kl
    lv0, lv1 = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(gaussian_kl_full(m0, torch.diag_embed(lv0.exp()), m1, torch.diag_embed(lv1.exp())),
                               gaussian_kl(m0, lv0, m1, lv1), rtol=1e-9, atol=1e-10)


def test_full_covariance_kl_errors_name_the_problem():
    m, S = torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="same d"):
        gaussian_kl_full(m, S, torch.zeros(2), S)
    with pytest.raises(ValueError, match=r"S0 must be \(\.\.\., d, d\) with d = 3"):
        gaussian_kl_full(m, torch.eye(2), m, S)
    with pytest.raises(ValueError, match="S1 is not symmetric"):
        gaussian_kl_full(m, S, m, S + torch.triu(torch.ones(3, 3), 1))
    not_pd = torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="S0 is not positive definite"):
        gaussian_kl_full(m, not_pd, m, S)
    with pytest.raises(ValueError, match="S1 is not positive definite"):
        gaussian_kl_full(m, S, m, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="batch shapes do not broadcast"):
        gaussian_kl_full(torch.zeros(4, 3), S, torch.zeros(5, 3), S)


def test_gaussian_kl_checker_accepts_the_closed_form_and_rejects_one_that_ignores_the_prior(capsys):
    assert check_gaussian_kl(gaussian_kl)
    assert not check_gaussian_kl(lambda mq, lq, mp, lp: gaussian_kl(mq, lq))  # ignores the prior
    assert not check_gaussian_kl(lambda mq, lq, mp, lp: 1 / 0)  # a raising answer is a verdict, not a crash
    out = capsys.readouterr().out
    assert "Correct" in out and "Not yet" in out and "ZeroDivisionError" in out
