r"""Distances between probability distributions (chapter "Generative vs discriminative models").

For discrete distributions p and q on the same support (probability vectors along
the last axis):

.. math::

    H(p) = -\sum_i p_i \log p_i, \qquad
    H(p, q) = -\sum_i p_i \log q_i, \qquad
    \mathrm{KL}(p \,\|\, q) = \sum_i p_i \log \frac{p_i}{q_i} = H(p, q) - H(p),

    \mathrm{JSD}(p \,\|\, q) = \tfrac12 \mathrm{KL}(p \,\|\, m) + \tfrac12 \mathrm{KL}(q \,\|\, m),
    \quad m = \tfrac12 (p + q),

with the conventions :math:`0 \log 0 = 0` and :math:`p \log(p / 0) = +\infty` for
p > 0. Logarithms are natural (nats); JSD lies in :math:`[0, \log 2]`.

For diagonal Gaussians :math:`q = \mathcal N(\mu_q, \operatorname{diag} \sigma_q^2)` and
:math:`p = \mathcal N(\mu_p, \operatorname{diag} \sigma_p^2)`, the chapter derives with sympy

.. math::

    \mathrm{KL}(q \,\|\, p) = \frac12 \sum_j \left( \log \frac{\sigma_{p,j}^2}{\sigma_{q,j}^2}
        + \frac{\sigma_{q,j}^2 + (\mu_{q,j} - \mu_{p,j})^2}{\sigma_{p,j}^2} - 1 \right)

(:func:`gaussian_kl`; the VAE's KL term, chapter "Variational autoencoders", exercise checker
:func:`check_gaussian_kl`). For full covariances, :math:`d`-dimensional (:func:`gaussian_kl_full`;
the linear-Gaussian model of notebook ``05_1``):

.. math::

    \mathrm{KL}(\mathcal N(m_0, S_0) \,\|\, \mathcal N(m_1, S_1)) = \frac12 \left(
        \operatorname{tr}(S_1^{-1} S_0) + (m_1 - m_0)^\top S_1^{-1} (m_1 - m_0) - d
        + \log \frac{\det S_1}{\det S_0} \right).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from companion.checks import verdict

__all__ = [
    "entropy", "cross_entropy", "kl_divergence", "js_divergence", "gaussian_kl", "gaussian_kl_full",
    "check_probability_vectors", "fit_gaussian_to_density", "check_kl_answer", "check_gaussian_kl",
    "check_forward_kl_fit",
]


def check_probability_vectors(*dists: Tensor, names: tuple[str, ...] | None = None, atol: float = 1e-6) -> None:
    """Raise ``ValueError`` unless every tensor holds probability vectors along its last axis.

    Checks: all have the same shape, no negative or NaN entries, each row sums to 1
    within ``atol`` (scaled by the row length).
    """
    names = names or tuple(f"argument {i}" for i in range(len(dists)))
    for name, d in zip(names, dists, strict=False):
        if not isinstance(d, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of probabilities, got {type(d).__name__} "
                            f"(convert it with torch.tensor({name}, dtype=torch.float64))")
    shape = dists[0].shape
    for name, d in zip(names, dists, strict=False):
        if d.shape != shape:
            raise ValueError(
                f"shape mismatch: {names[0]} has shape {tuple(shape)} but {name} has shape {tuple(d.shape)}"
            )
        if d.ndim == 0:
            raise ValueError(f"{name} is a scalar; expected probability vectors along the last axis")
        if torch.isnan(d).any():
            raise ValueError(f"{name} contains NaN")
        if (d < 0).any():
            raise ValueError(f"{name} has negative entries (min {d.min().item():.3g}); probabilities must be >= 0")
        sums = d.sum(-1)
        tol = atol * max(1, d.shape[-1]) ** 0.5
        if not torch.allclose(sums, torch.ones_like(sums), atol=tol, rtol=0):
            worst = sums[(sums - 1).abs().argmax()] if sums.ndim else sums
            raise ValueError(
                f"{name} does not sum to 1 along its last axis (a row sums to {float(worst):.6g}); "
                "normalize it first"
            )


def _xlogy(x: Tensor, y: Tensor) -> Tensor:
    """x log y with 0 log y = 0 (even for y = 0)."""
    return torch.xlogy(x, y)


def entropy(p: Tensor) -> Tensor:
    """Shannon entropy H(p) in nats. p: (..., K) -> (...)."""
    check_probability_vectors(p, names=("p",))
    return -_xlogy(p, p).sum(-1)


def cross_entropy(p: Tensor, q: Tensor) -> Tensor:
    """Cross-entropy H(p, q) = -sum p log q in nats; +inf where q = 0 < p. (..., K) -> (...)."""
    check_probability_vectors(p, q, names=("p", "q"))
    return -_xlogy(p, q).sum(-1)


def kl_divergence(p: Tensor, q: Tensor) -> Tensor:
    """KL(p || q) = sum_i p_i log(p_i / q_i) in nats.

    Args:
        p, q: probability vectors along the last axis, same shape (..., K).

    Returns:
        (...) tensor; ``inf`` where some q_i = 0 < p_i; terms with p_i = 0 count 0.
    """
    check_probability_vectors(p, q, names=("p", "q"))
    # xlogy(p, p) - xlogy(p, q) keeps 0 log 0 = 0 and gives +inf when q = 0 < p.
    return (_xlogy(p, p) - _xlogy(p, q)).sum(-1)


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen-Shannon divergence JSD(p || q) in nats: symmetric, finite, in [0, log 2].

    Args:
        p, q: probability vectors along the last axis, same shape (..., K).
    """
    check_probability_vectors(p, q, names=("p", "q"))
    # KL(p || m) = sum p log(2p / (p + q)): written with p + q rather than m = (p + q) / 2,
    # because halving a denormal q_i underflows to 0 and would make a finite term infinite.
    s = p + q
    kl_pm = (_xlogy(p, p) - _xlogy(p, s)).sum(-1) + math.log(2) * p.sum(-1)
    kl_qm = (_xlogy(q, q) - _xlogy(q, s)).sum(-1) + math.log(2) * q.sum(-1)
    return (0.5 * kl_pm + 0.5 * kl_qm).clamp_min(0.0)


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor | float = 0.0, logvar_p: Tensor | float = 0.0) -> Tensor:
    """KL(N(mu_q, diag exp(logvar_q)) || N(mu_p, diag exp(logvar_p))), summed over the last axis.

    With the defaults the prior is N(0, I) and this is the VAE's KL term
    ``0.5 * sum(mu^2 + exp(logvar) - 1 - logvar)``.

    Args:
        mu_q, logvar_q: (..., D) mean and log-variance of q.
        mu_p, logvar_p: mean and log-variance of p, broadcastable to (..., D).

    Returns:
        (...) tensor of KL values in nats.
    """
    mu_q, logvar_q = torch.as_tensor(mu_q), torch.as_tensor(logvar_q)
    if mu_q.shape != logvar_q.shape:
        raise ValueError(f"mu_q has shape {tuple(mu_q.shape)} but logvar_q has shape {tuple(logvar_q.shape)}")
    if mu_q.ndim == 0:
        raise ValueError("mu_q is a scalar; expected a (..., D) tensor (D = latent dimension)")
    mu_p = torch.as_tensor(mu_p, dtype=mu_q.dtype, device=mu_q.device)
    logvar_p = torch.as_tensor(logvar_p, dtype=mu_q.dtype, device=mu_q.device)
    for name, t in (("mu_p", mu_p), ("logvar_p", logvar_p)):
        try:
            torch.broadcast_shapes(t.shape, mu_q.shape)
        except RuntimeError:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)}, not broadcastable to mu_q's shape {tuple(mu_q.shape)}"
            ) from None
    var_ratio = torch.exp(logvar_q - logvar_p)
    mahalanobis = (mu_q - mu_p).pow(2) * torch.exp(-logvar_p)
    return 0.5 * (logvar_p - logvar_q + var_ratio + mahalanobis - 1.0).sum(-1)


