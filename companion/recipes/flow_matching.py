r"""Training recipe for flow matching on MNIST (chapter "Flow matching", part "Beyond the articles").

A :class:`companion.unet.UNet` :math:`v_\theta(x, t)` regresses the velocity of the straight path from
noise to data (:func:`companion.flow_matching.flow_matching_loss`): each step draws a mini-batch
:math:`x_1` of training images scaled to :math:`[-1, 1]`, noise :math:`x_0 \sim \mathcal N(0, I)` and
times :math:`t \sim U[0, 1]`, and descends

.. math::

    \mathcal L(\theta) = \mathbb E \big\| v_\theta\big((1 - t) x_0 + t x_1, t\big) - (x_1 - x_0) \big\|^2

with Adam, the course's warm-up + cosine learning rate (:func:`companion.train.warmup_cosine_lr`) and
gradient clipping. A moving average of the weights (``ema``) is kept and replaces them at the end
(the sampler uses the averaged network, as for the GANs' generators).

With ``conditional=True`` the network also sees the digit, replaced by the null label
:math:`\varnothing` with probability ``p_uncond`` (:func:`companion.flow_matching.drop_labels`), so
that one network gives both the conditional and the unconditional velocity; sampling then uses
classifier-free guidance with scale ``guidance`` (:func:`companion.flow_matching.guided_velocity`;
``guidance = 1`` is the plain conditional velocity).

Sampling integrates :math:`\dot x = v_\theta(x, t)` from noise at :math:`t = 0` to :math:`t = 1` with
``sample_steps`` steps of ``sampler`` (``"euler"`` or ``"heun"``) and maps the result to
:math:`[0, 1]` pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from companion import distributed
from companion.data import load_mnist
from companion.flow_matching import drop_labels, euler_sample, flow_matching_loss, guided_velocity, heun_sample
from companion.train import History, WeightAverage, train_loop, warmup_cosine_lr
from companion.unet import UNet

__all__ = ["Config", "config_dict", "build_model", "train", "sample", "evaluate", "fit_field", "check_training_fields"]

SAMPLERS = {"euler": euler_sample, "heun": heun_sample}


@dataclass
class Config:
    """Every setting of a flow-matching run on MNIST (JSON-serialisable; the cache key of ``train_or_load``).

    Attributes:
        channels: the U-Net's width C at full resolution (2C below it).
        conditional: a digit-conditional model (classifier-free guidance) instead of an unconditional one.
        steps, batch_size: Adam steps and images per mini-batch.
        lr, lr_min, warmup_steps: peak learning rate, final rate of the cosine decay, linear warm-up.
        grad_clip: maximum gradient norm (0 = no clipping).
        ema: decay of the moving average of the weights (0 = none).
        p_uncond: probability of dropping a label to "no class" in training (conditional models).
        sampler, sample_steps: the ODE solver and its number of steps for sampling.
        guidance: the classifier-free guidance scale w for conditional samples (1 = no guidance).
        seed: seeds the initialisation, the batches, the noise and the times.
    """

    # defaults: about 15 minutes on one CPU thread (benchmarks/mnist_targets.py measures them); in runs this short a
    # moving average with decay 0.995 scored better than 0.999 and than the live weights (an exploratory sweep)
    channels: int = 16
    conditional: bool = False
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    lr_min: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema: float = 0.995
    p_uncond: float = 0.1
    sampler: str = "euler"
    sample_steps: int = 20
    guidance: float = 2.0
    seed: int = 0

    def __post_init__(self):
        check_training_fields(self)
        if not isinstance(self.conditional, bool):
            raise ValueError(f"conditional must be True or False, got {self.conditional!r}")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"p_uncond must be in [0, 1), got {self.p_uncond!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {self.sampler!r}")
        if not self.guidance >= 0:
            raise ValueError(f"guidance must be >= 0 (1 = plain conditional, 0 = unconditional), got {self.guidance!r}")


def check_training_fields(cfg) -> None:
    """Validate the fields that the configs of :func:`fit_field`'s recipes share (a clear ``ValueError``).

    ``channels`` (a multiple of 8), ``steps`` (>= 0), ``batch_size``, ``sample_steps`` (>= 1), ``warmup_steps``
    (>= 0), ``lr`` and ``lr_min`` (> 0), ``grad_clip`` (>= 0) and ``ema`` (in [0, 1)).
    """
    for name, low in (("channels", 1), ("steps", 0), ("batch_size", 1), ("sample_steps", 1), ("warmup_steps", 0)):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if cfg.channels % 8:
        raise ValueError(f"channels must be a multiple of 8 (GroupNorm groups), got {cfg.channels}")
    for name in ("lr", "lr_min"):
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)!r}")
    if not cfg.grad_clip >= 0:
        raise ValueError(f"grad_clip must be >= 0 (0 = no clipping), got {cfg.grad_clip!r}")
    if not 0.0 <= cfg.ema < 1.0:
        raise ValueError(f"ema must be in [0, 1), got {cfg.ema!r}")


def config_dict(cfg: Config) -> dict:
    """The config as a plain dict (the cache key and the checkpoint's record)."""
    return asdict(cfg)


def build_model(cfg: Config) -> UNet:
    """The velocity network :math:`v_\\theta(x, t[, y])`: a :class:`~companion.unet.UNet` (10 digits + null label
    when conditional), seeded by ``cfg.seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return UNet(cfg.channels, n_classes=10 if cfg.conditional else 0)


def _training_images() -> tuple[Tensor, Tensor]:
    x, y = load_mnist("train")
    return x * 2 - 1, y  # pixels in [-1, 1]: the scale of the N(0, I) noise


def fit_field(cfg, model: UNet, loss_fn, desc: str, *, progress: bool = True, callback=None) -> History:
    """The training loop shared by the flow-matching and the DDPM recipes (their configs share these fields).

    Each step draws ``cfg.batch_size`` training images (and, for a conditional model, their labels, dropped to
    the null label with probability ``cfg.p_uncond``), evaluates ``loss_fn(net, x, labels, generator)``, clips
    the gradient at ``cfg.grad_clip`` and takes an Adam step at the warm-up + cosine rate; a moving average of
    the weights (decay ``cfg.ema``) replaces them at the end. Records ``loss`` and ``lr`` per step.
    """
    gen = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed))
    x_all, y_all = _training_images()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    params = list(model.parameters())
    ema = WeightAverage(params, cfg.ema) if cfg.ema else None
    net = distributed.data_parallel(model)
    model.train()

    def step(i: int) -> dict:
        lr = warmup_cosine_lr(i, i / max(1, cfg.steps), peak=cfg.lr, final=cfg.lr_min, warmup_steps=cfg.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, x_all.shape[0], (cfg.batch_size,), generator=gen)
        labels = None
        if cfg.conditional:
            labels = drop_labels(y_all[idx], cfg.p_uncond, model.null_label, generator=gen)
        loss = loss_fn(net, x_all[idx], labels, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if ema is not None:
            ema.update(i)
        return {"loss": loss.detach(), "lr": lr}

    history = train_loop(step, cfg.steps, desc=desc, progress=progress and distributed.is_main(), callback=callback)
    if ema is not None and cfg.steps > 0:
        ema.copy_to_params()
    model.eval()
    return history


def train(cfg: Config, model: UNet, *, progress: bool = True, callback=None) -> History:
    """Minimise the conditional flow-matching loss (:func:`fit_field`); records ``loss`` and ``lr`` per step.

    ``callback(i, history)`` runs after each step. At the end the moving average replaces the weights.
    """
    def loss_fn(net, x, labels, gen):
        return flow_matching_loss(net, x, generator=gen, labels=labels)

    desc = "flow matching" + (" (conditional)" if cfg.conditional else "")
    return fit_field(cfg, model, loss_fn, desc, progress=progress, callback=callback)


@torch.no_grad()
def sample(cfg: Config, model: UNet, n: int, generator: torch.Generator | None = None,
           labels: Tensor | None = None) -> Tensor:
    """``n`` images ``(n, 1, 28, 28)`` in ``[0, 1]``: ``cfg.sample_steps`` steps of ``cfg.sampler`` from noise.

    A conditional model draws the digits ``labels`` (default ``0, 1, ..., 9, 0, ...``) with guidance scale
    ``cfg.guidance``; an unconditional one takes no labels.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not cfg.conditional and labels is not None:
        raise ValueError("this flow-matching model is unconditional: labels must be None")
    was_training = model.training
    model.eval()
    x0 = torch.randn(n, 1, 28, 28, generator=generator)
    if cfg.conditional:
        labels = torch.arange(n) % 10 if labels is None else labels
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            return guided_velocity(model, x, t, labels, cfg.guidance, model.null_label)
    else:
        def velocity(x: Tensor, t: Tensor) -> Tensor:
            return model(x, t)

    x1 = SAMPLERS[cfg.sampler](velocity, x0, cfg.sample_steps)
    model.train(was_training)
    return ((x1 + 1) / 2).clamp(0, 1)


def evaluate(cfg: Config, model: UNet) -> dict[str, float]:
    """The recipe's own figure: network evaluations per sample (the image metrics are the runner's)."""
    per_step = 2 if cfg.sampler == "heun" else 1
    guided = 2 if cfg.conditional and cfg.guidance != 1 else 1
    return {"network_evaluations_per_sample": float(cfg.sample_steps * per_step * guided)}
