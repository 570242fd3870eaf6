r"""Denoising diffusion probabilistic models (part "Beyond the articles", chapter on diffusion).

The forward process adds Gaussian noise in :math:`T` steps with variances :math:`\beta_t \in (0, 1)`;
with :math:`\alpha_t = 1 - \beta_t` and :math:`\bar\alpha_t = \prod_{s \le t} \alpha_s` it has the
closed form (:func:`q_sample`, :cite:`ho2020denoising`)

.. math::

    q(x_t \mid x_{t-1}) = \mathcal N(\sqrt{\alpha_t}\, x_{t-1}, \beta_t I), \qquad
    q(x_t \mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}\, x_0, (1 - \bar\alpha_t) I),

and, by Bayes' rule, the Gaussian posterior (:func:`q_posterior`)

.. math::

    q(x_{t-1} \mid x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I), \quad
    \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\, \beta_t}{1 - \bar\alpha_t} x_0
        + \frac{\sqrt{\alpha_t}\, (1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t} x_t, \quad
    \tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t} \beta_t.

A network :math:`\varepsilon_\theta(x_t, t)` predicts the noise of
:math:`x_t = \sqrt{\bar\alpha_t} x_0 + \sqrt{1 - \bar\alpha_t}\, \varepsilon`; the simplified loss
(:func:`ddpm_loss`) is :math:`\mathbb E_{t, x_0, \varepsilon} \|\varepsilon - \varepsilon_\theta(x_t, t)\|^2`
with :math:`t` uniform. Its minimiser is :math:`\mathbb E[\varepsilon \mid x_t]
= -\sqrt{1 - \bar\alpha_t}\, \nabla_{x_t} \log q(x_t)` (Tweedie; :func:`eps_from_score`,
:func:`score_from_eps`). Ancestral sampling (:func:`ddpm_sample`) runs

.. math::

    x_{t-1} = \frac{1}{\sqrt{\alpha_t}} \Big( x_t - \frac{\beta_t}{\sqrt{1 - \bar\alpha_t}}
        \varepsilon_\theta(x_t, t) \Big) + \sigma_t z, \qquad z \sim \mathcal N(0, I),

with :math:`\sigma_t^2 = \tilde\beta_t` (default) or :math:`\beta_t`, and no noise at the last step.
DDIM (:func:`ddim_sample`, Song, Meng and Ermon 2021) visits a subsequence of the steps:

.. math::

    \hat x_0 = \frac{x_t - \sqrt{1 - \bar\alpha_t}\, \hat\varepsilon}{\sqrt{\bar\alpha_t}}, \qquad
    x_{s} = \sqrt{\bar\alpha_{s}}\, \hat x_0 + \sqrt{1 - \bar\alpha_{s} - \sigma^2}\, \hat\varepsilon
        + \sigma z, \qquad
    \sigma = \eta \sqrt{\frac{1 - \bar\alpha_{s}}{1 - \bar\alpha_t}}
        \sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_{s}}},

deterministic for :math:`\eta = 0`. ``clip_x0`` clips :math:`\hat x_0` to :math:`[-1, 1]` before it is used, as the
reference code of Ho et al. does: DDIM re-derives :math:`\hat\varepsilon` from it, ancestral sampling takes the
posterior mean :math:`\tilde\mu_t(\hat x_0, x_t)` (the update above, without clipping). Classifier-free guidance
on the noise: :func:`guided_eps`. Schedules: linear
(:func:`linear_beta_schedule`, Ho et al.) and cosine (:func:`cosine_alpha_bar`, Nichol and Dhariwal 2021,
:math:`\bar\alpha(t) = f(t) / f(0)`, :math:`f(t) = \cos^2\big(\frac{t/T + s}{1 + s} \frac\pi2\big)`). The exercise
checkers (``check_...``) compare a reader's function with these.

Indexing: arrays hold the steps :math:`t = 1, \dots, T` of the papers at indices ``0 .. T-1``;
``betas[i]`` is :math:`\beta_{i+1}` and ``alpha_bar[i]`` is :math:`\bar\alpha_{i+1}`, and
:math:`\bar\alpha` before the first step is 1. The network receives the integer index
``t: (B,)`` (``torch.long``), as in :class:`companion.unet.UNet`.

Shapes: data ``x0, x_t, noise: (B, *x_shape)``; steps ``t: (B,)``; schedules ``(T,)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from companion.checks import verdict

__all__ = ["linear_beta_schedule", "cosine_alpha_bar", "cosine_beta_schedule", "betas_from_alpha_bar",
           "alpha_bar_from_betas", "q_sample", "q_posterior", "eps_from_score", "score_from_eps", "ddpm_loss",
           "ddpm_sample", "ddim_timesteps", "ddim_sample", "guided_eps", "check_q_sample", "check_posterior_mean",
           "check_eps_from_score"]

EpsModel = Callable[..., Tensor]


# ------------------------------------------------------------------------- schedules


def _check_T(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"the number of steps T must be an int >= 1, got {T!r}")


def _check_betas(betas: Tensor) -> None:
    if not isinstance(betas, Tensor):
        raise TypeError(f"betas must be a torch.Tensor of shape (T,), got {type(betas).__name__}")
    if betas.ndim != 1 or betas.numel() == 0:
        raise ValueError(f"betas must have shape (T,) with T >= 1, got {tuple(betas.shape)}")
    if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
        raise ValueError(f"betas must lie in (0, 1), got values in [{float(betas.min()):.3g}, "
                         f"{float(betas.max()):.3g}]")


def _check_alpha_bar(alpha_bar: Tensor) -> None:
    if not isinstance(alpha_bar, Tensor):
        raise TypeError(f"alpha_bar must be a torch.Tensor of shape (T,), got {type(alpha_bar).__name__}")
    if alpha_bar.ndim != 1 or alpha_bar.numel() == 0:
        raise ValueError(f"alpha_bar must have shape (T,) with T >= 1, got {tuple(alpha_bar.shape)}")
    if not torch.isfinite(alpha_bar).all() or (alpha_bar <= 0).any() or (alpha_bar > 1).any():
        raise ValueError(
            f"alpha_bar must lie in (0, 1], got values in [{float(alpha_bar.min()):.3g}, {float(alpha_bar.max()):.3g}]"
        )


def linear_beta_schedule(T: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> Tensor:
    r"""``(T,)`` variances :math:`\beta_t` evenly spaced from ``beta_1`` to ``beta_T`` (float64).

    Ho et al. use ``T = 1000``, ``beta_1 = 1e-4``, ``beta_T = 0.02``; then :math:`\bar\alpha_T \approx 4 \cdot 10^{-5}`.
    """
    _check_T(T)
    if not 0 < beta_1 < 1 or not 0 < beta_T < 1:
        raise ValueError(f"beta_1 and beta_T must lie in (0, 1), got {beta_1} and {beta_T}")
    return torch.linspace(beta_1, beta_T, T, dtype=torch.float64)


def alpha_bar_from_betas(betas: Tensor) -> Tensor:
    r""":math:`\bar\alpha_t = \prod_{s \le t} (1 - \beta_s)` for ``t = 0 .. T-1``: ``(T,)`` -> ``(T,)``."""
    _check_betas(betas)
    return torch.cumprod(1 - betas, dim=0)


def betas_from_alpha_bar(alpha_bar: Tensor, max_beta: float = 0.999) -> Tensor:
    r"""Invert :func:`alpha_bar_from_betas`: :math:`\beta_t = 1 - \bar\alpha_t / \bar\alpha_{t-1}`.

    Before the first step :math:`\bar\alpha_{-1} = 1`.

    Clipped to at most ``max_beta`` (Nichol and Dhariwal's 0.999): the cosine schedule's last
    :math:`\bar\alpha` is 0, and :math:`\beta = 1` would make the last reverse step divide by zero.

    Raises:
        ValueError: ``alpha_bar`` outside ``[0, 1]`` or increasing somewhere (a negative beta).
    """
    if not isinstance(alpha_bar, Tensor) or alpha_bar.ndim != 1 or alpha_bar.numel() == 0:
        raise ValueError(f"alpha_bar must be a tensor of shape (T,), got {getattr(alpha_bar, 'shape', alpha_bar)}")
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must lie in (0, 1), got {max_beta}")
    if (alpha_bar < 0).any() or (alpha_bar > 1).any():
        raise ValueError(f"alpha_bar must lie in [0, 1], got values in [{float(alpha_bar.min()):.3g}, "
                         f"{float(alpha_bar.max()):.3g}]")
    prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    if (alpha_bar > prev).any():
        raise ValueError("alpha_bar must be non-increasing (each step adds noise); it increases somewhere")
    betas = 1 - alpha_bar / prev.clamp_min(torch.finfo(alpha_bar.dtype).tiny)
    return betas.clamp(min=torch.finfo(alpha_bar.dtype).eps, max=max_beta)


def cosine_alpha_bar(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    r"""``(T,)`` :math:`\bar\alpha_t` of the cosine schedule for the steps ``1 .. T`` (float64).

    :math:`\bar\alpha(t) = f(t) / f(0)`, :math:`f(t) = \cos^2\!\big(\frac{t/T + s}{1 + s} \cdot \frac\pi2\big)`.
    The raw :math:`\bar\alpha_T` is 0; the values returned are those of the clipped betas
    (:func:`betas_from_alpha_bar` with ``max_beta``), so ``cosine_alpha_bar(T)`` equals
    ``alpha_bar_from_betas(cosine_beta_schedule(T))`` and stays positive.
    """
    _check_T(T)
    if s < 0:
        raise ValueError(f"the offset s must be >= 0, got {s}")
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    raw = (f[1:] / f[0]).clamp(0.0, 1.0)
    return alpha_bar_from_betas(betas_from_alpha_bar(raw, max_beta))


def cosine_beta_schedule(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    r"""``(T,)`` betas of the cosine schedule, :func:`betas_from_alpha_bar` of :func:`cosine_alpha_bar`."""
    return betas_from_alpha_bar(cosine_alpha_bar(T, s, max_beta), max_beta)


# -------------------------------------------------------------- the forward process


def _check_steps(t: Tensor, T: int, batch: int) -> None:
    if not isinstance(t, Tensor) or t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"t must be an integer tensor of step indices, got {getattr(t, 'dtype', type(t).__name__)}")
    if t.shape != (batch,):
        raise ValueError(f"t must have shape (B,) = ({batch},), got {tuple(t.shape)}")
    if batch and (int(t.min()) < 0 or int(t.max()) >= T):
        raise ValueError(f"steps t must lie in [0, T) = [0, {T}), got values in [{int(t.min())}, {int(t.max())}]")


def _per_example(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """``values[t]`` as ``(B, 1, ..., 1)`` in the dtype of ``like``, to broadcast over an example."""
    return values.to(like.device)[t].to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, alpha_bar: Tensor) -> Tensor:
    r"""A draw of :math:`q(x_t \mid x_0)`, :math:`x_t = \sqrt{\bar\alpha_t} x_0 + \sqrt{1 - \bar\alpha_t} \varepsilon`.

    Args:
        x0: ``(B, *x_shape)`` data.
        t: ``(B,)`` integer steps in ``[0, T)``.
        noise: ``(B, *x_shape)`` standard normal :math:`\varepsilon`.
        alpha_bar: ``(T,)`` schedule.

    Returns:
        ``(B, *x_shape)``.
    """
    _check_alpha_bar(alpha_bar)
    if x0.ndim < 1:
        raise ValueError(f"x0 must be batched, (B, ...), got shape {tuple(x0.shape)}")
    if noise.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)} but x0 has shape {tuple(x0.shape)}")
    _check_steps(t, alpha_bar.numel(), x0.shape[0])
    ab = _per_example(alpha_bar, t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_posterior(x0: Tensor, x_t: Tensor, t: Tensor, betas: Tensor) -> tuple[Tensor, Tensor]:
    r"""Mean and variance of :math:`q(x_{t-1} \mid x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I)`.

    At the first step (``t = 0``) :math:`\bar\alpha_{t-1} = 1`: the mean is :math:`x_0` and the
    variance 0.

    Args:
        x0, x_t: ``(B, *x_shape)``.
        t: ``(B,)`` integer steps in ``[0, T)``.
        betas: ``(T,)`` schedule.

    Returns:
        ``(mean, variance)``: ``(B, *x_shape)`` and ``(B, 1, ..., 1)`` (broadcasts over an example).
    """
    _check_betas(betas)
    if x0.shape != x_t.shape or x0.ndim < 1:
        raise ValueError(f"x0 and x_t must have the same batched shape, got {tuple(x0.shape)} and {tuple(x_t.shape)}")
    _check_steps(t, betas.numel(), x0.shape[0])
    alpha_bar = alpha_bar_from_betas(betas)
    alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    beta, ab, ab_prev = (_per_example(v, t, x0) for v in (betas, alpha_bar, alpha_bar_prev))
    mean = (ab_prev.sqrt() * beta / (1 - ab)) * x0 + ((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)) * x_t
    variance = (1 - ab_prev) / (1 - ab) * beta
    return mean, variance


def eps_from_score(score: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    r""":math:`\hat\varepsilon = -\sqrt{1 - \bar\alpha_t}\, \nabla_{x_t} \log q(x_t)`: the noise predictor of a score.

    ``alpha_bar_t`` is a float or a tensor that broadcasts against ``score`` (e.g. ``(B, 1, 1, 1)``).
    """
    return -torch.sqrt(1 - torch.as_tensor(alpha_bar_t, dtype=score.dtype, device=score.device)) * score


def score_from_eps(eps: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    r"""The score of a noise prediction: :math:`\nabla_{x_t} \log q(x_t) = -\hat\varepsilon / \sqrt{1 - \bar\alpha_t}`.

    The inverse of :func:`eps_from_score`.
    """
    return -eps / torch.sqrt(1 - torch.as_tensor(alpha_bar_t, dtype=eps.dtype, device=eps.device))


# ------------------------------------------------------------ training and sampling


def _call(model: EpsModel, x: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
    out = model(x, t) if labels is None else model(x, t, labels)
    if out.shape != x.shape:
        raise ValueError(f"the model must return a noise prediction of the input's shape {tuple(x.shape)}, "
                         f"got {tuple(out.shape)}")
    return out


def guided_eps(model: EpsModel, x: Tensor, t: Tensor, labels: Tensor, scale: float, null_label: int) -> Tensor:
    r"""Classifier-free guidance :math:`\varepsilon_\varnothing + w (\varepsilon_y - \varepsilon_\varnothing)`, as
    :func:`companion.flow_matching.guided_velocity`: ``model(x, t, labels)``, ``x: (B, ...)``, ``t, labels: (B,)``;
    ``scale`` = w (0 unconditional, 1 conditional); one batched call on ``2B`` inputs."""
    if labels.shape != (x.shape[0],) or labels.dtype.is_floating_point:
        raise ValueError(f"labels must be (B,) = ({x.shape[0]},) integers, got {tuple(labels.shape)} {labels.dtype}")
    null = torch.full_like(labels, null_label)
    eps_cond, eps_uncond = _call(model, torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
    return eps_uncond + scale * (eps_cond - eps_uncond)


def ddpm_loss(model: EpsModel, x0: Tensor, alpha_bar: Tensor, generator: torch.Generator | None = None,
              labels: Tensor | None = None, *, t: Tensor | None = None, noise: Tensor | None = None) -> Tensor:
    r"""The simplified DDPM loss :math:`\|\varepsilon - \varepsilon_\theta(x_t, t)\|^2`, averaged over all entries.

    Args:
        model: ``model(x_t, t)`` (or ``model(x_t, t, labels)``) -> predicted noise of ``x_t``'s shape;
            ``t`` is a ``(B,)`` ``torch.long`` tensor of steps in ``[0, T)``.
        x0: ``(B, *x_shape)`` data.
        alpha_bar: ``(T,)`` schedule.
        generator: seeds the draws of ``t`` (uniform on ``0 .. T-1``, drawn first) and ``noise``.
        labels: ``(B,)`` class labels passed on to the model (class-conditional models).
        t, noise: fix the steps or the noise instead of drawing them.

    Returns:
        scalar loss (mean squared error per entry).
    """
    t, noise, x_t = _draw_x_t(x0, alpha_bar, generator, t, noise)
    return F.mse_loss(_call(model, x_t, t, labels), noise)


def _draw_x_t(x0: Tensor, alpha_bar: Tensor, generator, t: Tensor | None, noise: Tensor | None):
    """``(t, noise, x_t)`` for a loss: steps uniform on ``0 .. T-1`` (drawn first), then the noise, unless given."""
    _check_alpha_bar(alpha_bar)
    if x0.ndim < 1 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be a non-empty batch (B, ...), got shape {tuple(x0.shape)}")
    t = torch.randint(0, alpha_bar.numel(), (x0.shape[0],), generator=generator).to(x0.device) if t is None else t
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device) if noise is None else noise
    return t, noise, q_sample(x0, t, noise, alpha_bar)


def _start(shape: Sequence[int], x_T: Tensor | None, dtype: torch.dtype, device: torch.device | str | None,
           generator: torch.Generator | None) -> Tensor:
    shape = tuple(int(n) for n in shape)
    if len(shape) < 1 or min(shape) < 1:
        raise ValueError(f"shape must be a batched shape (B, ...) of positive sizes, got {shape}")
    if x_T is None:
        return torch.randn(shape, generator=generator, dtype=dtype).to(device)
    if tuple(x_T.shape) != shape:
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape is {shape}")
    return x_T.clone()


@torch.no_grad()
def ddpm_sample(model: EpsModel, shape: Sequence[int], betas: Tensor, generator: torch.Generator | None = None,
                labels: Tensor | None = None, *, variance: str = "posterior", x_T: Tensor | None = None,
                dtype: torch.dtype = torch.float32, device: torch.device | str | None = None, clip_x0: bool = False,
                ) -> Tensor:
    r"""Ancestral sampling: ``T`` reverse steps from :math:`x_T \sim \mathcal N(0, I)` to :math:`x_0`.

    Args:
        model: the noise predictor (see :func:`ddpm_loss`).
        shape: ``(B, *x_shape)`` of the samples.
        betas: ``(T,)`` schedule of training.
        generator: seeds :math:`x_T` and the noise of every step.
        labels: ``(B,)`` class labels passed on to the model.
        variance: :math:`\sigma_t^2`: ``"posterior"`` (default) is :math:`\tilde\beta_t`, optimal for a
            deterministic :math:`x_0`; ``"beta"`` is :math:`\beta_t`, optimal for
            :math:`x_0 \sim \mathcal N(0, I)` (Ho et al. report similar samples with both).
        x_T: ``(B, *x_shape)`` starting noise instead of a draw.
        dtype, device: of the samples.
        clip_x0: step to the posterior mean of :math:`\hat x_0` clipped to ``[-1, 1]`` (module docstring).

    Returns:
        ``(B, *x_shape)`` samples; the last step adds no noise.
    """
    _check_betas(betas)
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    alpha_bar = alpha_bar_from_betas(betas).tolist()
    beta_list = betas.tolist()
    x = _start(shape, x_T, dtype, device, generator)
    for i in reversed(range(len(beta_list))):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        eps = _call(model, x, t, labels)
        beta, ab = beta_list[i], alpha_bar[i]
        if clip_x0:  # the posterior mean of the clipped x0_hat
            x0_hat = ((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1.0, 1.0)
            ab_prev = alpha_bar[i - 1] if i > 0 else 1.0
            x = (math.sqrt(ab_prev) * beta * x0_hat + math.sqrt(1 - beta) * (1 - ab_prev) * x) / (1 - ab)
        else:
            x = (x - beta / math.sqrt(1 - ab) * eps) / math.sqrt(1 - beta)
        if i > 0:
            var = beta if variance == "beta" else (1 - alpha_bar[i - 1]) / (1 - ab) * beta
            x = x + math.sqrt(var) * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return x


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` increasing indices in ``[0, T)`` evenly spaced from 0 to ``T - 1`` (DDIM's subsequence)."""
    _check_T(T)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an int in [1, T] = [1, {T}], got {steps!r}")
    if steps == 1:
        return [T - 1]
    return sorted({round(i * (T - 1) / (steps - 1)) for i in range(steps)})


@torch.no_grad()
def ddim_sample(model: EpsModel, shape: Sequence[int], alpha_bar: Tensor, steps: int, eta: float = 0.0,
                generator: torch.Generator | None = None, labels: Tensor | None = None, *,
                x_T: Tensor | None = None, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None, clip_x0: bool = False) -> Tensor:
    r"""DDIM sampling on ``steps`` of the ``T`` training steps (:func:`ddim_timesteps`).

    From the last visited step to the first, then to :math:`\bar\alpha = 1`: the result is the last
    :math:`\hat x_0`. With ``eta = 0`` the map from :math:`x_T` to :math:`x_0` is deterministic (an
    Euler-like discretisation of the probability-flow ODE); ``eta = 1`` has the noise level of
    :func:`ddpm_sample` with :math:`\sigma_t^2 = \tilde\beta_t`.

    Args:
        model: the noise predictor (see :func:`ddpm_loss`).
        shape: ``(B, *x_shape)``.
        alpha_bar: ``(T,)`` schedule of training.
        steps: number of model evaluations, ``1 <= steps <= T``.
        eta: noise scale, ``>= 0``.
        generator: seeds :math:`x_T` and, for ``eta > 0``, the noise of every step.
        labels: ``(B,)`` class labels passed on to the model.
        x_T: ``(B, *x_shape)`` starting noise instead of a draw.
        clip_x0: clip :math:`\hat x_0` to ``[-1, 1]``, re-derive :math:`\hat\varepsilon` (module docstring).

    Returns:
        ``(B, *x_shape)`` samples.
    """
    _check_alpha_bar(alpha_bar)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    taus = ddim_timesteps(alpha_bar.numel(), steps)
    ab_all = alpha_bar.tolist()
    x = _start(shape, x_T, dtype, device, generator)
    for k in reversed(range(len(taus))):
        ab = ab_all[taus[k]]
        ab_prev = ab_all[taus[k - 1]] if k > 0 else 1.0
        t = torch.full((x.shape[0],), taus[k], dtype=torch.long, device=x.device)
        eps = _call(model, x, t, labels)
        x0_hat = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        if clip_x0:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
            eps = (x - math.sqrt(ab) * x0_hat) / math.sqrt(1 - ab)
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
        x = math.sqrt(ab_prev) * x0_hat + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return x


# ------------------------------------------------------------------------ exercise checkers


def _try(fn, *args):
    try:  # the reader's code: report an error, do not crash
        return fn(*(a.clone() for a in args)), None
    except Exception as exc:
        return None, f"fn raised {type(exc).__name__}: {exc}"


def _same(a, b: Tensor) -> bool:
    return isinstance(a, Tensor) and a.shape == b.shape and torch.allclose(a.double(), b.double(), 1e-5, 1e-7)


def check_q_sample(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> bool:
    r"""Exercise checker: ``fn(x0, t, noise, alpha_bar)`` should return :func:`q_sample`'s
    :math:`\sqrt{\bar\alpha_t} x_0 + \sqrt{1 - \bar\alpha_t}\, \varepsilon` for images ``(B, 1, 4, 4)``."""
    x0, noise = torch.randn(2, 5, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    alpha_bar, t = alpha_bar_from_betas(linear_beta_schedule(100, 1e-3, 0.05)), torch.tensor([0, 9, 40, 70, 99])
    got, err = _try(fn, x0, t, noise, alpha_bar)
    if err:
        return verdict(False, f"{err} (t holds one step per example: index alpha_bar[t] and reshape to (B, 1, 1, 1))")
    if _same(got, q_sample(x0, t, noise, alpha_bar)):
        return verdict(True, "x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, one step per example")
    ab = alpha_bar[t].reshape(-1, 1, 1, 1)
    if _same(got, ab * x0 + (1 - ab) * noise):
        return verdict(False, "you scale by alpha_bar and 1 - alpha_bar: those are the variances; take square roots")
    return verdict(False, "expected sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) noise, with each example's own t")


def check_posterior_mean(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> bool:
    r"""Exercise checker: ``fn(x0, x_t, t, betas)`` should return the mean :math:`\tilde\mu_t` of
    :math:`q(x_{t-1} \mid x_t, x_0)` (:func:`q_posterior`), for steps ``t >= 1`` and vectors ``(B, 3)``."""
    x0, x_t = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    betas, t = linear_beta_schedule(50, 1e-3, 0.1), torch.tensor([1, 5, 20, 49])
    got, err = _try(fn, x0, x_t, t, betas)
    if err:
        return verdict(False, err)
    if _same(got, q_posterior(x0, x_t, t, betas)[0]):
        return verdict(True, "the posterior mean mixes x0 and x_t with the weights of the two Gaussian factors")
    if _same(got, q_posterior(x_t, x0, t, betas)[0]):
        return verdict(False, "x0 and x_t are swapped: x0's weight has sqrt(alpha_bar_{t-1}) beta_t in it")
    return verdict(False, "expected (sqrt(ab_{t-1}) beta_t x0 + sqrt(alpha_t) (1 - ab_{t-1}) x_t) / (1 - ab_t)")


def check_eps_from_score(fn: Callable[[Tensor, Tensor], Tensor]) -> bool:
    r"""Exercise checker: ``fn(score, alpha_bar_t)`` should return the noise prediction of a score,
    :math:`-\sqrt{1 - \bar\alpha_t}\, \nabla \log q(x_t)` (:func:`eps_from_score`); ``alpha_bar_t: (B, 1)``."""
    g = torch.Generator().manual_seed(2)
    score, ab = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.rand(6, 1, generator=g, dtype=torch.float64)
    got, err = _try(fn, score, ab)
    if err:
        return verdict(False, err)
    want = eps_from_score(score, ab)
    if _same(got, want):
        return verdict(True, "eps_hat = -sqrt(1 - alpha_bar_t) score: the noise points against the score")
    if _same(got, -want):
        return verdict(False, "wrong sign: the score points from x_t towards the data, the noise away from it")
    if _same(got, -(1 - ab) * score):
        return verdict(False, "(1 - alpha_bar_t) is the noise's variance; the noise's scale is its square root")
    return verdict(False, "expected -sqrt(1 - alpha_bar_t) * score (Tweedie's formula)")
