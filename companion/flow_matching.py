r"""Flow matching with straight paths (part "Beyond the articles", chapter on flow matching).

Noise :math:`x_0 \sim \mathcal N(0, I)` and data :math:`x_1 \sim p_{data}` are joined by the straight
path (:func:`interpolate`, Lipman et al. 2023; Liu et al. 2023)

.. math::

    x_t = (1 - t)\, x_0 + t\, x_1, \qquad \frac{d x_t}{dt} = x_1 - x_0,

whose velocity is :func:`target_velocity`; a network :math:`v_\theta(x, t)` regresses that conditional
velocity (:func:`flow_matching_loss`)

.. math::

    \mathcal L_{CFM}(\theta) = \mathbb E_{t \sim U[0, 1],\, x_0,\, x_1}
        \big\| v_\theta(x_t, t) - (x_1 - x_0) \big\|^2 .

Its gradient equals that of the marginal loss
:math:`\mathbb E_{t, x_t} \| v_\theta(x_t, t) - u_t(x_t) \|^2` with
:math:`u_t(x) = \mathbb E[x_1 - x_0 \mid x_t = x]`, the velocity whose ODE
:math:`\dot x = u_t(x)` carries :math:`\mathcal N(0, I)` at :math:`t = 0` to :math:`p_{data}` at
:math:`t = 1` (the two losses differ by a constant in :math:`\theta`). For data from a mixture of
isotropic Gaussians :math:`\sum_k \pi_k \mathcal N(\mu_k, s_k^2 I)` the field is closed-form
(:func:`gaussian_mixture_velocity`): per component, :math:`x_t \sim \mathcal N(t \mu_k, \sigma_{k,t}^2 I)`
with :math:`\sigma_{k,t}^2 = (1 - t)^2 + t^2 s_k^2`, and

.. math::

    u_t(x) = \sum_k w_k(x) \Big( \mu_k + \frac{t s_k^2 - (1 - t)}{\sigma_{k,t}^2} (x - t \mu_k) \Big),
    \qquad w_k(x) \propto \pi_k\, \mathcal N(x; t \mu_k, \sigma_{k,t}^2 I).

Samplers integrate :math:`\dot x = v(x, t)` from :math:`t = 0` to 1 in ``steps`` equal steps
:math:`h = 1/\text{steps}`: Euler (:func:`euler_sample`, :math:`x \leftarrow x + h v(x, t)`, error
:math:`O(h)`) and Heun (:func:`heun_sample`, the trapezoid of the Euler predictor, error
:math:`O(h^2)`, two evaluations per step). Classifier-free guidance (:func:`guided_velocity`)
extrapolates from the unconditional velocity (the label :math:`\varnothing`) to the conditional one,
:math:`\tilde v = v(x, t, \varnothing) + w\, (v(x, t, y) - v(x, t, \varnothing))`; training drops
labels to :math:`\varnothing` at random (:func:`drop_labels`).

Shapes: ``x0, x1, x_t: (B, *x_shape)``; times ``t: (B,)`` floats in ``[0, 1]``; labels ``(B,)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "interpolate",
    "target_velocity",
    "flow_matching_loss",
    "gaussian_mixture_velocity",
    "euler_sample",
    "heun_sample",
    "guided_velocity",
    "drop_labels",
]

VelocityFn = Callable[[Tensor, Tensor], Tensor]


def _check_times(t: Tensor, batch: int) -> None:
    if not isinstance(t, Tensor) or not t.dtype.is_floating_point:
        raise TypeError(f"t must be a floating-point tensor of times in [0, 1], got {getattr(t, 'dtype', type(t))}")
    if t.shape != (batch,):
        raise ValueError(f"t must have shape (B,) = ({batch},), got {tuple(t.shape)}")
    if batch and (not torch.isfinite(t).all() or float(t.min()) < 0 or float(t.max()) > 1):
        raise ValueError(f"times t must lie in [0, 1], got values in [{float(t.min()):.3g}, {float(t.max()):.3g}]")


def _expand(t: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` -> ``(B, 1, ..., 1)`` to broadcast over an example of ``like``."""
    return t.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def interpolate(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    r""":math:`x_t = (1 - t)\, x_0 + t\, x_1`: ``x0, x1: (B, *x_shape)``, ``t: (B,)`` in [0, 1] -> ``(B, *x_shape)``."""
    if x0.shape != x1.shape or x0.ndim < 1:
        raise ValueError(f"x0 and x1 must have the same batched shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    _check_times(t, x0.shape[0])
    t = _expand(t, x0)
    return (1 - t) * x0 + t * x1


def target_velocity(x0: Tensor, x1: Tensor) -> Tensor:
    r""":math:`\frac{d x_t}{dt} = x_1 - x_0`, the conditional velocity of the straight path."""
    if x0.shape != x1.shape:
        raise ValueError(f"x0 has shape {tuple(x0.shape)} but x1 has shape {tuple(x1.shape)}")
    return x1 - x0


def _call(model: Callable[..., Tensor], x: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
    out = model(x, t) if labels is None else model(x, t, labels)
    if out.shape != x.shape:
        raise ValueError(f"the velocity must have the input's shape {tuple(x.shape)}, got {tuple(out.shape)}")
    return out


def flow_matching_loss(model: Callable[..., Tensor], x1: Tensor, generator: torch.Generator | None = None,
                       labels: Tensor | None = None, *, x0: Tensor | None = None,
                       t: Tensor | None = None) -> Tensor:
    r"""The conditional flow-matching loss :math:`\|v_\theta(x_t, t) - (x_1 - x_0)\|^2`, mean over all entries.

    Args:
        model: ``model(x_t, t)`` (or ``model(x_t, t, labels)``) -> velocity of ``x_t``'s shape;
            ``t`` is ``(B,)`` float in ``[0, 1]``.
        x1: ``(B, *x_shape)`` data.
        generator: seeds the draws of ``x0 ~ N(0, I)`` (drawn first) and ``t ~ U[0, 1]``.
        labels: ``(B,)`` class labels passed on to the model.
        x0, t: fix the noise or the times instead of drawing them.

    Returns:
        scalar loss.
    """
    if x1.ndim < 1 or x1.shape[0] == 0:
        raise ValueError(f"x1 must be a non-empty batch (B, ...), got shape {tuple(x1.shape)}")
    if x0 is None:
        x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype).to(x1.device)
    if t is None:
        t = torch.rand(x1.shape[0], generator=generator, dtype=x1.dtype).to(x1.device)
    x_t = interpolate(x0, x1, t)
    return F.mse_loss(_call(model, x_t, t, labels), target_velocity(x0, x1))


def gaussian_mixture_velocity(x: Tensor, t: Tensor, weights: Tensor, means: Tensor, stds: Tensor) -> Tensor:
    r"""The marginal velocity :math:`u_t(x) = \mathbb E[x_1 - x_0 \mid x_t = x]` for Gaussian-mixture data.

    Noise :math:`x_0 \sim \mathcal N(0, I)`; data :math:`x_1 \sim \sum_k \pi_k \mathcal N(\mu_k, s_k^2 I)`.
    With one component the flow is the affine map :math:`x_t = t \mu + \sigma_t x_0`.

    Args:
        x: ``(B, D)`` points.
        t: ``(B,)`` times in ``[0, 1]``.
        weights: ``(K,)`` mixture weights :math:`\pi_k` (positive, summing to 1).
        means: ``(K, D)`` component means :math:`\mu_k`.
        stds: ``(K,)`` component standard deviations :math:`s_k > 0`.

    Returns:
        ``(B, D)``.
    """
    if x.ndim != 2:
        raise ValueError(f"x must have shape (B, D), got {tuple(x.shape)}")
    _check_times(t, x.shape[0])
    K, D = weights.shape[0], x.shape[1]
    if weights.shape != (K,) or means.shape != (K, D) or stds.shape != (K,):
        raise ValueError(f"expected weights (K,), means (K, D) = (K, {D}) and stds (K,), got {tuple(weights.shape)}, "
                         f"{tuple(means.shape)} and {tuple(stds.shape)}")
    if (weights <= 0).any() or abs(float(weights.sum()) - 1) > 1e-6 or (stds <= 0).any():
        raise ValueError("weights must be positive and sum to 1, and stds must be positive")
    tt = t.to(x.dtype)[:, None]                                                # (B, 1)
    var = (1 - tt) ** 2 + tt**2 * stds.to(x.dtype) ** 2                        # (B, K)
    centre = tt[:, :, None] * means.to(x.dtype)                                # (B, K, D)
    diff = x[:, None, :] - centre                                              # (B, K, D)
    log_w = weights.to(x.dtype).log() - 0.5 * D * var.log() - 0.5 * diff.pow(2).sum(-1) / var
    w = torch.softmax(log_w, dim=1)                                            # (B, K)
    gain = (tt * stds.to(x.dtype) ** 2 - (1 - tt)) / var                       # (B, K)
    u_k = means.to(x.dtype) + gain[:, :, None] * diff                          # (B, K, D)
    return (w[:, :, None] * u_k).sum(1)


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")


def euler_sample(velocity_fn: VelocityFn, x0: Tensor, steps: int) -> Tensor:
    r"""Euler's method for :math:`\dot x = v(x, t)` from :math:`t = 0` to 1: :math:`x \leftarrow x + h\, v(x, t)`.

    Args:
        velocity_fn: ``(x: (B, *x_shape), t: (B,)) -> (B, *x_shape)`` (e.g. a trained model, or a
            lambda that adds labels or guidance).
        x0: ``(B, *x_shape)`` starting points, usually ``N(0, I)`` noise.
        steps: number of steps (and of evaluations), >= 1.

    Returns:
        ``(B, *x_shape)``, the points at :math:`t = 1`. Runs under ``torch.no_grad``.
    """
    _check_steps(steps)
    h = 1.0 / steps
    x = x0.clone()
    with torch.no_grad():
        for i in range(steps):
            t = x.new_full((x.shape[0],), i * h)
            x = x + h * _call(velocity_fn, x, t, None)
    return x


def heun_sample(velocity_fn: VelocityFn, x0: Tensor, steps: int) -> Tensor:
    r"""Heun's method (explicit trapezoid) from :math:`t = 0` to 1, two evaluations per step.

    :math:`\tilde x = x + h v(x, t)`, :math:`x \leftarrow x + \frac h2 (v(x, t) + v(\tilde x, t + h))`.
    Arguments as in :func:`euler_sample`; the velocity is also evaluated at :math:`t = 1`.
    """
    _check_steps(steps)
    h = 1.0 / steps
    x = x0.clone()
    with torch.no_grad():
        for i in range(steps):
            t = x.new_full((x.shape[0],), i * h)
            t_next = x.new_full((x.shape[0],), min((i + 1) * h, 1.0))
            v = _call(velocity_fn, x, t, None)
            v_next = _call(velocity_fn, x + h * v, t_next, None)
            x = x + 0.5 * h * (v + v_next)
    return x


def guided_velocity(model: Callable[..., Tensor], x: Tensor, t: Tensor, labels: Tensor, scale: float,
                    null_label: int) -> Tensor:
    r"""Classifier-free guidance :math:`v(x, t, \varnothing) + w\, (v(x, t, y) - v(x, t, \varnothing))`.

    ``scale`` is :math:`w`: 0 is the unconditional velocity, 1 the conditional one, larger values
    push further towards the class. Both velocities come from one batched call of ``model`` on
    ``2B`` inputs.

    Args:
        model: ``model(x, t, labels)``, trained with labels dropped to ``null_label`` (:func:`drop_labels`).
        x: ``(B, *x_shape)``; t: ``(B,)``; labels: ``(B,)`` integer classes.
        scale: the guidance weight w.
        null_label: the label of "no class" (for :class:`companion.unet.UNet`, ``model.null_label``).

    Returns:
        ``(B, *x_shape)``.
    """
    if labels.shape != (x.shape[0],) or labels.dtype.is_floating_point:
        raise ValueError(f"labels must be (B,) = ({x.shape[0]},) integers, got {tuple(labels.shape)} {labels.dtype}")
    null = torch.full_like(labels, null_label)
    both = _call(model, torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
    v_cond, v_uncond = both.chunk(2)
    return v_uncond + scale * (v_cond - v_uncond)


def drop_labels(labels: Tensor, p: float, null_label: int, generator: torch.Generator | None = None) -> Tensor:
    """A copy of ``labels: (B,)`` with each entry replaced by ``null_label`` with probability ``p``."""
    if not 0 <= p <= 1:
        raise ValueError(f"the drop probability p must lie in [0, 1], got {p}")
    drop = torch.rand(labels.shape, generator=generator).to(labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_label), labels)
