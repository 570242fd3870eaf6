"""Tests of companion.diffusion (part "Beyond the articles": DDPM and DDIM)."""

from __future__ import annotations

import math

import pytest
import torch

from companion.diffusion import (
    alpha_bar_from_betas,
    betas_from_alpha_bar,
    cosine_alpha_bar,
    cosine_beta_schedule,
    ddim_sample,
    ddim_timesteps,
    ddpm_loss,
    ddpm_sample,
    eps_from_score,
    guided_eps,
    linear_beta_schedule,
    q_posterior,
    q_sample,
    score_from_eps,
)

pytestmark = pytest.mark.usefixtures("one_thread")

M, S = 1.5, 0.5  # Gaussian data x0 ~ N(M, S^2)


def gaussian_eps_predictor(alpha_bar, m=M, s=S):
    """The exact minimiser of the DDPM loss for x0 ~ N(m, s^2): E[eps | x_t], through the score (Tweedie)."""

    def eps(x, t):
        assert t.dtype == torch.long
        ab = alpha_bar[t].to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        score = -(x - ab.sqrt() * m) / (ab * s**2 + 1 - ab)  # q(x_t) = N(sqrt(ab) m, ab s^2 + 1 - ab)
        return eps_from_score(score, ab)

    return eps


def steps(t, n):
    return torch.full((n,), t, dtype=torch.long)


# ------------------------------------------------------------------------- schedules


def test_alpha_bar_is_the_running_product_of_one_minus_beta_and_betas_invert_it():
    betas = torch.rand(30, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.5 + 1e-3
    want = torch.tensor([math.prod(1 - b for b in betas[: t + 1].tolist()) for t in range(30)], dtype=torch.float64)
    torch.testing.assert_close(alpha_bar_from_betas(betas), want, rtol=1e-12, atol=0)
    torch.testing.assert_close(betas_from_alpha_bar(want), betas, rtol=1e-9, atol=0)
    lin = linear_beta_schedule(1000)
    assert lin[0] == pytest.approx(1e-4) and lin[-1] == pytest.approx(0.02)
    assert alpha_bar_from_betas(lin)[-1] == pytest.approx(4.04e-5, rel=0.01)  # Ho et al.: x_T is almost pure noise


def test_cosine_schedule_follows_its_formula_and_its_betas_are_clipped():
    T, s = 1000, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    ab = cosine_alpha_bar(T)
    want = torch.tensor([f(t + 1) / f(0) for t in range(T)], dtype=torch.float64)
    torch.testing.assert_close(ab[:-20], want[:-20], rtol=1e-9, atol=0)  # clipping only touches the very end
    betas = cosine_beta_schedule(T)
    assert betas.max() <= 0.999 and betas[-1] == pytest.approx(0.999)  # the raw last beta is 1
    assert (ab > 0).all() and (ab[1:] < ab[:-1]).all()
    torch.testing.assert_close(alpha_bar_from_betas(betas), ab)


def test_schedules_reject_bad_input():
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\)"):
        alpha_bar_from_betas(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\)"):
        alpha_bar_from_betas(torch.tensor([0.0, 0.1]))
    with pytest.raises(ValueError, match=r"shape \(T,\)"):
        alpha_bar_from_betas(torch.full((2, 3), 0.1))
    with pytest.raises(TypeError, match="torch.Tensor"):
        alpha_bar_from_betas([0.1, 0.2])
    with pytest.raises(ValueError, match="T must be an int >= 1"):
        linear_beta_schedule(0)
    with pytest.raises(ValueError, match="non-increasing"):
        betas_from_alpha_bar(torch.tensor([0.5, 0.9]))


# -------------------------------------------------------------- the forward process


def test_q_sample_has_the_closed_form_mean_and_variance():
    alpha_bar = alpha_bar_from_betas(linear_beta_schedule(1000))
    n, x0 = 200_000, torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    for t in (0, 250, 999):
        xt = q_sample(x0.expand(n, 3), steps(t, n), torch.randn(n, 3, generator=g, dtype=torch.float64), alpha_bar)
        ab = float(alpha_bar[t])
        var = 1 - ab
        assert ((xt.mean(0) - math.sqrt(ab) * x0).abs() < 5 * math.sqrt(var / n)).all()
        torch.testing.assert_close(xt.var(0), torch.full((3,), var, dtype=torch.float64), rtol=0.02, atol=0)


