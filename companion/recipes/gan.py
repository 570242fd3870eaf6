"""Training recipe for GANs: the 8-Gaussians ring (chapter "GAN training and variants") and MNIST.

One :class:`Config` selects the data (``"ring"`` or ``"mnist"``), the architecture (MNIST:
``"mlp"`` or ``"dcgan"``; the ring always uses small MLPs), the loss and the tricks:

=============  ==========================================================================
``loss``       discriminator / generator objective
=============  ==========================================================================
``ns``         GAN discriminator loss, non-saturating generator loss -log D(G(z))
``minimax``    GAN discriminator loss, saturating generator loss log(1 - D(G(z)))
``wgan``       Wasserstein critic with weight clipping to [-c, c], RMSprop
``wgan-gp``    Wasserstein critic with gradient penalty (lambda = ``gp_weight``)
``lsgan``      least squares, 0-1 coding
``dragan``     GAN losses (non-saturating) plus the DRAGAN penalty (lambda = ``gp_weight``)
``hinge``      hinge losses (SNGAN / SAGAN)
=============  ==========================================================================

``spectral_norm`` normalises every layer of D; ``conditional`` feeds labels (ring: the
mode index; MNIST: the digit) to G and D; ``self_condition`` = K feeds k-means clusters of the
training images instead, no labels used (:func:`companion.clustering.kmeans`); ``self_attention`` adds a SAGAN
block to both DCGAN networks. Fields left ``None`` take the per-data defaults of ``DEFAULTS`` and
per-loss optimiser settings (:func:`resolve` fills them in). ``steps`` counts generator
updates; the Wasserstein losses take ``n_critic`` (default 5) critic steps per generator step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor

from companion import distributed
from companion import gan as G
from companion import gan_networks as N
from companion.clustering import cluster_shares, kmeans
from companion.diffaugment import diff_augment, parse_diff_augment_policy
from companion.infogan import info_loss, mutual_information_bound
from companion.toy2d import mode_coverage, ring_centers, sample_ring
from companion.train import History, WeightAverage, recalibrate_batch_norm, train_loop

__all__ = ["Config", "DEFAULTS", "LOSSES", "resolve", "build_model", "train", "recalibrate_batch_norm", "evaluate",
           "sample", "snapshot_callback", "snapshots", "config_dict"]

LOSSES = ("ns", "minimax", "wgan", "wgan-gp", "lsgan", "dragan", "hinge")
DISTRIBUTED = True  # train() runs under torchrun (companion.distributed: DDP-wrapped G and D, sharded data)
DATA = ("ring", "mnist")
ARCHS = ("mlp", "dcgan")

DEFAULTS = {
    "ring": {"latent_dim": 2, "hidden": 128, "batch_size": 256, "steps": 2000, "g_ema": 0.0},
    "mnist": {"latent_dim": 64, "hidden": 256, "batch_size": 64, "steps": 3000, "g_ema": 0.0},
}


@dataclass
class Config:
    """Settings of one GAN run (JSON-serialisable). ``None`` means "the default for this data and loss".

    Attributes:
        data: ``"ring"`` (8 Gaussians on a circle, 2-D) or ``"mnist"`` (28 x 28 digits).
        arch: MNIST networks, ``"mlp"`` or ``"dcgan"`` (the ring always uses small MLPs).
        loss: one of ``ns``, ``minimax``, ``wgan``, ``wgan-gp``, ``lsgan``, ``dragan``, ``hinge``.
        spectral_norm: spectral normalisation of every layer of the discriminator.
        conditional: feed the label (ring mode or digit) to G and D (a conditional GAN).
        self_attention: add a SAGAN self-attention block to both DCGAN networks.
        steps: generator updates (default 2,000 ring, 3,000 MNIST).
        batch_size: examples per batch (default 256 ring, 64 MNIST).
        latent_dim: dimension of z (default 2 ring, 64 MNIST).
        hidden: width of the MLPs (the DCGAN base channel count C is hidden / 16: the generator's
            widest layer has 4C = hidden / 4 channels) (default 128 ring, 256 MNIST).
        lr_g, lr_d: learning rates of G and D (default per loss; MNIST uses a fifth of the ring's).
        beta1, beta2: Adam's betas (default (0.5, 0.999); (0.5, 0.9) for WGAN-GP; WGAN uses RMSprop).
        n_critic: discriminator steps per generator step (default 5 for WGAN and WGAN-GP, else 1).
        gp_weight: lambda of the WGAN-GP and DRAGAN penalties (default 10 for MNIST, as in the papers;
            0.1 for the ring, as in the WGAN-GP authors' toy experiments: a penalty of 10 on 2-D data
            overpowers the critic's loss and the generator never settles).
        clip_value: WGAN weight clipping range [-c, c].
        n_modes, ring_radius, ring_std: the ring mixture (K, r, sigma).
        n_eval: samples drawn by ``evaluate``.
        seed: seeds the initialisation, the data order and the noise.
        diffaugment: DiffAugment policy (MNIST only), comma-separated from ``brightness``, ``contrast``,
            ``translation``, ``cutout``: the same random differentiable augmentation of real and
            generated images before D, in the D and the G step; empty = off.
        g_ema: decay of an exponential moving average of the generator's weights, updated after every
            generator step, that replaces them at the end of training (0 = off) (default 0 ring, MNIST
            see ``DEFAULTS``).
        info_codes: K > 0 makes an InfoGAN (:mod:`companion.infogan`, unconditional runs only): G reads
            a uniform categorical code c beside z, and a head Q on D's features learns to read c back
            from G(z, c); 0 = off.
        info_weight: lambda, the weight of the InfoGAN loss -E log Q(c | G(z, c)) in D's and G's losses.
        self_condition: K >= 2 makes a self-conditioned GAN (Liu et al. 2020; MNIST, unconditional runs only):
            k-means splits the training images into K clusters of pixels (:func:`companion.clustering.kmeans`, seeded by
            ``seed``), G and D are conditioned on the cluster as the conditional GAN is on the digit, and G
            draws each cluster as often as it occurs in the training set. No label is used; 0 = off.
    """

    data: str = "ring"
    arch: str = "mlp"
    loss: str = "ns"
    spectral_norm: bool = False
    conditional: bool = False
    self_attention: bool = False
    steps: int | None = None
    batch_size: int | None = None
    latent_dim: int | None = None
    hidden: int | None = None
    lr_g: float | None = None
    lr_d: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    n_critic: int | None = None
    gp_weight: float | None = None
    clip_value: float = 0.01
    n_modes: int = 8
    ring_radius: float = 2.0
    ring_std: float = 0.1
    n_eval: int = 2500
    seed: int = 0
    diffaugment: str = ""
    g_ema: float | None = None
    info_codes: int = 0
    info_weight: float = 1.0
    self_condition: int = 0

    def __post_init__(self):
        if self.data not in DATA:
            raise ValueError(f"unknown data {self.data!r}; expected one of {DATA}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {LOSSES}")
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; expected one of {ARCHS}")
        if self.self_attention and not (self.data == "mnist" and self.arch == "dcgan"):
            raise ValueError("self_attention needs data='mnist' and arch='dcgan' "
                             "(attention over feature-map positions)")
        for name in ("batch_size", "latent_dim", "hidden", "n_critic"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.gp_weight is not None and self.gp_weight < 0:
            raise ValueError(f"gp_weight must be >= 0, got {self.gp_weight}")
        if self.g_ema is not None and not 0.0 <= self.g_ema < 1.0:
            raise ValueError(f"g_ema must be in [0, 1), got {self.g_ema}")
        parse_diff_augment_policy(self.diffaugment)  # ValueError naming a bad policy
        if self.diffaugment and self.data != "mnist":
            raise ValueError(f"diffaugment needs data='mnist' (image augmentations); got data={self.data!r}")
        if self.info_codes < 0 or self.info_weight < 0:
            raise ValueError(f"info_codes and info_weight must be >= 0, got {self.info_codes} and {self.info_weight}")
        if self.info_codes and not self.info_weight:
            raise ValueError("info_weight must be > 0 with info_codes (with 0 nothing reads the code back, "
                             "and G is free to ignore it)")
        if self.info_codes and self.conditional:
            raise ValueError("info_codes is for unconditional GANs (the code stands in for the label they lack); "
                             "got conditional=True")
        if isinstance(self.self_condition, bool) or not isinstance(self.self_condition, int) \
                or self.self_condition < 0 or self.self_condition == 1:
            raise ValueError(f"self_condition must be 0 (off) or a number of clusters K >= 2, "
                             f"got {self.self_condition!r}")
        if self.self_condition and (self.data != "mnist" or self.conditional or self.info_codes):
            raise ValueError("self_condition is for unconditional MNIST GANs (the clusters stand in for the labels): "
                             f"got data={self.data!r}, conditional={self.conditional}, info_codes={self.info_codes}")
        if self.n_eval < 1 or self.n_modes < 1:
            raise ValueError(f"n_eval and n_modes must be >= 1, got {self.n_eval} and {self.n_modes}")


def resolve(cfg: Config) -> Config:
    """Return a copy of ``cfg`` with every ``None`` replaced by its default for this data and loss."""
    if cfg.loss == "wgan":
        opt = {"lr_g": 5e-4, "lr_d": 5e-4, "beta1": 0.0, "beta2": 0.0}  # RMSprop, as in the paper: betas unused
    elif cfg.loss == "wgan-gp":
        opt = {"lr_g": 1e-3, "lr_d": 1e-3, "beta1": 0.5, "beta2": 0.9}
    else:
        opt = {"lr_g": 1e-3, "lr_d": 1e-3, "beta1": 0.5, "beta2": 0.999}
    if cfg.data == "mnist":
        opt["lr_g"] = opt["lr_d"] = opt["lr_g"] / 5
    fill = {**DEFAULTS[cfg.data], **opt, "n_critic": 5 if cfg.loss in ("wgan", "wgan-gp") else 1,
            "gp_weight": 0.1 if cfg.data == "ring" else 10.0}
    return replace(cfg, **{k: v for k, v in fill.items() if getattr(cfg, k) is None})


def build_model(cfg: Config) -> N.GAN:
    """A :class:`companion.gan_networks.GAN` (generator + discriminator) for ``cfg``, initialised from ``cfg.seed``."""
    cfg = resolve(cfg)
    torch.manual_seed(cfg.seed)
    c, z_in = cfg.info_codes, cfg.latent_dim + cfg.info_codes  # an InfoGAN's G reads (z, onehot(code))
    if cfg.data == "ring":
        k = cfg.n_modes if cfg.conditional else 0
        gen = N.ToyGenerator(z_in, cfg.hidden, n_classes=k)
        disc = N.ToyDiscriminator(2, cfg.hidden, n_classes=k, n_codes=c)
    else:
        k = 10 if cfg.conditional else cfg.self_condition
        if cfg.arch == "mlp":
            gen = N.MLPGenerator(z_in, cfg.hidden, n_classes=k)
            disc = N.MLPDiscriminator(cfg.hidden, n_classes=k, n_codes=c)
        else:
            base = max(4, cfg.hidden // 16)
            gen = N.DCGANGenerator(z_in, base, n_classes=k, self_attention=cfg.self_attention)
            disc = N.DCGANDiscriminator(base, n_classes=k, self_attention=cfg.self_attention, n_codes=c)
    if cfg.spectral_norm:
        G.apply_spectral_norm(disc)
    return N.GAN(gen, disc, n_codes=c, self_conditioned=cfg.self_condition > 0)


def _real_batches(cfg: Config, gen: torch.Generator, clustered: tuple[Tensor, Tensor] | None = None):
    """Infinite iterator of (x, y) real batches; y is the label (conditional runs), the cluster (self-conditioned
    runs: ``clustered`` = the training images and their cluster ids) or None."""
    if cfg.data == "ring":
        while True:
            x, y = sample_ring(cfg.batch_size, cfg.n_modes, cfg.ring_radius, cfg.ring_std, generator=gen,
                               return_labels=True)
            yield x, (y if cfg.conditional else None)
    from companion.data import load_mnist

    images, labels = clustered if clustered is not None else load_mnist("train")
    images = images * 2 - 1  # the generators end in tanh: data in [-1, 1]
    # one process: minibatches shuffled by gen, epoch after epoch; under torchrun: this rank's shard
    for x, y in distributed.batch_stream(images, labels, batch_size=cfg.batch_size, generator=gen, seed=cfg.seed,
                                         drop_last=True):
        yield x, (y if cfg.conditional or clustered is not None else None)


def _augment(cfg: Config, x: Tensor, gen: torch.Generator) -> Tensor:
    """DiffAugment of a batch of images in [-1, 1] (identity when ``cfg.diffaugment`` is empty).

    Padding and cut-outs take the background value -1.
    """
    return diff_augment(x, cfg.diffaugment, gen, fill=-1.0) if cfg.diffaugment else x


def _fake_scores(D, fake: Tensor, y_fake: Tensor | None, codes: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """D's scores on generated images, and for an InfoGAN (``codes`` given) Q's code logits (else None)."""
    if codes is None:
        return (D(fake, y_fake) if y_fake is not None else D(fake)), None
    return D(fake, codes=True)


def _info_term(cfg: Config, code_logits: Tensor | None, codes: Tensor | None) -> Tensor | float:
    """lambda * (-E log Q(c | G(z, c))), the InfoGAN term of both players' losses (0 without codes)."""
    return 0.0 if codes is None else cfg.info_weight * info_loss(code_logits, codes)


def _d_loss(cfg: Config, model: N.GAN, x: Tensor, y: Tensor | None, fake: Tensor, y_fake: Tensor | None,
            gen: torch.Generator, D=None, codes: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Discriminator loss for one batch; returns (loss, D's detached scores on the real batch).

    ``D`` is the discriminator to call (default ``model.discriminator``; under torchrun its DDP wrapper).
    ``codes``: an InfoGAN's codes of ``fake``; their loss trains the head Q with D.
    """
    D = model.discriminator if D is None else D
    cond = y is not None
    x, fake = _augment(cfg, x, gen), _augment(cfg, fake, gen)
    real_s = D(x, y) if cond else D(x)
    fake_s, code_logits = _fake_scores(D, fake, y_fake, codes)
    if cfg.loss in ("ns", "minimax", "dragan"):
        loss = G.discriminator_loss(real_s, fake_s)
    elif cfg.loss in ("wgan", "wgan-gp"):
        loss = G.wasserstein_losses(real_s, fake_s)[0]
    elif cfg.loss == "lsgan":
        loss = G.lsgan_losses(real_s, fake_s)[0]
    else:
        loss = G.hinge_losses(real_s, fake_s)[0]
    critic = (lambda t: D(t, y)) if cond else D
    if cfg.loss == "wgan-gp":
        loss = loss + cfg.gp_weight * G.gradient_penalty(critic, x, fake, generator=gen)
    elif cfg.loss == "dragan":
        loss = loss + cfg.gp_weight * G.dragan_penalty(critic, x, generator=gen)
    return loss + _info_term(cfg, code_logits, codes), real_s.detach()


def _g_loss(cfg: Config, real_s: Tensor, fake_s: Tensor) -> Tensor:
    if cfg.loss in ("ns", "dragan"):
        return G.generator_loss(fake_s, "non_saturating")
    if cfg.loss == "minimax":
        return G.generator_loss(fake_s, "minimax")
    if cfg.loss in ("wgan", "wgan-gp"):
        return G.wasserstein_losses(real_s, fake_s)[1]
    if cfg.loss == "lsgan":
        return G.lsgan_losses(real_s, fake_s)[1]
    return G.hinge_losses(real_s, fake_s)[1]


def train(cfg: Config, model: N.GAN, *, progress: bool = True, callback=None) -> History:
    """Alternate ``n_critic`` discriminator steps (D maximises its objective) and one generator step.

    Records ``d_loss`` and ``g_loss`` per generator step. ``callback(i, history)`` runs after
    each step (e.g. to take snapshots of samples).
    """
    cfg = resolve(cfg)
    gen = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed))  # cfg.seed on one process
    D, Gn = model.discriminator, model.generator
    if cfg.loss == "wgan":
        opt_d = torch.optim.RMSprop(D.parameters(), lr=cfg.lr_d)
        opt_g = torch.optim.RMSprop(Gn.parameters(), lr=cfg.lr_g)
    else:
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        opt_g = torch.optim.Adam(Gn.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    clustered = None
    if cfg.self_condition:  # the clusters of the training images' pixels, and their shares for G's draws
        from companion.data import load_mnist

        images = load_mnist("train")[0]
        clusters = kmeans(images, cfg.self_condition, cfg.seed)
        model.cluster_shares.copy_(cluster_shares(clusters, cfg.self_condition))
        clustered = (images, clusters)  # read once: the batches come from the same images
    batches = _real_batches(cfg, gen, clustered)
    n_classes = model.n_classes
    # Polyak averaging of G: a moving average of its weights, copied into G at the end of training
    g_params = list(Gn.parameters())
    ema = WeightAverage(g_params, cfg.g_ema) if cfg.g_ema else None
    model.train()
    # under torchrun: DDP wrappers that average the gradients over the ranks (on one process: D and Gn)
    D_net, G_net = distributed.data_parallel(D), distributed.data_parallel(Gn)

    def fake_inputs(n: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        z, codes = model.sample_latent(n, gen)  # z ~ N(0, I) (and an InfoGAN's one-hot codes)
        if model.self_conditioned:  # clusters as often as in the training set
            return z, model.sample_clusters(n, gen), codes
        return z, (torch.randint(0, n_classes, (n,), generator=gen) if n_classes else None), codes

    def fake_batch(n: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        z, y, codes = fake_inputs(n)
        return (G_net(z, y) if n_classes else G_net(z)), y, codes

    def step(i: int) -> dict[str, Tensor]:
        for _ in range(cfg.n_critic):
            x, y = next(batches)
            with torch.no_grad():
                fake, y_fake, codes = fake_batch(x.shape[0])
            d_loss, real_s = _d_loss(cfg, model, x, y, fake, y_fake, gen, D=D_net, codes=codes)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            if cfg.loss == "wgan":
                G.clip_weights_(D, cfg.clip_value)
        fake, y_fake, codes = fake_batch(cfg.batch_size)
        fake = _augment(cfg, fake, gen)  # differentiable: G's gradient passes through the augmentation
        fake_s, code_logits = _fake_scores(D_net, fake, y_fake, codes)
        g_loss = _g_loss(cfg, real_s, fake_s) + _info_term(cfg, code_logits, codes)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if ema is not None:
            ema.update(i)
        record = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}
        if codes is not None:  # L_I = log K - CE <= I(c; G(z, c)), in nats
            record["info_bound"] = mutual_information_bound(code_logits.detach(), codes)
        return record

    desc = (f"GAN {cfg.data} {cfg.loss}" + (" +SN" if cfg.spectral_norm else "") + (" cond" if cfg.conditional else "")
            + (f" self-cond K={cfg.self_condition}" if cfg.self_condition else ""))
    history = train_loop(step, cfg.steps, desc=desc, progress=progress and distributed.is_main(), callback=callback)
    if ema is not None and cfg.steps > 0:
        ema.copy_to_params()
        recalibrate_batch_norm(Gn, lambda: [t for t in fake_inputs(cfg.batch_size)[:2] if t is not None])
    model.eval()
    return history


def sample(cfg: Config, model: N.GAN, n: int, generator: torch.Generator | None = None,
           labels: Tensor | None = None) -> Tensor:
    """n samples: ring (n, 2); MNIST (n, 1, 28, 28) in [0, 1]. Conditional models cycle labels k mod K by default;
    self-conditioned ones draw clusters with their training shares."""
    cfg = resolve(cfg)
    x = model.sample(n, labels=labels, generator=generator)
    return x if cfg.data == "ring" else (x + 1) / 2


@torch.no_grad()
def evaluate(cfg: Config, model: N.GAN) -> dict[str, float]:
    """Quality figures on ``n_eval`` samples (seeded by ``cfg.seed``).

    Ring: ``modes_captured``, ``high_quality_fraction``, ``kl_to_uniform`` (and
    ``label_accuracy`` for conditional runs), see :func:`companion.toy2d.mode_coverage`.
    MNIST: mean Euclidean distance in pixel space from each sample to its nearest test image
    (``nn_fake_to_real``, low = samples look like data) and from each test image to its
    nearest sample (``nn_real_to_fake``, low = the data is covered), on up to 2,000 test images.
    """
    cfg = resolve(cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    k = model.n_classes
    labels = torch.arange(cfg.n_eval) % k if k and not model.self_conditioned else None
    x = sample(cfg, model, cfg.n_eval, generator=gen, labels=labels)
    if cfg.data == "ring":
        cov = mode_coverage(x, ring_centers(cfg.n_modes, cfg.ring_radius), cfg.ring_std, labels=labels)
        return cov.as_dict()
    from companion.data import load_mnist

    test, _ = load_mnist("test")
    test = test[:2000].flatten(1)
    d = torch.cdist(x.flatten(1), test)
    return {"nn_fake_to_real": float(d.min(1).values.mean()), "nn_real_to_fake": float(d.min(0).values.mean())}


def config_dict(cfg: Config) -> dict:
    """The resolved config as a plain dict (the cache key of ``train_or_load``)."""
    return asdict(resolve(cfg))


def snapshot_callback(cfg: Config, model: N.GAN, every: int, n: int = 500, seed: int = 0):
    """A ``train`` callback that records ring samples from fixed noise every ``every`` steps.

    After step 1 and after every ``every``-th step it stores into the history the step
    (``snapshot_step``), the coordinates of ``n`` samples G(z) for one fixed z
    (``snapshot_x``, ``snapshot_y``) and their ``snapshot_modes`` and ``snapshot_hq``
    (:func:`companion.toy2d.mode_coverage`). Being part of the history, the snapshots are cached
    with the weights by :func:`companion.train.train_or_load`. Read them with :func:`snapshots`.
    """
    cfg = resolve(cfg)
    if cfg.data != "ring":
        raise ValueError(f"snapshots are for the 2-D ring data; got data={cfg.data!r}")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    z = torch.randn(n, cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(n) % model.n_classes if model.n_classes else None
    centers = ring_centers(cfg.n_modes, cfg.ring_radius)

    def callback(i: int, history: History) -> None:
        if i != 0 and (i + 1) % every:
            return
        with torch.no_grad():
            x = model.generator(z, labels) if labels is not None else model.generator(z)
        cov = mode_coverage(x, centers, cfg.ring_std)
        history.metrics["snapshot_step"].append(float(i + 1))
        history.metrics["snapshot_x"].extend(x[:, 0].tolist())
        history.metrics["snapshot_y"].extend(x[:, 1].tolist())
        history.metrics["snapshot_modes"].append(float(cov.modes_captured))
        history.metrics["snapshot_hq"].append(cov.high_quality_fraction)

    return callback


def snapshots(history: History) -> list[tuple[int, Tensor]]:
    """The ``(step, samples (n, 2))`` pairs recorded by :func:`snapshot_callback`, in order."""
    steps = [int(s) for s in history.metrics.get("snapshot_step", [])]
    if not steps:
        return []
    xy = torch.tensor([history.metrics["snapshot_x"], history.metrics["snapshot_y"]]).T
    return list(zip(steps, xy.reshape(len(steps), -1, 2), strict=True))
