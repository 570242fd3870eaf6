r"""Training recipe for a denoising diffusion model (DDPM) on MNIST (part "Beyond the articles").

A :class:`companion.unet.UNet` :math:`\varepsilon_\theta(x_t, t)` learns to predict the noise that the
forward process added (:func:`companion.diffusion.ddpm_loss`): each step draws training images
:math:`x_0` scaled to :math:`[-1, 1]`, steps :math:`t` uniform on :math:`0 .. T-1` and noise
:math:`\varepsilon`, forms :math:`x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \varepsilon`
and descends

.. math::

    \mathcal L_{simple}(\theta) = \mathbb E_{t, x_0, \varepsilon}
        \big\| \varepsilon - \varepsilon_\theta(x_t, t) \big\|^2 ,

with the training loop of the flow-matching recipe (:func:`companion.recipes.flow_matching.fit_field`:
Adam, warm-up + cosine rate, gradient clipping, a moving average of the weights). The schedule is
``"linear"`` (:math:`\beta_t` from 1e-4 to 0.02, Ho et al. 2020) or ``"cosine"`` (Nichol & Dhariwal 2021).

With ``conditional=True`` the network also sees the digit, dropped to the null label with probability
``p_uncond`` (as in the flow-matching recipe), and sampling uses classifier-free guidance with scale
``guidance`` on the predicted noise (:func:`companion.diffusion.guided_eps`). The command-line model
``ddpm`` is unconditional; the chapter trains the conditional one. ``self_condition = K`` conditions an
unconditional model on K k-means clusters of the training images instead of digits, as in the
flow-matching recipe (:func:`companion.recipes.flow_matching.fit_field`).

With ``prediction="v"`` the network predicts :math:`v = \sqrt{\bar\alpha_t}\, \varepsilon - \sqrt{1 - \bar\alpha_t}\,
x_0` instead (:mod:`companion.v_prediction`), which weighs the image error of the noisiest steps far more.

Sampling: ``"ddim"`` (deterministic for ``eta = 0``, ``sample_steps`` network evaluations) or
``"ddpm"`` (ancestral, all ``T`` steps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from companion.diffusion import (
    alpha_bar_from_betas,
    cosine_beta_schedule,
    ddim_sample,
    ddpm_loss,
    ddpm_sample,
    guided_eps,
    linear_beta_schedule,
)
from companion.recipes.flow_matching import check_training_fields, fit_field, sample_clusters, seeded_unet
from companion.train import History
from companion.unet import UNet
from companion.v_prediction import eps_model_from_v, v_loss

__all__ = ["Config", "config_dict", "build_model", "betas_of", "train", "sample", "evaluate"]


@dataclass
class Config:
    r"""Every setting of a DDPM run on MNIST (JSON-serialisable; the cache key of ``train_or_load``).

    Attributes:
        channels: the U-Net's width C at full resolution.
        T, schedule: diffusion steps and the noise schedule, ``"linear"`` or ``"cosine"``.
        steps, batch_size, lr, lr_min, warmup_steps, grad_clip, ema: training, as in the flow-matching recipe.
        sampler, sample_steps, eta: ``"ddim"`` with ``sample_steps`` evaluations and noise scale ``eta``, or
            ``"ddpm"`` (ancestral sampling over all ``T`` steps; ``sample_steps`` is ignored).
        seed: seeds the initialisation, the batches, the steps and the noise.
        conditional: a digit-conditional model (classifier-free guidance) instead of an unconditional one.
        p_uncond: probability of dropping a label to "no class" in training (conditional models).
        guidance: the classifier-free guidance scale w for conditional samples (1 = no guidance).
        self_condition: K >= 2 conditions an unconditional model on K k-means clusters of the training images
            (guided by ``guidance``); 0 = off.
        clip_x0: the samplers clip the predicted :math:`\hat x_0` to ``[-1, 1]`` at every step (see
            :mod:`companion.diffusion`).
        prediction: what the network predicts, ``"eps"`` (the noise, :func:`~companion.diffusion.ddpm_loss`) or
            ``"v"`` (the velocity, :func:`~companion.v_prediction.v_loss`); samplers receive the noise either way.
    """

    channels: int = 16
    T: int = 1000
    schedule: str = "linear"
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    lr_min: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema: float = 0.995
    sampler: str = "ddim"
    sample_steps: int = 50
    eta: float = 0.0
    seed: int = 0
    conditional: bool = False
    p_uncond: float = 0.1
    guidance: float = 2.0
    self_condition: int = 0
    clip_x0: bool = False
    prediction: str = "eps"

    def __post_init__(self):
        check_training_fields(self)
        if isinstance(self.T, bool) or not isinstance(self.T, int) or self.T < 1:
            raise ValueError(f"T must be an int >= 1, got {self.T!r}")
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        if self.sampler not in ("ddim", "ddpm"):
            raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {self.sampler!r}")
        if self.sampler == "ddim" and self.sample_steps > self.T:
            raise ValueError(f"sample_steps must be <= T = {self.T} for DDIM, got {self.sample_steps}")
        if not self.eta >= 0:
            raise ValueError(f"eta must be >= 0, got {self.eta!r}")
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' (the noise) or 'v' (the velocity), got {self.prediction!r}")
        if not isinstance(self.clip_x0, bool):
            raise ValueError(f"clip_x0 must be True or False, got {self.clip_x0!r}")
        if not isinstance(self.conditional, bool):
            raise ValueError(f"conditional must be True or False, got {self.conditional!r}")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"p_uncond must be in [0, 1), got {self.p_uncond!r}")
        if not self.guidance >= 0:
            raise ValueError(f"guidance must be >= 0 (1 = plain conditional, 0 = unconditional), got {self.guidance!r}")


def config_dict(cfg: Config) -> dict:
    """The config as a plain dict (the cache key and the checkpoint's record)."""
    return asdict(cfg)


def build_model(cfg: Config) -> UNet:
    """The noise predictor :math:`\\varepsilon_\\theta(x_t, t[, y])`: a :class:`~companion.unet.UNet` (10 digits, or
    ``cfg.self_condition`` clusters, + the null label), seeded by ``cfg.seed``."""
    return seeded_unet(cfg)


def betas_of(cfg: Config) -> Tensor:
    """The ``(T,)`` noise schedule :math:`\\beta_t` of ``cfg`` (float64)."""
    if cfg.schedule == "linear":
        return linear_beta_schedule(cfg.T).double()
    return cosine_beta_schedule(cfg.T).double()


def train(cfg: Config, model: UNet, *, progress: bool = True, callback=None) -> History:
    """Minimise :math:`\\mathcal L_{simple}`; records ``loss`` and ``lr`` per step (see the module docstring)."""
    alpha_bar = alpha_bar_from_betas(betas_of(cfg)).float()

    loss = v_loss if cfg.prediction == "v" else ddpm_loss

    def loss_fn(net, x, labels, gen):
        return loss(net, x, alpha_bar, generator=gen, labels=labels)

    desc = f"DDPM ({cfg.schedule} schedule, T = {cfg.T}, predicts {cfg.prediction}" \
        + (", conditional" if cfg.conditional else "") \
        + (f", self-conditioned, K = {cfg.self_condition})" if cfg.self_condition else ")")
    return fit_field(cfg, model, loss_fn, desc, progress=progress, callback=callback)


@torch.no_grad()
def sample(cfg: Config, model: UNet, n: int, generator: torch.Generator | None = None,
           labels: Tensor | None = None) -> Tensor:
    """``n`` images ``(n, 1, 28, 28)`` in ``[0, 1]`` by ``cfg.sampler`` (see :class:`Config`).

    A conditional model draws the digits ``labels`` (default ``0, 1, ..., 9, 0, ...``) with guidance scale
    ``cfg.guidance``; an unconditional one takes no labels (a self-conditioned one draws its clusters with
    their training shares, then the noise, and is guided towards them).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not cfg.conditional and labels is not None:
        raise ValueError("this DDPM model is unconditional: labels must be None")
    was_training = model.training
    model.eval()
    betas = betas_of(cfg)
    net = eps_model_from_v(model, alpha_bar_from_betas(betas)) if cfg.prediction == "v" else model
    eps_model = net
    if cfg.self_condition:
        labels = sample_clusters(model, n, generator)
    if cfg.conditional or cfg.self_condition:
        labels = torch.arange(n) % 10 if labels is None else labels
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")

        def eps_model(x: Tensor, t: Tensor) -> Tensor:
            if cfg.guidance in (0, 1):  # one network call: unconditional (w = 0) or plain conditional (w = 1)
                return net(x, t, labels if cfg.guidance == 1 else torch.full_like(labels, model.null_label))
            return guided_eps(net, x, t, labels, cfg.guidance, model.null_label)

    if cfg.sampler == "ddim":
        x = ddim_sample(eps_model, (n, 1, 28, 28), alpha_bar_from_betas(betas), cfg.sample_steps, cfg.eta,
                        generator=generator, clip_x0=cfg.clip_x0)
    else:
        x = ddpm_sample(eps_model, (n, 1, 28, 28), betas, generator=generator, clip_x0=cfg.clip_x0)
    model.train(was_training)
    return ((x + 1) / 2).clamp(0, 1)


def evaluate(cfg: Config, model: UNet) -> dict[str, float]:
    """The recipe's own figure: network evaluations per sample (the image metrics are the runner's)."""
    guided = 2 if (cfg.conditional or cfg.self_condition) and cfg.guidance not in (0, 1) else 1
    steps = cfg.sample_steps if cfg.sampler == "ddim" else cfg.T
    return {"network_evaluations_per_sample": float(steps * guided)}
