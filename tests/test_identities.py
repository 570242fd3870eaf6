"""Identities the book states in its text and exercise solutions, checked numerically (issue #18).

Each test names the chapter that states the identity. Tolerances are tight enough to fail if a
sign, a factor or an index were wrong (each test's comment says what it would catch).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from companion.divergences import gaussian_kl, kl_divergence
from companion.positional import pe_frequencies, sinusoidal_positional_encoding
from companion.transformer import label_smoothing_cross_entropy

D64 = torch.float64


# ------------------------------------------------------------------ 02_1 attention


def test_softmax_jacobian_is_diag_alpha_minus_alpha_alpha_transpose():
    """02_1: d alpha / d s = diag(alpha) - alpha alpha^T."""
    s = torch.randn(7, generator=torch.Generator().manual_seed(0), dtype=D64)
    alpha = torch.softmax(s, -1)
    jac = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, -1), s)
    torch.testing.assert_close(jac, torch.diag(alpha) - torch.outer(alpha, alpha), rtol=0, atol=1e-14)
    # and it vanishes as alpha becomes one-hot (the saturation the chapter describes)
    sharp = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, -1), 60 * s)
    assert sharp.abs().max() < 1e-10


# ------------------------------------------------------------------ 02_2 positional encoding


@pytest.mark.parametrize("d_model", [8, 32, 128])
def test_pe_dot_product_depends_only_on_the_offset(d_model):
    """02_2 theorem: PE(pos) . PE(pos + k) = sum_i cos(omega_i k), for every pos."""
    n = 300
    pe = sinusoidal_positional_encoding(n, d_model, dtype=D64)
    omega = pe_frequencies(d_model).to(D64)
    for k in (0, 1, 5, 37, 120):
        dots = (pe[: n - k] * pe[k:]).sum(-1)
        expected = torch.cos(omega * k).sum()
        torch.testing.assert_close(dots, expected.expand_as(dots), rtol=0, atol=1e-11)


@pytest.mark.parametrize("d_model", [8, 32, 512])
def test_pe_norm_squared_is_half_the_model_width(d_model):
    """02_2 exercise: ||PE(pos)||^2 = d_model / 2 at every position."""
    pe = sinusoidal_positional_encoding(1000, d_model, dtype=D64)
    torch.testing.assert_close(pe.pow(2).sum(-1), torch.full((1000,), d_model / 2, dtype=D64), rtol=0, atol=1e-10)


# ------------------------------------------------------------------ 02_3 the Transformer


def test_label_smoothed_loss_is_at_least_the_entropy_of_the_smoothed_target():
    """02_3 exercise: L(p) = H(q) + KL(q || p) >= H(q), with equality at p = q (K = 13, eps = 0.1)."""
    K, eps = 13, 0.1
    q = torch.full((K,), eps / K, dtype=D64)
    q[0] += 1 - eps
    h_q = -(q * q.log()).sum()
    assert h_q.item() == pytest.approx(0.5372, abs=5e-5)  # the value the solution prints
    at_q = label_smoothing_cross_entropy(q.log()[None], torch.tensor([0]), eps)
    torch.testing.assert_close(at_q, h_q, rtol=0, atol=1e-12)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        logits = 3 * torch.randn(1, K, generator=g, dtype=D64)
        loss = label_smoothing_cross_entropy(logits, torch.tensor([0]), eps)
        p = torch.softmax(logits[0], -1)
        torch.testing.assert_close(loss, h_q + kl_divergence(q, p), rtol=0, atol=1e-12)
        assert loss >= h_q


# ------------------------------------------------------------------ 03_2 sampling


def test_entropy_derivative_with_respect_to_inverse_temperature():
    """03_2 solution: for p_beta proportional to exp(beta z), dH/dbeta = -beta Var_{p_beta}(z) <= 0 (nats)."""
    z = torch.randn(65, generator=torch.Generator().manual_seed(1), dtype=D64) * 2
    for b in (0.1, 0.5, 1.0, 3.0):
        beta = torch.tensor(b, dtype=D64, requires_grad=True)
        p = torch.softmax(beta * z, -1)
        H = -(p * p.log()).sum()
        (dH,) = torch.autograd.grad(H, beta)
        p = p.detach()
        var = (p * z**2).sum() - (p * z).sum() ** 2
        torch.testing.assert_close(dH, -b * var, rtol=1e-10, atol=1e-12)
        assert dH <= 0


# ------------------------------------------------------------------ 04_2 GAN variants


def test_optimal_lsgan_discriminator_is_the_weighted_average_of_the_codes():
    """04_2 exercise: D*(x) = (b p_data + a p_g) / (p_data + p_g) minimises the LSGAN loss pointwise."""
    g = torch.Generator().manual_seed(2)
    p = torch.rand(5, 10, generator=g, dtype=D64)
    q = torch.rand(5, 10, generator=g, dtype=D64)
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    for a, b in ((0.0, 1.0), (-1.0, 1.0), (0.3, 2.0)):
        d_star = ((b * p + a * q) / (p + q)).requires_grad_(True)
        loss = 0.5 * (p * (d_star - b) ** 2 + q * (d_star - a) ** 2).sum()
        (grad,) = torch.autograd.grad(loss, d_star)
        assert grad.abs().max() < 1e-15  # stationary ...
        for step in (-1e-3, 1e-3):  # ... and a minimum (the loss is convex in D)
            worse = 0.5 * (p * (d_star + step - b) ** 2 + q * (d_star + step - a) ** 2).sum()
            assert worse > loss
    # with a = 0, b = 1 it is the GAN's optimal discriminator p_data / (p_data + p_g)
    torch.testing.assert_close((1.0 * p) / (p + q), p / (p + q))


# ------------------------------------------------------------------ 05_1 the ELBO


def test_mean_field_optimum_has_variances_one_over_the_posterior_precision():
    """05_1 exercise: the diagonal q minimising KL(q || N(mu, Sigma)) has s_j^2 = 1 / Lambda_jj <= Sigma_jj."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 4, generator=g, dtype=D64)
    sigma = a @ a.T + 0.5 * torch.eye(4, dtype=D64)
    mu = torch.randn(4, generator=g, dtype=D64)
    precision = torch.linalg.inv(sigma)
    s2_star = 1 / precision.diagonal()
    target = torch.distributions.MultivariateNormal(mu, sigma)

    def kl(s2: torch.Tensor) -> torch.Tensor:
        q = torch.distributions.MultivariateNormal(mu, torch.diag(s2))
        return torch.distributions.kl_divergence(q, target)

    s2 = s2_star.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(kl(s2), s2)
    assert grad.abs().max() < 1e-10
    for j in range(4):
        for factor in (0.9, 1.1):
            moved = s2_star.clone()
            moved[j] *= factor
            assert kl(moved) > kl(s2_star)
    assert bool((s2_star <= sigma.diagonal()).all())


