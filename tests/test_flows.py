"""Tests of companion.flows (part "Beyond the articles": normalizing flows, RealNVP)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from companion.flows import AffineCoupling, RealNVP, soft_clamp, standard_normal_log_prob

pytestmark = pytest.mark.usefixtures("one_thread")


def randomised(module, std=0.5, seed=0):
    """Every parameter redrawn from N(0, std^2), in float64: a non-trivial flow without training."""
    g = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(std * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return module


def points(n, dim, seed=1):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("make", [
    lambda: AffineCoupling(5, 16, torch.tensor([1, 0, 0, 1, 0])),
    lambda: RealNVP(5, n_layers=4, hidden=16),
    lambda: RealNVP(2, n_layers=3, hidden=8),
], ids=["coupling", "realnvp-5d", "realnvp-2d"])
def test_log_det_is_the_log_abs_determinant_of_the_autograd_jacobian(make):
    flow = randomised(make())
    x = points(6, flow.dim)
    with torch.no_grad():
        _, log_det = flow(x)
    for i in range(x.shape[0]):
        J = jacobian(lambda v: flow(v[None])[0][0], x[i])  # noqa: B023
        assert J.shape == (flow.dim, flow.dim)
        _, logabsdet = torch.linalg.slogdet(J)
        assert float(log_det[i]) == pytest.approx(float(logabsdet), abs=1e-6)
    assert log_det.abs().max() > 0.1  # the randomised flow really changes volume


@pytest.mark.parametrize("make", [
    lambda: AffineCoupling(4, 16, torch.tensor([0, 1, 1, 0], dtype=torch.bool)),
    lambda: RealNVP(4, n_layers=6, hidden=16),
], ids=["coupling", "realnvp"])
def test_inverse_undoes_forward(make):
    flow = randomised(make())
    x = points(100, 4)
    y, _ = flow(x)
    assert (y - x).abs().max() > 0.1
    torch.testing.assert_close(flow.inverse(y), x, rtol=0, atol=1e-8)  # float64 round-off, scaled by the layers
    torch.testing.assert_close(flow(flow.inverse(x))[0], x, rtol=0, atol=1e-8)


def test_coupling_keeps_the_masked_coordinates_and_bounds_the_log_scale():
    mask = torch.tensor([1, 0, 1, 0])
    layer = randomised(AffineCoupling(4, 8, mask, log_scale_bound=1.5), std=5.0)  # huge raw log-scales
    x = points(200, 4)
    y, log_det = layer(x)
    torch.testing.assert_close(y[:, mask.bool()], x[:, mask.bool()], rtol=0, atol=0)
    s, t = layer.scale_and_shift(x * layer.mask)
    assert s.abs().max() <= 1.5 and (s[:, mask.bool()] == 0).all() and (t[:, mask.bool()] == 0).all()
    assert s.abs().max() > 1.0  # the clamp is active here ...
    torch.testing.assert_close(layer.inverse(y), x, rtol=0, atol=1e-10)  # ... and the layer stays invertible
    torch.testing.assert_close(log_det, s.sum(-1))
    z = torch.linspace(-3, 3, 7, dtype=torch.float64)
    torch.testing.assert_close(soft_clamp(z, 100.0), z, rtol=1e-3, atol=0)  # identity near 0


def test_realnvp_density_integrates_to_one_and_matches_its_samples():
    flow = randomised(RealNVP(2, n_layers=4, hidden=16), std=0.25, seed=0)
    h = 0.04
    axis = torch.arange(-8, 8 + h / 2, h, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    mass = float(density.sum() * h * h)
    assert mass == pytest.approx(1.0, abs=1e-2)
    # the density is not the base's: the flow is non-trivial
    base = standard_normal_log_prob(grid).exp()
    assert float((density - base).abs().sum() * h * h) > 0.3
    # the samples (z ~ N(0, I) pushed through the inverse) follow the same density: compare the means
    x = flow.sample(20_000, generator=torch.Generator().manual_seed(4))
    grid_mean = (density[:, None] * grid).sum(0) * h * h / mass
    se = x.std(0) / math.sqrt(x.shape[0])
    assert ((x.mean(0) - grid_mean).abs() < 5 * se).all(), (x.mean(0), grid_mean)
    inside = ((x.abs() < 8).all(1)).double().mean()
    assert inside > 0.999  # the grid covers the flow's mass


def test_an_untouched_realnvp_is_the_identity_and_log_prob_is_differentiable():
    torch.manual_seed(0)
    flow = RealNVP(3, n_layers=2, hidden=8)  # zero-initialised last layers: f(x) = x
    x = torch.randn(10, 3)
    torch.testing.assert_close(flow.log_prob(x), standard_normal_log_prob(x))
    loss = -randomised(flow, std=0.3).log_prob(x.double()).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.parameters())
    assert flow.sample(5, generator=torch.Generator().manual_seed(0)).shape == (5, 3)
    a = flow.sample(5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, flow.sample(5, generator=torch.Generator().manual_seed(1)))


def test_flows_reject_bad_input():
    with pytest.raises(ValueError, match=r"mask must have shape \(dim,\) = \(3,\)"):
        AffineCoupling(3, 8, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="keep some coordinates"):
        AffineCoupling(3, 8, torch.ones(3))
    with pytest.raises(ValueError, match="only 0 and 1"):
        AffineCoupling(3, 8, torch.tensor([1.0, 0.5, 0.0]))
    with pytest.raises(ValueError, match="dim >= 2"):
        RealNVP(1, 2, 8)
    with pytest.raises(ValueError, match="n_layers must be an int >= 1"):
        RealNVP(2, 0, 8)
    flow = RealNVP(3, 2, 8)
    with pytest.raises(ValueError, match=r"expects input of shape \(B, 3\), got \(4, 2\)"):
        flow.log_prob(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"inverse expects input of shape \(B, 3\)"):
        flow.inverse(torch.zeros(3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        flow(None)


# ---- exercise checkers of the chapter (each accepts a right answer and rejects wrong ones) ----

def _verdicts(capsys) -> list[str]:
    return [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if line]


def test_check_lognormal_log_prob(capsys):
    from companion.flows import check_lognormal_log_prob

    normal = torch.distributions.Normal(0.0, 1.0)
    assert check_lognormal_log_prob(lambda x: normal.log_prob(torch.log(x)) - torch.log(x))
    assert not check_lognormal_log_prob(lambda x: normal.log_prob(torch.log(x)))  # no Jacobian factor
    assert not check_lognormal_log_prob(lambda x: normal.log_prob(torch.log(x)) + torch.log(x))  # |dx/dz|
    assert not check_lognormal_log_prob(lambda x: normal.log_prob(x))
    out = capsys.readouterr().out
    assert out.count("Correct") == 1 and out.count("Not yet") == 3 and "Jacobian factor" in out


def test_check_coupling_forward(capsys):
    from companion.flows import check_coupling_forward

    def right(layer, x):
        s, t = layer.scale_and_shift(x * layer.mask)
        return x * layer.mask + (1 - layer.mask) * (x * torch.exp(s) + t), s.sum(-1)

    def scales_not_logs(layer, x):
        y, _ = right(layer, x)
        s, _ = layer.scale_and_shift(x * layer.mask)
        return y, torch.exp(s).sum(-1)

    def shift_everything(layer, x):
        s, t = layer.scale_and_shift(x * layer.mask)
        return x * torch.exp(s) + t + 1.0, s.sum(-1)

    def unmasked_input(layer, x):  # the networks must see only the kept coordinates
        s, t = layer.scale_and_shift(x)
        return x * layer.mask + (1 - layer.mask) * (x * torch.exp(s) + t), s.sum(-1)

    assert check_coupling_forward(right)
    assert not check_coupling_forward(scales_not_logs)
    assert not check_coupling_forward(shift_everything)
    assert not check_coupling_forward(unmasked_input)
    assert not check_coupling_forward(lambda layer, x: x)
    assert _verdicts(capsys) == ["Correct"] + ["Not yet"] * 4


def test_check_planar_log_det(capsys):
    from companion.flows import check_planar_log_det

    def right(z, u, w, b):
        h_prime = 1 - torch.tanh(z @ w + b) ** 2
        return torch.log(torch.abs(1 + h_prime * (u @ w)))

    assert check_planar_log_det(right)
    assert not check_planar_log_det(lambda z, u, w, b: torch.log(torch.abs((1 - torch.tanh(z @ w + b) ** 2) * (u @ w))))
    assert not check_planar_log_det(lambda z, u, w, b: torch.log(torch.abs(1 + torch.tanh(z @ w + b) * (u @ w))))
    assert not check_planar_log_det(lambda z, u, w, b: torch.zeros(3))
    assert _verdicts(capsys) == ["Correct", "Not yet", "Not yet", "Not yet"]
