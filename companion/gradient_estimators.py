r"""Two unbiased estimators of a gradient of an expectation (chapter "Variational autoencoders", notebook ``05_1``).

For :math:`q_\phi = \mathcal N(\mu, \operatorname{diag} \sigma^2)`, :math:`\phi = (\mu, \log \sigma^2)`,
and a function :math:`f` of :math:`z`, both estimate :math:`\nabla_\phi\, \mathbb E_{q_\phi}[f(z)]` from
one sample each:

* reparameterization (pathwise, :func:`reparameterization_gradients`): :math:`z = \mu + \sigma \odot
  \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`, estimate :math:`\nabla_\phi f(\mu + \sigma
  \odot \varepsilon)`; needs a differentiable f;
* score function (REINFORCE, :func:`score_function_gradients`): :math:`z \sim q_\phi`, estimate
  :math:`(f(z) - b)\, \nabla_\phi \log q_\phi(z)`, with :math:`\partial_\mu \log q = (z - \mu) / \sigma^2`
  and :math:`\partial_{\log \sigma^2} \log q = \tfrac12 ((z - \mu)^2 / \sigma^2 - 1)`; needs only
  values of f; a constant baseline b keeps it unbiased since :math:`\mathbb E_q[\nabla_\phi \log q] = 0`.

Shapes: ``mu, logvar: (D,)``; ``f: (n, D) -> (n,)``; each estimator returns ``n`` estimates,
``(grad_mu, grad_logvar)``, each ``(n, D)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from companion.vae import reparameterize

__all__ = ["reparameterization_gradients", "score_function_gradients"]


def _check_moments(mu: Tensor, logvar: Tensor, n: int) -> None:
    if mu.shape != logvar.shape or mu.ndim != 1:
        raise ValueError(f"mu and logvar must both be (D,); got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")


def reparameterization_gradients(f: Callable[[Tensor], Tensor], mu: Tensor, logvar: Tensor, n: int, *,
                                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    r"""``n`` single-sample reparameterization estimates of :math:`\nabla_{\mu, \log\sigma^2} \mathbb E_{q}[f(z)]`.

    Each estimate is :math:`\nabla f(\mu + \sigma \odot \varepsilon_i)` with respect to ``mu`` and
    ``logvar``; ``f`` must be differentiable and map ``(n, D) -> (n,)``.

    Returns:
        ``(grad_mu, grad_logvar)``, each ``(n, D)``: one estimate per row.
    """
    _check_moments(mu, logvar, n)
    mu_rows = mu.detach().expand(n, -1).clone().requires_grad_(True)  # one copy per sample: per-row gradients
    logvar_rows = logvar.detach().expand(n, -1).clone().requires_grad_(True)
    eps = torch.randn((n, mu.shape[0]), generator=generator, dtype=mu.dtype)
    values = f(mu_rows + torch.exp(0.5 * logvar_rows) * eps)
    grad_mu, grad_logvar = torch.autograd.grad(values.sum(), (mu_rows, logvar_rows))
    return grad_mu, grad_logvar


def score_function_gradients(f: Callable[[Tensor], Tensor], mu: Tensor, logvar: Tensor, n: int, *,
                             generator: torch.Generator | None = None, baseline: float = 0.0) -> tuple[Tensor, Tensor]:
    r"""``n`` single-sample score-function (REINFORCE) estimates :math:`(f(z_i) - b) \nabla \log q(z_i)`.

    Needs only values of ``f`` (no gradient of f), which is why it works for discrete z, and
    pays for it in variance. A constant ``baseline`` b keeps the estimator unbiased
    (:math:`\mathbb E_q[\nabla \log q] = 0`) and can reduce its variance.

    Returns:
        ``(grad_mu, grad_logvar)``, each ``(n, D)``.
    """
    _check_moments(mu, logvar, n)
    with torch.no_grad():
        z = reparameterize(mu.detach().expand(n, -1), logvar.detach().expand(n, -1), generator)
        weight = (f(z) - baseline).unsqueeze(-1)
        var = torch.exp(logvar.detach())
        score_mu = (z - mu.detach()) / var  # d/dmu log N(z; mu, var)
        score_logvar = 0.5 * ((z - mu.detach()).pow(2) / var - 1.0)  # d/dlogvar log N(z; mu, var)
    return weight * score_mu, weight * score_logvar
