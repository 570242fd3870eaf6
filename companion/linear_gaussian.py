r"""The ELBO made exact: the linear-Gaussian latent model (chapter "Variational autoencoders", notebook ``05_1``).

With :math:`p(z) = \mathcal N(0, I_d)` and :math:`x \mid z \sim \mathcal N(Wz + b, \sigma^2 I_n)`
(probabilistic PCA) every term of the ELBO identity

.. math::

    \log p(x) = \underbrace{\mathbb E_{q(z)}[\log p(x \mid z)] - \mathrm{KL}(q(z) \,\|\, p(z))}_{\mathcal L(q)}
        + \mathrm{KL}(q(z) \,\|\, p(z \mid x))

has a closed form, so the identity can be checked to round-off (:class:`LinearGaussianLVM`):

* marginal: :math:`p(x) = \mathcal N(b, WW^\top + \sigma^2 I)`;
* posterior: :math:`p(z \mid x) = \mathcal N(\Sigma W^\top (x - b) / \sigma^2, \Sigma)`,
  :math:`\Sigma = (I + W^\top W / \sigma^2)^{-1}`;
* ELBO of a Gaussian :math:`q = \mathcal N(m, S)`: :math:`\mathcal L(q) = -\tfrac n2 \log 2\pi\sigma^2
  - \frac{\lVert x - Wm - b \rVert^2 + \operatorname{tr}(W S W^\top)}{2\sigma^2} - \mathrm{KL}(q \,\|\,
  \mathcal N(0, I))`, the KL by :func:`companion.divergences.gaussian_kl_full`.

Shapes: ``x: (B, n)``, ``z: (..., B, d)``, ``W: (n, d)``, ``b: (n,)``. Computations run in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from companion.checks import verdict
from companion.divergences import gaussian_kl_full
from companion.vae import gaussian_log_prob

__all__ = ["LinearGaussianLVM", "check_posterior", "check_meanfield_variances", "check_gaussian_decoder_nll"]


class LinearGaussianLVM:
    r"""The linear-Gaussian latent-variable model, where every quantity of the ELBO is exact.

    :math:`p(z) = \mathcal N(0, I_d)`, :math:`p(x \mid z) = \mathcal N(Wz + b, \sigma^2 I_n)`
    (probabilistic PCA). Then

    * :math:`p(x) = \mathcal N(x; b, WW^\top + \sigma^2 I)` (:meth:`log_marginal`),
    * :math:`p(z \mid x) = \mathcal N(\Sigma W^\top (x - b)/\sigma^2, \Sigma)`,
      :math:`\Sigma = (I + W^\top W/\sigma^2)^{-1}` (:meth:`posterior`),
    * for a Gaussian :math:`q = \mathcal N(m, S)`:
      :math:`\mathcal L(q) = -\tfrac n2 \log 2\pi\sigma^2 - \frac{\lVert x - Wm - b \rVert^2 +
      \operatorname{tr}(W S W^\top)}{2\sigma^2} - \mathrm{KL}(q \,\|\, \mathcal N(0, I))` (:meth:`elbo`).

    Computations run in float64.

    Args:
        W: ``(n, d)`` loading matrix. b: ``(n,)`` offset. sigma: noise standard deviation > 0.
    """

    def __init__(self, W: Tensor, b: Tensor, sigma: float):
        W = torch.as_tensor(W, dtype=torch.float64)
        b = torch.as_tensor(b, dtype=torch.float64)
        if W.ndim != 2:
            raise ValueError(f"W must be (n, d), got shape {tuple(W.shape)}")
        if b.shape != (W.shape[0],):
            raise ValueError(f"b must be (n,) = ({W.shape[0]},) to match W {tuple(W.shape)}, got {tuple(b.shape)}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.W, self.b, self.sigma = W, b, float(sigma)
        self.x_dim, self.z_dim = W.shape

    @classmethod
    def random(cls, x_dim: int = 5, z_dim: int = 2, sigma: float = 0.5,
               generator: torch.Generator | None = None) -> LinearGaussianLVM:
        """A model with standard-normal ``W`` and ``b``."""
        W = torch.randn(x_dim, z_dim, generator=generator, dtype=torch.float64)
        b = torch.randn(x_dim, generator=generator, dtype=torch.float64)
        return cls(W, b, sigma)

    def _check_x(self, x: Tensor) -> Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.ndim != 2 or x.shape[1] != self.x_dim:
            raise ValueError(f"x must be (B, {self.x_dim}), got {tuple(x.shape)}")
        return x

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(x, z)``: ``n`` draws of the joint, ``x: (n, x_dim)``, ``z: (n, z_dim)``."""
        z = torch.randn(n, self.z_dim, generator=generator, dtype=torch.float64)
        noise = torch.randn(n, self.x_dim, generator=generator, dtype=torch.float64)
        return z @ self.W.T + self.b + self.sigma * noise, z

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        r""":math:`\log p(x \mid z)` for ``x: (B, n)``, ``z: (..., B, d)`` -> ``(..., B)``."""
        x = self._check_x(x)
        mean = z @ self.W.T + self.b
        return gaussian_log_prob(x, mean, 2 * math.log(self.sigma))

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        r""":math:`\log p(x \mid z) + \log p(z)`, ``z: (..., B, d)`` -> ``(..., B)``."""
        return self.log_likelihood(x, z) + gaussian_log_prob(z.to(torch.float64))

    def marginal(self) -> tuple[Tensor, Tensor]:
        """Mean ``(n,)`` and covariance ``(n, n)`` of :math:`p(x)`."""
        return self.b, self.W @ self.W.T + self.sigma**2 * torch.eye(self.x_dim, dtype=torch.float64)

    def log_marginal(self, x: Tensor) -> Tensor:
        r"""Exact :math:`\log p(x)` per example, ``x: (B, n)`` -> ``(B,)``."""
        x = self._check_x(x)
        mean, cov = self.marginal()
        return torch.distributions.MultivariateNormal(mean, cov).log_prob(x)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Exact :math:`p(z \mid x) = \mathcal N(m, \Sigma)`: ``m: (B, d)``, ``Σ: (d, d)`` (the same for every x)."""
        x = self._check_x(x)
        s2 = self.sigma**2
        precision = torch.eye(self.z_dim, dtype=torch.float64) + self.W.T @ self.W / s2
        cov = torch.linalg.inv(precision)
        cov = 0.5 * (cov + cov.T)
        mean = (x - self.b) @ self.W @ cov / s2  # Σ symmetric: (Σ W^T (x-b))^T = (x-b)^T W Σ
        return mean, cov

    def _check_q(self, x: Tensor, q_mean: Tensor, q_cov: Tensor) -> tuple[Tensor, Tensor]:
        q_mean = torch.as_tensor(q_mean, dtype=torch.float64)
        q_cov = torch.as_tensor(q_cov, dtype=torch.float64)
        if q_mean.shape != (x.shape[0], self.z_dim):
            raise ValueError(f"q_mean must be (B, d) = ({x.shape[0]}, {self.z_dim}), got {tuple(q_mean.shape)}")
        if q_cov.shape not in ((self.z_dim, self.z_dim), (x.shape[0], self.z_dim, self.z_dim)):
            raise ValueError(
                f"q_cov must be (d, d) or (B, d, d) with d = {self.z_dim}, B = {x.shape[0]}; got {tuple(q_cov.shape)}"
            )
        return q_mean, q_cov.expand(x.shape[0], self.z_dim, self.z_dim)

    def elbo(self, x: Tensor, q_mean: Tensor, q_cov: Tensor) -> Tensor:
        r"""Exact ELBO :math:`\mathbb E_q[\log p(x \mid z)] - \mathrm{KL}(q \,\|\, p(z))`, :math:`q = \mathcal N(m, S)`.

        Args:
            x: ``(B, n)``. q_mean: ``(B, d)``. q_cov: ``(d, d)`` or ``(B, d, d)``, positive definite.

        Returns:
            ``(B,)`` in nats.
        """
        x = self._check_x(x)
        m, S = self._check_q(x, q_mean, q_cov)
        s2 = self.sigma**2
        resid = x - m @ self.W.T - self.b
        trace = torch.einsum("ij,bjk,ik->b", self.W, S, self.W)  # tr(W S W^T)
        expected_ll = -0.5 * self.x_dim * math.log(2 * math.pi * s2) - 0.5 * (resid.pow(2).sum(-1) + trace) / s2
        eye = torch.eye(self.z_dim, dtype=torch.float64).expand_as(S)
        kl_prior = gaussian_kl_full(m, S, torch.zeros_like(m), eye)
        return expected_ll - kl_prior

    def kl_to_posterior(self, x: Tensor, q_mean: Tensor, q_cov: Tensor) -> Tensor:
        r"""Exact :math:`\mathrm{KL}(q \,\|\, p(z \mid x))` per example, ``(B,)``."""
        x = self._check_x(x)
        m, S = self._check_q(x, q_mean, q_cov)
        pm, pS = self.posterior(x)
        return gaussian_kl_full(m, S, pm, pS.expand_as(S))


# ------------------------------------------------------------------ exercise checks


def check_posterior(fn: Callable[[Tensor, Tensor, float, Tensor], tuple[Tensor, Tensor]], *, seed: int = 0) -> bool:
    """Check a reader's ``fn(W, b, sigma, x) -> (mean (B, d), cov (d, d))`` for the linear-Gaussian posterior."""
    g = torch.Generator().manual_seed(seed)
    model = LinearGaussianLVM.random(6, 3, 0.7, generator=g)
    x, _ = model.sample(5, generator=g)
    try:
        mean, cov = fn(model.W, model.b, model.sigma, x)
        mean, cov = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64)
    except Exception as exc:
        return verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
    want_mean, want_cov = model.posterior(x)
    if mean.shape != want_mean.shape or cov.shape != want_cov.shape:
        return verdict(False, f"expected shapes {tuple(want_mean.shape)} and {tuple(want_cov.shape)}, "
                               f"got {tuple(mean.shape)} and {tuple(cov.shape)}")
    err = max((mean - want_mean).abs().max().item(), (cov - want_cov).abs().max().item())
    return verdict(err < 1e-8, f"max difference to the exact posterior {err:.2e}")


