r"""Generative adversarial networks (chapters "GAN theory" and "GAN training and variants").

The value function of the two-player game between a generator G and a discriminator D is

.. math::

    V(D, G) = \mathbb E_{x \sim p_{\mathrm{data}}}[\log D(x)]
            + \mathbb E_{z \sim p_z}[\log(1 - D(G(z)))],
    \qquad \min_G \max_D V(D, G).

D *maximises* V. For a fixed G with sample density :math:`p_g`, the maximiser is

.. math::

    D^*(x) = \frac{p_{\mathrm{data}}(x)}{p_{\mathrm{data}}(x) + p_g(x)}, \qquad
    V(D^*, G) = 2\,\mathrm{JSD}(p_{\mathrm{data}} \,\|\, p_g) - \log 4 \;\ge\; -\log 4,

with equality iff :math:`p_g = p_{\mathrm{data}}`. For discrete distributions these are
:func:`optimal_discriminator` and :func:`gan_value`.

Every loss below takes the discriminator's **logits** l (D = sigmoid(l)) and uses the
identities :math:`-\log \sigma(l) = \operatorname{softplus}(-l)` and
:math:`-\log(1 - \sigma(l)) = \operatorname{softplus}(l)`, which are finite with finite
gradients for any finite l (a naive ``log(sigmoid(l))`` is ``-inf`` at l = -100):

* discriminator (:func:`discriminator_loss`, the negative of V's mini-batch estimate):
  :math:`L_D = \operatorname{mean}\,\operatorname{softplus}(-l_{\mathrm{real}})
  + \operatorname{mean}\,\operatorname{softplus}(l_{\mathrm{fake}})`;
* generator (:func:`generator_loss`): *minimax* (saturating)
  :math:`L_G = \mathbb E[\log(1 - D(G(z)))] = -\operatorname{mean}\,\operatorname{softplus}(l_{\mathrm{fake}})`,
  with :math:`\partial L_G / \partial l = -D`, which vanishes as D(G(z)) -> 0;
  *non-saturating* :math:`L_G = -\mathbb E[\log D(G(z))]
  = \operatorname{mean}\,\operatorname{softplus}(-l_{\mathrm{fake}})`,
  with :math:`\partial L_G / \partial l = -(1 - D)`, which tends to -1;
* WGAN (:func:`wasserstein_losses`): critic :math:`\mathbb E[f(G(z))] - \mathbb E[f(x)]`,
  generator :math:`-\mathbb E[f(G(z))]`, with f kept Lipschitz by :func:`clip_weights_`,
  :func:`gradient_penalty` (WGAN-GP: :math:`\mathbb E[(\lVert \nabla f(\hat x) \rVert_2 - 1)^2]`
  at :math:`\hat x = \epsilon x + (1 - \epsilon) G(z)`, :math:`\epsilon \sim U[0, 1]`) or
  spectral normalisation (:func:`apply_spectral_norm`);
* LSGAN (:func:`lsgan_losses`): :math:`\tfrac12 \mathbb E[(D(x) - b)^2] + \tfrac12 \mathbb E[(D(G(z)) - a)^2]`
  and :math:`\tfrac12 \mathbb E[(D(G(z)) - c)^2]`;
* DRAGAN (:func:`dragan_penalty`): the same penalty at points :math:`x + \alpha \delta` near the data;
* hinge (:func:`hinge_losses`, used by SAGAN): :math:`\mathbb E[\max(0, 1 - D(x))] + \mathbb E[\max(0, 1 + D(G(z)))]`
  and :math:`-\mathbb E[D(G(z))]`.

The networks are in :mod:`companion.gan_networks`, the differentiable augmentation of
training images (DiffAugment) in :mod:`companion.diffaugment`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.checks import verdict
from companion.divergences import check_probability_vectors

__all__ = [
    "optimal_discriminator",
    "gan_value",
    "discriminator_loss",
    "generator_loss",
    "wasserstein_losses",
    "lsgan_losses",
    "hinge_losses",
    "gradient_penalty",
    "dragan_penalty",
    "clip_weights_",
    "apply_spectral_norm",
    "check_optimal_discriminator",
    "check_stable_generator_loss",
    "check_gradient_penalty",
    "check_hinge_losses",
]

GENERATOR_LOSS_KINDS = ("non_saturating", "minimax")


# ----------------------------------------------------------------------------- theory


def optimal_discriminator(p_data: Tensor, p_g: Tensor) -> Tensor:
    """D*(x) = p_data(x) / (p_data(x) + p_g(x)) for discrete distributions.

    Args:
        p_data, p_g: probability vectors along the last axis, same shape (..., K).

    Returns:
        (..., K) tensor in [0, 1]; 1/2 where both probabilities are 0 (any value maximises
        V there, since such points carry no weight).
    """
    check_probability_vectors(p_data, p_g, names=("p_data", "p_g"))
    total = p_data + p_g
    return torch.where(total > 0, p_data / total.clamp_min(torch.finfo(total.dtype).tiny), torch.full_like(total, 0.5))


def gan_value(d: Tensor, p_data: Tensor, p_g: Tensor) -> Tensor:
    """V(D, G) = sum_x p_data(x) log d(x) + p_g(x) log(1 - d(x)) for discrete distributions.

    Args:
        d: (..., K) discriminator outputs, probabilities that x is real, in (0, 1). The end
            points are allowed only where they cost nothing: d = 0 where p_data = 0 and
            d = 1 where p_g = 0 (as D* does).
        p_data, p_g: (..., K) probability vectors along the last axis.

    Returns:
        (...) tensor of values (nats); at most 0, and at d = D* equal to 2 JSD - log 4.
    """
    check_probability_vectors(p_data, p_g, names=("p_data", "p_g"))
    if not isinstance(d, Tensor):
        raise TypeError(f"d must be a torch.Tensor, got {type(d).__name__}")
    if d.shape != p_data.shape:
        raise ValueError(f"shape mismatch: d has shape {tuple(d.shape)} but p_data and p_g have shape "
                         f"{tuple(p_data.shape)}")
    if torch.isnan(d).any() or (d < 0).any() or (d > 1).any():
        finite = d[~torch.isnan(d)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.numel() else (float("nan"), float("nan"))
        raise ValueError(
            f"d must lie in (0, 1): it is the probability that x is real; got values in [{lo:.4g}, {hi:.4g}]"
            + (" and NaN" if torch.isnan(d).any() else "")
            + ". If you have logits, apply torch.sigmoid first."
        )
    if ((d == 0) & (p_data > 0)).any():
        raise ValueError("d must lie in (0, 1): d = 0 at a point with p_data > 0 makes log d(x) = -inf")
    if ((d == 1) & (p_g > 0)).any():
        raise ValueError("d must lie in (0, 1): d = 1 at a point with p_g > 0 makes log(1 - d(x)) = -inf")
    return (torch.xlogy(p_data, d) + torch.xlogy(p_g, 1 - d)).sum(-1)


# ----------------------------------------------------------------------------- losses


def _per_example(name: str, t: Tensor) -> Tensor:
    """Flatten (B,) or (B, 1) scores to (B,); reject anything else with a clear message."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim == 0 or t.ndim > 2 or (t.ndim == 2 and t.shape[1] != 1):
        raise ValueError(f"{name} must hold one score per example, shape (B,) or (B, 1); got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty (batch size 0)")
    return t.reshape(-1)


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, *, real_target: float = 1.0) -> Tensor:
    r"""The discriminator's loss, minus the mini-batch estimate of V(D, G).

    ``mean(softplus(-real_logits)) + mean(softplus(fake_logits))``
    :math:`= -[\overline{\log D(x)} + \overline{\log(1 - D(G(z)))}]`; minimising it *maximises* V.

    Args:
        real_logits: (B,) or (B, 1) logits of D on data.
        fake_logits: (B',) or (B', 1) logits of D on generated samples (detach them for the D step).
        real_target: 1 for the GAN objective; e.g. 0.9 for one-sided label smoothing (the real
            term becomes the binary cross-entropy with target 0.9).
    """
    real = _per_example("real_logits", real_logits)
    fake = _per_example("fake_logits", fake_logits)
    if not 0.0 <= real_target <= 1.0:
        raise ValueError(f"real_target must be in [0, 1], got {real_target}")
    # BCE(l, t) = softplus(l) - t * l, exact for every finite l.
    real_term = (F.softplus(real) - real_target * real).mean()
    return real_term + F.softplus(fake).mean()


