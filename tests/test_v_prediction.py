"""Tests of companion.v_prediction: the identities between v, the noise and the image, and the v-loss."""

from __future__ import annotations

import pytest
import torch

from companion.diffusion import alpha_bar_from_betas, ddim_sample, ddpm_loss, linear_beta_schedule, q_sample
from companion.v_prediction import check_x0_from_v, eps_from_v, eps_model_from_v, v_loss, v_target, x0_from_v

F64 = torch.float64
AB = alpha_bar_from_betas(linear_beta_schedule(100).double())


def batch(seed=0, B=6):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(B, 1, 4, 4, generator=g, dtype=F64) * 2 - 1
    noise = torch.randn(B, 1, 4, 4, generator=g, dtype=F64)
    t = torch.randint(0, 100, (B,), generator=g)
    return x0, noise, t, AB[t].reshape(-1, 1, 1, 1)


def test_the_noise_and_the_image_are_recovered_from_v_and_x_t():
    x0, noise, t, ab = batch()
    x_t = q_sample(x0, t, noise, AB)
    v = v_target(x0, noise, ab)
    torch.testing.assert_close(eps_from_v(v, x_t, ab), noise, rtol=0, atol=1e-12)
    torch.testing.assert_close(x0_from_v(v, x_t, ab), x0, rtol=0, atol=1e-12)
    # v is the derivative of x_t = cos(phi) x0 + sin(phi) eps along phi
    phi = torch.arccos(ab.sqrt())
    torch.testing.assert_close(v, -torch.sin(phi) * x0 + torch.cos(phi) * noise, rtol=0, atol=1e-12)


def test_the_errors_are_tied_by_alpha_bar_and_one_minus_alpha_bar():
    """||eps_hat - eps||^2 = alpha_bar ||v_hat - v||^2 and ||x0_hat - x0||^2 = (1 - alpha_bar) ||v_hat - v||^2, per
    example: the noise loss weighs the image error by SNR, the v-loss by 1 + SNR."""
    x0, noise, t, ab = batch(1)
    x_t = q_sample(x0, t, noise, AB)
    v = v_target(x0, noise, ab)
    v_hat = v + 0.3 * torch.randn(v.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    err_v = (v_hat - v).pow(2).sum((1, 2, 3))
    err_eps = (eps_from_v(v_hat, x_t, ab) - noise).pow(2).sum((1, 2, 3))
    err_x0 = (x0_from_v(v_hat, x_t, ab) - x0).pow(2).sum((1, 2, 3))
    a = ab.flatten()
    torch.testing.assert_close(err_eps, a * err_v, rtol=1e-10, atol=0)
    torch.testing.assert_close(err_x0, (1 - a) * err_v, rtol=1e-10, atol=0)
    snr = a / (1 - a)
    torch.testing.assert_close(err_eps, snr * err_x0, rtol=1e-10, atol=0)
    torch.testing.assert_close(err_v, (1 + snr) * err_x0, rtol=1e-10, atol=0)


def test_v_loss_draws_the_same_steps_and_noise_as_ddpm_loss():
    """Same seed, same x_t: a network that returns the true v has v-loss 0, and its noise (via eps_from_v) has
    ddpm_loss 0 (float64, so the zeros are round-off)."""
    x0 = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=F64) * 2 - 1
    g = torch.Generator().manual_seed(9)
    t_drawn = torch.randint(0, 100, (5,), generator=g)
    noise_drawn = torch.randn(x0.shape, generator=g, dtype=F64)
    ab = AB[t_drawn].reshape(-1, 1, 1, 1)

    def oracle_v(x_t, t):
        assert torch.equal(t, t_drawn)
        return v_target(x0, noise_drawn, ab)

    assert float(v_loss(oracle_v, x0, AB, generator=torch.Generator().manual_seed(9))) < 1e-24
    eps_model = eps_model_from_v(oracle_v, AB)
    assert float(ddpm_loss(eps_model, x0, AB, generator=torch.Generator().manual_seed(9))) < 1e-24


def test_v_loss_is_the_mean_squared_v_error_with_fixed_steps_and_noise():
    x0, noise, t, ab = batch(3)

    def zero(x_t, t):
        return torch.zeros_like(x_t)

    want = v_target(x0, noise, ab).pow(2).mean()
    torch.testing.assert_close(v_loss(zero, x0, AB, t=t, noise=noise), want, rtol=1e-12, atol=0)


def test_a_sampler_fed_the_exact_v_of_one_point_lands_on_it():
    """For data that is a single point x*, v = sqrt(ab) eps - sqrt(1 - ab) x* with eps = (x_t - sqrt(ab) x*) /
    sqrt(1 - ab): DDIM through eps_model_from_v ends at x* from any start."""
    x_star = torch.tensor([0.5, -0.25], dtype=F64)

    def exact_v(x_t, t):
        a = AB[t].reshape(-1, 1)
        eps = (x_t - a.sqrt() * x_star) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * x_star

    x = ddim_sample(eps_model_from_v(exact_v, AB), (3, 2), AB, steps=10, generator=torch.Generator().manual_seed(0),
                    dtype=F64)
    torch.testing.assert_close(x, x_star.expand(3, 2), rtol=0, atol=1e-8)


@pytest.mark.parametrize("call, message", [
    (lambda: v_target(torch.zeros(2, 3), torch.zeros(2, 4), 0.5), "x0 and noise must have the same shape"),
    (lambda: eps_from_v(torch.zeros(2, 3), torch.zeros(3, 3), 0.5), "v and x_t must have the same shape"),
    (lambda: x0_from_v(torch.zeros(2, 3), torch.zeros(2, 3), 1.5), r"alpha_bar_t must be in \(0, 1\]"),
    (lambda: v_target(torch.zeros(2, 3), torch.zeros(2, 3), 0.0), r"alpha_bar_t must be in \(0, 1\]"),
    (lambda: v_loss(lambda x, t: x, torch.zeros(0, 3), AB), "non-empty batch"),
    (lambda: eps_model_from_v(lambda x, t: x, torch.zeros(3, 3)), r"alpha_bar must have shape \(T,\)"),
])
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_exercise_checker_accepts_the_answer_and_names_the_usual_mistakes(capsys):
    assert check_x0_from_v(lambda v, x, ab: ab.sqrt() * x - (1 - ab).sqrt() * v)
    assert "Correct" in capsys.readouterr().out
    for wrong, hint in [
        (lambda v, x, ab: ab.sqrt() * v + (1 - ab).sqrt() * x, "that is the noise"),
        (lambda v, x, ab: ab * x - (1 - ab) * v, "square roots"),
        (lambda v, x, ab: x - v, "expected sqrt"),
        (lambda v, x, ab: v.foo, "raised AttributeError"),
    ]:
        assert not check_x0_from_v(wrong)
        assert hint in capsys.readouterr().out
