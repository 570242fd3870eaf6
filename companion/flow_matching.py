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

The velocity and the score of the path are tied (Tweedie's formula,
:math:`\mathbb E[x_0 \mid x_t = x] = -(1 - t)\, \nabla \log p_t(x)`), so for :math:`t \in (0, 1]`

.. math::

    u_t(x) = \frac{x + (1 - t)\, \nabla_x \log p_t(x)}{t}

(:func:`velocity_from_score`); for mixture data :math:`\log p_t` and its score are closed-form
(:func:`gaussian_mixture_log_density`, :func:`gaussian_mixture_score`). The exercise checkers
(``check_...``) compare a reader's function with these.

Shapes: ``x0, x1, x_t: (B, *x_shape)``; times ``t: (B,)`` floats in ``[0, 1]``; labels ``(B,)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from companion.checks import verdict

__all__ = [
    "interpolate",
    "target_velocity",
    "flow_matching_loss",
    "gaussian_mixture_velocity",
    "gaussian_mixture_log_density",
    "gaussian_mixture_score",
    "velocity_from_score",
    "euler_sample",
    "heun_sample",
    "guided_velocity",
    "drop_labels",
    "check_interpolation",
    "check_euler_sampler",
    "check_guided_velocity",
    "check_velocity_from_score",
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


def _mixture_terms(x: Tensor, t: Tensor, weights: Tensor, means: Tensor, stds: Tensor):
    r"""Checks the arguments; returns ``t: (B, 1)``, :math:`\sigma_{k,t}^2: (B, K)`, :math:`x - t\mu_k: (B, K, D)`
    and :math:`\log \pi_k + \log \mathcal N(x; t\mu_k, \sigma_{k,t}^2 I) + \frac D2 \log 2\pi: (B, K)`."""
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
    diff = x[:, None, :] - tt[:, :, None] * means.to(x.dtype)                  # (B, K, D)
    log_w = weights.to(x.dtype).log() - 0.5 * D * var.log() - 0.5 * diff.pow(2).sum(-1) / var
    return tt, var, diff, log_w


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
    tt, var, diff, log_w = _mixture_terms(x, t, weights, means, stds)
    w = torch.softmax(log_w, dim=1)                                            # (B, K)
    gain = (tt * stds.to(x.dtype) ** 2 - (1 - tt)) / var                       # (B, K)
    u_k = means.to(x.dtype) + gain[:, :, None] * diff                          # (B, K, D)
    return (w[:, :, None] * u_k).sum(1)


def gaussian_mixture_log_density(x: Tensor, t: Tensor, weights: Tensor, means: Tensor, stds: Tensor) -> Tensor:
    r""":math:`\log p_t(x)` of :math:`x_t = (1 - t) x_0 + t x_1` for Gaussian-mixture data: ``(B,)``.

    :math:`p_t = \sum_k \pi_k \mathcal N(t \mu_k, \sigma_{k,t}^2 I)`, :math:`\sigma_{k,t}^2 = (1 - t)^2 + t^2 s_k^2`;
    arguments as in :func:`gaussian_mixture_velocity`. Differentiable in ``x`` (autograd gives the score).
    """
    _, _, _, log_w = _mixture_terms(x, t, weights, means, stds)
    return torch.logsumexp(log_w, dim=1) - 0.5 * x.shape[1] * math.log(2 * math.pi)


def gaussian_mixture_score(x: Tensor, t: Tensor, weights: Tensor, means: Tensor, stds: Tensor) -> Tensor:
    r"""The score :math:`\nabla_x \log p_t(x) = \sum_k w_k(x)\, (t \mu_k - x) / \sigma_{k,t}^2`: ``(B, D)``.

    Arguments and :math:`w_k` as in :func:`gaussian_mixture_velocity`.
    """
    _, var, diff, log_w = _mixture_terms(x, t, weights, means, stds)
    w = torch.softmax(log_w, dim=1)
    return -(w[:, :, None] * diff / var[:, :, None]).sum(1)


def velocity_from_score(score: Tensor, x: Tensor, t: Tensor) -> Tensor:
    r""":math:`u_t(x) = (x + (1 - t)\, \nabla \log p_t(x)) / t`, the velocity of the straight path from its score.

    Args:
        score: ``(B, *x_shape)``, :math:`\nabla_x \log p_t(x)`.
        x: ``(B, *x_shape)``.
        t: ``(B,)`` times in ``(0, 1]`` (at :math:`t = 0` the score of :math:`\mathcal N(0, I)` says nothing
            about the data).
    """
    if score.shape != x.shape:
        raise ValueError(f"score has shape {tuple(score.shape)} but x has shape {tuple(x.shape)}")
    _check_times(t, x.shape[0])
    if x.shape[0] and float(t.min()) <= 0:
        raise ValueError(f"velocity_from_score needs times t > 0, got a minimum of {float(t.min()):.3g}")
    tt = _expand(t, x)
    return (x + (1 - tt) * score) / tt


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


# ------------------------------------------------------------------------ exercise checkers


def _close(a, b: Tensor) -> bool:
    return isinstance(a, Tensor) and a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=1e-6,
                                                                            atol=1e-8)


