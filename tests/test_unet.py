"""Tests of companion.unet (part "Beyond the articles": the network of diffusion and flow matching)."""

from __future__ import annotations

import math

import pytest
import torch

from companion.diffusion import alpha_bar_from_betas, ddpm_loss, linear_beta_schedule
from companion.flow_matching import flow_matching_loss, guided_velocity
from companion.unet import UNet, sinusoidal_time_embedding

pytestmark = pytest.mark.usefixtures("one_thread")


def images(n, seed=0):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def unet(seed=0, **kwargs):
    torch.manual_seed(seed)
    return UNet(**{"channels": 16, **kwargs}).eval()


def test_output_has_the_input_shape_for_steps_and_times():
    model, x = unet(), images(3)
    with torch.no_grad():
        assert model(x, torch.tensor([0, 10, 999])).shape == x.shape
        assert model(x, torch.tensor([0.0, 0.5, 1.0])).shape == x.shape
        assert model(torch.randn(2, 1, 12, 16), torch.rand(2)).shape == (2, 1, 12, 16)


def test_time_changes_the_output_and_integer_steps_are_scaled_times():
    model, x = unet(), images(2)
    with torch.no_grad():
        early, late = model(x, torch.tensor([0.1, 0.1])), model(x, torch.tensor([0.9, 0.9]))
        assert (early - late).abs().mean() > 1e-3 * early.abs().mean()
        # the documented rule: float t in [0, 1] is multiplied by time_scale = 1000, integer t is a step
        torch.testing.assert_close(model(x, torch.tensor([0.5, 0.25])), model(x, torch.tensor([500, 250])))


def test_sinusoidal_time_embedding_follows_its_formula():
    t = torch.tensor([0.0, 3.0, 250.0])
    e = sinusoidal_time_embedding(t, 8)
    omega = [10000 ** (-i / 4) for i in range(4)]
    want = torch.tensor([[math.sin(w * s) for w in omega] + [math.cos(w * s) for w in omega] for s in t.tolist()])
    torch.testing.assert_close(e, want)
    with pytest.raises(ValueError, match="dim must be an even int"):
        sinusoidal_time_embedding(t, 7)


def test_labels_change_the_output_of_a_conditional_unet_and_the_null_label_is_a_class_of_its_own():
    model, x = unet(n_classes=10), images(2)
    t = torch.tensor([0.3, 0.3])
    with torch.no_grad():
        three, seven = model(x, t, torch.tensor([3, 3])), model(x, t, torch.tensor([7, 7]))
        null = model(x, t, torch.full((2,), model.null_label))
    assert model.null_label == 10
    assert (three - seven).abs().mean() > 1e-3 * three.abs().mean()
    assert (null - three).abs().mean() > 1e-3 * three.abs().mean()
    with torch.no_grad():  # the guidance helper runs on the U-Net
        assert guided_velocity(model, x, t, torch.tensor([3, 7]), 2.0, model.null_label).shape == x.shape


def test_parameter_count_stays_small_enough_for_a_cpu():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(UNet()) < 1_000_000  # 0.57 M
    assert count(UNet(48, n_classes=10)) < 2_000_000  # 1.3 M
    assert count(UNet(n_classes=10)) - count(UNet()) == 11 * 128  # one embedding row per label and the null label


def test_the_unet_trains_with_both_losses_and_every_parameter_gets_a_gradient():
    model = unet(n_classes=10).train()
    x, y = images(4), torch.tensor([0, 1, 2, 10])
    alpha_bar = alpha_bar_from_betas(linear_beta_schedule(1000)).float()
    for loss in (ddpm_loss(model, x, alpha_bar, torch.Generator().manual_seed(0), labels=y),
                 flow_matching_loss(model, x, torch.Generator().manual_seed(0), labels=y)):
        assert math.isfinite(float(loss.detach()))
        model.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_the_unet_rejects_bad_input():
    model, cond = unet(), unet(n_classes=10)
    x, t = images(2), torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\), got \(2, 3, 28, 28\)"):
        model(torch.zeros(2, 3, 28, 28), t)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.zeros(2, 1, 30, 28), t)
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(2,\), got \(3,\)"):
        model(x, torch.zeros(3))
    with pytest.raises(ValueError, match=r"float times t must lie in \[0, 1\]"):
        model(x, torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="integer steps t must be >= 0"):
        model(x, torch.tensor([-1, 3]))
    with pytest.raises(ValueError, match="unconditional"):
        model(x, t, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="conditional .* pass labels"):
        cond(x, t)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\]"):
        cond(x, t, torch.tensor([3, 11]))
    with pytest.raises(ValueError, match="integer classes"):
        cond(x, t, torch.tensor([3.0, 1.0]))
    with pytest.raises(ValueError, match="multiple of groups"):
        UNet(channels=20)
    assert model.null_label is None  # an unconditional U-Net has no null label
