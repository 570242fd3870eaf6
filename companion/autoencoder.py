r"""A plain (deterministic) autoencoder with the VAE's networks (chapter "A VAE on MNIST").

Seed `004` §2 introduces the VAE as an extension of the autoencoder (自动编码器). The difference is
measurable when both use the *same* networks: :class:`Autoencoder` is :class:`companion.vae.VAE`
with the noise and the KL term removed. The encoder's mean is the code, :math:`z = \mu_\phi(x)`, and
the loss is the reconstruction term alone,

.. math::

    \mathcal L_{AE}(\theta, \phi) = -\log p_\theta\big(x \mid z = \mu_\phi(x)\big)
    \quad\text{(the Bernoulli cross-entropy summed over pixels)},

against the VAE's :math:`-\mathbb E_{q_\phi(z \mid x)}[\log p_\theta(x \mid z)] + \mathrm{KL}(q_\phi(z \mid x)
\,\|\, \mathcal N(0, I))`. Nothing ties the codes to :math:`\mathcal N(0, I)`, so decoding
:math:`z \sim \mathcal N(0, I)` (:meth:`Autoencoder.sample`, inherited) is a question, not a
generator: the chapter measures the answer. The log-variance half of the encoder's output layer
is kept (the networks stay identical) and receives no gradient.

The **adversarial autoencoder** (AAE, :class:`AdversarialAutoencoder`, Makhzani et al. 2016) keeps the
deterministic code and makes the codes match the prior with a GAN *in the latent space*: a critic
:math:`D_\psi(z)` tells samples of :math:`p(z) = \mathcal N(0, I)` from codes :math:`\mu_\phi(x)`, and the
encoder, as the generator, learns to fool it (``critic_loss`` and ``encoder_adversarial_loss`` of
:class:`AdversarialAutoencoder`, the non-saturating GAN losses of the GAN chapters). The KL term of the
VAE, which matches each :math:`q_\phi(z \mid x)` to the prior, is replaced by matching the *aggregate*
distribution of the codes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from companion.layers import mlp
from companion.vae import VAE, ELBOTerms, _reduce, bernoulli_nll

__all__ = ["Autoencoder", "AdversarialAutoencoder", "check_autoencoder_loss"]


class Autoencoder(VAE):
    """``VAE(x_shape, hidden, z_dim, activation)`` without noise or KL: code ``z = mu(x)``, loss ``-log p(x | z)``.

    ``forward(x) -> (logits, z, zeros)`` (the VAE's signature, with a zero log-variance placeholder);
    ``loss(x)`` returns :class:`~companion.vae.ELBOTerms` with ``kl = 0`` and ``loss = recon``
    (``beta`` and ``generator`` are accepted and ignored, so the VAE recipe trains it unchanged).
    """

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        z, _ = self.encode(x)
        return self.decode(z).reshape(x.shape), z, torch.zeros_like(z)

    def loss(self, x: Tensor, *, beta: float = 1.0, generator: torch.Generator | None = None,
             reduction: str = "mean") -> ELBOTerms:
        """The reconstruction loss at the code (nats per example with ``reduction="mean"``)."""
        logits, _, _ = self(x)
        recon = bernoulli_nll(logits, x)
        return ELBOTerms(_reduce(recon, reduction), _reduce(recon, reduction), _reduce(torch.zeros_like(recon),
                                                                                           reduction))


def check_autoencoder_loss(fn) -> bool:
    """Exercise checker (notebook ``05_2``): ``fn(model, x)`` -> the mean autoencoder loss of a batch (nats/image).

    Compared with :meth:`Autoencoder.loss` on a small random model and batch; a loss that adds noise to the
    code or a KL term, or averages over pixels instead of summing, is reported.
    """
    from companion.checks import verdict

    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Autoencoder((1, 4, 4), hidden=(8,), z_dim=2)
    x = torch.rand(5, 1, 4, 4, generator=g)
    with torch.no_grad():
        want = float(model.loss(x).loss)
    try:
        with torch.no_grad():
            got = float(fn(model, x))
    except Exception as exc:  # noqa: BLE001 - report any failure of the reader's code
        return verdict(False, f"fn(model, x) raised {type(exc).__name__}: {exc}")
    if abs(got - want) <= 1e-4 * max(1.0, abs(want)):
        return verdict(True, f"the reconstruction loss at z = mu(x), {want:.4f} nats per image")
    if abs(got * 16 - want) <= 1e-4 * max(1.0, abs(want)):
        return verdict(False, f"got {got:.4f}: the mean over pixels; sum over the 16 pixels, then average over images")
    return verdict(False, f"got {got:.4f}, expected {want:.4f} (decode z = mu(x), no noise, no KL)")


class AdversarialAutoencoder(Autoencoder):
    r"""An :class:`Autoencoder` plus a critic ``D(z)`` (MLP, ``critic_hidden`` units, two hidden layers) on codes.

    ``critic_loss(x, generator)``: the critic's binary cross-entropy with prior samples as "real" and codes as
    "fake" (codes detached); ``encoder_adversarial_loss(x)``: the encoder's non-saturating loss
    :math:`-\log D(\mu_\phi(x))`. The recipe alternates them with the reconstruction loss.
    """

    def __init__(self, x_shape=(1, 28, 28), hidden=(400,), z_dim: int = 20, activation: str = "relu",
                 critic_hidden: int = 256):
        super().__init__(x_shape, hidden, z_dim, activation)
        self.critic = mlp([self.z_dim, critic_hidden, critic_hidden, 1], "leaky_relu")

    def critic_loss(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``BCE(D(z_prior), 1) + BCE(D(mu(x)), 0)`` with ``z_prior ~ N(0, I)``; the codes are detached."""
        with torch.no_grad():
            z_fake, _ = self.encode(x)
        z_real = torch.randn(z_fake.shape, generator=generator, dtype=z_fake.dtype)
        real_s, fake_s = self.critic(z_real), self.critic(z_fake)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        return bce(real_s, torch.ones_like(real_s)) + bce(fake_s, torch.zeros_like(fake_s))

    def encoder_adversarial_loss(self, x: Tensor) -> Tensor:
        """The encoder's non-saturating loss ``BCE(D(mu(x)), 1)`` (gradients reach the encoder, not used for D)."""
        scores = self.critic(self.encode(x)[0])
        return torch.nn.functional.binary_cross_entropy_with_logits(scores, torch.ones_like(scores))
