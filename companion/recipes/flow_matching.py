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

With ``self_condition = K`` (unconditional runs) the labels are K k-means clusters of the training
images' pixels instead of digits (:func:`companion.clustering.kmeans`; no labels are read): the
network learns a velocity per cluster, and sampling draws each cluster as often as in the training
set (``model.cluster_shares``, saved with the weights) and guides towards it, as the self-guided
diffusion models of Hu et al. (2023) do with clusters of self-supervised features, and as the
self-conditioned GANs of chapter 04_2 do.

Sampling integrates :math:`\dot x = v_\theta(x, t)` from noise at :math:`t = 0` to :math:`t = 1` with
``sample_steps`` steps of ``sampler`` (``"euler"`` or ``"heun"``) and maps the result to
:math:`[0, 1]` pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from companion import distributed
from companion.clustering import cluster_shares, kmeans
from companion.data import load_mnist
from companion.flow_matching import drop_labels, euler_sample, flow_matching_loss, guided_velocity, heun_sample
from companion.train import History, WeightAverage, train_loop, warmup_cosine_lr
from companion.unet import UNet

__all__ = ["Config", "config_dict", "build_model", "train", "sample", "evaluate", "fit_field", "check_training_fields",
           "sample_clusters", "seeded_unet"]

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
        self_condition: K >= 2 conditions an unconditional model on K k-means clusters of the training images
            (guided by ``guidance``); 0 = off.
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
    self_condition: int = 0
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
    (>= 0), ``lr`` and ``lr_min`` (> 0), ``grad_clip`` (>= 0), ``ema`` (in [0, 1)) and ``self_condition`` (0 or
    K >= 2, unconditional models only).
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
    k = cfg.self_condition
    if isinstance(k, bool) or not isinstance(k, int) or k < 0 or k == 1:
        raise ValueError(f"self_condition must be 0 (off) or a number of clusters K >= 2, got {k!r}")
    if k and cfg.conditional:
        raise ValueError("self_condition is for unconditional models (the clusters stand in for the labels): "
                         "set conditional=False or self_condition=0")


def config_dict(cfg: Config) -> dict:
    """The config as a plain dict (the cache key and the checkpoint's record)."""
    return asdict(cfg)


def build_model(cfg: Config) -> UNet:
    """The velocity network :math:`v_\\theta(x, t[, y])`: a :class:`~companion.unet.UNet` (10 digits, or
    ``cfg.self_condition`` clusters, + the null label), seeded by ``cfg.seed``."""
    return seeded_unet(cfg)


def seeded_unet(cfg) -> UNet:
    """The U-Net of a flow-matching or DDPM config, initialised from ``cfg.seed``; a self-conditioned one
    carries a ``(K,)`` buffer ``cluster_shares`` (uniform until training sets it; saved with the weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = UNet(cfg.channels, n_classes=10 if cfg.conditional else cfg.self_condition)
    if cfg.self_condition:
        model.register_buffer("cluster_shares", torch.full((cfg.self_condition,), 1.0 / cfg.self_condition))
    return model


def sample_clusters(model: UNet, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``(n,)`` clusters of a self-conditioned network, drawn with their training shares ``model.cluster_shares``."""
    if not hasattr(model, "cluster_shares"):
        raise ValueError("sample_clusters needs a self-conditioned network (a config with self_condition = K >= 2)")
    return torch.multinomial(model.cluster_shares.cpu(), n, replacement=True, generator=generator)


def _training_images() -> tuple[Tensor, Tensor]:
    x, y = load_mnist("train")
    return x * 2 - 1, y  # pixels in [-1, 1]: the scale of the N(0, I) noise


def fit_field(cfg, model: UNet, loss_fn, desc: str, *, progress: bool = True, callback=None) -> History:
    """The training loop shared by the flow-matching and the DDPM recipes (their configs share these fields).

    Each step draws ``cfg.batch_size`` training images (and, for a conditional model, their labels, or for a
    self-conditioned one their k-means clusters, dropped to the null label with probability ``cfg.p_uncond``),
    evaluates ``loss_fn(net, x, labels, generator)``, clips the gradient at ``cfg.grad_clip`` and takes an Adam
    step at the warm-up + cosine rate; a moving average of the weights (decay ``cfg.ema``) replaces them at the
    end. Records ``loss`` and ``lr`` per step.
    """
    gen = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed))
    x_all, y_all = _training_images()
    if cfg.self_condition:  # the clusters of the training images stand in for their labels
        y_all = kmeans(x_all, cfg.self_condition, cfg.seed)
        model.cluster_shares.copy_(cluster_shares(y_all, cfg.self_condition))
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
        if cfg.conditional or cfg.self_condition:
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

    desc = "flow matching" + (" (conditional)" if cfg.conditional else "") \
        + (f" (self-conditioned, K = {cfg.self_condition})" if cfg.self_condition else "")
    return fit_field(cfg, model, loss_fn, desc, progress=progress, callback=callback)


@torch.no_grad()
def sample(cfg: Config, model: UNet, n: int, generator: torch.Generator | None = None,
           labels: Tensor | None = None) -> Tensor:
    """``n`` images ``(n, 1, 28, 28)`` in ``[0, 1]``: ``cfg.sample_steps`` steps of ``cfg.sampler`` from noise.

    A conditional model draws the digits ``labels`` (default ``0, 1, ..., 9, 0, ...``) with guidance scale
    ``cfg.guidance``; an unconditional one takes no labels (a self-conditioned one draws its clusters with
    their training shares, after the noise, and is guided towards them).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not cfg.conditional and labels is not None:
        raise ValueError("this flow-matching model is unconditional: labels must be None")
    was_training = model.training
    model.eval()
    x0 = torch.randn(n, 1, 28, 28, generator=generator)
    if cfg.self_condition:
        labels = sample_clusters(model, n, generator)
    if cfg.conditional or cfg.self_condition:
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
    guided = 2 if (cfg.conditional or cfg.self_condition) and cfg.guidance != 1 else 1
    return {"network_evaluations_per_sample": float(cfg.sample_steps * per_step * guided)}
