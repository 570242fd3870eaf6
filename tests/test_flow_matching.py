"""Tests of companion.flow_matching (part "Beyond the articles": flow matching with straight paths)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from companion.flow_matching import (
    drop_labels,
    euler_sample,
    flow_matching_loss,
    gaussian_mixture_velocity,
    guided_velocity,
    heun_sample,
    interpolate,
    target_velocity,
)

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
# a 1-D mixture of two Gaussians as the data: weights, means (K, D), stds
MIX = (torch.tensor([0.3, 0.7], dtype=F64), torch.tensor([[-2.0], [1.5]], dtype=F64),
       torch.tensor([0.4, 0.8], dtype=F64))


class VelocityMLP(nn.Module):
    """A small v_theta(x, t) for vectors x: (B, D), t: (B,)."""

    def __init__(self, dim=1, hidden=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, dim))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None].to(x.dtype)], dim=1))


def draws(n, seed, mix=MIX):
    """x0 ~ N(0, 1), x1 ~ the mixture, t ~ U[0, 1]."""
    g = torch.Generator().manual_seed(seed)
    weights, means, stds = mix
    k = torch.multinomial(weights, n, replacement=True, generator=g)
    x1 = means[k] + stds[k, None] * torch.randn(n, 1, generator=g, dtype=F64)
    return torch.randn(n, 1, generator=g, dtype=F64), x1, torch.rand(n, generator=g, dtype=F64)


# ------------------------------------------------------------------------ the path


def test_interpolate_hits_the_endpoints_and_its_derivative_is_the_target_velocity():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(2, 5, 1, 4, 4, generator=g, dtype=F64)
    torch.testing.assert_close(interpolate(x0, x1, torch.zeros(5, dtype=F64)), x0, rtol=0, atol=0)
    torch.testing.assert_close(interpolate(x0, x1, torch.ones(5, dtype=F64)), x1, rtol=0, atol=0)
    t = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=F64)
    torch.testing.assert_close(interpolate(x0, x1, t)[2], 0.5 * (x0[2] + x1[2]))  # t broadcasts per example
    h = 1e-3
    t_mid = torch.full((5,), 0.4, dtype=F64)  # the path is linear in t: a central difference is exact
    dt = (interpolate(x0, x1, t_mid + h) - interpolate(x0, x1, t_mid - h)) / (2 * h)
    torch.testing.assert_close(dt, target_velocity(x0, x1), rtol=1e-9, atol=1e-9)


def test_interpolate_rejects_bad_times_and_shapes():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"times t must lie in \[0, 1\]"):
        interpolate(x, x, torch.tensor([0.0, 0.5, 1.5]))
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(3,\), got \(3, 1\)"):
        interpolate(x, x, torch.zeros(3, 1))
    with pytest.raises(TypeError, match="floating-point"):
        interpolate(x, x, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="same batched shape"):
        interpolate(x, torch.zeros(3, 3), torch.zeros(3))


# -------------------------------------------------------------- the marginal field


def test_the_mixture_velocity_is_the_conditional_mean_of_x1_minus_x0():
    """u_t(x_t) = E[x1 - x0 | x_t] iff the residual x1 - x0 - u_t(x_t) is orthogonal to every g(x_t, t)."""
    x0, x1, t = draws(400_000, seed=1)
    xt = interpolate(x0, x1, t)
    residual = (target_velocity(x0, x1) - gaussian_mixture_velocity(xt, t, *MIX)).squeeze(1)
    wrong = (target_velocity(x0, x1) - gaussian_mixture_velocity(xt, t, torch.tensor([0.5, 0.5], dtype=F64),
                                                                  *MIX[1:])).squeeze(1)
    x = xt.squeeze(1)
    tests = {"1": torch.ones_like(x), "x": x, "x^2": x**2, "sin 2x": torch.sin(2 * x), "t x": t * x}
    for name, g in tests.items():
        prod = residual * g
        assert abs(float(prod.mean())) < 5 * float(prod.std()) / math.sqrt(x.numel()), name
    # the same check refuses the field of the wrong mixture weights
    assert abs(float(wrong.mean())) > 10 * float(wrong.std()) / math.sqrt(x.numel())


def test_conditional_and_marginal_losses_have_the_same_gradient():
    """grad E||v - (x1 - x0)||^2 = grad E||v - u_t(x_t)||^2: the two losses differ by a constant in theta."""
    torch.manual_seed(0)
    model = VelocityMLP().double()
    x0, x1, t = draws(200_000, seed=2)
    xt = interpolate(x0, x1, t)

    def grad(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    g_cond = grad(flow_matching_loss(model, x1, x0=x0, t=t))
    g_marg = grad(F.mse_loss(model(xt, t), gaussian_mixture_velocity(xt, t, *MIX)))
    # the field of slightly wrong data (mixture weights 0.5/0.5), or the data itself as the target:
    # measurably different gradients (relative differences 0.36-0.55 and 0.23-0.44 over seeds 0-3)
    wrong_mix = (torch.tensor([0.5, 0.5], dtype=F64), *MIX[1:])
    g_wrong = grad(F.mse_loss(model(xt, t), gaussian_mixture_velocity(xt, t, *wrong_mix)))
    g_data = grad(F.mse_loss(model(xt, t), x1))
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    assert rel(g_cond, g_marg) < 0.02  # 0.002-0.008 over seeds 0-3 with 200,000 draws
    assert rel(g_wrong, g_marg) > 0.2 and rel(g_data, g_marg) > 0.15
    # the losses themselves differ, by E Var(x1 - x0 | x_t) > 0
    with torch.no_grad():
        assert float(flow_matching_loss(model, x1, x0=x0, t=t)) > float(
            F.mse_loss(model(xt, t), gaussian_mixture_velocity(xt, t, *MIX))) + 0.1


def test_flow_matching_loss_draws_noise_and_times_and_passes_labels():
    seen = {}

    def model(x, t, labels=None):
        seen.update(t=t, labels=labels)
        return torch.zeros_like(x)

    x1 = torch.zeros(4096, 1, 2, 2)
    loss = flow_matching_loss(model, x1, torch.Generator().manual_seed(0), labels=torch.arange(4096) % 10)
    assert seen["t"].dtype == torch.float32 and seen["t"].shape == (4096,) and seen["labels"] is not None
    assert 0 <= float(seen["t"].min()) and float(seen["t"].max()) <= 1 and float(seen["t"].mean()) == pytest.approx(
        0.5, abs=0.03)
    assert float(loss) == pytest.approx(1.0, abs=0.05)  # target x1 - x0 = -x0, E x0^2 = 1 (16,384 entries)
    again = flow_matching_loss(model, x1, torch.Generator().manual_seed(0), labels=torch.arange(4096) % 10)
    assert float(again) == float(loss)
    with pytest.raises(ValueError, match="the velocity must have the input's shape"):
        flow_matching_loss(lambda x, t: x.flatten(1), x1)


# ------------------------------------------------------------------------ samplers


def gaussian_transport(n=4000, seed=3):
    """N(0, I) -> N(m, s^2 I) in 2-D: the exact field, the noise, and where the exact flow sends it (m + s x0)."""
    m, s = torch.tensor([2.0, -1.0], dtype=F64), 0.5
    one = (torch.ones(1, dtype=F64), m[None], torch.tensor([s], dtype=F64))  # a one-component "mixture"
    field = lambda x, t: gaussian_mixture_velocity(x, t, *one)  # noqa: E731
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return field, x0, m + s * x0, m, s


def test_euler_and_heun_with_the_exact_field_land_on_the_target_distribution():
    field, x0, exact, m, s = gaussian_transport()
    # measured largest errors of the flow map: Euler 0.012 with 200 steps, Heun 0.0016 with 20
    for sampler, steps, tol in ((euler_sample, 200, 0.02), (heun_sample, 20, 0.004)):
        x1 = sampler(field, x0, steps)
        assert (x1.mean(0) - m).abs().max() < 0.05  # 4,000 samples: se 0.008
        torch.testing.assert_close(x1.std(0), torch.full((2,), s, dtype=F64), rtol=0.05, atol=0)
        assert (x1 - exact).abs().max() < tol  # and the flow map itself is right, sample by sample


def test_heun_beats_euler_and_both_converge_at_their_order():
    field, x0, exact, *_ = gaussian_transport(n=500)
    err = {(name, k): float((sampler(field, x0, k) - exact).abs().max())
           for name, sampler in (("euler", euler_sample), ("heun", heun_sample)) for k in (5, 20, 40, 80)}
    for k in (5, 20, 40, 80):
        assert err["heun", k] < err["euler", k] / 10
    for k in (20, 40):  # doubling the steps halves Euler's error (first order) and quarters Heun's (second)
        assert 1.6 < err["euler", k] / err["euler", 2 * k] < 2.5
        assert 3.0 < err["heun", k] / err["heun", 2 * k] < 5.0


def test_samplers_reject_bad_step_counts():
    field, x0, *_ = gaussian_transport(n=3)
    for sampler in (euler_sample, heun_sample):
        for bad in (0, -1, 2.5, True):
            with pytest.raises(ValueError, match="steps must be an int >= 1"):
                sampler(field, x0, bad)
        assert sampler(field, x0, 1).shape == x0.shape


# ------------------------------------------------------------------------ guidance


def test_guided_velocity_interpolates_and_extrapolates_between_the_two_velocities():
    calls = []

    def model(x, t, labels):
        calls.append(labels.clone())
        return x * 0 + labels[:, None].to(x.dtype) + t[:, None]  # velocity = label + t

    x, t, y = torch.zeros(3, 2), torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1, 2, 3])
    null = 10
    v_cond, v_null = y[:, None] + t[:, None], null + t[:, None]
    torch.testing.assert_close(guided_velocity(model, x, t, y, 0.0, null), v_null.expand(3, 2))
    torch.testing.assert_close(guided_velocity(model, x, t, y, 1.0, null), v_cond.expand(3, 2).float())
    want = (v_null + 3 * (v_cond - v_null)).expand(3, 2)
    torch.testing.assert_close(guided_velocity(model, x, t, y, 3.0, null), want)
    assert len(calls) == 3 and calls[0].tolist() == [1, 2, 3, 10, 10, 10]  # one batched call per evaluation
    with pytest.raises(ValueError, match=r"labels must be \(B,\) = \(3,\) integers"):
        guided_velocity(model, x, t, y.float(), 1.0, null)


def test_drop_labels_replaces_a_fraction_p_by_the_null_label():
    y = torch.arange(20_000) % 10
    dropped = drop_labels(y, 0.2, 10, torch.Generator().manual_seed(0))
    frac = float((dropped == 10).double().mean())
    assert frac == pytest.approx(0.2, abs=0.015)
    kept = dropped != 10
    assert (dropped[kept] == y[kept]).all()
    assert (drop_labels(y, 0.0, 10) == y).all() and (drop_labels(y, 1.0, 10) == 10).all()
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]"):
        drop_labels(y, 1.5, 10)


# ------------------------------------------------------------ density, score, velocity from the score


def test_the_mixture_log_density_integrates_to_one_and_its_gradient_is_the_closed_form_score():
    from companion.flow_matching import gaussian_mixture_log_density, gaussian_mixture_score

    mix2 = (torch.tensor([0.25, 0.75], dtype=F64), torch.tensor([[-1.0, 0.5], [1.0, -0.5]], dtype=F64),
            torch.tensor([0.3, 0.5], dtype=F64))
    step = 0.02
    axis = torch.arange(-6, 6 + step / 2, step, dtype=F64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    for t_value in (0.0, 0.5, 0.9, 1.0):  # N(0, I) at t = 0, the data at t = 1
        t = torch.full((grid.shape[0],), t_value, dtype=F64)
        mass = float(gaussian_mixture_log_density(grid, t, *mix2).exp().sum() * step**2)
        assert abs(mass - 1) < 1e-4, (t_value, mass)
    g = torch.Generator().manual_seed(5)
    x = (2 * torch.randn(50, 2, generator=g, dtype=F64)).requires_grad_(True)
    t = torch.rand(50, generator=g, dtype=F64)
    (auto,) = torch.autograd.grad(gaussian_mixture_log_density(x, t, *mix2).sum(), x)
    torch.testing.assert_close(gaussian_mixture_score(x.detach(), t, *mix2), auto, rtol=1e-10, atol=1e-12)
    # at t = 0 the path is N(0, I): log density and score of the standard normal
    zero = torch.zeros(50, dtype=F64)
    torch.testing.assert_close(gaussian_mixture_score(x.detach(), zero, *mix2), -x.detach())
    torch.testing.assert_close(gaussian_mixture_log_density(x.detach(), zero, *mix2),
                               -0.5 * x.detach().pow(2).sum(1) - math.log(2 * math.pi))


def test_velocity_from_score_gives_the_mixture_velocity_and_rejects_t_zero():
    from companion.flow_matching import gaussian_mixture_score, velocity_from_score

    g = torch.Generator().manual_seed(6)
    x = 2 * torch.randn(200, 1, generator=g, dtype=F64)
    t = 0.05 + 0.95 * torch.rand(200, generator=g, dtype=F64)
    got = velocity_from_score(gaussian_mixture_score(x, t, *MIX), x, t)
    torch.testing.assert_close(got, gaussian_mixture_velocity(x, t, *MIX), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="needs times t > 0"):
        velocity_from_score(x, x, torch.zeros(200, dtype=F64))
    with pytest.raises(ValueError, match="score has shape"):
        velocity_from_score(x[:, 0], x, t)


# ------------------------------------------------------------------------ exercise checkers


def test_check_interpolation_accepts_the_path_and_names_the_usual_mistakes(capsys):
    from companion.flow_matching import check_interpolation

    def right(x0, x1, t):
        t = t.reshape(-1, *[1] * (x0.ndim - 1))
        return (1 - t) * x0 + t * x1, x1 - x0

    assert check_interpolation(right) is True
    assert check_interpolation(lambda x0, x1, t: (interpolate(x0, x1, t), target_velocity(x0, x1)))
    assert check_interpolation(lambda x0, x1, t: right(x1, x0, t)) is False
    assert "starts at the data" in capsys.readouterr().out
    assert check_interpolation(lambda x0, x1, t: (right(x0, x1, t)[0], x0 - x1)) is False
    assert "wrong sign" in capsys.readouterr().out
    assert check_interpolation(lambda x0, x1, t: ((1 - t) * x0 + t * x1, x1 - x0)) is False  # t not broadcast
    assert "reshape it to (B, 1, ..., 1)" in capsys.readouterr().out
    assert check_interpolation(lambda x0, x1, t: (x0, x1 - x0)) is False


def test_check_euler_sampler_accepts_euler_and_rejects_end_of_step_times_and_extra_calls(capsys):
    from companion.flow_matching import check_euler_sampler

    def euler(v, x0, steps, shift=0):
        x, h = x0.clone(), 1.0 / steps
        for i in range(steps):
            x = x + h * v(x, torch.full((x.shape[0],), (i + shift) * h, dtype=x.dtype))
        return x

    assert check_euler_sampler(euler) is True
    assert check_euler_sampler(euler_sample) is True
    assert check_euler_sampler(lambda v, x0, steps: euler(v, x0, steps, shift=1)) is False
    assert "end of each step" in capsys.readouterr().out
    assert check_euler_sampler(lambda v, x0, steps: euler(v, x0, 2 * steps)) is False
    assert "one call per step" in capsys.readouterr().out
    assert check_euler_sampler(heun_sample) is False  # two calls per step
    assert check_euler_sampler(lambda v, x0, steps: euler(lambda x, t: v(x, t[0]), x0, steps)) is False
    assert "t of shape (B,)" in capsys.readouterr().out


def test_check_guided_velocity_accepts_the_rule_and_explains_the_other_convention(capsys):
    from companion.flow_matching import check_guided_velocity

    assert check_guided_velocity(lambda c, u, w: u + w * (c - u)) is True
    assert check_guided_velocity(lambda c, u, w: (1 + w) * c - w * u) is False
    assert "Ho and Salimans" in capsys.readouterr().out
    assert check_guided_velocity(lambda c, u, w: c + w * (u - c)) is False
    assert check_guided_velocity(lambda c, u, w: w * c) is False


def test_check_velocity_from_score_accepts_the_identity_and_rejects_sign_and_factor_errors(capsys):
    from companion.flow_matching import check_velocity_from_score, velocity_from_score

    assert check_velocity_from_score(velocity_from_score) is True
    assert check_velocity_from_score(lambda s, x, t: (x + (1 - t[:, None]) * s) / t[:, None]) is True
    assert check_velocity_from_score(lambda s, x, t: (x - (1 - t[:, None]) * s) / t[:, None]) is False
    assert "sign" in capsys.readouterr().out
    assert check_velocity_from_score(lambda s, x, t: x + (1 - t[:, None]) * s) is False
    assert "factor t" in capsys.readouterr().out
    assert check_velocity_from_score(lambda s, x, t: (x + t[:, None] * s) / t[:, None]) is False