def _check_covariance(name: str, S: Tensor, d: int) -> None:
    if S.ndim < 2 or S.shape[-2:] != (d, d):
        raise ValueError(f"{name} must be (..., d, d) with d = {d} (the means' last axis), got {tuple(S.shape)}")
    if not torch.allclose(S, S.mT, rtol=1e-5, atol=1e-8):
        err = (S - S.mT).abs().max().item()
        raise ValueError(f"{name} is not symmetric (max |S - S^T| = {err:.3g}); a covariance must be")
    if (torch.linalg.cholesky_ex(S).info > 0).any():
        raise ValueError(f"{name} is not positive definite (its Cholesky factorisation fails)")


def gaussian_kl_full(m0: Tensor, S0: Tensor, m1: Tensor, S1: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(\mathcal N(m_0, S_0) \,\|\, \mathcal N(m_1, S_1))` for full covariance matrices.

    .. math::

        \mathrm{KL} = \frac12 \left( \operatorname{tr}(S_1^{-1} S_0) + (m_1 - m_0)^\top S_1^{-1} (m_1 - m_0)
            - d + \log \det S_1 - \log \det S_0 \right),

    computed with a Cholesky factor of :math:`S_1` (no explicit inverse).

    Args:
        m0, m1: ``(..., d)`` means.
        S0, S1: ``(..., d, d)`` symmetric positive-definite covariances; the batch axes ``...``
            of all four broadcast against each other.

    Returns:
        ``(...)`` KL values in nats.

    Raises:
        ValueError: mismatched shapes, or a covariance that is not symmetric positive definite.
    """
    m0, S0, m1, S1 = (torch.as_tensor(t) for t in (m0, S0, m1, S1))
    if m0.ndim == 0 or m1.shape[-1:] != m0.shape[-1:]:
        raise ValueError(f"m0 and m1 must be (..., d) with the same d, got {tuple(m0.shape)} and {tuple(m1.shape)}")
    d = m0.shape[-1]
    _check_covariance("S0", S0, d)
    _check_covariance("S1", S1, d)
    try:
        torch.broadcast_shapes(m0.shape[:-1], S0.shape[:-2], m1.shape[:-1], S1.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"batch shapes do not broadcast: m0 {tuple(m0.shape)}, S0 {tuple(S0.shape)}, "
            f"m1 {tuple(m1.shape)}, S1 {tuple(S1.shape)}"
        ) from None
    L1 = torch.linalg.cholesky(S1)
    S1_inv_S0 = torch.cholesky_solve(S0, L1)
    diff = (m1 - m0).unsqueeze(-1)
    maha = (diff * torch.cholesky_solve(diff, L1)).sum((-2, -1))
    logdet1 = 2 * torch.log(torch.diagonal(L1, dim1=-2, dim2=-1)).sum(-1)
    logdet0 = torch.linalg.slogdet(S0)[1]
    return 0.5 * (torch.diagonal(S1_inv_S0, dim1=-2, dim2=-1).sum(-1) + maha - d + logdet1 - logdet0)


def fit_gaussian_to_density(x: Tensor, p: Tensor, direction: str = "forward", mu0: float = 0.0,
                            log_sigma0: float = 0.0, steps: int = 400, lr: float = 0.05) -> tuple[float, float]:
    r"""Fit one Gaussian :math:`q = \mathcal N(\mu, \sigma^2)` to a 1-D density by minimising a KL divergence.

    * ``"forward"``: :math:`\mathrm{KL}(p \,\|\, q)`, *mass-covering*: q must put mass wherever p
      has some; the optimum matches p's mean and variance (moment matching).
    * ``"reverse"``: :math:`\mathrm{KL}(q \,\|\, p)`, *mode-seeking*: q is penalised for mass where
      p has little, so it settles on one mode (which one depends on ``mu0``).

    The integrals are Riemann sums on the uniform grid ``x``.

    Args:
        x: (N,) uniform grid covering the support of p.
        p: (N,) density of p on the grid (need not be normalised; it is renormalised).
        direction: ``"forward"`` or ``"reverse"``.
        mu0, log_sigma0: starting point of the optimisation.

    Returns:
        ``(mu, sigma)`` of the fitted Gaussian.
    """
    if direction not in ("forward", "reverse"):
        raise ValueError(f"unknown direction {direction!r}; expected 'forward' or 'reverse'")
    if x.ndim != 1 or x.shape != p.shape:
        raise ValueError(f"x and p must be 1-D of the same length, got {tuple(x.shape)} and {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()) or float(p.min()) < 0 or float(p.sum()) <= 0:
        raise ValueError(f"p must be a density on the grid: finite, >= 0 and not all zero; got minimum "
                         f"{float(p.min()):.3g} and sum {float(p.sum()):.3g}")
    x, p = x.double(), p.double()
    dx = x[1] - x[0]
    p = p / (p.sum() * dx)
    log_p = torch.log(p.clamp_min(1e-300))
    mu = torch.tensor(float(mu0), dtype=torch.float64, requires_grad=True)
    log_sigma = torch.tensor(float(log_sigma0), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mu, log_sigma], lr=lr)
    for _ in range(steps):
        log_q = torch.distributions.Normal(mu, log_sigma.exp()).log_prob(x)
        if direction == "forward":
            loss = (p * (log_p - log_q)).sum() * dx
        else:
            loss = (log_q.exp() * (log_q - log_p)).sum() * dx
        opt.zero_grad()
        loss.backward()
        opt.step()
    return mu.item(), log_sigma.exp().item()


def check_kl_answer(p, q, answer: float, tol: float = 1e-3) -> bool:
    """Exercise checker: is ``answer`` the KL(p || q) of two discrete distributions (in nats)?

    Prints a verdict and returns it.
    """
    p, q = torch.as_tensor(p, dtype=torch.float64), torch.as_tensor(q, dtype=torch.float64)
    truth = kl_divergence(p, q).item()
    ok = abs(truth - float(answer)) <= tol
    return verdict(ok, f"KL(p || q) = {truth:.4f} nats." if ok else
                   f"your {float(answer):.4f} differs from KL(p || q) by more than {tol} "
                   "(did you use natural logarithms, and the sum over p's support?)")


def check_gaussian_kl(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], *, seed: int = 0) -> bool:
    """Check a reader's ``fn(mu_q, logvar_q, mu_p, logvar_p) -> (B,)`` KL between diagonal Gaussians.

    Compares with :func:`gaussian_kl` on 64 random pairs of 3-dimensional Gaussians, ``(64, 3)``
    arguments in float64; prints and returns the verdict.
    """
    g = torch.Generator().manual_seed(seed)
    args = [torch.randn(64, 3, generator=g, dtype=torch.float64) for _ in range(4)]
    try:
        got = torch.as_tensor(fn(*args), dtype=torch.float64)
    except Exception as exc:  # a reader's bug: report it, do not crash the notebook
        return verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
    want = gaussian_kl(*args)
    if got.shape != want.shape:
        return verdict(False, f"expected one KL per row, shape {tuple(want.shape)}; got {tuple(got.shape)}")
    err = (got - want).abs().max().item()
    return verdict(err < 1e-8, f"max difference to the closed form {err:.2e} over 64 random pairs")


def check_forward_kl_fit(fn: Callable[[Tensor, Tensor], tuple[float, float]]) -> bool:
    r"""Check a reader's ``fn(x, p) -> (mu, sigma)``: the Gaussian that minimises :math:`\mathrm{KL}(p \,\|\, q)`
    for a density ``p: (N,)`` on the uniform grid ``x: (N,)``, without an optimiser.

    :math:`\mathrm{KL}(p \,\|\, \mathcal N(\mu, \sigma^2))` (a Riemann sum on the grid) is convex in
    :math:`(\mu/\sigma^2, 1/\sigma^2)`, so the answer is the minimum iff the gradient in
    :math:`(\mu, \log\sigma)` vanishes there: checked (gradient norm below 1e-5) on a two-mode mixture and a
    skewed density, float64.
    """
    x = torch.linspace(-8.0, 12.0, 4001, dtype=torch.float64)
    normal = torch.distributions.Normal
    mixture = 0.6 * normal(-2.0, 0.7).log_prob(x).exp() + 0.4 * normal(2.5, 0.6).log_prob(x).exp()
    densities = {"two-mode mixture": mixture,
                 "gamma(2, 1)": torch.distributions.Gamma(2.0, 1.0).log_prob(x.clamp_min(1e-9)).exp() * (x > 0)}
    dx = x[1] - x[0]
    for name, p in densities.items():
        try:
            mu, sigma = (float(v) for v in fn(x, p))
        except Exception as exc:  # a reader's bug: report it, do not crash the notebook
            return verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
        if not (math.isfinite(mu) and math.isfinite(sigma) and sigma > 0):
            return verdict(False, f"{name}: need a finite mu and a sigma > 0, got ({mu}, {sigma})")
        params = torch.tensor([mu, math.log(sigma)], dtype=torch.float64, requires_grad=True)
        p_n = p / (p.sum() * dx)
        kl = (torch.special.xlogy(p_n, p_n) - p_n * normal(params[0], params[1].exp()).log_prob(x)).sum() * dx
        (grad,) = torch.autograd.grad(kl, params)
        if grad.abs().max().item() > 1e-5:
            return verdict(False, f"{name}: at mu = {mu:.4f}, sigma = {sigma:.4f} the KL still has gradient "
                                  f"({grad[0].item():.3g}, {grad[1].item():.3g}) in (mu, log sigma): not the minimum")
    return verdict(True, "KL(p || q) is stationary, hence minimal, at your (mu, sigma) for both densities")
