"""Tests of companion.gradient_estimators (chapter "Variational autoencoders", notebook 05_1)."""

from __future__ import annotations

import math

import torch

from companion.gradient_estimators import reparameterization_gradients, score_function_gradients


def test_both_gradient_estimators_are_unbiased_and_reparameterization_has_lower_variance():
    a = torch.tensor([1.0, -0.5], dtype=torch.float64)
    mu, logvar = torch.tensor([0.2, 0.3], dtype=torch.float64), torch.tensor([0.0, -0.5], dtype=torch.float64)

    def f(z):
        return -(z - a).pow(2).sum(-1)

    # E_q f = -|mu - a|^2 - sum(var): d/dmu = -2 (mu - a), d/dlogvar = -var
    exact_mu, exact_logvar = -2 * (mu - a), -logvar.exp()
    n = 20_000
    g = torch.Generator().manual_seed(0)
    for grads in (reparameterization_gradients(f, mu, logvar, n, generator=g),
                  score_function_gradients(f, mu, logvar, n, generator=g)):
        for est, exact in zip(grads, (exact_mu, exact_logvar), strict=True):
            se = est.std(0) / math.sqrt(n)
            assert ((est.mean(0) - exact).abs() < 5 * se).all()
    rep_var = reparameterization_gradients(f, mu, logvar, n, generator=g)[0].var(0)
    sf_var = score_function_gradients(f, mu, logvar, n, generator=g)[0].var(0)
    assert (sf_var > 5 * rep_var).all()
