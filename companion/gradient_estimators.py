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

from companion.checks import verdict
from companion.vae import gaussian_log_prob, reparameterize

__all__ = ["reparameterization_gradients", "score_function_gradients", "check_gaussian_score"]


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


def check_gaussian_score(fn: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]], *, seed: int = 0) -> bool:
    r"""Check a reader's ``fn(z (n, D), mu (D,), logvar (D,)) -> (d_mu, d_logvar)``, each ``(n, D)``: the score
    :math:`\nabla_{\mu, \log\sigma^2} \log \mathcal N(z; \mu, \operatorname{diag} \sigma^2)` at every sample.

    Compared with autograd through :func:`companion.vae.gaussian_log_prob` (float64, atol 1e-8); on
    success, prints its average over 200,000 samples of :math:`q`, which is 0 up to sampling error
    (:math:`\mathbb E_q[\nabla_\phi \log q_\phi] = 0`, the reason a baseline keeps the estimator unbiased).
    """
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(3, generator=g, dtype=torch.float64)
    logvar = torch.randn(3, generator=g, dtype=torch.float64)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64) * 2
    params = (mu.expand(5, -1).clone().requires_grad_(True), logvar.expand(5, -1).clone().requires_grad_(True))
    want = torch.autograd.grad(gaussian_log_prob(z, *params).sum(), params)
    try:
        got = tuple(torch.as_tensor(t, dtype=torch.float64) for t in fn(z, mu, logvar))
    except Exception as exc:  # a reader's bug: report it, do not crash the notebook
        return verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
    if len(got) != 2:
        return verdict(False, f"expected a pair (d_mu, d_logvar), got {len(got)} tensors")
    hints = ("differentiate -(z - mu)^2 / (2 sigma^2)", "differentiate with respect to log sigma^2, not sigma")
    for name, a, b, hint in zip(("d/dmu", "d/dlogvar"), got, want, hints, strict=True):
        if a.shape != b.shape:
            return verdict(False, f"{name}: expected shape {tuple(b.shape)} (one row per sample), got {tuple(a.shape)}")
        if not torch.allclose(a, b, atol=1e-8, rtol=0):
            return verdict(False, f"{name} differs from autograd by up to {(a - b).abs().max().item():.3g} ({hint})")
    zs = reparameterize(mu.expand(200_000, -1), logvar.expand(200_000, -1), g)
    means = [t.mean(0).abs().max().item() for t in fn(zs, mu, logvar)]
    return verdict(True, f"your score matches autograd; its largest mean over 200,000 samples of q is "
                         f"{max(means):.1e}, zero up to sampling error")
