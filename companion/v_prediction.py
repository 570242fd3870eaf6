r"""The v-parameterisation of a diffusion model (chapter on diffusion, section "What the network predicts").

With :math:`x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \varepsilon`
(:func:`companion.diffusion.q_sample`) the network may predict the noise :math:`\varepsilon`, the image
:math:`x_0`, or the *velocity* (Salimans and Ho 2022, :cite:`salimans2022progressive`)

.. math::

    v = \sqrt{\bar\alpha_t}\, \varepsilon - \sqrt{1 - \bar\alpha_t}\, x_0 ,

the rate of change of :math:`x_t` along the circle :math:`(\sqrt{\bar\alpha_t}, \sqrt{1 - \bar\alpha_t})`. Each
determines the others given :math:`x_t` (:func:`eps_from_v`, :func:`x0_from_v`):

.. math::

    \varepsilon = \sqrt{\bar\alpha_t}\, v + \sqrt{1 - \bar\alpha_t}\, x_t , \qquad
    x_0 = \sqrt{\bar\alpha_t}\, x_t - \sqrt{1 - \bar\alpha_t}\, v .

So the errors are tied: :math:`\|\hat\varepsilon - \varepsilon\|^2 = \bar\alpha_t \|\hat v - v\|^2` and
:math:`\|\hat x_0 - x_0\|^2 = (1 - \bar\alpha_t) \|\hat v - v\|^2`. In terms of the image error, the noise loss
weighs step :math:`t` by the signal-to-noise ratio :math:`\mathrm{SNR}_t = \bar\alpha_t / (1 - \bar\alpha_t)`, the
v-loss (:func:`v_loss`) by :math:`1 + \mathrm{SNR}_t`: at the noisiest steps, where the noise loss hardly
sees the image error, the v-loss still asks for a good image.

The samplers of :mod:`companion.diffusion` take a noise predictor; :func:`eps_model_from_v` turns a v-predictor
into one (classifier-free guidance commutes with it: :math:`\varepsilon` is affine in :math:`v` at fixed
:math:`x_t`).

Shapes: data ``x0, x_t, noise, v: (B, *x_shape)``; steps ``t: (B,)`` (``torch.long``, indices ``0 .. T-1`` as in
:mod:`companion.diffusion`); ``alpha_bar_t`` a float or a tensor broadcastable to the data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from companion.checks import verdict
from companion.diffusion import _call, _check_alpha_bar, _draw_x_t, _per_example, _same, _try

__all__ = ["v_target", "eps_from_v", "x0_from_v", "v_loss", "eps_model_from_v", "check_x0_from_v"]


def _coefficients(first: Tensor, second: Tensor, alpha_bar_t: Tensor | float, names: str) -> tuple[Tensor, Tensor]:
    r""":math:`(\sqrt{\bar\alpha_t}, \sqrt{1 - \bar\alpha_t})` for two tensors of one shape (``names``: theirs)."""
    if first.shape != second.shape:
        raise ValueError(f"{names} must have the same shape, got {tuple(first.shape)} and {tuple(second.shape)}")
    ab = torch.as_tensor(alpha_bar_t, dtype=first.dtype, device=first.device)
    if not bool(((ab > 0) & (ab <= 1)).all()):
        raise ValueError(f"alpha_bar_t must be in (0, 1], got values in [{float(ab.min())}, {float(ab.max())}]")
    return ab.sqrt(), (1 - ab).sqrt()


def v_target(x0: Tensor, noise: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    r""":math:`v = \sqrt{\bar\alpha_t}\, \varepsilon - \sqrt{1 - \bar\alpha_t}\, x_0`; ``x0, noise: (B, ...)``."""
    a, s = _coefficients(x0, noise, alpha_bar_t, "x0 and noise")
    return a * noise - s * x0


def eps_from_v(v: Tensor, x_t: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    r""":math:`\varepsilon = \sqrt{\bar\alpha_t}\, v + \sqrt{1 - \bar\alpha_t}\, x_t`; ``v, x_t: (B, ...)``."""
    a, s = _coefficients(v, x_t, alpha_bar_t, "v and x_t")
    return a * v + s * x_t


def x0_from_v(v: Tensor, x_t: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    r""":math:`x_0 = \sqrt{\bar\alpha_t}\, x_t - \sqrt{1 - \bar\alpha_t}\, v`; ``v, x_t: (B, ...)``."""
    a, s = _coefficients(v, x_t, alpha_bar_t, "v and x_t")
    return a * x_t - s * v


def v_loss(model: Callable[..., Tensor], x0: Tensor, alpha_bar: Tensor, generator: torch.Generator | None = None,
           labels: Tensor | None = None, *, t: Tensor | None = None, noise: Tensor | None = None) -> Tensor:
    r"""The v-prediction loss :math:`\mathbb E_{t, x_0, \varepsilon} \|v - v_\theta(x_t, t)\|^2` (mean per entry).

    Draws ``t`` (uniform on ``0 .. T-1``, first) and ``noise`` from ``generator`` exactly as
    :func:`companion.diffusion.ddpm_loss` does, so both losses see the same ``x_t`` for the same seed.

    Args:
        model: ``model(x_t, t[, labels])`` -> predicted v of ``x_t``'s shape.
        x0: ``(B, *x_shape)`` data; alpha_bar: ``(T,)`` schedule; labels: ``(B,)`` or None.
        t, noise: fix the steps or the noise instead of drawing them.
    """
    t, noise, x_t = _draw_x_t(x0, alpha_bar, generator, t, noise)
    target = v_target(x0, noise, _per_example(alpha_bar, t, x0))
    return F.mse_loss(_call(model, x_t, t, labels), target)


def eps_model_from_v(v_model: Callable[..., Tensor], alpha_bar: Tensor) -> Callable[..., Tensor]:
    r"""A noise predictor ``eps(x_t, t[, labels])`` from a v-predictor ``v_model(x_t, t[, labels])``, for the
    samplers and :func:`companion.diffusion.guided_eps`; ``alpha_bar: (T,)``, ``t: (B,)`` indices."""
    _check_alpha_bar(alpha_bar)

    def eps_model(x_t: Tensor, t: Tensor, *labels: Tensor) -> Tensor:
        v = _call(v_model, x_t, t, labels[0] if labels else None)
        return eps_from_v(v, x_t, _per_example(alpha_bar, t, x_t))

    return eps_model


def check_x0_from_v(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> bool:
    r"""Exercise checker: ``fn(v, x_t, alpha_bar_t)`` should return the image of a v-prediction,
    :math:`\sqrt{\bar\alpha_t}\, x_t - \sqrt{1 - \bar\alpha_t}\, v` (:func:`x0_from_v`); ``alpha_bar_t: (B, 1)``."""
    g = torch.Generator().manual_seed(3)
    v, x_t = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    ab = torch.rand(5, 1, generator=g, dtype=torch.float64) * 0.9 + 0.05
    got, err = _try(fn, v, x_t, ab)
    if err:
        return verdict(False, err)
    if _same(got, x0_from_v(v, x_t, ab)):
        return verdict(True, "x0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v: no division, at any noise level")
    if _same(got, eps_from_v(v, x_t, ab)):
        return verdict(False, "that is the noise, sqrt(ab) v + sqrt(1 - ab) x_t; the image takes the other rotation")
    if _same(got, ab * x_t - (1 - ab) * v):
        return verdict(False, "alpha_bar_t and 1 - alpha_bar_t are variances; the coefficients are their square roots")
    return verdict(False, "expected sqrt(alpha_bar_t) * x_t - sqrt(1 - alpha_bar_t) * v")