def generator_loss(fake_logits: Tensor, kind: str = "non_saturating") -> Tensor:
    r"""The generator's loss from D's logits on generated samples.

    Args:
        fake_logits: (B,) or (B, 1) logits of D on G(z) (not detached: gradients flow to G).
        kind: ``"minimax"`` (saturating): :math:`\overline{\log(1 - D(G(z)))}`, the value
            function's own term; ``"non_saturating"``: :math:`-\overline{\log D(G(z))}`.
            Both are minimised by G and both push D(G(z)) up, but per example the gradient
            w.r.t. the logit is -D for minimax (-> 0 when D confidently rejects fakes) and
            -(1 - D) for non-saturating (-> -1 there).
    """
    fake = _per_example("fake_logits", fake_logits)
    if kind == "non_saturating":
        return F.softplus(-fake).mean()
    if kind == "minimax":
        return -F.softplus(fake).mean()
    raise ValueError(f"unknown generator loss kind {kind!r}; expected one of {GENERATOR_LOSS_KINDS}")


def wasserstein_losses(real_scores: Tensor, fake_scores: Tensor) -> tuple[Tensor, Tensor]:
    r"""WGAN losses from critic scores f(x) (unbounded reals, no sigmoid).

    Returns:
        ``(critic_loss, generator_loss)`` with critic loss
        :math:`\overline{f(G(z))} - \overline{f(x)}` (minus the Kantorovich-Rubinstein estimate
        of the Wasserstein-1 distance) and generator loss :math:`-\overline{f(G(z))}`.
        Use the critic loss with detached fakes and the generator loss with fakes that carry
        gradients to G.
    """
    real = _per_example("real_scores", real_scores)
    fake = _per_example("fake_scores", fake_scores)
    return fake.mean() - real.mean(), -fake.mean()


