r"""Variational autoencoders (chapter "Variational autoencoders", notebooks ``05_1`` to ``05_3``).

A latent-variable model :math:`p_\theta(x, z) = p(z)\, p_\theta(x \mid z)` with prior
:math:`p(z) = \mathcal N(0, I)` has an intractable marginal :math:`p_\theta(x) = \int p(z)
p_\theta(x \mid z)\, dz` and posterior :math:`p_\theta(z \mid x)`. An encoder
:math:`q_\phi(z \mid x) = \mathcal N(\mu_\phi(x), \operatorname{diag} \sigma^2_\phi(x))` gives the
evidence lower bound (ELBO), with the *exact* identity

.. math::

    \log p_\theta(x) = \underbrace{\mathbb E_{q_\phi(z|x)}[\log p_\theta(x \mid z)]
        - \mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z))}_{\mathcal L(x)\ =\ \text{ELBO}}
        + \mathrm{KL}(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x)) \;\ge\; \mathcal L(x).

Implemented here, symbol for symbol:

* reparameterization (:func:`reparameterize`): :math:`z = \mu + e^{\frac12 \log \sigma^2} \odot
  \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`;
* Bernoulli decoder (:func:`bernoulli_nll`): :math:`-\log p_\theta(x \mid z) = \sum_{\text{pixels}}
  \mathrm{BCEWithLogits}(\ell_\theta(z), x)` (pixels :math:`x \in [0, 1]`);
* the (beta-)VAE loss (:func:`elbo`): :math:`-\log p_\theta(x \mid z) + \beta\, \mathrm{KL}(q \,\|\,
  p(z))`, the KL in closed form by :func:`companion.divergences.gaussian_kl`; with
  :math:`\beta = 1` it is the negative single-sample ELBO, in nats per image;
* the importance-weighted bound (:func:`iwae_bound`), :math:`z_i \sim q` i.i.d.:
  :math:`\mathcal L_k(x) = \mathbb E\big[\log \frac1k \sum_{i=1}^k p(x, z_i) / q(z_i \mid x)\big]`,
  with :math:`\mathcal L = \mathcal L_1 \le \mathcal L_k \le \mathcal L_{k+1} \le \log p(x)`;
* vector quantization (:class:`VectorQuantizer`): :math:`z_q = e_{j^*}`, :math:`j^* = \arg\min_j
  \lVert z_e - e_j \rVert`, straight-through :math:`z_e + \mathrm{sg}(z_q - z_e)`, codebook loss
  :math:`\lVert \mathrm{sg}(z_e) - e_{j^*} \rVert^2` and commitment loss :math:`\beta_c \lVert z_e -
  \mathrm{sg}(e_{j^*}) \rVert^2`;
* the linear-Gaussian latent model (:class:`LinearGaussianLVM`), :math:`x \mid z \sim \mathcal
  N(Wz + b, \sigma^2 I)`, where everything is exact: :math:`p(x) = \mathcal N(b, WW^\top + \sigma^2
  I)` and :math:`p(z \mid x) = \mathcal N(\Sigma W^\top (x - b) / \sigma^2, \Sigma)`,
  :math:`\Sigma = (I + W^\top W / \sigma^2)^{-1}`.

Shapes: images ``x: (B, *x_shape)`` (MNIST: ``(B, 1, 28, 28)``), latents ``z: (B, D)``,
importance samples ``z: (k, B, D)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.divergences import gaussian_kl
from companion.metrics import check_images

__all__ = [
    "reparameterize",
    "gaussian_log_prob",
    "bernoulli_nll",
    "ELBOTerms",
    "elbo",
    "VAE",
    "CVAE",
    "VQOutput",
    "VectorQuantizer",
    "VQTerms",
    "VQVAE",
    "codebook_perplexity",
    "iwae_bound",
    "iwae_nll",
    "LinearGaussianLVM",
    "reparameterization_gradients",
    "score_function_gradients",
    "check_gaussian_kl",
    "check_posterior",
    "check_iwae_from_log_weights",
    "check_perplexity",
]

LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- maths


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""Draw :math:`z = \mu + \sigma \odot \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`.

    The randomness lives in :math:`\varepsilon`, which does not depend on the encoder's
    parameters, so :math:`z` is a differentiable function of ``mu`` and ``logvar``: gradients
    of a loss at :math:`z` flow back into the encoder.

    Args:
        mu, logvar: ``(..., D)`` mean and log-variance of the diagonal Gaussian q.
        generator: seeds :math:`\varepsilon` (reproducible samples).

    Returns:
        ``(..., D)`` sample, differentiable in ``mu`` and ``logvar``.
    """
    if not isinstance(mu, Tensor) or not isinstance(logvar, Tensor):
        raise TypeError(f"mu and logvar must be tensors, got {type(mu).__name__} and {type(logvar).__name__}")
    if mu.shape != logvar.shape:
        raise ValueError(f"mu has shape {tuple(mu.shape)} but logvar has shape {tuple(logvar.shape)}")
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_log_prob(z: Tensor, mu: Tensor | float = 0.0, logvar: Tensor | float = 0.0) -> Tensor:
    r""":math:`\log \mathcal N(z; \mu, \operatorname{diag} e^{\text{logvar}})`, summed over the last axis.

    ``z: (..., D)``; ``mu`` and ``logvar`` broadcast against ``z`` (the result takes the
    broadcast shape without its last axis).
    """
    mu = torch.as_tensor(mu, dtype=z.dtype, device=z.device)
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    shape = torch.broadcast_shapes(z.shape, mu.shape, logvar.shape)
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).expand(shape).sum(-1)


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    r"""Negative log-likelihood :math:`-\log p(x \mid z)` of a Bernoulli decoder, per example.

    Summed over every non-batch axis (all pixels) with the numerically stable
    ``binary_cross_entropy_with_logits``; never ``log(sigmoid(.))``, which is ``-inf`` for a
    confident logit. For grey pixels in ``(0, 1)`` it is a cross-entropy rather than a
    normalised log-density (the continuous Bernoulli distribution would add a normaliser);
    it is the loss that pytorch/examples' VAE reports, so the numbers compare.

    Args:
        logits: ``(B, *x_shape)`` decoder outputs (before the sigmoid).
        x: ``(B, *x_shape)`` targets in ``[0, 1]``.

    Returns:
        ``(B,)`` nats per example.
    """
    if logits.shape != x.shape:
        raise ValueError(f"logits have shape {tuple(logits.shape)} but x has shape {tuple(x.shape)}")
    if x.ndim < 2:
        raise ValueError(f"x must be batched, (B, ...) with at least 2 axes; got shape {tuple(x.shape)}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"a Bernoulli decoder needs targets x in [0, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]"
        )
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


