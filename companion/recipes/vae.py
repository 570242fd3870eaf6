"""Training recipe for the VAE family (chapter "Variational autoencoders"): ``vae``, ``cvae``, ``vqvae``, and the
plain autoencoder ``ae`` (the VAE's networks without noise or KL, :mod:`companion.autoencoder`) and the two-level
``hvae`` (:mod:`companion.hvae`) and the adversarial autoencoder ``aae``.

The notebooks ``05_2`` and ``05_3``, ``benchmarks/vae_mnist.py`` and the command-line trainer all
train through :func:`train`, so a chapter's model and a long run differ only in their
:class:`Config`. Data: :func:`companion.data.load_mnist` (the offline fallback split when the
60,000 training images are absent; :func:`evaluate` reports which).

The default :class:`Config` is the course's MNIST VAE; :meth:`Config.pytorch_examples` is the
reference architecture of pytorch/examples (784-400-20, ReLU, Adam 1e-3, batch 128).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from companion import distributed
from companion.autoencoder import AdversarialAutoencoder, Autoencoder
from companion.data import load_mnist, mnist_is_fallback
from companion.hvae import HierarchicalVAE
from companion.layers import ACTIVATIONS
from companion.train import History, minibatches, train_loop, warmup_cosine_lr
from companion.vae import CVAE, VAE
from companion.vqvae import VQVAE

__all__ = ["Config", "build_model", "train", "evaluate", "sample", "FAMILIES", "DISTRIBUTED"]

DISTRIBUTED = True  # train() runs under torchrun (companion.distributed: DDP loss, sharded data)

FAMILIES = ("vae", "cvae", "vqvae", "ae", "hvae", "aae")

# The cvae's latent size. With z_dim = 20 the encoder also writes the digit's class into z (a
# nearest-class-mean reader finds it there), the decoder follows z rather than y, and a random
# z from the prior overrides the requested label: 34% label accuracy after 10 epochs, 69% after
# 60. With 4 dimensions z keeps only the style, and the label decides the digit (98% after 60
# epochs, 95% after 30; the classifier of companion.metrics reading 1,000 samples).
CVAE_Z_DIM = 4


@dataclass
class Config:
    """Every setting of a VAE-family run (JSON-serialisable; the cache key of ``train_or_load``).

    Attributes:
        family: ``"vae"``, ``"cvae"`` (conditioned on the digit), ``"vqvae"``, ``"ae"`` (plain autoencoder) or
            ``"hvae"`` (two stochastic layers, :mod:`companion.hvae`; ``z_dim`` is D1, ``z2_dim`` D2) or ``"aae"``
            (adversarial autoencoder; ``beta`` is not used).
        hidden, z_dim, activation: MLP widths (encoder order), latent size, nonlinearity (vae, cvae).
            z_dim: 20 for the vae, 4 for the cvae (see CVAE_Z_DIM: a larger z carries the class).
        epochs: passes over the training data (may be fractional).
        batch_size, lr: Adam's mini-batch size and peak learning rate.
        lr_schedule: ``"constant"`` or ``"cosine"`` (decay from ``lr`` to ``lr_min`` over the run).
        kl_warmup_epochs: the KL weight rises linearly from 0 to ``beta`` over this many epochs.
        beta: weight of the KL term (1 = the ELBO; the beta-VAE uses other values).
        n_classes: number of labels (cvae).
        codebook_size, code_dim, channels, commitment: the VQ-VAE's K, D, conv width and beta_c.
        codebook_init: ``"data"`` (codes start at encoder outputs of the first batch) or
            ``"uniform"`` (the tiny uniform initialisation U(-1/K, 1/K) of common implementations,
            which tends to collapse to a few codes).
        dead_code_window: every this many steps, codes unused during the window restart at
            random encoder outputs (0 = never).
        train_size: use only the first ``train_size`` training images (0 = all).
        seed: seeds the initialisation, the batch order and the reparameterization noise.
        eval_seed: seeds the single z per test image drawn by :func:`evaluate`.
    """

    family: str = "vae"
    hidden: list[int] = field(default_factory=lambda: [400])
    z_dim: int | None = None  # None: the family's default, 20 (vae) or CVAE_Z_DIM (cvae)
    z2_dim: int = 10  # hvae only: the dimension of the top latent z2
    activation: str = "silu"
    epochs: float = 60.0
    batch_size: int = 128
    lr: float = 3e-3
    lr_schedule: str = "cosine"
    lr_min: float = 0.0
    kl_warmup_epochs: float = 0.0
    beta: float = 1.0
    n_classes: int = 10
    codebook_size: int = 64
    code_dim: int = 16
    channels: int = 32
    commitment: float = 0.25
    codebook_init: str = "data"
    dead_code_window: int = 50
    train_size: int = 0
    seed: int = 0
    eval_seed: int = 1234

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.epochs <= 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(
                f"need epochs > 0, batch_size >= 1, lr > 0; got {self.epochs}, {self.batch_size}, {self.lr}"
            )
        if self.codebook_init not in ("data", "uniform"):
            raise ValueError(f"codebook_init must be 'data' or 'uniform', got {self.codebook_init!r}")
        if self.beta < 0 or self.kl_warmup_epochs < 0 or self.train_size < 0:
            raise ValueError("beta, kl_warmup_epochs and train_size must be >= 0")
        self.hidden = [int(h) for h in self.hidden]
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be a non-empty list of widths >= 1, got {self.hidden}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        for name in ("n_classes", "codebook_size", "code_dim", "channels", "z2_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr_min", "commitment", "dead_code_window"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.z_dim is None:
            self.z_dim = CVAE_Z_DIM if self.family == "cvae" else 20
        if self.z_dim < 1:
            raise ValueError(f"z_dim must be >= 1, got {self.z_dim}")
        self.z_dim = int(self.z_dim)

    @classmethod
    def pytorch_examples(cls, **overrides) -> Config:
        """pytorch/examples' VAE: 784-400-20, ReLU, Adam 1e-3 constant, batch 128 (10 epochs there, 60 here)."""
        base = dict(family="vae", hidden=[400], z_dim=20, activation="relu", epochs=60.0, batch_size=128,
                    lr=1e-3, lr_schedule="constant", kl_warmup_epochs=0.0)
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict:
        return asdict(self)


