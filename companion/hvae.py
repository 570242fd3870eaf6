r"""A two-level hierarchical VAE (chapter "VAE variants").

Seed `000` names hierarchical VAEs among the VAE's variants. The simplest has two stochastic layers:
the generative model runs top-down, :math:`z_2 \to z_1 \to x`,

.. math::

    p_\theta(x, z_1, z_2) = p(z_2)\, p_\theta(z_1 \mid z_2)\, p_\theta(x \mid z_1), \qquad
    p(z_2) = \mathcal N(0, I),\quad p_\theta(z_1 \mid z_2) = \mathcal N\big(\mu_\theta(z_2), \operatorname{diag}
    \sigma^2_\theta(z_2)\big),

with the Bernoulli decoder of :class:`companion.vae.VAE`, so the prior of :math:`z_1` is a learned
*mixture* of Gaussians instead of one standard Gaussian. Inference runs bottom-up,
:math:`q_\phi(z_1, z_2 \mid x) = q_\phi(z_1 \mid x)\, q_\phi(z_2 \mid z_1)`, both diagonal Gaussians, and
the ELBO is

.. math::

    \mathcal L = \mathbb E_q\big[\log p_\theta(x \mid z_1)\big]
        - \mathbb E_q\big[\log q_\phi(z_1 \mid x) - \log p_\theta(z_1 \mid z_2)\big]
        - \mathbb E_{q(z_1 \mid x)}\big[\mathrm{KL}(q_\phi(z_2 \mid z_1) \,\|\, p(z_2))\big],

estimated with one sample of :math:`(z_1, z_2)`: the middle term by that sample, the last in closed
form. :meth:`HierarchicalVAE.iwae_bound` gives the importance-weighted bound with
:math:`w = p_\theta(x, z_1, z_2) / q_\phi(z_1, z_2 \mid x)`, comparable with the one-level VAE's
(:func:`companion.vae.iwae_bound`). (NVAE and the ladder VAE infer top-down, sharing the generative
path; this bottom-up form is the one of Burda et al. 2016's two-layer models.)

Shapes: ``x: (B, 1, 28, 28)``; ``z1: (..., D1)``, ``z2: (..., D2)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from companion.divergences import gaussian_kl
from companion.layers import mlp
from companion.vae import ELBOTerms, _reduce, bernoulli_nll, gaussian_log_prob, reparameterize

__all__ = ["HierarchicalVAE"]


class HierarchicalVAE(nn.Module):
    """Two stochastic layers ``z2 -> z1 -> x`` with bottom-up inference ``x -> z1 -> z2`` (see the module docstring).

    Args:
        x_shape: one example's shape.
        hidden: widths of the networks next to x (encoder x -> z1, decoder z1 -> x, mirrored).
        z_dim: D1, the dimension of z1.
        z2_dim: D2, the dimension of z2 (its networks have ``hidden[-1] // 2`` units).
        activation: as in :class:`companion.vae.VAE`.

    ``loss(x)`` returns :class:`~companion.vae.ELBOTerms` with ``kl`` the sum of both layers' terms.
    """

    def __init__(self, x_shape: Sequence[int] = (1, 28, 28), hidden: Sequence[int] = (400,), z_dim: int = 20,
                 z2_dim: int = 10, activation: str = "silu"):
        super().__init__()
        for name, v in (("z_dim", z_dim), ("z2_dim", z2_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not hidden or any(h < 2 for h in hidden):
            raise ValueError(f"hidden must be a non-empty list of widths >= 2, got {list(hidden)}")
        self.x_shape = tuple(int(s) for s in x_shape)
        self.x_dim = math.prod(self.x_shape)
        self.z_dim, self.z2_dim = int(z_dim), int(z2_dim)
        hidden = [int(h) for h in hidden]
        small = hidden[-1] // 2
        self.encoder = mlp([self.x_dim, *hidden], activation, last_activation=True)
        self.to_moments = nn.Linear(hidden[-1], 2 * self.z_dim)                 # q(z1 | x)
        self.encoder2 = mlp([self.z_dim, small, 2 * self.z2_dim], activation)    # q(z2 | z1)
        self.prior1 = mlp([self.z2_dim, small, 2 * self.z_dim], activation)      # p(z1 | z2)
        self.decoder = mlp([self.z_dim, *hidden[::-1], self.x_dim], activation)  # p(x | z1)

    def _flatten_x(self, x: Tensor) -> Tensor:
        if x.ndim >= 2 and tuple(x.shape[1:]) == self.x_shape:
            return x.flatten(1)
        raise ValueError(f"HierarchicalVAE expects x of shape (B, {', '.join(map(str, self.x_shape))}), "
                         f"got {tuple(x.shape)}")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x -> (mu1, logvar1)`` of :math:`q_\\phi(z_1 \\mid x)`, each ``(B, D1)``."""
        return self.to_moments(self.encoder(self._flatten_x(x))).chunk(2, dim=-1)

    def encode2(self, z1: Tensor) -> tuple[Tensor, Tensor]:
        """``z1 -> (mu2, logvar2)`` of :math:`q_\\phi(z_2 \\mid z_1)`."""
        return self.encoder2(z1).chunk(2, dim=-1)

    def prior_z1(self, z2: Tensor) -> tuple[Tensor, Tensor]:
        """``z2 -> (mu, logvar)`` of :math:`p_\\theta(z_1 \\mid z_2)`."""
        return self.prior1(z2).chunk(2, dim=-1)

    def decode(self, z1: Tensor) -> Tensor:
        """``z1: (..., D1)`` -> Bernoulli logits ``(..., *x_shape)``."""
        return self.decoder(z1).unflatten(-1, self.x_shape)

    def loss(self, x: Tensor, *, beta: float = 1.0, generator: torch.Generator | None = None,
             reduction: str = "mean") -> ELBOTerms:
        """The negative ELBO (one sample) as ``(loss, recon, kl)``; ``loss = recon + beta * kl``."""
        mu1, lv1 = self.encode(x)
        z1 = reparameterize(mu1, lv1, generator)
        mu2, lv2 = self.encode2(z1)
        z2 = reparameterize(mu2, lv2, generator)
        pm1, plv1 = self.prior_z1(z2)
        recon = bernoulli_nll(self.decode(z1).reshape(x.shape), x)
        kl1 = gaussian_log_prob(z1, mu1, lv1) - gaussian_log_prob(z1, pm1, plv1)
        kl = kl1 + gaussian_kl(mu2, lv2)
        return ELBOTerms(_reduce(recon + beta * kl, reduction), _reduce(recon, reduction), _reduce(kl, reduction))

    def log_weights(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """``(k, B)`` importance log-weights :math:`\\log p(x, z_1, z_2) - \\log q(z_1, z_2 \\mid x)`."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        mu1, lv1 = self.encode(x)
        eps1 = torch.randn((k, *mu1.shape), generator=generator, dtype=mu1.dtype)
        z1 = mu1 + torch.exp(0.5 * lv1) * eps1                                    # (k, B, D1)
        mu2, lv2 = self.encode2(z1)
        z2 = mu2 + torch.exp(0.5 * lv2) * torch.randn(mu2.shape, generator=generator, dtype=mu2.dtype)
        pm1, plv1 = self.prior_z1(z2)
        xf = self._flatten_x(x)
        logits = self.decoder(z1)
        log_px = -nn.functional.binary_cross_entropy_with_logits(
            logits, xf.expand_as(logits), reduction="none").sum(-1)
        log_p = log_px + gaussian_log_prob(z1, pm1, plv1) + gaussian_log_prob(z2)
        log_q = gaussian_log_prob(z1, mu1, lv1) + gaussian_log_prob(z2, mu2, lv2)
        return log_p - log_q

    @torch.no_grad()
    def iwae_bound(self, x: Tensor, k: int, generator: torch.Generator | None = None,
                   chunk_size: int = 50) -> Tensor:
        """``(B,)`` one draw of :math:`\\mathcal L_k = \\log \\frac1k \\sum_i w_i` (``k = 1``: the ELBO)."""
        parts = [self.log_weights(x, min(chunk_size, k - s), generator) for s in range(0, k, chunk_size)]
        return torch.logsumexp(torch.cat(parts, 0), 0) - math.log(k)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images: :math:`z_2 \\sim \\mathcal N(0, I)`, :math:`z_1 \\sim p(z_1 \\mid z_2)`, Bernoulli means."""
        p = next(self.parameters())
        z2 = torch.randn(n, self.z2_dim, generator=generator, dtype=p.dtype)
        pm1, plv1 = self.prior_z1(z2)
        z1 = pm1 + torch.exp(0.5 * plv1) * torch.randn(pm1.shape, generator=generator, dtype=p.dtype)
        return torch.sigmoid(self.decode(z1))
