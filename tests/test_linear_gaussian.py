"""Tests of companion.linear_gaussian: the ELBO identity made exact (chapter "Variational autoencoders", 05_1)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.linear_gaussian import LinearGaussianLVM, check_posterior
from companion.vae import gaussian_log_prob, reparameterize

floats = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False)



def test_linear_gaussian_marginal_and_posterior_satisfy_bayes_rule(lg):
    model, x = lg
    mean, cov = model.posterior(x)
    z = torch.randn(3, 7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_post = torch.distributions.MultivariateNormal(mean, cov).log_prob(z)
    # log p(x) = log p(x, z) - log p(z | x) for every z
    torch.testing.assert_close(model.log_joint(x, z) - log_post, model.log_marginal(x).expand(3, 7),
                               rtol=0, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(st.lists(floats, min_size=4, max_size=4), st.floats(-2.0, 1.0), st.floats(-0.9, 0.9))
def test_elbo_plus_kl_to_posterior_equals_log_marginal_for_any_gaussian_q(mean, log_scale, corr):
    g = torch.Generator().manual_seed(0)
    model = LinearGaussianLVM.random(x_dim=5, z_dim=2, sigma=0.6, generator=g)
    x, _ = model.sample(2, generator=g)
    q_mean = torch.tensor(mean, dtype=torch.float64).reshape(2, 2)
    s = math.exp(log_scale)
    q_cov = torch.tensor([[s, corr * s * 0.7], [corr * s * 0.7, 0.49 * s]], dtype=torch.float64)
    total = model.elbo(x, q_mean, q_cov) + model.kl_to_posterior(x, q_mean, q_cov)
    torch.testing.assert_close(total, model.log_marginal(x), rtol=0, atol=1e-6)


def test_elbo_is_maximal_and_tight_at_the_true_posterior(lg):
    model, x = lg
    mean, cov = model.posterior(x)
    best = model.elbo(x, mean, cov)
    torch.testing.assert_close(best, model.log_marginal(x), rtol=0, atol=1e-9)
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        dm = 0.3 * torch.randn(mean.shape, generator=g, dtype=torch.float64)
        A = torch.eye(2, dtype=torch.float64) + 0.3 * torch.randn(2, 2, generator=g, dtype=torch.float64)
        assert (model.elbo(x, mean + dm, A @ cov @ A.T) < best).all()


def test_exact_linear_gaussian_elbo_matches_monte_carlo(lg):
    model, x = lg
    q_mean, logvar = torch.zeros(7, 2, dtype=torch.float64), torch.full((7, 2), -1.0, dtype=torch.float64)
    z = reparameterize(q_mean.expand(40_000, 7, 2), logvar.expand(40_000, 7, 2), torch.Generator().manual_seed(3))
    mc = model.log_joint(x, z) - gaussian_log_prob(z, q_mean, logvar)
    exact = model.elbo(x, q_mean, torch.diag_embed(logvar.exp()))
    se = mc.std(0) / math.sqrt(mc.shape[0])
    assert ((mc.mean(0) - exact).abs() < 5 * se).all()


def test_linear_gaussian_rejects_bad_shapes(lg):
    model, x = lg
    with pytest.raises(ValueError, match=r"x must be \(B, 5\)"):
        model.log_marginal(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="q_cov must be"):
        model.elbo(x, torch.zeros(7, 2), torch.eye(3))
    with pytest.raises(ValueError, match="b must be"):
        LinearGaussianLVM(torch.zeros(5, 2), torch.zeros(4), 1.0)


def test_elbo_rejects_a_q_covariance_that_is_not_positive_definite(lg):
    model, x = lg
    with pytest.raises(ValueError, match="S0 is not positive definite"):
        model.elbo(x, torch.zeros(7, 2), torch.tensor([[1.0, 2.0], [2.0, 1.0]]))


def test_posterior_checker_accepts_the_exact_posterior_and_rejects_a_wrong_one(capsys):
    assert check_posterior(lambda W, b, s, x: LinearGaussianLVM(W, b, s).posterior(x))
    assert not check_posterior(lambda W, b, s, x: ((x - b) @ W, torch.eye(W.shape[1])))
    out = capsys.readouterr().out
    assert "Correct" in out and "Not yet" in out