# ------------------------------------------------------------------ 05_3 VAE variants


@pytest.mark.parametrize("K", [2, 64, 512])
def test_vqvae_kl_to_a_uniform_prior_is_49_log_k(K):
    """05_3 exercise: a one-hot posterior over K codes at each of 7 x 7 positions, uniform prior: KL = 49 log K."""
    g = torch.Generator().manual_seed(K)
    codes = torch.randint(K, (49,), generator=g)
    q = F.one_hot(codes, K).to(D64)
    uniform = torch.full((49, K), 1 / K, dtype=D64)
    total = kl_divergence(q, uniform).sum()
    torch.testing.assert_close(total, torch.tensor(49 * math.log(K), dtype=D64), rtol=1e-12, atol=0)


def test_hierarchical_elbo_is_the_reconstruction_minus_one_kl_per_group():
    """05_3: for two latent groups, E_q[log p(x, z) - log q(z | x)] equals
    E_q[log p(x | z1)] - KL(q(z2 | x) || p(z2)) - E_{q(z2|x)}[KL(q(z1 | z2, x) || p(z1 | z2))].

    A linear-Gaussian two-layer model; both sides estimated on the same z2 samples, the KLs in
    closed form on the right. A wrong sign or a missing group moves the right side by several nats,
    far outside the Monte Carlo tolerance (5 standard errors, about 0.01 nats here).
    """
    g = torch.Generator().manual_seed(4)
    d1, d2, dx, n = 3, 2, 5, 200_000
    x = torch.randn(dx, generator=g, dtype=D64)
    W1 = torch.randn(dx, d1, generator=g, dtype=D64)  # p(x | z1) = N(W1 z1, 0.5^2 I)
    W2 = torch.randn(d1, d2, generator=g, dtype=D64)  # p(z1 | z2) = N(W2 z2, 0.8^2 I); p(z2) = N(0, I)
    m2, lv2 = torch.randn(d2, generator=g, dtype=D64), 0.3 * torch.randn(d2, generator=g, dtype=D64)
    A, c = torch.randn(d1, d2, generator=g, dtype=D64), torch.randn(d1, generator=g, dtype=D64)
    lv1 = 0.3 * torch.randn(d1, generator=g, dtype=D64)  # q(z1 | z2, x) = N(A z2 + c, diag(exp(lv1)))

    def log_normal(v, mean, logvar):
        return (-0.5 * (math.log(2 * math.pi) + logvar + (v - mean) ** 2 / logvar.exp())).sum(-1)

    z2 = m2 + (0.5 * lv2).exp() * torch.randn(n, d2, generator=g, dtype=D64)
    mean1 = z2 @ A.T + c
    z1 = mean1 + (0.5 * lv1).exp() * torch.randn(n, d1, generator=g, dtype=D64)
    lv_x, lv_z1 = torch.full((dx,), math.log(0.25), dtype=D64), torch.full((d1,), math.log(0.64), dtype=D64)
    log_px_z1 = log_normal(x, z1 @ W1.T, lv_x)
    log_joint = log_px_z1 + log_normal(z1, z2 @ W2.T, lv_z1) + log_normal(z2, torch.zeros(d2, dtype=D64),
                                                                          torch.zeros(d2, dtype=D64))
    log_q = log_normal(z2, m2, lv2) + log_normal(z1, mean1, lv1)
    direct = log_joint - log_q
    kl_top = gaussian_kl(m2, lv2)  # KL(q(z2 | x) || N(0, I)), closed form
    kl_inner = gaussian_kl(mean1, lv1.expand(n, d1), z2 @ W2.T, lv_z1.expand(n, d1))  # per z2 sample
    decomposed = log_px_z1 - kl_top - kl_inner
    diff = direct - decomposed  # only the z1 noise of the inner KL's Monte Carlo estimate remains
    se = diff.std() / math.sqrt(n)
    assert abs(diff.mean()) < 5 * se + 1e-12, (diff.mean().item(), se.item())
    assert kl_top > 0 and bool((kl_inner > 0).all())