def test_the_closed_form_matches_running_the_chain_step_by_step():
    betas = linear_beta_schedule(40, 1e-3, 0.1)
    alpha_bar = alpha_bar_from_betas(betas)
    n, g = 100_000, torch.Generator().manual_seed(1)
    x0 = torch.linspace(-2, 2, 4, dtype=torch.float64).expand(n, 4)
    x = x0.clone()
    for t in range(40):  # x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z
        x = torch.sqrt(1 - betas[t]) * x + torch.sqrt(betas[t]) * torch.randn(n, 4, generator=g, dtype=torch.float64)
        if t in (0, 9, 39):
            var = 1 - float(alpha_bar[t])
            closed = q_sample(x0, steps(t, n), torch.randn(n, 4, generator=g, dtype=torch.float64), alpha_bar)
            # two independent samples of the same law: their means differ by ~ sqrt(2 var / n),
            # their variances by ~ 2 var / sqrt(n)
            assert ((x.mean(0) - closed.mean(0)).abs() < 5 * math.sqrt(2 * var / n)).all(), t
            assert ((x.var(0) - closed.var(0)).abs() < 5 * 2 * var / math.sqrt(n)).all(), t
            torch.testing.assert_close(x.mean(0), alpha_bar[t].sqrt() * x0[0], rtol=0, atol=5 * math.sqrt(var / n))
            torch.testing.assert_close(x.var(0), torch.full((4,), var, dtype=torch.float64), rtol=0.03, atol=0)


def test_q_posterior_is_bayes_rule_computed_on_a_grid():
    betas = linear_beta_schedule(20, 0.01, 0.2)
    alpha_bar = alpha_bar_from_betas(betas)
    t, x0, xt = 6, 0.7, -0.3
    ab_prev, beta = float(alpha_bar[t - 1]), float(betas[t])
    grid = torch.linspace(-8, 8, 200_001, dtype=torch.float64)  # values of x_{t-1}
    log_prior = -0.5 * (grid - math.sqrt(ab_prev) * x0) ** 2 / (1 - ab_prev)  # q(x_{t-1} | x_0)
    log_lik = -0.5 * (xt - math.sqrt(1 - beta) * grid) ** 2 / beta  # q(x_t | x_{t-1})
    w = torch.exp(log_prior + log_lik - (log_prior + log_lik).max())
    w = w / torch.trapezoid(w, grid)
    mean_num = torch.trapezoid(w * grid, grid)
    var_num = torch.trapezoid(w * (grid - mean_num) ** 2, grid)
    mean, var = q_posterior(torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[xt]], dtype=torch.float64),
                            steps(t, 1), betas)
    assert float(mean) == pytest.approx(float(mean_num), rel=1e-6)
    assert float(var) == pytest.approx(float(var_num), rel=1e-6)
    # the first step has nothing before it: the posterior is the point x0
    mean0, var0 = q_posterior(torch.tensor([[x0]]), torch.tensor([[xt]]), steps(0, 1), betas)
    assert float(mean0) == pytest.approx(x0) and float(var0) == 0


def test_forward_process_rejects_bad_steps_and_shapes():
    alpha_bar = alpha_bar_from_betas(linear_beta_schedule(10))
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\) = \[0, 10\)"):
        q_sample(x, torch.tensor([0, 5, 10]), torch.zeros(3, 2), alpha_bar)
    with pytest.raises(TypeError, match="integer tensor"):
        q_sample(x, torch.tensor([0.0, 0.5, 1.0]), torch.zeros(3, 2), alpha_bar)
    with pytest.raises(ValueError, match=r"noise has shape \(3, 4\) but x0 has shape \(3, 2\)"):
        q_sample(x, steps(1, 3), torch.zeros(3, 4), alpha_bar)
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(3,\)"):
        q_posterior(x, x, steps(1, 2), linear_beta_schedule(10))
    with pytest.raises(ValueError, match=r"alpha_bar must lie in \(0, 1\]"):
        q_sample(x, steps(1, 3), x, torch.tensor([1.0, 0.0]))


# ------------------------------------------------------------ noise, score and loss


def test_eps_from_score_is_the_regression_of_the_noise_on_x_t():
    """Tweedie: E[eps | x_t] = -sqrt(1 - alpha_bar) * score; for Gaussian data it is linear in x_t."""
    alpha_bar = alpha_bar_from_betas(linear_beta_schedule(1000))
    eps_hat = gaussian_eps_predictor(alpha_bar)
    n, g = 400_000, torch.Generator().manual_seed(2)
    for t in (50, 300):
        x0 = M + S * torch.randn(n, 1, generator=g, dtype=torch.float64)
        eps = torch.randn(n, 1, generator=g, dtype=torch.float64)
        xt = q_sample(x0, steps(t, n), eps, alpha_bar)
        # least squares eps ~ c * (x_t - mean) + d
        xc = xt - xt.mean()
        c = float((xc * eps).sum() / (xc * xc).sum())
        probe = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
        c_exact = float(torch.diff(eps_hat(probe, steps(t, 2)).flatten()))
        assert c == pytest.approx(c_exact, rel=0.01)
        score = torch.randn(5, 1, generator=g, dtype=torch.float64)
        torch.testing.assert_close(score_from_eps(eps_from_score(score, alpha_bar[t]), alpha_bar[t]), score)