def check_meanfield_variances(fn: Callable[[Tensor, Tensor, float], Tensor], *, seed: int = 0) -> bool:
    r"""Check a reader's ``fn(W, b, sigma) -> (d,)``: the variances :math:`s_j^2` of the best diagonal
    Gaussian :math:`q` (the mean-field ELBO maximiser) in the linear-Gaussian model.

    The truth is :math:`1 / \Lambda_{jj}` with :math:`\Lambda` the inverse of the exact posterior
    covariance (:meth:`LinearGaussianLVM.posterior`), on a random model with ``d = 3``; relative
    tolerance 1e-6. A wrong answer is also compared with the ELBO it reaches.
    """
    g = torch.Generator().manual_seed(seed)
    model = LinearGaussianLVM.random(6, 3, 0.7, generator=g)
    x, _ = model.sample(1, generator=g)
    try:
        got = torch.as_tensor(fn(model.W, model.b, model.sigma), dtype=torch.float64)
    except Exception as exc:
        return verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
    mean, cov = model.posterior(x)
    want = 1.0 / torch.diagonal(torch.linalg.inv(cov))
    if got.shape != want.shape:
        return verdict(False, f"expected one variance per latent dimension, shape {tuple(want.shape)}; "
                              f"got {tuple(got.shape)}")
    if bool(torch.allclose(got, want, rtol=1e-6, atol=0)):
        return verdict(True, f"s^2 = 1 / Lambda_jj = {[round(v, 4) for v in want.tolist()]}, narrower than the "
                             f"posterior's Sigma_jj = {[round(v, 4) for v in torch.diagonal(cov).tolist()]}")
    if not bool(torch.isfinite(got).all()) or float(got.min()) <= 0:
        return verdict(False, f"variances must be positive and finite, got {got.tolist()}")
    elbo_got, elbo_best = (model.elbo(x, mean, torch.diag(v)).item() for v in (got, want))
    return verdict(False, f"your variances {[round(v, 4) for v in got.tolist()]} reach the ELBO {elbo_got:.4f}; "
                          f"the best diagonal q reaches {elbo_best:.4f} (is Sigma_jj the right answer?)")