def check_interpolation(fn: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]) -> bool:
    r"""Exercise checker: ``fn(x0, x1, t)`` should return ``(x_t, target)`` of the straight path,
    :math:`x_t = (1 - t) x_0 + t x_1` and :math:`x_1 - x_0`, for vectors ``(B, D)`` and images ``(B, C, H, W)``."""
    g = torch.Generator().manual_seed(0)
    for shape in ((5, 2), (4, 1, 3, 3)):
        x0, x1 = torch.randn(2, *shape, generator=g, dtype=torch.float64)
        t = torch.rand(shape[0], generator=g, dtype=torch.float64)
        t[0], t[-1] = 0.0, 1.0
        try:
            x_t, target = fn(x0.clone(), x1.clone(), t.clone())
        except Exception as exc:
            return verdict(False, f"for x of shape {shape} and t of shape {tuple(t.shape)}, fn raised "
                                  f"{type(exc).__name__}: {exc} (t has one time per example: reshape it to "
                                  "(B, 1, ..., 1) to broadcast)")
        want_x, want_v = interpolate(x0, x1, t), target_velocity(x0, x1)
        if not _close(x_t, want_x):
            if _close(x_t, interpolate(x1, x0, t)):
                return verdict(False, "your path starts at the data and ends at the noise: here x_t must be the noise "
                                      "x0 at t = 0 and the data x1 at t = 1")
            return verdict(False, f"x_t is wrong for x of shape {shape}: expected (1 - t) x0 + t x1, with each "
                                  "example's own t")
        if not _close(target, want_v):
            if _close(target, -want_v):
                return verdict(False, "x_t is right but the velocity has the wrong sign: d/dt [(1 - t) x0 + t x1] "
                                      "= x1 - x0")
            return verdict(False, "x_t is right but the velocity is not: differentiate x_t with respect to t")
    return verdict(True, "x_t = (1 - t) x0 + t x1 and its velocity x1 - x0, for vectors and for images")