def build_model(cfg: Config) -> nn.Module:
    """A freshly initialised model of ``cfg.family``, seeded by ``cfg.seed`` (the global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.family == "vae":
            return VAE((1, 28, 28), cfg.hidden, cfg.z_dim, cfg.activation)
        if cfg.family == "ae":
            return Autoencoder((1, 28, 28), cfg.hidden, cfg.z_dim, cfg.activation)
        if cfg.family == "aae":
            return AdversarialAutoencoder((1, 28, 28), cfg.hidden, cfg.z_dim, cfg.activation)
        if cfg.family == "hvae":
            return HierarchicalVAE((1, 28, 28), cfg.hidden, cfg.z_dim, cfg.z2_dim, cfg.activation)
        if cfg.family == "cvae":
            return CVAE((1, 28, 28), cfg.hidden, cfg.z_dim, cfg.activation, n_classes=cfg.n_classes)
        return VQVAE(cfg.codebook_size, cfg.code_dim, cfg.channels, cfg.commitment)


def _train_data(cfg: Config) -> tuple[Tensor, Tensor]:
    x, y = load_mnist("train")
    if cfg.train_size:
        x, y = x[: cfg.train_size], y[: cfg.train_size]
    return x, y


def _lr_at(cfg: Config, frac: float) -> float:
    if cfg.lr_schedule == "constant":
        return cfg.lr
    return warmup_cosine_lr(0, frac, peak=cfg.lr, final=cfg.lr_min)


def train(cfg: Config, model: nn.Module, *, progress: bool = True, callback=None) -> History:
    """Train ``model`` on MNIST's training split as ``cfg`` says; returns the per-step history.

    Recorded per step: ``loss``, ``recon`` (nats/image) and, for vae/cvae, ``kl`` and the KL
    weight ``beta``; for vqvae, ``codebook``, ``commitment`` and ``perplexity``; for aae, ``d_loss`` and
    ``g_loss`` (the critic's and the encoder's adversarial losses); and ``lr``.
    """
    x, y = _train_data(cfg)
    n = x.shape[0]
    # one process: ceil(n / batch_size), batches shuffled by g; under torchrun: this rank's shard
    steps_per_epoch = distributed.steps_per_epoch(n, cfg.batch_size)
    n_steps = max(1, round(cfg.epochs * steps_per_epoch))
    warmup_steps = cfg.kl_warmup_epochs * steps_per_epoch
    g = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed))  # cfg.seed on one process
    stream = distributed.batch_stream(x, y, batch_size=cfg.batch_size, generator=g, seed=cfg.seed)
    net = distributed.data_parallel(model, methods=("loss",))  # the model itself on one process
    if cfg.family == "aae":  # reconstruction, critic and encoder-as-generator steps: their own optimizers, the
        # adversarial ones on the same schedule (with a constant rate the codes moved on after the decoder's rate
        # had decayed, and reconstruction collapsed)
        opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("critic.")], lr=cfg.lr)
        if distributed.is_distributed():
            raise ValueError("the aae family trains on one process only (its critic is not data-parallel)")
        opt_d = torch.optim.Adam(model.critic.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
        opt_e = torch.optim.Adam([*model.encoder.parameters(), *model.to_moments.parameters()], lr=cfg.lr,
                                 betas=(0.5, 0.9))
        adversarial_opts = [opt_d, opt_e]
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        adversarial_opts = []
    model.train()

    usage = torch.zeros(cfg.codebook_size, dtype=torch.long)  # code counts in the current window (vqvae)

    def step(i: int) -> dict[str, float | Tensor]:
        xb, yb = next(stream)
        lr = _lr_at(cfg, i / n_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        for adversarial in adversarial_opts:  # aae: the same schedule
            for group in adversarial.param_groups:
                group["lr"] = lr
        if cfg.family == "vqvae":
            if i == 0 and cfg.codebook_init == "data":
                with torch.no_grad():
                    model.quantizer.init_from_data(model.encode(xb), generator=g)
                distributed.broadcast_module(model.quantizer)  # rank 0's codebook on every rank
            terms = net.loss(xb)
            usage.add_(torch.bincount(model.last_indices.flatten(), minlength=cfg.codebook_size))
            out = {"loss": terms.loss, "recon": terms.recon, "codebook": terms.codebook,
                   "commitment": terms.commitment, "perplexity": terms.perplexity}
        elif cfg.family == "aae":  # three phases per batch, each with its own Adam (Makhzani et al. 2016)
            rec = net.loss(xb)
            opt.zero_grad(set_to_none=True)
            rec.loss.backward()
            opt.step()  # reconstruction: encoder and decoder
            d_loss = model.critic_loss(xb, generator=g)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()  # regularisation: the critic tells prior samples from codes
            adv = model.encoder_adversarial_loss(xb)
            opt_e.zero_grad(set_to_none=True)
            adv.backward()
            opt_e.step()  # ... and the encoder learns to fool it
            return {"loss": rec.loss.detach(), "recon": rec.recon.detach(), "d_loss": d_loss.detach(),
                    "g_loss": adv.detach(), "lr": lr}
        else:
            beta = cfg.beta * min(1.0, (i + 1) / warmup_steps) if warmup_steps > 0 else cfg.beta
            terms = net.loss(xb, yb, beta=beta, generator=g) if cfg.family == "cvae" else \
                net.loss(xb, beta=beta, generator=g)
            out = {"loss": terms.loss, "recon": terms.recon, "kl": terms.kl, "beta": beta}
        opt.zero_grad(set_to_none=True)
        terms.loss.backward()
        opt.step()
        if cfg.family == "vqvae":
            restarted = 0
            if cfg.dead_code_window and (i + 1) % cfg.dead_code_window == 0:
                with torch.no_grad():
                    restarted = model.quantizer.restart_dead_codes(model.encode(xb), usage, generator=g)
                distributed.broadcast_module(model.quantizer)
                usage.zero_()
            out["restarted"] = restarted
        out["lr"] = lr
        return out

    history = train_loop(step, n_steps, desc=f"{cfg.family} ({cfg.epochs:g} epochs of {n:,} images)",
                         every=steps_per_epoch, callback=callback, progress=progress and distributed.is_main())
    model.eval()
    if cfg.family == "vqvae":
        model.fit_prior(x)
    return history


@torch.no_grad()
def evaluate(cfg: Config, model: nn.Module, *, batch_size: int = 500) -> dict[str, float]:
    """Test-split metrics in nats per image.

    vae/cvae: ``loss`` = recon + KL (the negative ELBO with one z per image, drawn with
    ``cfg.eval_seed``: the number pytorch/examples prints), ``recon``, ``kl`` and
    ``active_units`` (latent dimensions whose posterior mean varies across images,
    Cov_x E_q[z_j] > 0.01). vqvae: ``recon``, ``perplexity`` and ``codes_used``.
    Always: ``n_test`` and ``fallback`` (1.0 when the offline fallback split was used).
    """
    x, y = load_mnist("test")
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(cfg.eval_seed)
    out: dict[str, float] = {"n_test": float(x.shape[0]), "fallback": float(mnist_is_fallback())}
    if cfg.family == "vqvae":
        recon, codes = 0.0, []
        for (xb,) in minibatches(x, batch_size=batch_size, shuffle=False):
            logits, vq = model(xb)
            recon += float(torch.nn.functional.binary_cross_entropy_with_logits(logits, xb, reduction="sum"))
            codes.append(vq.indices.flatten())
        codes = torch.cat(codes)
        counts = torch.bincount(codes, minlength=model.codebook_size)
        p = counts.double() / counts.sum()
        out.update(recon=recon / x.shape[0], perplexity=float(torch.exp(-torch.xlogy(p, p).sum())),
                   codes_used=float((counts > 0).sum()))
    else:
        recon = kl = 0.0
        mus = []
        for xb, yb in minibatches(x, y, batch_size=batch_size, shuffle=False):
            terms = model.loss(xb, yb, generator=g, reduction="sum") if cfg.family == "cvae" else \
                model.loss(xb, generator=g, reduction="sum")
            recon += float(terms.recon)
            kl += float(terms.kl)
            mus.append(model.encode(xb, yb)[0] if cfg.family == "cvae" else model.encode(xb)[0])
        mu = torch.cat(mus)
        out.update(loss=(recon + kl) / x.shape[0], recon=recon / x.shape[0], kl=kl / x.shape[0],
                   active_units=float((mu.var(0) > 0.01).sum()))
    model.train(was_training)
    return out


@torch.no_grad()
def sample(cfg: Config, model: nn.Module, n: int, generator: torch.Generator | None = None,
           labels: Tensor | int | None = None) -> Tensor:
    """``n`` generated images ``(n, 1, 28, 28)`` (Bernoulli means in [0, 1]).

    cvae: ``labels`` (an int or ``(n,)`` ints) picks the digits, by default 0, 1, ..., 9 cycling.
    vqvae: codes from the per-position prior fitted after training (independent positions).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    model.eval()
    if cfg.family == "cvae":
        return model.sample(n, generator=generator, labels=labels)
    if labels is not None:
        raise ValueError(f"labels only apply to the cvae family, not {cfg.family!r}")
    return model.sample(n, generator=generator)
