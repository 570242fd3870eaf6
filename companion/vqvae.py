r"""The VQ-VAE: a discrete latent code (chapter "Variational autoencoders", notebook ``05_3``).

The encoder output :math:`z_e(x)` is replaced by its nearest code of a learned codebook
:math:`\{e_1, \dots, e_K\} \subset \mathbb R^D` (van den Oord et al. 2017). Implemented here:

* vector quantization (:class:`VectorQuantizer`): :math:`z_q = e_{j^*}`, :math:`j^* = \arg\min_j
  \lVert z_e - e_j \rVert`, straight-through :math:`z_e + \mathrm{sg}(z_q - z_e)` (forward value
  :math:`z_q`, identity gradient to :math:`z_e`);
* the VQ-VAE loss (:class:`VQVAE`): :math:`-\log p_\theta(x \mid z_q)` (the Bernoulli decoder of
  :func:`companion.vae.bernoulli_nll`) :math:`+ \lVert \mathrm{sg}(z_e) - e_{j^*} \rVert^2 + \beta_c
  \lVert z_e - \mathrm{sg}(e_{j^*}) \rVert^2` (codebook loss and commitment loss);
* codebook usage (:func:`codebook_perplexity`): :math:`\exp(-\sum_j \bar p_j \log \bar p_j)` of the
  code histogram :math:`\bar p`, between 1 (one code) and K (all codes equally often).

Shapes: images ``x: (B, 1, 28, 28)``, encoder outputs ``z_e: (B, D, 7, 7)``, codes
``indices: (B, 7, 7)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.checks import verdict
from companion.divergences import kl_divergence
from companion.vae import bernoulli_nll

__all__ = [
    "VQOutput",
    "codebook_perplexity",
    "VectorQuantizer",
    "VQTerms",
    "VQVAE",
    "check_perplexity",
    "check_vq_kl",
]


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

    The commitment weight :math:`\beta_c` is :class:`VQVAE`'s (0.25 in the paper).

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

        With the tiny uniform initialisation U(-1/K, 1/K) of common implementations (van den Oord
        et al. 2017 specify none) the encoder outputs start far from every code, the nearest code
        is the same for all of them, and the other codes never move (codebook collapse). Starting
        the codes *at* encoder outputs avoids that.
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
        if not isinstance(indices, Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise TypeError(f"indices must be an integer tensor of code numbers, got "
                            f"{indices.dtype if isinstance(indices, Tensor) else type(indices).__name__}")
        if indices.ndim != 3 or tuple(indices.shape[1:]) != (self.grid, self.grid):
            raise ValueError(f"indices must have shape (B, {self.grid}, {self.grid}), the encoder's code grid for "
                             f"28 x 28 images; got {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"code numbers must lie in [0, {self.codebook_size}), got {int(indices.min())} "
                             f"to {int(indices.max())}")
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


# ------------------------------------------------------------------ exercise checks


def check_perplexity(fn: Callable[[Tensor, int], float]) -> bool:
    """Check a reader's ``fn(indices, K) -> perplexity`` of a code histogram."""
    cases = [(torch.zeros(50, dtype=torch.long), 8, 1.0), (torch.arange(64) % 8, 8, 8.0),
             (torch.tensor([0, 0, 1, 1, 2, 3, 3, 3]), 5, None)]
    for idx, k, expect in cases:
        want = float(codebook_perplexity(idx, k)) if expect is None else expect
        try:
            got = float(fn(idx, k))
        except Exception as exc:
            return verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
        if abs(got - want) > 1e-4:
            return verdict(False, f"for codes {idx.tolist()[:10]}... with K = {k} expected {want:.4f}, got {got:.4f}")
    return verdict(True, "one code -> 1, K codes used evenly -> K, and an uneven histogram all match")


def check_vq_kl(answer: float, model: VQVAE) -> bool:
    r"""Exercise checker: :math:`\mathrm{KL}(q(z \mid x) \,\|\, p(z))` in nats for ``model``, with ``q`` a point
    mass on one code grid and ``p`` uniform over all :math:`K^{\text{positions}}` grids.

    The truth is computed position by position (the KL of independent positions adds up): the
    grid size times :func:`companion.divergences.kl_divergence` of a one-hot vector against the
    uniform distribution over the ``K`` codes. Tolerance 1e-3 nats.
    """
    if not isinstance(model, VQVAE):
        raise TypeError(f"model must be a VQVAE, got {type(model).__name__}")
    K, positions = model.codebook_size, model.grid * model.grid
    one_hot = torch.zeros(K, dtype=torch.float64)
    one_hot[0] = 1.0
    truth = positions * kl_divergence(one_hot, torch.full((K,), 1.0 / K, dtype=torch.float64)).item()
    ok = abs(float(answer) - truth) <= 1e-3
    return verdict(ok, f"KL = {positions} log {K} = {truth:.2f} nats per image, the same for every x"
                   + ("" if ok else f"; you gave {float(answer):.2f}"))
