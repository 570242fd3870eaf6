r"""InfoGAN's categorical latent code and its mutual-information bound (chapter "GAN training and variants").

A generator is a continuous map, so the image of a connected latent space (all of
:math:`\mathbb{R}^d` under :math:`z \sim \mathcal N(0, I)`) is connected: a generator that draws
ten separate clusters of digits must also draw the paths between them, images halfway between a
4 and a 9. InfoGAN (Chen et al., 2016) adds a discrete part to the latent, :math:`z = (z', c)`
with :math:`c \sim \mathrm{Cat}(1/K, \dots, 1/K)` fed to G as a one-hot vector; the latent space
becomes K separate copies of :math:`\mathbb{R}^{d}`, and its image may fall apart into K pieces.
Nothing forces G to use :math:`c`, so InfoGAN also asks that :math:`c` can be read back from the
image: it maximises the mutual information :math:`I(c; G(z', c))` through its variational lower
bound (Barber and Agakov, 2003),

.. math::

    I(c; x) = H(c) - H(c \mid x) \;\ge\; H(c) + \mathbb{E}_{c,\, x = G(z', c)}\big[\log Q(c \mid x)\big]
    = L_I(G, Q),

which holds for every distribution :math:`Q(c \mid x)` (the gap is
:math:`\mathbb{E}_x\,\mathrm{KL}(p(c \mid x)\,\|\,Q(c \mid x)) \ge 0`) and is tight when Q is the true
posterior. Q is a linear head on the discriminator's features; the loss added, with weight
:math:`\lambda`, to both D's (which trains Q) and G's objectives is the cross-entropy
:math:`-\mathbb{E}\log Q(c \mid x) = H(c) - L_I`. No label is used: which code draws which digit
is up to the game.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sample_codes", "info_loss", "mutual_information_bound"]


def sample_codes(n: int, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """n codes c ~ Cat(1/k, ..., 1/k): returns (one-hot (n, k) float, indices (n,) int64)."""
    if n < 0 or k < 1:
        raise ValueError(f"need n >= 0 and k >= 1 categories, got n={n}, k={k}")
    c = torch.randint(0, k, (n,), generator=generator)
    return F.one_hot(c, k).float(), c


def _check(code_logits: Tensor, codes: Tensor) -> None:
    if code_logits.ndim != 2 or codes.shape != code_logits.shape[:1]:
        raise ValueError(f"code_logits must be (B, K) and codes (B,); got {tuple(code_logits.shape)} "
                         f"and {tuple(codes.shape)}")


def info_loss(code_logits: Tensor, codes: Tensor) -> Tensor:
    r"""The InfoGAN loss :math:`-\frac1B\sum_i \log Q(c_i \mid x_i)` (cross-entropy).

    code_logits: (B, K), Q's logits on the generated images; codes: (B,) the codes they were drawn from.
    """
    _check(code_logits, codes)
    return F.cross_entropy(code_logits, codes.long())


def mutual_information_bound(code_logits: Tensor, codes: Tensor) -> Tensor:
    r"""The lower bound :math:`L_I = H(c) + \mathbb{E}\log Q(c \mid x) \le I(c; x)` in nats, for uniform codes.

    :math:`H(c) = \log K`; at most :math:`\log K` (Q certain and right), 0 when Q ignores the image.
    """
    _check(code_logits, codes)
    return math.log(code_logits.shape[1]) - info_loss(code_logits, codes)