def check_gaussian_decoder_nll(fn: Callable[[Tensor, Tensor, float], Tensor], *, seed: int = 0) -> bool:
    r"""Check a reader's ``fn(x, x_hat, s) -> (B,)``: :math:`-\log \mathcal N(x; \hat x, s^2 I)` per row,
    the negative log-likelihood of a Gaussian decoder with a fixed standard deviation ``s`` (the
    decoder of this model, and of the VAE chapter's exercise). Compared with
    :func:`companion.vae.gaussian_log_prob` on ``(4, 784)`` images for three ``s``; relative tolerance 1e-8.
    """
    g = torch.Generator().manual_seed(seed)
    x, x_hat = torch.rand(2, 4, 784, generator=g, dtype=torch.float64)
    for s in (0.1, 0.5 ** 0.5, 1.0):
        try:
            got = torch.as_tensor(fn(x, x_hat, s), dtype=torch.float64)
        except Exception as exc:
            return verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
        want = -gaussian_log_prob(x, x_hat, 2 * math.log(s))
        if got.shape != want.shape:
            return verdict(False, f"expected one value per image, shape {tuple(want.shape)}; got {tuple(got.shape)}")
        if not bool(torch.allclose(got, want, rtol=1e-8, atol=0)):
            return verdict(False, f"s = {s:.3g}: you gave {got[0].item():.4f} for the first image, the "
                                  f"Gaussian NLL is {want[0].item():.4f} (did you keep the constant "
                                  "784/2 log(2 pi s^2) and the factor 1/(2 s^2)?)")
    return verdict(True, "your NLL matches -log N(x; x_hat, s^2 I) for s in (0.1, 0.71, 1): SSE / (2 s^2) + const")