def lsgan_losses(real_scores: Tensor, fake_scores: Tensor, *, a: float = 0.0, b: float = 1.0,
                 c: float = 1.0) -> tuple[Tensor, Tensor]:
    r"""Least-squares GAN losses (Mao et al., 2017) from raw discriminator outputs.

    Returns:
        ``(d_loss, g_loss)``: :math:`\tfrac12 \overline{(D(x) - b)^2} + \tfrac12 \overline{(D(G(z)) - a)^2}`
        and :math:`\tfrac12 \overline{(D(G(z)) - c)^2}`. The defaults a = 0, b = c = 1 are the
        0-1 coding of the paper.
    """
    real = _per_example("real_scores", real_scores)
    fake = _per_example("fake_scores", fake_scores)
    d_loss = 0.5 * (real - b).pow(2).mean() + 0.5 * (fake - a).pow(2).mean()
    return d_loss, 0.5 * (fake - c).pow(2).mean()


def hinge_losses(real_scores: Tensor, fake_scores: Tensor) -> tuple[Tensor, Tensor]:
    r"""Hinge GAN losses (SNGAN, SAGAN): ``(d_loss, g_loss)``.

    :math:`L_D = \overline{\max(0, 1 - D(x))} + \overline{\max(0, 1 + D(G(z)))}`,
    :math:`L_G = -\overline{D(G(z))}`.
    """
    real = _per_example("real_scores", real_scores)
    fake = _per_example("fake_scores", fake_scores)
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean(), -fake.mean()