class ELBOTerms(NamedTuple):
    """The (beta-)VAE loss and its terms, in nats (per example, or reduced).

    ``loss = recon + beta * kl``; ``recon = -log p(x|z)`` at the sampled z; ``kl = KL(q(z|x) || p(z))``.
    """

    loss: Tensor
    recon: Tensor
    kl: Tensor

    @property
    def elbo(self) -> Tensor:
        """The single-sample ELBO estimate ``-(recon + kl)`` (independent of beta)."""
        return -(self.recon + self.kl)


def _reduce(t: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return t.mean()
    if reduction == "sum":
        return t.sum()
    if reduction == "none":
        return t
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def elbo(x: Tensor, logits: Tensor, mu: Tensor, logvar: Tensor, *, beta: float = 1.0,
         reduction: str = "mean") -> ELBOTerms:
    r"""The beta-VAE loss :math:`-\log p_\theta(x \mid z) + \beta\, \mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z))`.

    With ``beta = 1`` the loss is the negative ELBO estimated with the one ``z`` that produced
    ``logits``; with ``beta = 0`` it is a plain (stochastic) autoencoder's reconstruction loss.

    Args:
        x: ``(B, *x_shape)`` data in ``[0, 1]``.
        logits: ``(B, *x_shape)`` Bernoulli logits of :math:`p_\theta(x \mid z)`.
        mu, logvar: ``(B, D)`` parameters of :math:`q_\phi(z \mid x)`.
        beta: weight of the KL term (>= 0).
        reduction: ``"mean"`` over the batch (nats per example), ``"sum"`` or ``"none"``.

    Returns:
        :class:`ELBOTerms` ``(loss, recon, kl)``.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if mu.shape != logvar.shape or mu.ndim != 2:
        raise ValueError(
            f"mu and logvar must both be (B, D); got {tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    if mu.shape[0] != x.shape[0]:
        raise ValueError(f"x has batch size {x.shape[0]} but mu has batch size {mu.shape[0]}")
    recon = bernoulli_nll(logits, x)
    kl = gaussian_kl(mu, logvar)
    loss = recon + beta * kl
    return ELBOTerms(_reduce(loss, reduction), _reduce(recon, reduction), _reduce(kl, reduction))


# ---------------------------------------------------------------------------- models

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
}


def _mlp(sizes: Sequence[int], activation: str, last_activation: bool) -> nn.Sequential:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    r"""An MLP VAE with a diagonal-Gaussian encoder and a Bernoulli decoder.

    ``VAE(hidden=(400,), z_dim=20)`` is pytorch/examples' architecture (784-400-20, ReLU).
    The encoder is ``x -> hidden -> (mu, logvar)``; the decoder mirrors the hidden sizes,
    ``z -> reversed(hidden) -> logits``.

    Args:
        x_shape: shape of one example (MNIST: ``(1, 28, 28)``).
        hidden: hidden-layer widths of the encoder (the decoder uses them reversed).
        z_dim: latent dimension D.
        activation: ``"relu"``, ``"elu"``, ``"gelu"``, ``"silu"``, ``"tanh"`` or ``"leaky_relu"``.
    """

    def __init__(self, x_shape: Sequence[int] = (1, 28, 28), hidden: Sequence[int] = (400,), z_dim: int = 20,
                 activation: str = "relu", cond_dim: int = 0):
        super().__init__()
        if z_dim < 1:
            raise ValueError(f"z_dim must be >= 1, got {z_dim}")
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {list(hidden)}")
        self.x_shape = tuple(int(s) for s in x_shape)
        self.x_dim = math.prod(self.x_shape)
        self.z_dim = int(z_dim)
        self.cond_dim = int(cond_dim)
        hidden = [int(h) for h in hidden]
        self.encoder = _mlp([self.x_dim + self.cond_dim, *hidden], activation, last_activation=True)
        self.to_moments = nn.Linear(hidden[-1], 2 * self.z_dim)  # (mu, logvar) in one matmul
        self.decoder = _mlp([self.z_dim + self.cond_dim, *hidden[::-1], self.x_dim], activation, last_activation=False)

    # -- shape checks ------------------------------------------------------------------
    def _flatten_x(self, x: Tensor) -> Tensor:
        if x.ndim >= 2 and tuple(x.shape[1:]) == self.x_shape:
            return x.flatten(1)
        if x.ndim == 2 and x.shape[1] == self.x_dim:
            return x
        raise ValueError(
            f"{type(self).__name__} expects x of shape (B, {', '.join(map(str, self.x_shape))}) "
            f"or (B, {self.x_dim}), got {tuple(x.shape)}"
        )

    def _check_z(self, z: Tensor) -> None:
        if z.ndim < 1 or z.shape[-1] != self.z_dim:
            raise ValueError(f"z must have shape (..., {self.z_dim}), got {tuple(z.shape)}")

    # -- the model ---------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x: (B, *x_shape)`` -> ``(mu, logvar)``, each ``(B, D)``."""
        mu, logvar = self.to_moments(self.encoder(self._flatten_x(x))).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """``z: (..., D)`` -> Bernoulli logits ``(..., *x_shape)``."""
        self._check_z(z)
        return self.decoder(z).unflatten(-1, self.x_shape)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Encode, sample one z per example, decode: returns ``(logits, mu, logvar)``.

        ``logits`` has the shape of ``x``.
        """
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator)
        return self.decode(z).reshape(x.shape), mu, logvar

    def loss(self, x: Tensor, *, beta: float = 1.0, generator: torch.Generator | None = None,
             reduction: str = "mean") -> ELBOTerms:
        """The beta-VAE loss on a batch (see :func:`elbo`)."""
        logits, mu, logvar = self(x, generator)
        return elbo(x, logits, mu, logvar, beta=beta, reduction=reduction)

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        r""":math:`\log p_\theta(x \mid z) + \log p(z)` for ``x: (B, ...)`` and ``z: (k, B, D)`` -> ``(k, B)``."""
        self._check_z(z)
        xf = self._flatten_x(x)
        logits = self.decoder(z)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, xf.expand_as(logits), reduction="none").sum(-1)
        return log_px_z + gaussian_log_prob(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images: decode z ~ N(0, I) and return the Bernoulli means ``(n, *x_shape)``."""
        p = next(self.parameters())
        z = torch.randn(n, self.z_dim, generator=generator, dtype=p.dtype, device=p.device)
        return torch.sigmoid(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mean: Bernoulli means of the shape of ``x``."""
        mu, _ = self.encode(x)
        return torch.sigmoid(self.decode(mu)).reshape(x.shape)


class CVAE(VAE):
    r"""A conditional VAE: :math:`q_\phi(z \mid x, y)`, :math:`p_\theta(x \mid z, y)`, prior :math:`\mathcal N(0, I)`.

    The label ``y`` (an int class index) enters both networks as a one-hot vector
    concatenated to their input; generating a requested digit is decoding ``(z, y)`` with
    ``z ~ N(0, I)``.
    """

    def __init__(self, x_shape: Sequence[int] = (1, 28, 28), hidden: Sequence[int] = (400,), z_dim: int = 20,
                 activation: str = "relu", n_classes: int = 10):
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        super().__init__(x_shape, hidden, z_dim, activation, cond_dim=n_classes)
        self.n_classes = int(n_classes)

    def _one_hot(self, y: Tensor, batch: int) -> Tensor:
        if y.dtype.is_floating_point or y.shape != (batch,):
            raise ValueError(f"y must be (B,) = ({batch},) integer class labels, got {tuple(y.shape)} {y.dtype}")
        if y.numel() and (y.min() < 0 or y.max() >= self.n_classes):
            raise ValueError(f"labels must lie in [0, {self.n_classes}), got range [{int(y.min())}, {int(y.max())}]")
        p = next(self.parameters())
        return F.one_hot(y, self.n_classes).to(p.dtype)

    def encode(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        xf = self._flatten_x(x)
        h = self.encoder(torch.cat([xf, self._one_hot(y, xf.shape[0])], -1))
        mu, logvar = self.to_moments(h).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        self._check_z(z)
        if z.ndim != 2:
            raise ValueError(f"CVAE.decode takes z of shape (B, {self.z_dim}), got {tuple(z.shape)}")
        return self.decoder(torch.cat([z, self._one_hot(y, z.shape[0])], -1)).unflatten(-1, self.x_shape)

    def forward(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None):  # type: ignore[override]
        mu, logvar = self.encode(x, y)
        z = reparameterize(mu, logvar, generator)
        return self.decode(z, y).reshape(x.shape), mu, logvar

    def loss(self, x: Tensor, y: Tensor, *, beta: float = 1.0,  # type: ignore[override]
             generator: torch.Generator | None = None, reduction: str = "mean") -> ELBOTerms:
        logits, mu, logvar = self(x, y, generator)
        return elbo(x, logits, mu, logvar, beta=beta, reduction=reduction)

    def log_joint(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:  # type: ignore[override]
        raise NotImplementedError(
            "CVAE.log_joint: iwae_bound takes unconditional models; fix the labels first "
            "(companion.vae.iwae_nll does this for a CVAE)"
        )

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,  # type: ignore[override]
               labels: Tensor | int | None = None) -> Tensor:
        """``n`` images of the requested ``labels`` (an int, or ``(n,)`` ints; default 0, 1, 2, ... cycling)."""
        if labels is None:
            labels = torch.arange(n) % self.n_classes
        elif isinstance(labels, int):
            labels = torch.full((n,), labels, dtype=torch.long)
        p = next(self.parameters())
        z = torch.randn(n, self.z_dim, generator=generator, dtype=p.dtype, device=p.device)
        return torch.sigmoid(self.decode(z, labels.to(p.device)))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        mu, _ = self.encode(x, y)
        return torch.sigmoid(self.decode(mu, y)).reshape(x.shape)


# --------------------------------------------------------------------------- VQ-VAE


class VQOutput(NamedTuple):
    """What :class:`VectorQuantizer` returns."""

    z_q: Tensor  #: quantized latents with the straight-through gradient, shape of the input
    indices: Tensor  #: chosen code per vector, the input's shape without the channel axis
    codebook_loss: Tensor  #: ||sg(z_e) - e||^2, moves the codes toward the encoder outputs
    commitment_loss: Tensor  #: ||z_e - sg(e)||^2 (unweighted), keeps the encoder near its codes
    perplexity: Tensor  #: exp(entropy of the batch's code histogram); K means all codes used evenly


def codebook_perplexity(indices: Tensor, codebook_size: int) -> Tensor:
    r"""Perplexity :math:`\exp(-\sum_j \bar p_j \log \bar p_j)` of the code histogram :math:`\bar p`.

    1 when a single code is used, ``codebook_size`` when every code is used equally often.
    """
    if indices.numel() == 0:
        raise ValueError("indices is empty")
    counts = torch.bincount(indices.flatten(), minlength=codebook_size).double()
    if counts.numel() > codebook_size:
        raise ValueError(f"indices contain codes >= codebook_size = {codebook_size}")
    p = counts / counts.sum()
    return torch.exp(-torch.xlogy(p, p).sum()).float()


class VectorQuantizer(nn.Module):
    r"""Nearest-neighbour vector quantization with a straight-through gradient (van den Oord et al. 2017).

    Args:
        codebook_size: number of codes K.
        code_dim: dimension D of each code (the channel axis of the input).
        commitment: :math:`\beta_c`, reported in :class:`VQVAE`'s loss (0.25 in the paper).

    Input ``z_e: (B, D, H, W)`` (channels first, as a conv encoder produces) or ``(N, D)``.
    """

    def __init__(self, codebook_size: int = 64, code_dim: int = 16):
        super().__init__()
        if codebook_size < 1 or code_dim < 1:
            raise ValueError(f"codebook_size and code_dim must be >= 1, got {codebook_size} and {code_dim}")
        self.codebook_size, self.code_dim = int(codebook_size), int(code_dim)
        self.codebook = nn.Embedding(self.codebook_size, self.code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / self.codebook_size, 1.0 / self.codebook_size)

    @torch.no_grad()
    def init_from_data(self, z_e: Tensor, generator: torch.Generator | None = None) -> None:
        """Set the codebook to K encoder outputs drawn from ``z_e`` (data-dependent initialisation).

        With the paper's tiny uniform initialisation the encoder outputs start far from every
        code, the nearest code is the same for all of them, and the other codes never move
        (codebook collapse). Starting the codes *at* encoder outputs avoids that.
        """
        rows = self._to_rows(z_e)[0].detach()
        idx = torch.randint(rows.shape[0], (self.codebook_size,), generator=generator)
        self.codebook.weight.copy_(rows[idx])

    @torch.no_grad()
    def restart_dead_codes(self, z_e: Tensor, counts: Tensor, generator: torch.Generator | None = None) -> int:
        """Move every code with ``counts == 0`` onto a random encoder output of ``z_e``; returns how many moved.

        ``counts: (K,)`` is how often each code was chosen over a recent window of batches.
        """
        if counts.shape != (self.codebook_size,):
            raise ValueError(f"counts must be ({self.codebook_size},), got {tuple(counts.shape)}")
        dead = (counts == 0).nonzero().flatten()
        if dead.numel():
            rows = self._to_rows(z_e)[0].detach()
            idx = torch.randint(rows.shape[0], (dead.numel(),), generator=generator)
            self.codebook.weight[dead] = rows[idx]
        return int(dead.numel())

    def _to_rows(self, z_e: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor], tuple[int, ...]]:
        if z_e.ndim == 2 and z_e.shape[1] == self.code_dim:
            return z_e, lambda t: t, (z_e.shape[0],)
        if z_e.ndim == 4 and z_e.shape[1] == self.code_dim:
            B, D, H, W = z_e.shape
            rows = z_e.permute(0, 2, 3, 1).reshape(-1, D)
            return rows, lambda t: t.reshape(B, H, W, D).permute(0, 3, 1, 2), (B, H, W)
        raise ValueError(f"z_e must be (B, {self.code_dim}, H, W) or (N, {self.code_dim}), got {tuple(z_e.shape)}")

    def quantize(self, indices: Tensor) -> Tensor:
        """Codes of ``indices: (B, H, W)`` as ``(B, D, H, W)`` (or ``(N,)`` -> ``(N, D)``)."""
        e = self.codebook(indices)
        return e.permute(0, 3, 1, 2) if indices.ndim == 3 else e

    def forward(self, z_e: Tensor) -> VQOutput:
        rows, back, idx_shape = self._to_rows(z_e)
        e = self.codebook.weight
        # squared distances ||z||^2 - 2 z.e + ||e||^2, without forming (N, K, D)
        d2 = rows.pow(2).sum(1, keepdim=True) - 2 * rows @ e.t() + e.pow(2).sum(1)
        indices = d2.argmin(1)
        q = e[indices]
        codebook_loss = F.mse_loss(q, rows.detach())  # grads to the codebook only
        commitment_loss = F.mse_loss(rows, q.detach())  # grads to the encoder only
        q_st = rows + (q - rows).detach()  # forward: q; backward: identity to z_e
        return VQOutput(back(q_st), indices.reshape(idx_shape), codebook_loss, commitment_loss,
                        codebook_perplexity(indices, self.codebook_size))


class VQTerms(NamedTuple):
    """VQ-VAE loss ``recon + codebook + commitment_weight * commitment`` and its terms (per image)."""

    loss: Tensor
    recon: Tensor
    codebook: Tensor
    commitment: Tensor
    perplexity: Tensor


class VQVAE(nn.Module):
    r"""A small convolutional VQ-VAE for 28x28 images: a 7x7 grid of discrete codes.

    Encoder: two stride-2 convolutions (28 -> 14 -> 7) and a 1x1 convolution to ``code_dim``;
    quantizer; decoder: a 3x3 convolution and two transposed convolutions back to 28x28
    Bernoulli logits. A per-position categorical prior over codes (``code_logits``, fitted
    after training by :meth:`fit_prior`) makes :meth:`sample` possible, badly: the
    positions are independent. A real VQ-VAE fits an autoregressive prior (PixelCNN) instead.

    Args:
        codebook_size: K. code_dim: D. channels: width of the conv layers.
        commitment: :math:`\beta_c` of the commitment loss.
    """

    def __init__(self, codebook_size: int = 64, code_dim: int = 16, channels: int = 32, commitment: float = 0.25,
                 in_channels: int = 1):
        super().__init__()
        if commitment < 0:
            raise ValueError(f"commitment must be >= 0, got {commitment}")
        c = int(channels)
        self.in_channels = int(in_channels)
        self.commitment = float(commitment)
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(c, c, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(c, code_dim, 1),
        )
        self.quantizer = VectorQuantizer(codebook_size, code_dim)
        self.decoder = nn.Sequential(
            nn.Conv2d(code_dim, c, 3, 1, 1), nn.ReLU(),
            nn.ConvTranspose2d(c, c, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c, in_channels, 4, 2, 1),
        )
        self.grid = 7
        self.last_indices: Tensor | None = None
        self.register_buffer("code_logits", torch.zeros(self.grid * self.grid, codebook_size))

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def _check_x(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, 28, 28):
            raise ValueError(f"VQVAE expects x of shape (B, {self.in_channels}, 28, 28), got {tuple(x.shape)}")

    def encode(self, x: Tensor) -> Tensor:
        """``x: (B, C, 28, 28)`` -> continuous encoder output ``z_e: (B, D, 7, 7)``."""
        self._check_x(x)
        return self.encoder(x)

    def forward(self, x: Tensor) -> tuple[Tensor, VQOutput]:
        """Returns ``(logits, vq)``: Bernoulli logits of the shape of ``x`` and the :class:`VQOutput`."""
        vq = self.quantizer(self.encode(x))
        return self.decoder(vq.z_q), vq

    def loss(self, x: Tensor) -> VQTerms:
        """``recon + codebook + commitment * commitment_loss``; recon in nats per image, the VQ terms per latent entry.

        The codes chosen for ``x`` are kept in ``self.last_indices`` (for usage statistics).
        """
        logits, vq = self(x)
        self.last_indices = vq.indices.detach()
        recon = bernoulli_nll(logits, x).mean()
        total = recon + vq.codebook_loss + self.commitment * vq.commitment_loss
        return VQTerms(total, recon, vq.codebook_loss, vq.commitment_loss, vq.perplexity)

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:
        """The discrete code of each image: ``(B, 7, 7)`` indices."""
        return self.quantizer(self.encode(x)).indices

    @torch.no_grad()
    def decode_codes(self, indices: Tensor) -> Tensor:
        """Bernoulli means of the images whose codes are ``indices: (B, 7, 7)``."""
        return torch.sigmoid(self.decoder(self.quantizer.quantize(indices)))

    @torch.no_grad()
    def fit_prior(self, x: Tensor, smoothing: float = 0.5) -> None:
        """Fit the per-position categorical prior to the codes of ``x`` (add-``smoothing`` counts)."""
        idx = self.codes(x).flatten(1)  # (B, 49)
        counts = torch.zeros_like(self.code_logits)
        counts.scatter_add_(1, idx.t(), torch.ones_like(idx.t(), dtype=counts.dtype))
        self.code_logits.copy_(torch.log(counts + smoothing))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images from the independent per-position prior (see the class docstring)."""
        probs = torch.softmax(self.code_logits, -1)
        idx = torch.multinomial(probs, n, replacement=True, generator=generator).t()  # (n, 49)
        return self.decode_codes(idx.reshape(n, self.grid, self.grid))


# ---------------------------------------------------------------------------- IWAE


def iwae_bound(model: nn.Module, x: Tensor, k: int, *, generator: torch.Generator | None = None,
               q: tuple[Tensor, Tensor] | None = None, chunk_size: int | None = None) -> Tensor:
    r"""One draw of the importance-weighted bound :math:`\log \frac1k \sum_{i=1}^k p(x, z_i) / q(z_i \mid x)`.

    Its expectation is :math:`\mathcal L_k`, with :math:`\mathcal L_1 = \text{ELBO} \le \mathcal L_k \le
    \mathcal L_{k+1} \le \log p(x)` (Burda et al. 2016). The log-mean-exp is computed stably with
    ``logsumexp``.

    Args:
        model: has ``log_joint(x, z) -> (k, B)`` for ``z: (k, B, D)`` and, unless ``q`` is
            given, ``encode(x) -> (mu, logvar)`` (e.g. :class:`VAE`, :class:`LinearGaussianLVM`).
        x: ``(B, ...)`` a batch of data.
        k: number of importance samples, an int >= 1.
        generator: seeds the samples.
        q: ``(mu, logvar)``, each ``(B, D)``: the proposal, instead of ``model.encode(x)``.
        chunk_size: samples decoded at a time (memory); by default about 2e7 numbers per chunk.

    Returns:
        ``(B,)`` the bound's estimate per example, in nats.
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1 (k = 1 is the ELBO), got {k}")
    if q is None:
        if not hasattr(model, "encode"):
            raise TypeError(f"{type(model).__name__} has no encode(); pass the proposal as q=(mu, logvar)")
        mu, logvar = model.encode(x)
    else:
        mu, logvar = q
    if mu.shape != logvar.shape or mu.ndim != 2 or mu.shape[0] != x.shape[0]:
        raise ValueError(
            f"q must be (mu, logvar), each (B, D) with B = {x.shape[0]}; "
            f"got {tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    if chunk_size is None:
        per_sample = x[0].numel() * x.shape[0]
        chunk_size = max(1, int(2e7 // max(per_sample, 1)))
    log_w = []
    for start in range(0, k, chunk_size):
        m = min(chunk_size, k - start)
        eps = torch.randn((m, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        log_w.append(model.log_joint(x, z) - gaussian_log_prob(z, mu, logvar))
    return torch.logsumexp(torch.cat(log_w, 0), 0) - math.log(k)


# ------------------------------------------------------------- linear-Gaussian model


class _Conditioned:
    """A CVAE seen as the unconditional model p(x, z | y) of fixed labels, for :func:`iwae_bound`."""

    def __init__(self, model: nn.Module, y: Tensor):
        self.model, self.y = model, y

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        one_hot = F.one_hot(self.y, self.model.n_classes).to(z.dtype).expand(*z.shape[:-1], -1)
        logits = self.model.decoder(torch.cat([z, one_hot], -1))
        xf = x.flatten(1).expand_as(logits)
        return -F.binary_cross_entropy_with_logits(logits, xf, reduction="none").sum(-1) + gaussian_log_prob(z)


@torch.no_grad()
def iwae_nll(model: nn.Module, x: Tensor, *, k: int = 100, labels: Tensor | None = None,
             generator: torch.Generator | None = None, batch_size: int = 250) -> float:
    r"""The IWAE bound on the negative log-likelihood, :math:`-\frac1N \sum_x \mathcal L_k(x)`, in nats per image.

    An upper bound on :math:`-\log p_\theta(x)` that tightens as ``k`` grows (``k = 1`` is the
    negative ELBO). For a CVAE pass ``labels``: the bound is then on :math:`-\log p_\theta(x \mid y)`.

    Args:
        model: a :class:`VAE` or (with ``labels``) :class:`CVAE`.
        x: ``(N, 1, 28, 28)`` images in [0, 1].
        k: importance samples per image.
        labels: ``(N,)`` digit labels, for a CVAE.
        generator: seeds the importance samples.
    """
    x = check_images(x)
    conditional = hasattr(model, "n_classes") and hasattr(model, "decoder")
    if conditional and labels is None:
        raise ValueError(f"{type(model).__name__} is conditional: pass the labels of x")
    if labels is not None and labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        if labels is None:
            bound = iwae_bound(model, xb, k, generator=generator)
        else:
            yb = labels[start : start + batch_size]
            bound = iwae_bound(_Conditioned(model, yb), xb, k, generator=generator, q=model.encode(xb, yb))
        total += float(bound.sum())
    model.train(was_training)
    return -total / x.shape[0]


def _gaussian_kl_full(m0: Tensor, S0: Tensor, m1: Tensor, S1: Tensor) -> Tensor:
    """KL(N(m0, S0) || N(m1, S1)) for full covariances; m: (..., d), S: (..., d, d)."""
    d = m0.shape[-1]
    L1 = torch.linalg.cholesky(S1)
    S1_inv_S0 = torch.cholesky_solve(S0, L1)
    diff = (m1 - m0).unsqueeze(-1)
    maha = (diff * torch.cholesky_solve(diff, L1)).sum((-2, -1))
    logdet1 = 2 * torch.log(torch.diagonal(L1, dim1=-2, dim2=-1)).sum(-1)
    logdet0 = torch.linalg.slogdet(S0)[1]
    return 0.5 * (torch.diagonal(S1_inv_S0, dim1=-2, dim2=-1).sum(-1) + maha - d + logdet1 - logdet0)


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
        kl_prior = _gaussian_kl_full(m, S, torch.zeros_like(m), eye)
        return expected_ll - kl_prior

    def kl_to_posterior(self, x: Tensor, q_mean: Tensor, q_cov: Tensor) -> Tensor:
        r"""Exact :math:`\mathrm{KL}(q \,\|\, p(z \mid x))` per example, ``(B,)``."""
        x = self._check_x(x)
        m, S = self._check_q(x, q_mean, q_cov)
        pm, pS = self.posterior(x)
        return _gaussian_kl_full(m, S, pm, pS.expand_as(S))


# ------------------------------------------------------------ gradient estimators


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


# ------------------------------------------------------------------ exercise checks


def _verdict(ok: bool, message: str) -> bool:
    print(("Correct: " if ok else "Not yet: ") + message)
    return ok


def check_gaussian_kl(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], *, seed: int = 0) -> bool:
    """Check a reader's ``fn(mu_q, logvar_q, mu_p, logvar_p) -> (B,)`` KL between diagonal Gaussians."""
    g = torch.Generator().manual_seed(seed)
    args = [torch.randn(64, 3, generator=g, dtype=torch.float64) for _ in range(4)]
    try:
        got = torch.as_tensor(fn(*args), dtype=torch.float64)
    except Exception as exc:  # a reader's bug: report it, do not crash the notebook
        return _verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
    want = gaussian_kl(*args)
    if got.shape != want.shape:
        return _verdict(False, f"expected one KL per row, shape {tuple(want.shape)}; got {tuple(got.shape)}")
    err = (got - want).abs().max().item()
    return _verdict(err < 1e-8, f"max difference to the closed form {err:.2e} over 64 random pairs")


def check_posterior(fn: Callable[[Tensor, Tensor, float, Tensor], tuple[Tensor, Tensor]], *, seed: int = 0) -> bool:
    """Check a reader's ``fn(W, b, sigma, x) -> (mean (B, d), cov (d, d))`` for the linear-Gaussian posterior."""
    g = torch.Generator().manual_seed(seed)
    model = LinearGaussianLVM.random(6, 3, 0.7, generator=g)
    x, _ = model.sample(5, generator=g)
    try:
        mean, cov = fn(model.W, model.b, model.sigma, x)
        mean, cov = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64)
    except Exception as exc:
        return _verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
    want_mean, want_cov = model.posterior(x)
    if mean.shape != want_mean.shape or cov.shape != want_cov.shape:
        return _verdict(False, f"expected shapes {tuple(want_mean.shape)} and {tuple(want_cov.shape)}, "
                               f"got {tuple(mean.shape)} and {tuple(cov.shape)}")
    err = max((mean - want_mean).abs().max().item(), (cov - want_cov).abs().max().item())
    return _verdict(err < 1e-8, f"max difference to the exact posterior {err:.2e}")


def check_iwae_from_log_weights(fn: Callable[[Tensor], Tensor]) -> bool:
    """Check a reader's ``fn(log_w: (k, B)) -> (B,)`` log-mean-exp, including huge and tiny log-weights."""
    log_w = torch.tensor([[0.0, -1000.0, 800.0], [math.log(3.0), -1001.0, 799.0]], dtype=torch.float64)
    want = torch.logsumexp(log_w, 0) - math.log(2)
    try:
        got = torch.as_tensor(fn(log_w), dtype=torch.float64)
    except Exception as exc:
        return _verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
    if got.shape != want.shape:
        return _verdict(False, f"expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if not torch.isfinite(got).all():
        return _verdict(False, f"got {got.tolist()}: exp() overflowed or underflowed; subtract the max first")
    err = (got - want).abs().max().item()
    return _verdict(err < 1e-9, f"max difference {err:.2e} (log-weights of size up to 1000)")


def check_perplexity(fn: Callable[[Tensor, int], float]) -> bool:
    """Check a reader's ``fn(indices, K) -> perplexity`` of a code histogram."""
    cases = [(torch.zeros(50, dtype=torch.long), 8, 1.0), (torch.arange(64) % 8, 8, 8.0),
             (torch.tensor([0, 0, 1, 1, 2, 3, 3, 3]), 5, None)]
    for idx, k, expect in cases:
        want = float(codebook_perplexity(idx, k)) if expect is None else expect
        try:
            got = float(fn(idx, k))
        except Exception as exc:
            return _verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
        if abs(got - want) > 1e-4:
            return _verdict(False, f"for codes {idx.tolist()[:10]}... with K = {k} expected {want:.4f}, got {got:.4f}")
    return _verdict(True, "one code -> 1, K codes used evenly -> K, and an uneven histogram all match")