# ------------------------------------------------------------------ 07_2 flow matching


def test_flow_matching_velocity_is_x_plus_one_minus_t_times_the_score_over_t():
    """07_2: for x_t = t x1 + (1 - t) x0, u_t(x) = (x + (1 - t) grad log p_t(x)) / t (Tweedie's formula).

    Data: a 2-D mixture of three unequal Gaussians. The score comes from autograd of log p_t, independently
    of the closed-form velocity. Flipping the sign of the score term or using t instead of 1 - t moves the
    result by far more than the tolerance.
    """
    from companion.flow_matching import gaussian_mixture_log_density, gaussian_mixture_velocity

    mix = (torch.tensor([0.2, 0.5, 0.3], dtype=D64), torch.tensor([[-2.0, 0.5], [1.0, 1.5], [1.5, -1.0]], dtype=D64),
           torch.tensor([0.3, 0.6, 0.15], dtype=D64))
    g = torch.Generator().manual_seed(7)
    t = torch.cat([0.01 + 0.99 * torch.rand(499, generator=g, dtype=D64), torch.ones(1, dtype=D64)])
    x = (3 * torch.randn(500, 2, generator=g, dtype=D64)).requires_grad_(True)
    (score,) = torch.autograd.grad(gaussian_mixture_log_density(x, t, *mix).sum(), x)
    x = x.detach()
    u = gaussian_mixture_velocity(x, t, *mix)
    tt = t[:, None]
    torch.testing.assert_close((x + (1 - tt) * score) / tt, u, rtol=1e-10, atol=1e-10)
    assert ((x - (1 - tt) * score) / tt - u).abs().max() > 1.0
    assert ((x + tt * score) / tt - u).abs().max() > 1.0
    # Tweedie: E[x0 | x_t = x] = -(1 - t) score, so E[x1 | x_t = x] = (x + (1 - t)^2 score) / t
    # and u = E[x1] - E[x0] given x_t: the two posterior means are consistent with the path
    e_x0 = -(1 - tt) * score
    e_x1 = (x - (1 - tt) * e_x0) / tt
    torch.testing.assert_close(e_x1 - e_x0, u, rtol=1e-10, atol=1e-10)
