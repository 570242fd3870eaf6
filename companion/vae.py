r"""The variational autoencoder (chapter "Variational autoencoders", notebook ``05_2``).

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
* the conditional VAE (:class:`CVAE`): :math:`q_\phi(z \mid x, y)`, :math:`p_\theta(x \mid z, y)`,
  and :math:`\log p_\theta(x, z \mid y) = \log p_\theta(x \mid z, y) + \log p(z)`;
* the importance-weighted bound (:func:`iwae_bound`, :func:`iwae_nll`), :math:`z_i \sim q` i.i.d.:
  :math:`\mathcal L_k(x) = \mathbb E\big[\log \frac1k \sum_{i=1}^k p(x, z_i) / q(z_i \mid x)\big]`,
  with :math:`\mathcal L = \mathcal L_1 \le \mathcal L_k \le \mathcal L_{k+1} \le \log p(x)`.

The ELBO derived and verified on a linear-Gaussian model, and the gradient estimators, are in
:mod:`companion.linear_gaussian` and :mod:`companion.gradient_estimators` (notebook ``05_1``);
the VQ-VAE in :mod:`companion.vqvae` (notebook ``05_3``).

Shapes: images ``x: (B, *x_shape)`` (MNIST: ``(B, 1, 28, 28)``), latents ``z: (B, D)``,
importance samples ``z: (k, B, D)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.checks import verdict
from companion.divergences import gaussian_kl
from companion.layers import mlp
from companion.metrics import check_images

__all__ = [
    "reparameterize",
    "gaussian_log_prob",
    "bernoulli_nll",
    "ELBOTerms",
    "elbo",
    "VAE",
    "CVAE",
    "iwae_bound",
    "iwae_nll",
    "check_iwae_from_log_weights",
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
    if x.shape[0] == 0 and reduction == "mean":
        raise ValueError("the batch is empty (B = 0): its mean loss is undefined; pass at least one example")
    recon = bernoulli_nll(logits, x)
    kl = gaussian_kl(mu, logvar)
    loss = recon + beta * kl
    return ELBOTerms(_reduce(loss, reduction), _reduce(recon, reduction), _reduce(kl, reduction))


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
        self.encoder = mlp([self.x_dim + self.cond_dim, *hidden], activation, last_activation=True)
        self.to_moments = nn.Linear(hidden[-1], 2 * self.z_dim)  # (mu, logvar) in one matmul
        self.decoder = mlp([self.z_dim + self.cond_dim, *hidden[::-1], self.x_dim], activation)

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
    ``z ~ N(0, I)``. Keep ``z_dim`` small (the recipe's cvae uses 4): a large z also encodes
    the class, the decoder then follows z rather than y, and prior samples ignore the label.
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

    def log_joint(self, x: Tensor, z: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        r""":math:`\log p_\theta(x, z \mid y) = \log p_\theta(x \mid z, y) + \log p(z)`.

        ``x: (B, *x_shape)``, ``z: (..., B, D)`` (e.g. ``(k, B, D)`` importance samples),
        ``y: (B,)`` int labels -> ``(..., B)`` nats. With the labels fixed,
        ``lambda x, z: model.log_joint(x, z, y)`` is the ``log_joint`` of :func:`iwae_bound`.
        """
        self._check_z(z)
        xf = self._flatten_x(x)
        if z.ndim < 2 or z.shape[-2] != xf.shape[0]:
            raise ValueError(f"z must have shape (..., B, {self.z_dim}) with B = {xf.shape[0]}, got {tuple(z.shape)}")
        one_hot = self._one_hot(y, xf.shape[0]).to(z.dtype).expand(*z.shape[:-1], -1)
        logits = self.decoder(torch.cat([z, one_hot], -1))
        log_px_z = -F.binary_cross_entropy_with_logits(logits, xf.expand_as(logits), reduction="none").sum(-1)
        return log_px_z + gaussian_log_prob(z)

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


# ---------------------------------------------------------------------------- IWAE


def iwae_bound(model: nn.Module, x: Tensor, k: int, *, generator: torch.Generator | None = None,
               q: tuple[Tensor, Tensor] | None = None, chunk_size: int | None = None,
               log_joint: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    r"""One draw of the importance-weighted bound :math:`\log \frac1k \sum_{i=1}^k p(x, z_i) / q(z_i \mid x)`.

    Its expectation is :math:`\mathcal L_k`, with :math:`\mathcal L_1 = \text{ELBO} \le \mathcal L_k \le
    \mathcal L_{k+1} \le \log p(x)` (Burda et al. 2016). The log-mean-exp is computed stably with
    ``logsumexp``.

    Args:
        model: has ``log_joint(x, z) -> (k, B)`` for ``z: (k, B, D)`` (unless ``log_joint`` is
            given) and, unless ``q`` is given, ``encode(x) -> (mu, logvar)`` (e.g. :class:`VAE`,
            :class:`companion.linear_gaussian.LinearGaussianLVM`).
        x: ``(B, ...)`` a batch of data.
        k: number of importance samples, an int >= 1.
        generator: seeds the samples.
        q: ``(mu, logvar)``, each ``(B, D)``: the proposal, instead of ``model.encode(x)``.
        chunk_size: samples decoded at a time (memory); by default about 2e7 numbers per chunk.
        log_joint: ``(x, z) -> (k, B)``, :math:`\log p(x, z)`, instead of ``model.log_joint``; for a
            :class:`CVAE` with labels ``y``: ``lambda x, z: model.log_joint(x, z, y)``.

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
    if log_joint is None:
        log_joint = model.log_joint
    if chunk_size is None:
        per_sample = x[0].numel() * x.shape[0]
        chunk_size = max(1, int(2e7 // max(per_sample, 1)))
    log_w = []
    for start in range(0, k, chunk_size):
        m = min(chunk_size, k - start)
        eps = torch.randn((m, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        log_w.append(log_joint(x, z) - gaussian_log_prob(z, mu, logvar))
    return torch.logsumexp(torch.cat(log_w, 0), 0) - math.log(k)


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
    conditional = isinstance(model, CVAE)
    if conditional and labels is None:
        raise ValueError(f"{type(model).__name__} is conditional: pass the labels of x")
    if labels is not None and not conditional:
        raise ValueError(f"{type(model).__name__} is not conditional: labels are for a CVAE")
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
            bound = iwae_bound(model, xb, k, generator=generator, q=model.encode(xb, yb),
                               log_joint=partial(model.log_joint, y=yb))
        total += float(bound.sum())
    model.train(was_training)
    return -total / x.shape[0]


# ------------------------------------------------------------------ exercise checks


def check_iwae_from_log_weights(fn: Callable[[Tensor], Tensor]) -> bool:
    """Check a reader's ``fn(log_w: (k, B)) -> (B,)`` log-mean-exp, including huge and tiny log-weights."""
    log_w = torch.tensor([[0.0, -1000.0, 800.0], [math.log(3.0), -1001.0, 799.0]], dtype=torch.float64)
    want = torch.logsumexp(log_w, 0) - math.log(2)
    try:
        got = torch.as_tensor(fn(log_w), dtype=torch.float64)
    except Exception as exc:
        return verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
    if got.shape != want.shape:
        return verdict(False, f"expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if not torch.isfinite(got).all():
        return verdict(False, f"got {got.tolist()}: exp() overflowed or underflowed; subtract the max first")
    err = (got - want).abs().max().item()
    return verdict(err < 1e-9, f"max difference {err:.2e} (log-weights of size up to 1000)")
