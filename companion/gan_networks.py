r"""The networks of the GAN chapters: generators and discriminators for 2-D toy data and 28 x 28 images.

* :class:`ToyGenerator`, :class:`ToyDiscriminator`: small MLPs for the ring of Gaussians;
* :class:`MLPGenerator`, :class:`MLPDiscriminator`: MLPs for MNIST;
* :class:`DCGANGenerator`, :class:`DCGANDiscriminator`: DCGAN-style convolutional networks for
  MNIST (Radford et al., 2016), optionally with the SAGAN self-attention block
  :class:`SelfAttention2d` (Zhang et al., 2019);
* :class:`GAN` holds a generator and a discriminator and samples.

Each is conditional when built with ``n_classes > 0``: the generator reads a one-hot label
beside z, :math:`G(z, y)`, and the discriminator adds a projection term (Miyato and Koyama,
2018) to its logit,

.. math::

    l(x, y) = w^\top \phi(x) + b + \langle e_y, \phi(x) \rangle,

where :math:`\phi(x)` are its features and :math:`e_y` a learned embedding of the label.
The losses these networks train with are in :mod:`companion.gan`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.infogan import sample_codes
from companion.layers import mlp

__all__ = [
    "ToyGenerator",
    "ToyDiscriminator",
    "MLPGenerator",
    "MLPDiscriminator",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "SelfAttention2d",
    "GAN",
]


def _check_labels(y: Tensor | None, n_classes: int, batch: int, who: str) -> None:
    if n_classes == 0:
        if y is not None:
            raise ValueError(f"{who} is unconditional (n_classes=0) but labels were given")
        return
    if y is None:
        raise ValueError(f"{who} is conditional (n_classes={n_classes}): pass labels y of shape ({batch},)")
    if y.shape != (batch,):
        raise ValueError(f"labels y must have shape ({batch},), got {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels y must be integer class indices, got dtype {y.dtype}")
    if batch and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"labels must be in [0, {n_classes}), got values in [{int(y.min())}, {int(y.max())}]")


class _ConditionalGenerator(nn.Module):
    """Shared input handling: z (B, latent_dim) and, if conditional, labels -> [z, onehot(y)]."""

    latent_dim: int
    n_classes: int

    def _input(self, z: Tensor, y: Tensor | None) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        _check_labels(y, self.n_classes, z.shape[0], type(self).__name__)
        if self.n_classes:
            return torch.cat([z, F.one_hot(y.long(), self.n_classes).to(z.dtype)], dim=1)
        return z


class _ProjectionHead(nn.Module):
    r"""logit = w . phi(x) + b (+ <e_y, phi(x)> if conditional): the projection discriminator.

    With ``n_codes`` > 0 it also holds InfoGAN's Q: ``code_logits(phi) = W_Q phi + b_Q``, (B, n_codes).
    """

    def __init__(self, features: int, n_classes: int, n_codes: int = 0):
        super().__init__()
        self.n_classes, self.n_codes = n_classes, n_codes
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(n_classes, features) if n_classes else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, std=0.02)
        self.q = nn.Linear(features, n_codes) if n_codes else None

    def forward(self, h: Tensor, y: Tensor | None, who: str, codes: bool = False):
        _check_labels(y, self.n_classes, h.shape[0], who)
        out = self.linear(h).squeeze(-1)
        if self.embed is not None:
            out = out + (self.embed(y.long()) * h).sum(-1)
        if not codes:
            return out
        if self.q is None:
            raise ValueError(f"{who} has no code head (n_codes=0): build it with n_codes > 0 for codes=True")
        return out, self.q(h)


class ToyGenerator(_ConditionalGenerator):
    """MLP generator for low-dimensional data: z (B, latent_dim) [, y (B,)] -> x (B, out_dim)."""

    def __init__(self, latent_dim: int = 2, hidden: int = 128, depth: int = 3, out_dim: int = 2, n_classes: int = 0):
        super().__init__()
        self.latent_dim, self.n_classes, self.out_dim = latent_dim, n_classes, out_dim
        self.net = mlp([latent_dim + n_classes] + [hidden] * depth + [out_dim], "leaky_relu")

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """z: (B, latent_dim), y: (B,) labels if conditional -> x: (B, out_dim)."""
        return self.net(self._input(z, y))


class ToyDiscriminator(nn.Module):
    """MLP discriminator (or critic): x (B, in_dim) [, y (B,)] -> logits (B,)."""

    def __init__(self, in_dim: int = 2, hidden: int = 128, depth: int = 3, n_classes: int = 0, n_codes: int = 0):
        super().__init__()
        self.in_dim, self.n_classes, self.n_codes = in_dim, n_classes, n_codes
        self.features = nn.Sequential(mlp([in_dim] + [hidden] * depth, "leaky_relu"), nn.LeakyReLU(0.2))
        self.head = _ProjectionHead(hidden, n_classes, n_codes)

    def forward(self, x: Tensor, y: Tensor | None = None, codes: bool = False):
        """x: (B, in_dim), y: (B,) labels if conditional -> logits: (B,) [, code logits (B, n_codes) if ``codes``]."""
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x must have shape (B, {self.in_dim}), got {tuple(x.shape)}")
        return self.head(self.features(x), y, type(self).__name__, codes)


def _check_image(x: Tensor, who: str) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"{who} expects images of shape (B, 1, 28, 28), got {tuple(x.shape)}")


class MLPGenerator(_ConditionalGenerator):
    """MLP generator for 28 x 28 images: z (B, latent_dim) [, y] -> (B, 1, 28, 28) in [-1, 1] (tanh)."""

    def __init__(self, latent_dim: int = 64, hidden: int = 256, n_classes: int = 0):
        super().__init__()
        self.latent_dim, self.n_classes = latent_dim, n_classes
        self.net = nn.Sequential(mlp([latent_dim + n_classes, hidden, 2 * hidden, 784], "leaky_relu"), nn.Tanh())

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """z: (B, latent_dim), y: (B,) labels if conditional -> x: (B, out_dim)."""
        return self.net(self._input(z, y)).view(-1, 1, 28, 28)


class MLPDiscriminator(nn.Module):
    """MLP discriminator for 28 x 28 images: (B, 1, 28, 28) [, y] -> logits (B,)."""

    def __init__(self, hidden: int = 256, n_classes: int = 0, n_codes: int = 0):
        super().__init__()
        self.n_classes, self.n_codes = n_classes, n_codes
        self.features = nn.Sequential(nn.Flatten(), mlp([784, 2 * hidden, hidden], "leaky_relu"), nn.LeakyReLU(0.2))
        self.head = _ProjectionHead(hidden, n_classes, n_codes)

    def forward(self, x: Tensor, y: Tensor | None = None, codes: bool = False):
        """x: (B, 1, 28, 28), y: (B,) labels if conditional -> logits: (B,) [, code logits (B, n_codes)]."""
        _check_image(x, type(self).__name__)
        return self.head(self.features(x), y, type(self).__name__, codes)


class SelfAttention2d(nn.Module):
    r"""SAGAN self-attention over the positions of a feature map (Zhang et al., 2019).

    With N = H W positions and 1 x 1 convolutions f, g (C -> C/r) and h (C -> C):

    .. math::

        \beta_{j,i} = \operatorname{softmax}_i\big(f(x)_i^\top g(x)_j\big), \qquad
        o_j = \sum_i \beta_{j,i}\, h(x)_i, \qquad y = x + \gamma\, o,

    with the scalar gamma initialised to 0, so the block starts as the identity and learns
    how much non-local evidence to mix in. x: (B, C, H, W) -> y: (B, C, H, W).
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        inner = max(1, channels // reduction)
        self.channels = channels
        self.f = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.h = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, return_attention: bool = False):
        """x: (B, C, H, W) -> y: (B, C, H, W), and the attention (B, HW, HW) if ``return_attention``."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must have shape (B, {self.channels}, H, W), got {tuple(x.shape)}")
        b, c, hgt, wid = x.shape
        f = self.f(x).flatten(2)  # (B, C', N)
        g = self.g(x).flatten(2)  # (B, C', N)
        h = self.h(x).flatten(2)  # (B, C, N)
        beta = torch.softmax(g.transpose(1, 2) @ f, dim=-1)  # (B, N_j, N_i): row j attends over i
        o = (h @ beta.transpose(1, 2)).view(b, c, hgt, wid)
        y = x + self.gamma * o
        return (y, beta) if return_attention else y


class DCGANGenerator(_ConditionalGenerator):
    """DCGAN-style generator for 28 x 28 images (Radford et al., 2016).

    z [, onehot(y)] -> Linear -> (4C, 7, 7) -> ConvT -> (2C, 14, 14) [-> SelfAttention2d]
    -> ConvT -> (C, 28, 28) -> Conv 3 x 3 -> (1, 28, 28) -> tanh; batch norm and ReLU between
    layers. C = ``base``. Two up-sampling stages of halving width, as in the paper's networks;
    the last 3 x 3 convolution draws the strokes at full resolution from C feature maps.
    """

    def __init__(self, latent_dim: int = 64, base: int = 16, n_classes: int = 0, self_attention: bool = False):
        super().__init__()
        self.latent_dim, self.n_classes, self.base = latent_dim, n_classes, base
        self.project = nn.Sequential(nn.Linear(latent_dim + n_classes, 4 * base * 49), nn.BatchNorm1d(4 * base * 49),
                                     nn.ReLU())
        self.up1 = nn.Sequential(nn.ConvTranspose2d(4 * base, 2 * base, 4, 2, 1), nn.BatchNorm2d(2 * base), nn.ReLU())
        self.attention = SelfAttention2d(2 * base) if self_attention else nn.Identity()
        self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * base, base, 4, 2, 1), nn.BatchNorm2d(base), nn.ReLU())
        self.to_image = nn.Sequential(nn.Conv2d(base, 1, 3, 1, 1), nn.Tanh())

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """z: (B, latent_dim), y: (B,) labels if conditional -> images: (B, 1, 28, 28)."""
        h = self.project(self._input(z, y)).view(-1, 4 * self.base, 7, 7)
        return self.to_image(self.up2(self.attention(self.up1(h))))


class DCGANDiscriminator(nn.Module):
    """DCGAN-style discriminator: (B, 1, 28, 28) [, y] -> logits (B,).

    Conv(4, stride 2) -> (C, 14, 14) [-> SelfAttention2d] -> Conv(4, stride 2) -> (2C, 7, 7)
    -> Conv(3, stride 2) -> (4C, 4, 4) -> projection head; LeakyReLU(0.2), no batch norm (so
    that gradient penalties stay per-example).
    """

    def __init__(self, base: int = 16, n_classes: int = 0, self_attention: bool = False, n_codes: int = 0):
        super().__init__()
        self.n_classes, self.n_codes = n_classes, n_codes
        self.features = nn.Sequential(
            nn.Conv2d(1, base, 4, 2, 1), nn.LeakyReLU(0.2),
            SelfAttention2d(base) if self_attention else nn.Identity(),
            nn.Conv2d(base, 2 * base, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * base, 4 * base, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.head = _ProjectionHead(4 * base * 16, n_classes, n_codes)

    def forward(self, x: Tensor, y: Tensor | None = None, codes: bool = False):
        """x: (B, 1, 28, 28), y: (B,) labels if conditional -> logits: (B,) [, code logits (B, n_codes)]."""
        _check_image(x, type(self).__name__)
        return self.head(self.features(x), y, type(self).__name__, codes)


class GAN(nn.Module):
    """A generator and a discriminator in one module (one ``state_dict`` to cache).

    With ``n_codes`` = K > 0 it is an InfoGAN (:mod:`companion.infogan`): the generator's input
    is z = (z', onehot(c)), z' ~ N(0, I) of ``latent_dim`` = its input size minus K and
    c ~ Cat(1/K, ..., 1/K) drawn by :meth:`sample_latent`; the discriminator needs the same ``n_codes``.

    With ``self_conditioned=True`` the networks' classes are clusters of the training data instead of
    labels (a self-conditioned GAN, Liu et al. 2020): :attr:`cluster_shares` (a buffer, saved with
    the weights; set by the recipe) holds each cluster's share of the training set, and
    :meth:`sample` draws the clusters with those probabilities when no labels are given.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, n_codes: int = 0,
                 self_conditioned: bool = False):
        super().__init__()
        if getattr(discriminator, "n_codes", 0) != n_codes or n_codes >= generator.latent_dim:
            raise ValueError(f"n_codes={n_codes} needs a discriminator built with n_codes={n_codes} (got "
                             f"{getattr(discriminator, 'n_codes', 0)}) and a generator input larger than it "
                             f"(got {generator.latent_dim})")
        self.generator = generator
        self.discriminator = discriminator
        self.n_codes = n_codes
        self.latent_dim: int = generator.latent_dim - n_codes
        self.n_classes: int = getattr(generator, "n_classes", 0)
        self.self_conditioned = self_conditioned
        if self_conditioned:
            if self.n_classes < 2:
                raise ValueError(f"a self-conditioned GAN needs networks with n_classes >= 2 clusters, "
                                 f"got {self.n_classes}")
            self.register_buffer("cluster_shares", torch.full((self.n_classes,), 1.0 / self.n_classes))

    def sample_clusters(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n,) cluster indices drawn with probabilities :attr:`cluster_shares` (self-conditioned GANs)."""
        if not self.self_conditioned:
            raise ValueError("sample_clusters is for self-conditioned GANs (built with self_conditioned=True)")
        return torch.multinomial(self.cluster_shares.cpu(), n, replacement=True, generator=generator)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """The generator's input z (n, latent_dim + n_codes): N(0, I), then a one-hot code if ``n_codes``;
        and the codes (n,) (None without codes)."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        if not self.n_codes:
            return z, None
        onehot, c = sample_codes(n, self.n_codes, generator)
        return torch.cat([z, onehot], dim=1), c

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Draw n samples G(z), z ~ the latent prior, in eval mode (conditional: ``labels`` (n,), default k mod K;
        self-conditioned: default clusters drawn with their shares, after z)."""
        device = next(self.generator.parameters()).device
        z = self.sample_latent(n, generator)[0].to(device)
        if self.n_classes and labels is None:
            labels = (self.sample_clusters(n, generator).to(device) if self.self_conditioned
                      else torch.arange(n, device=device) % self.n_classes)
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generator(z, labels) if self.n_classes else self.generator(z)
        finally:
            self.generator.train(was_training)