def check_euler_sampler(fn: Callable[[VelocityFn, Tensor, int], Tensor]) -> bool:
    r"""Exercise checker: ``fn(velocity_fn, x0, steps)`` should integrate :math:`\dot x = v(x, t)` from
    :math:`t = 0` to 1 with ``steps`` Euler steps, as :func:`euler_sample` (times ``(B,)``, one call per step)."""
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    times: list[float] = []  # the times of the calls

    def field(x: Tensor, t: Tensor) -> Tensor:
        if not isinstance(t, Tensor) or t.shape != (x.shape[0],):
            raise ValueError(f"velocity_fn takes t of shape (B,) = ({x.shape[0]},), got "
                             f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
        times.append(float(t[0]))
        return torch.sin(3 * x) + (1 - 2 * t.to(x.dtype))[:, None] * x

    for steps in (1, 4, 10):
        times.clear()
        try:
            got = fn(field, x0.clone(), steps)
        except Exception as exc:
            return verdict(False, f"with steps = {steps}, fn raised {type(exc).__name__}: {exc}")
        want = euler_sample(field, x0, steps)
        expected_times = [i / steps for i in range(steps)]
        if len(times) != 2 * steps:  # the reader's calls, then euler_sample's
            return verdict(False, f"with steps = {steps} you called velocity_fn {len(times) - steps} times; Euler "
                                  "makes one call per step")
        mine = times[:steps]
        if _close(got, want) and all(abs(a - b) < 1e-12 for a, b in zip(mine, expected_times, strict=True)):
            continue
        if all(abs(a - (b + 1 / steps)) < 1e-12 for a, b in zip(mine, expected_times, strict=True)):
            return verdict(False, "you evaluate the velocity at the end of each step (t + h); Euler's method uses "
                                  "its start, t = i h for step i = 0, ..., steps - 1")
        return verdict(False, f"with steps = {steps}: expected x1 = {want[0].tolist()} for the first point, got "
                              f"{got[0].tolist() if isinstance(got, Tensor) else got!r} (x <- x + h v(x, t), "
                              "h = 1 / steps, t = i h)")
    return verdict(True, "x <- x + h v(x, i h) for i = 0, ..., steps - 1: your sampler matches euler_sample")


def check_guided_velocity(fn: Callable[[Tensor, Tensor, float], Tensor]) -> bool:
    r"""Exercise checker: ``fn(v_cond, v_uncond, w)`` should return the classifier-free guided velocity of
    :func:`guided_velocity`, :math:`v_\varnothing + w (v_y - v_\varnothing)` (``w = 1``: conditional)."""
    g = torch.Generator().manual_seed(2)
    v_cond, v_uncond = torch.randn(2, 3, 1, 4, 4, generator=g, dtype=torch.float64)
    null = 10

    def model(x: Tensor, t: Tensor, labels: Tensor) -> Tensor:  # v_cond for a digit, v_uncond for the null label
        is_null = (labels == null).reshape(-1, 1, 1, 1)
        return torch.where(is_null, torch.cat([v_uncond, v_uncond]), torch.cat([v_cond, v_cond]))

    x, t, labels = torch.zeros_like(v_cond), torch.full((3,), 0.5, dtype=torch.float64), torch.tensor([1, 4, 7])
    for w in (0.0, 1.0, 2.5, 5.0):
        try:
            got = fn(v_cond.clone(), v_uncond.clone(), w)
        except Exception as exc:
            return verdict(False, f"at w = {w}, fn raised {type(exc).__name__}: {exc}")
        want = guided_velocity(model, x, t, labels, w, null)
        if _close(got, want):
            continue
        if _close(got, (1 + w) * v_cond - w * v_uncond):
            return verdict(False, "you return (1 + w) v_cond - w v_uncond, the convention of Ho and Salimans (2022) "
                                  "in which w = 0 is the conditional model; here w = 1 is the conditional model and "
                                  "w = 0 the unconditional one")
        if w == 0.0:
            return verdict(False, "at w = 0 the guided velocity is the unconditional one, v_uncond")
        return verdict(False, f"at w = {w}: expected v_uncond + w (v_cond - v_uncond)")
    return verdict(True, "v_uncond + w (v_cond - v_uncond): w = 0 unconditional, w = 1 conditional, w > 1 guided")


def check_velocity_from_score(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> bool:
    r"""Exercise checker: ``fn(score, x, t)`` should turn the score :math:`\nabla \log p_t(x)` of the straight
    path into its velocity :math:`u_t(x)`; checked on a 2-D Gaussian mixture against
    :func:`gaussian_mixture_velocity` at times in ``(0, 1]``."""
    g = torch.Generator().manual_seed(4)
    mix = (torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64),
           torch.tensor([[-2.0, 0.0], [1.0, 1.5], [1.5, -1.0]], dtype=torch.float64),
           torch.tensor([0.3, 0.6, 0.2], dtype=torch.float64))
    x = 2 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = 0.05 + 0.95 * torch.rand(64, generator=g, dtype=torch.float64)
    t[-1] = 1.0
    score = gaussian_mixture_score(x, t, *mix)
    try:
        got = fn(score.clone(), x.clone(), t.clone())
    except Exception as exc:
        return verdict(False, f"fn raised {type(exc).__name__}: {exc} (score and x are (B, 2), t is (B,))")
    want = gaussian_mixture_velocity(x, t, *mix)
    if _close(got, want):
        return verdict(True, "u_t(x) = (x + (1 - t) score) / t: the velocity of a Gaussian mixture from its score")
    if _close(got, velocity_from_score(-score, x, t)):
        return verdict(False, "the sign of the score term is wrong: E[x0 | x_t = x] = -(1 - t) score")
    if _close(got, want * t[:, None]):
        return verdict(False, "off by a factor t: x1 - x0 = (x_t - x0) / t")
    return verdict(False, "not the velocity: write x1 - x0 in terms of x_t and x0, then use "
                          "E[x0 | x_t = x] = -(1 - t) score")