def test_ddpm_loss_of_the_exact_predictor_is_the_bayes_error():
    """E_t Var(eps | x_t) = mean_t ab s^2 / (ab s^2 + 1 - ab) for x0 ~ N(m, s^2); anything else does worse."""
    alpha_bar = alpha_bar_from_betas(linear_beta_schedule(1000))
    bayes = float((alpha_bar * S**2 / (alpha_bar * S**2 + 1 - alpha_bar)).mean())
    n = 200_000
    x0 = M + S * torch.randn(n, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = gaussian_eps_predictor(alpha_bar)
    loss = float(ddpm_loss(exact, x0, alpha_bar, torch.Generator().manual_seed(4)))
    assert loss == pytest.approx(bayes, rel=0.02)
    worse = float(ddpm_loss(gaussian_eps_predictor(alpha_bar, s=1.0), x0, alpha_bar, torch.Generator().manual_seed(4)))
    assert worse > 1.2 * loss


def test_ddpm_loss_passes_steps_and_labels_and_checks_the_model_output():
    alpha_bar = alpha_bar_from_betas(linear_beta_schedule(7))
    seen = {}

    def model(x, t, labels=None):
        seen.update(t=t, labels=labels)
        return torch.zeros_like(x)

    x0 = torch.zeros(256, 1, 4, 4)
    loss = ddpm_loss(model, x0, alpha_bar, torch.Generator().manual_seed(0), labels=torch.arange(256) % 3)
    assert seen["t"].dtype == torch.long and 0 <= int(seen["t"].min()) and int(seen["t"].max()) <= 6
    assert seen["t"].unique().numel() == 7 and seen["labels"] is not None
    assert float(loss) == pytest.approx(1.0, abs=0.1)  # zero prediction: E eps^2 = 1 (4,096 entries, se 0.022)
    with pytest.raises(ValueError, match="noise prediction of the input's shape"):
        ddpm_loss(lambda x, t: x[:, :, :2], x0, alpha_bar)


# ------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_sampling_with_the_exact_predictor_recovers_the_data_distribution(variance):
    """Exactly computed (a linear recursion), the sampler's output law is N(1.49998, 0.4961^2) for the
    posterior variance and N(1.49998, 0.5008^2) for beta, against the data's N(1.5, 0.5^2)."""
    betas = linear_beta_schedule(1000)
    eps = gaussian_eps_predictor(alpha_bar_from_betas(betas))
    n = 10_000
    x = ddpm_sample(eps, (n, 1), betas, torch.Generator().manual_seed(5), variance=variance, dtype=torch.float64)
    assert float(x.mean()) == pytest.approx(M, abs=0.02)  # 4 standard errors
    assert float(x.std()) == pytest.approx(S, abs=0.015)
    # the same sampler with the predictor of the wrong data std misses it
    wrong = gaussian_eps_predictor(alpha_bar_from_betas(betas), s=0.6)
    x = ddpm_sample(wrong, (2000, 1), betas, torch.Generator().manual_seed(5), variance=variance, dtype=torch.float64)
    assert float(x.std()) > S + 0.05


def test_ddim_with_eta_zero_is_deterministic_and_eta_one_is_not():
    alpha_bar = cosine_alpha_bar(100)
    eps = gaussian_eps_predictor(alpha_bar)
    x_T = torch.randn(50, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    run = lambda eta, seed: ddim_sample(eps, (50, 1), alpha_bar, 20, eta, torch.Generator().manual_seed(seed),  # noqa: E731
                                        x_T=x_T, dtype=torch.float64)
    torch.testing.assert_close(run(0.0, 1), run(0.0, 2), rtol=0, atol=0)
    assert (run(1.0, 1) - run(1.0, 2)).abs().max() > 0.1


def test_ddim_with_the_exact_predictor_follows_the_probability_flow_and_recovers_the_data():
    """For Gaussian data the exact probability-flow map is affine, x0 = m + s (x_T - sqrt(ab_T) m) / sqrt(v_T),
    v_T = ab_T s^2 + 1 - ab_T; DDIM (eta = 0) approximates it, sample by sample, better with more steps
    (measured RMS errors 0.079, 0.015, 0.0039 for 10, 50, 200 steps of the cosine schedule, T = 1000)."""
    alpha_bar = cosine_alpha_bar(1000)
    eps = gaussian_eps_predictor(alpha_bar)
    n = 20_000
    x_T = torch.randn(n, 1, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ab_T = float(alpha_bar[-1])
    exact = M + S * (x_T - math.sqrt(ab_T) * M) / math.sqrt(ab_T * S**2 + 1 - ab_T)
    out = {k: ddim_sample(eps, (n, 1), alpha_bar, k, x_T=x_T, dtype=torch.float64) for k in (10, 50, 200)}
    rms = {k: float((x - exact).pow(2).mean().sqrt()) for k, x in out.items()}
    assert rms[200] < 0.008
    assert rms[10] > 3 * rms[50] > 9 * rms[200]
    assert float(out[200].mean()) == pytest.approx(M, abs=0.015)  # se 0.0035
    assert float(out[200].std()) == pytest.approx(S, abs=0.015)  # se 0.0025


def _constant_x0_predictor(alpha_bar, c):
    """The noise predictor whose x0_hat is c at every step: eps = (x_t - sqrt(ab_t) c) / sqrt(1 - ab_t)."""
    ab = alpha_bar.double()

    def eps(x, t):
        a = ab[t].reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        return (x - a.sqrt() * c) / (1 - a).sqrt()

    return eps


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_clipping_x0_changes_nothing_inside_the_data_range_and_clips_outside_it(sampler):
    """Inside [-1, 1] the clipped sampler's step (the posterior mean of x0_hat, or DDIM with eps re-derived) is the
    plain one; an x0_hat of 3 ends as 3 without clipping and as 1 with it."""
    betas = linear_beta_schedule(100).double()
    alpha_bar = alpha_bar_from_betas(betas)
    x_T = torch.randn(200, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def run(c, clip):
        model = _constant_x0_predictor(alpha_bar, c)
        if sampler == "ddpm":
            return ddpm_sample(model, (200, 1), betas, torch.Generator().manual_seed(4), x_T=x_T,
                               dtype=torch.float64, clip_x0=clip)
        return ddim_sample(model, (200, 1), alpha_bar, 20, 0.5, torch.Generator().manual_seed(4), x_T=x_T,
                           dtype=torch.float64, clip_x0=clip)

    torch.testing.assert_close(run(0.3, True), run(0.3, False), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(run(0.3, True), torch.full_like(x_T, 0.3), rtol=0, atol=1e-9)
    torch.testing.assert_close(run(3.0, False), torch.full_like(x_T, 3.0), rtol=0, atol=1e-9)
    torch.testing.assert_close(run(3.0, True), torch.ones_like(x_T), rtol=0, atol=1e-9)


def test_samplers_reject_bad_step_counts_and_shapes():
    alpha_bar = cosine_alpha_bar(10)
    eps = gaussian_eps_predictor(alpha_bar)
    assert ddim_timesteps(10, 10) == list(range(10)) and ddim_timesteps(10, 1) == [9]
    assert ddim_timesteps(1000, 4) == [0, 333, 666, 999]
    for bad in (0, 11, 2.5):
        with pytest.raises(ValueError, match=r"steps must be an int in \[1, T\] = \[1, 10\]"):
            ddim_sample(eps, (2, 1), alpha_bar, bad)
    with pytest.raises(ValueError, match="eta must be >= 0"):
        ddim_sample(eps, (2, 1), alpha_bar, 3, eta=-1.0)
    with pytest.raises(ValueError, match=r"x_T has shape \(3, 1\) but shape is \(2, 1\)"):
        ddim_sample(eps, (2, 1), alpha_bar, 3, x_T=torch.zeros(3, 1))
    with pytest.raises(ValueError, match="variance must be"):
        ddpm_sample(eps, (2, 1), cosine_beta_schedule(10), variance="learned")
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\)"):
        ddpm_sample(eps, (2, 1), torch.tensor([0.5, 1.5]))


def test_guided_eps_interpolates_and_extrapolates_between_the_unconditional_and_the_conditional_noise():
    g = torch.Generator().manual_seed(7)
    eps_c, eps_u = torch.randn(2, 3, 1, 4, 4, generator=g)
    calls = []

    def model(x, t, labels):  # the conditional noise for a digit, the unconditional one for the null label 10
        calls.append(labels.clone())
        return torch.where((labels == 10).reshape(-1, 1, 1, 1), torch.cat([eps_u, eps_u]), torch.cat([eps_c, eps_c]))

    x, t, labels = torch.zeros(3, 1, 4, 4), torch.full((3,), 5), torch.tensor([1, 4, 7])
    torch.testing.assert_close(guided_eps(model, x, t, labels, 0.0, 10), eps_u)
    torch.testing.assert_close(guided_eps(model, x, t, labels, 1.0, 10), eps_c)
    torch.testing.assert_close(guided_eps(model, x, t, labels, 3.0, 10), eps_u + 3 * (eps_c - eps_u))
    assert len(calls) == 3 and calls[0].tolist() == [1, 4, 7, 10, 10, 10]  # one batched call of 2B inputs
    with pytest.raises(ValueError, match=r"labels must be \(B,\) = \(3,\) integers"):
        guided_eps(model, x, t, labels.float(), 2.0, 10)