def _gradient_norm_penalty(critic: Callable[[Tensor], Tensor], x_hat: Tensor, target: float) -> Tensor:
    x_hat = x_hat.detach().requires_grad_(True)
    scores = _per_example("critic(x_hat)", critic(x_hat))
    # create_graph: the penalty must be differentiable w.r.t. the critic's parameters.
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    # The tiny constant keeps the norm differentiable where the gradient is exactly 0.
    norms = torch.sqrt(grad.flatten(1).pow(2).sum(1) + 1e-12)
    return (norms - target).pow(2).mean()


def _batch_uniform(like: Tensor, generator: torch.Generator | None) -> Tensor:
    shape = (like.shape[0],) + (1,) * (like.ndim - 1)
    return torch.rand(shape, generator=generator, dtype=like.dtype).to(like.device)


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, *,
                     eps: Tensor | None = None, generator: torch.Generator | None = None,
                     target: float = 1.0) -> Tensor:
    r"""WGAN-GP penalty :math:`\mathbb E[(\lVert \nabla_{\hat x} f(\hat x) \rVert_2 - 1)^2]` (Gulrajani et al., 2017).

    Evaluated at :math:`\hat x = \epsilon x + (1 - \epsilon) \tilde x` on the lines between
    paired real and generated samples, :math:`\epsilon \sim U[0, 1]` per example. Returns the
    penalty *without* the weight lambda (the paper uses lambda = 10). For a linear critic
    f(x) = w . x + b the gradient is w everywhere, so the penalty is (||w|| - 1)^2.

    Args:
        critic: maps (B, ...) inputs to (B,) or (B, 1) scores (wrap a conditional critic as
            ``lambda x: D(x, y)``).
        real, fake: (B, ...) tensors of the same shape; both are detached here.
        eps: optional interpolation weights, one per example: (B,) or (B, 1, ..., 1) (drawn when None).
        generator: seeds the draw of eps.
        target: the gradient norm the penalty pulls towards (1 for 1-Lipschitz).
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape to interpolate; got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    if real.ndim < 2:
        raise ValueError(f"real and fake must be batches of shape (B, ...) with ndim >= 2, got {tuple(real.shape)}")
    if eps is None:
        eps = _batch_uniform(real, generator)
    else:
        if eps.numel() != real.shape[0] or (eps.ndim > 0 and eps.shape[0] != real.shape[0]):
            raise ValueError(f"eps must hold one weight per example, shape ({real.shape[0]},) or "
                             f"({real.shape[0]}, 1, ...); got shape {tuple(eps.shape)}")
        eps = eps.reshape((-1,) + (1,) * (real.ndim - 1))
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    return _gradient_norm_penalty(critic, x_hat, target)


def dragan_penalty(discriminator: Callable[[Tensor], Tensor], real: Tensor, *, perturb_scale: float = 0.5,
                   generator: torch.Generator | None = None, target: float = 1.0) -> Tensor:
    r"""DRAGAN penalty (Kodali et al., 2017): the gradient-norm penalty near the data.

    :math:`\hat x = x + \alpha \delta` with :math:`\delta = c\, \mathrm{std}(x)\, u`,
    :math:`u \sim U[0, 1)` per coordinate and :math:`\alpha \sim U[0, 1]` per example
    (c = ``perturb_scale``, std over the batch), as in the authors' code; returns
    :math:`\mathbb E[(\lVert \nabla D(\hat x) \rVert_2 - 1)^2]` without the weight lambda
    (10 in the paper). ``discriminator`` returns logits.
    """
    if real.ndim < 2:
        raise ValueError(f"real must be a batch of shape (B, ...) with ndim >= 2, got {tuple(real.shape)}")
    real = real.detach()
    u = torch.rand(real.shape, generator=generator, dtype=real.dtype).to(real.device)
    delta = perturb_scale * real.std() * u
    alpha = _batch_uniform(real, generator)
    return _gradient_norm_penalty(discriminator, real + alpha * delta, target)


@torch.no_grad()
def clip_weights_(module: nn.Module, c: float = 0.01) -> nn.Module:
    """WGAN weight clipping: clamp every parameter of ``module`` to [-c, c] in place."""
    if c <= 0:
        raise ValueError(f"clip value c must be > 0, got {c}")
    for p in module.parameters():
        p.clamp_(-c, c)
    return module


def apply_spectral_norm(module: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    r"""Spectral normalisation (Miyato et al., 2018) of every Linear / Conv layer in ``module``.

    Each weight W is reparametrised as :math:`W / \sigma(W)`, with the largest singular value
    :math:`\sigma(W)` estimated by power iteration (one step per training forward pass), using
    ``torch.nn.utils.parametrizations.spectral_norm``. Returns ``module`` (changed in place).
    """
    from torch.nn.utils.parametrizations import spectral_norm

    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    if not layers:
        raise ValueError(f"{type(module).__name__} has no Linear or Conv layer to normalise")
    for layer in layers:
        spectral_norm(layer, n_power_iterations=n_power_iterations)
    return module


# ----------------------------------------------------------------------------- exercise checkers


def _random_distributions(n: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    p = torch.rand(n, k, generator=gen, dtype=torch.float64) + 1e-3
    q = torch.rand(n, k, generator=gen, dtype=torch.float64) + 1e-3
    return p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)


def check_optimal_discriminator(candidate: Callable[[Tensor, Tensor], Tensor], *, real_target: float = 1.0) -> bool:
    r"""Check a formula for the discriminator that maximises the (label-smoothed) value function.

    The objective, pointwise in x, is ``t p_data log d + ((1 - t) p_data + p_g) log(1 - d)``
    with t = ``real_target`` (t = 1: the GAN value function). ``candidate(p_data, p_g)``
    gets (64, 10) float64 probability vectors and must return d in (0, 1); it passes if no
    small change of d increases the objective (and the first-order condition holds).
    Prints a verdict and returns it as a bool.
    """
    p_data, p_g = _random_distributions(64, 10, seed=5)
    try:
        d = torch.as_tensor(candidate(p_data, p_g), dtype=torch.float64)
    except Exception as exc:  # show the reader what went wrong instead of a traceback
        return verdict(False, f"candidate raised {type(exc).__name__}: {exc}")
    if d.shape != p_data.shape:
        return verdict(False, f"candidate returned shape {tuple(d.shape)}, expected {tuple(p_data.shape)}")
    if not ((d > 0) & (d < 1)).all():
        return verdict(False, "candidate returned values outside (0, 1)")
    a, b = real_target * p_data, (1 - real_target) * p_data + p_g

    def objective(y: Tensor) -> Tensor:
        return torch.xlogy(a, y) + torch.xlogy(b, 1 - y)

    stationarity = (a / d - b / (1 - d)).abs().max().item()
    base = objective(d)
    worse = all((objective((d + s).clamp(1e-9, 1 - 1e-9)) <= base + 1e-12).all() for s in (-1e-3, 1e-3, -0.05, 0.05))
    ok = stationarity < 1e-6 and worse
    return verdict(ok, "your d maximises the objective at every point" if ok else
                    f"not the maximiser: the derivative of the objective at your d reaches {stationarity:.3g} "
                    "(should be 0)")


def check_stable_generator_loss(fn: Callable[[Tensor], Tensor], kind: str = "minimax") -> bool:
    """Check a generator loss written from logits: right values, and finite values and gradients at +-100.

    ``fn(fake_logits)`` gets a (B,) tensor and returns a scalar; it is compared with
    :func:`generator_loss` of the same ``kind``. Prints a verdict and returns it as a bool.
    """
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(32, generator=gen, dtype=torch.float64) * 3
    extreme = torch.tensor([-100.0, -30.0, 0.0, 30.0, 100.0], dtype=torch.float64)
    for x in (logits, extreme):
        x = x.clone().requires_grad_(True)
        ref_x = x.detach().clone().requires_grad_(True)
        try:
            value = fn(x)
            value.backward()
        except Exception as exc:
            return verdict(False, f"fn raised {type(exc).__name__}: {exc}")
        ref = generator_loss(ref_x, kind=kind)
        ref.backward()
        if not torch.isfinite(value) or not torch.isfinite(x.grad).all():
            return verdict(False, f"not finite at logits {x.detach().tolist()}: value {value.item()}, "
                                  f"gradients {x.grad.tolist()}")
        if not torch.allclose(value.double(), ref, atol=1e-6, rtol=1e-6):
            return verdict(False, f"wrong value: expected {ref.item():.6f} for the {kind} loss, got {value.item():.6f}")
        if not torch.allclose(x.grad, ref_x.grad, atol=1e-6, rtol=1e-6):
            return verdict(False, "right values but wrong gradients")
    return verdict(True, f"the {kind} generator loss is right, and finite with finite gradients at logits of +-100")


def check_gradient_penalty(fn: Callable[..., Tensor]) -> bool:
    """Check a WGAN-GP penalty ``fn(critic, real, fake, eps)`` against :func:`gradient_penalty`.

    The critic is a small random MLP, real and fake are (16, 2), eps is (16, 1). The penalty
    must match, and must be differentiable w.r.t. the critic's parameters (create_graph).
    """
    gen = torch.Generator().manual_seed(11)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(11)
    critic = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    torch.random.set_rng_state(torch_state)
    real = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    fake = torch.randn(16, 2, generator=gen, dtype=torch.float64) + 1
    eps = torch.rand(16, 1, generator=gen, dtype=torch.float64)
    ref = gradient_penalty(critic, real, fake, eps=eps)
    try:
        value = fn(critic, real, fake, eps)
    except Exception as exc:
        return verdict(False, f"fn raised {type(exc).__name__}: {exc}")
    if not isinstance(value, Tensor) or value.numel() != 1:
        return verdict(False, "fn must return a scalar tensor")
    if not torch.allclose(value.double(), ref, atol=1e-8, rtol=1e-6):
        return verdict(False, f"expected {ref.item():.6f}, got {value.item():.6f}")
    if not value.requires_grad:
        return verdict(False, "right value, but it carries no gradient to the critic (use create_graph=True)")
    return verdict(True, f"penalty {value.item():.6f} matches, and it is differentiable w.r.t. the critic")


def check_hinge_losses(fn: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]) -> bool:
    """Check ``fn(real_scores, fake_scores) -> (d_loss, g_loss)`` against :func:`hinge_losses`."""
    gen = torch.Generator().manual_seed(13)
    real = torch.randn(40, generator=gen, dtype=torch.float64) * 2
    fake = torch.randn(40, generator=gen, dtype=torch.float64) * 2 - 1
    try:
        d_loss, g_loss = fn(real, fake)
    except Exception as exc:
        return verdict(False, f"fn raised {type(exc).__name__}: {exc}")
    ref_d, ref_g = hinge_losses(real, fake)
    if not torch.allclose(torch.as_tensor(d_loss, dtype=torch.float64), ref_d, atol=1e-8):
        return verdict(False, f"discriminator loss: expected {ref_d.item():.6f}, got {float(d_loss):.6f}")
    if not torch.allclose(torch.as_tensor(g_loss, dtype=torch.float64), ref_g, atol=1e-8):
        return verdict(False, f"generator loss: expected {ref_g.item():.6f}, got {float(g_loss):.6f}")
    return verdict(True, "both hinge losses match")

