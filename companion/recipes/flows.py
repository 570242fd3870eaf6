r"""Training recipe for normalizing flows (chapter "Normalizing flows", part "Beyond the articles").

A :class:`companion.flows.RealNVP` is fitted by **maximum likelihood** to the ring of eight
Gaussians of :mod:`companion.toy2d`: each step draws a mini-batch of a fixed training set and
descends the negative log-likelihood in nats per point,

.. math::

    \mathcal L(\theta) = -\frac1B \sum_{i=1}^B \log p_\theta(x_i), \qquad
    \log p_\theta(x) = \log \mathcal N(f_\theta(x); 0, I) + \log \left|\det J_{f_\theta}(x)\right|,

with Adam and the course's warm-up + cosine learning rate (:func:`companion.train.warmup_cosine_lr`).

Because the data distribution is known, the recipe also gives its exact log-density
(:func:`true_log_prob`, the ceiling of any model's expected test log-likelihood, since
:math:`\mathbb E_p[\log p] - \mathbb E_p[\log q] = \mathrm{KL}(p \,\|\, q) \ge 0`) and two
model-free baselines fitted to the same training set (:func:`baselines`): one Gaussian and a
kernel density estimate (KDE) whose bandwidth is chosen on a validation set.

Splits: ``"train"`` (``n_train`` points), ``"val"`` and ``"test"`` (``n_test`` points each), each
drawn with its own seed, so they never depend on the training run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from companion.checks import verdict
from companion.flows import RealNVP
from companion.toy2d import mode_coverage, ring_centers, sample_ring
from companion.train import History, train_loop, warmup_cosine_lr

__all__ = ["Config", "config_dict", "data", "true_log_prob", "build_model", "train", "evaluate", "sample",
           "kde_log_prob", "baselines", "ring_entropy", "check_ring_entropy"]

SPLITS = {"train": 1, "val": 2, "test": 3}  # seed offsets of the data splits (added to data_seed)


@dataclass
class Config:
    """Every setting of a flow run on the ring (JSON-serialisable; the cache key of ``train_or_load``).

    Attributes:
        n_layers, hidden, log_scale_bound: the RealNVP (coupling layers, hidden width, clamp c).
        steps, batch_size: Adam steps and points per mini-batch.
        lr, lr_min, warmup_steps: peak learning rate, final rate of the cosine decay, linear warm-up.
        n_train, n_test: points in the training split and in each of the validation and test splits.
        n_modes, ring_radius, ring_std: the ring mixture (K, r, sigma).
        n_eval: flow samples drawn by :func:`evaluate` for the mode-coverage metric.
        seed: seeds the initialisation and the batch order; ``data_seed`` the data splits.
        eval_every: record the test negative log-likelihood every this many steps (0 = never).
    """

    n_layers: int = 8
    hidden: int = 64
    log_scale_bound: float = 2.0
    steps: int = 2000
    batch_size: int = 256
    lr: float = 3e-3
    lr_min: float = 1e-4
    warmup_steps: int = 50
    n_train: int = 10_000
    n_test: int = 5_000
    n_modes: int = 8
    ring_radius: float = 2.0
    ring_std: float = 0.1
    n_eval: int = 2_500
    seed: int = 0
    data_seed: int = 0
    eval_every: int = 100

    def __post_init__(self):
        for name in ("n_layers", "hidden", "batch_size", "n_train", "n_test", "n_modes", "n_eval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("steps", "warmup_steps", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        for name in ("lr", "log_scale_bound", "ring_radius", "ring_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.lr_min <= self.lr:
            raise ValueError(f"lr_min must be in [0, lr] = [0, {self.lr}], got {self.lr_min!r}")
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size ({self.batch_size}) cannot exceed n_train ({self.n_train})")


def config_dict(cfg: Config) -> dict:
    """``cfg`` as a plain dict (the cache key of :func:`companion.train.train_or_load`)."""
    return asdict(cfg)


def data(cfg: Config, split: str = "train") -> Tensor:
    """The ``split`` (``"train"``, ``"val"`` or ``"test"``) of the ring data: ``(N, 2)`` float32."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    n = cfg.n_train if split == "train" else cfg.n_test
    g = torch.Generator().manual_seed(cfg.data_seed * 10 + SPLITS[split])
    return sample_ring(n, cfg.n_modes, cfg.ring_radius, cfg.ring_std, generator=g)


def true_log_prob(cfg: Config, x: Tensor) -> Tensor:
    r"""The exact log-density of the ring mixture, :math:`\log \frac1K \sum_k \mathcal N(x; \mu_k, \sigma^2 I)`.

    ``x: (N, 2)`` -> ``(N,)`` nats, computed with a log-sum-exp in float64.
    """
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (N, 2), got {tuple(x.shape)}")
    angles = 2 * math.pi * torch.arange(cfg.n_modes, dtype=torch.float64) / cfg.n_modes
    mu = cfg.ring_radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # ring_centers, in float64
    sq = torch.cdist(x.double(), mu).pow(2)  # (N, K)
    var = cfg.ring_std**2
    log_comp = -sq / (2 * var) - math.log(2 * math.pi * var)
    return torch.logsumexp(log_comp, dim=1) - math.log(cfg.n_modes)


def build_model(cfg: Config) -> RealNVP:
    """A RealNVP for 2-D data, initialised from ``cfg.seed`` (the global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return RealNVP(2, cfg.n_layers, cfg.hidden, log_scale_bound=cfg.log_scale_bound)


def train(cfg: Config, model: RealNVP, *, progress: bool = True, callback=None) -> History:
    """Maximum-likelihood training of ``model`` on the training split; returns the history.

    Recorded per step: ``nll`` (the batch's negative log-likelihood, nats per point) and ``lr``;
    every ``cfg.eval_every`` steps (and after the last) also ``eval_step`` and ``test_nll``
    (the whole test split).
    """
    if not isinstance(model, RealNVP) or model.dim != 2:
        raise TypeError(f"model must be a 2-D companion.flows.RealNVP, got {type(model).__name__}")
    x_train, x_test = data(cfg, "train"), data(cfg, "test")
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()

    def step(i: int) -> dict[str, float | Tensor]:
        lr = warmup_cosine_lr(i, i / max(1, cfg.steps), peak=cfg.lr, final=cfg.lr_min, warmup_steps=cfg.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = x_train[torch.randint(0, x_train.shape[0], (cfg.batch_size,), generator=g)]
        loss = -model.log_prob(batch).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"nll": loss.detach(), "lr": lr}

    def record(i: int, history: History) -> None:
        if cfg.eval_every and ((i + 1) % cfg.eval_every == 0 or i + 1 == cfg.steps):
            with torch.no_grad():
                history.metrics["eval_step"].append(float(i + 1))
                history.metrics["test_nll"].append(float(-model.log_prob(x_test).mean()))
        if callback is not None:
            callback(i, history)

    history = train_loop(step, cfg.steps, desc=f"RealNVP ({cfg.n_layers} couplings) on the ring", every=50,
                         callback=record, progress=progress)
    model.eval()
    return history


@torch.no_grad()
def sample(cfg: Config, model: RealNVP, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` samples ``(n, 2)`` of the flow (z ~ N(0, I) pushed through the inverse)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    model.eval()
    return model.sample(n, generator=generator)


@torch.no_grad()
def evaluate(cfg: Config, model: RealNVP, *, sample_seed: int = 1234) -> dict[str, float]:
    """Test-split metrics (nats per point) and the mode coverage of ``cfg.n_eval`` samples.

    Returns ``test_log_likelihood`` (the flow's mean log-density on the test split),
    ``true_log_likelihood`` (the data density's, on the same points), ``gap`` (their difference, an
    estimate of KL(p_data || p_flow) >= 0), and the samples' ``modes_captured``,
    ``high_quality_fraction``, ``between_modes_fraction`` (1 - high-quality: farther than 3 sigma
    from every mode) and ``kl_to_uniform``.
    """
    was_training = model.training
    model.eval()
    x = data(cfg, "test")
    flow_ll = float(model.log_prob(x).double().mean())
    true_ll = float(true_log_prob(cfg, x).mean())
    xs = model.sample(cfg.n_eval, generator=torch.Generator().manual_seed(sample_seed))
    cov = mode_coverage(xs, ring_centers(cfg.n_modes, cfg.ring_radius), cfg.ring_std)
    model.train(was_training)
    return {"test_log_likelihood": flow_ll, "true_log_likelihood": true_ll, "gap": true_ll - flow_ll,
            "modes_captured": float(cov.modes_captured), "high_quality_fraction": cov.high_quality_fraction,
            "between_modes_fraction": 1.0 - cov.high_quality_fraction, "kl_to_uniform": cov.kl_to_uniform}


def kde_log_prob(x: Tensor, points: Tensor, bandwidth: float, *, chunk: int = 1024) -> Tensor:
    r"""Gaussian kernel density estimate :math:`\log \frac1n \sum_i \mathcal N(x; x_i, h^2 I)`.

    ``x: (N, D)`` query points, ``points: (n, D)`` the data, ``bandwidth`` h -> ``(N,)`` nats.
    """
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    if x.ndim != 2 or points.ndim != 2 or x.shape[1] != points.shape[1]:
        raise ValueError(f"x and points must be (N, D) and (n, D), got {tuple(x.shape)} and {tuple(points.shape)}")
    d, var = x.shape[1], bandwidth**2
    out = []
    for xb in x.double().split(chunk):
        sq = torch.cdist(xb, points.double()).pow(2)
        out.append(torch.logsumexp(-sq / (2 * var), dim=1))
    return torch.cat(out) - math.log(points.shape[0]) - 0.5 * d * math.log(2 * math.pi * var)


def baselines(cfg: Config, bandwidths: tuple[float, ...] = (0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.07, 0.1, 0.2),
              ) -> dict[str, float]:
    """Test log-likelihoods (nats per point) of two models fitted to the same training split.

    ``gaussian``: one Gaussian with the training mean and covariance (maximum likelihood);
    ``kde``: a Gaussian KDE on the training points, bandwidth (returned as ``kde_bandwidth``)
    chosen from ``bandwidths`` by validation log-likelihood.
    """
    x_train, x_val, x_test = (data(cfg, s).double() for s in ("train", "val", "test"))
    mean = x_train.mean(0)
    cov = torch.cov(x_train.T, correction=0)
    gauss = torch.distributions.MultivariateNormal(mean, cov)
    val = {h: float(kde_log_prob(x_val, x_train, h).mean()) for h in bandwidths}
    h = max(val, key=val.get)
    return {"gaussian": float(gauss.log_prob(x_test).mean()), "kde": float(kde_log_prob(x_test, x_train, h).mean()),
            "kde_bandwidth": h}


def ring_entropy(n_modes: int, std: float, dim: int = 2) -> float:
    r"""Entropy (nats) of K equal, well-separated isotropic Gaussians: :math:`\log K + \frac d2 \log(2\pi e \sigma^2)`.

    Exact in the limit of no overlap between the modes; the best expected test log-likelihood is
    its negative.
    """
    return math.log(n_modes) + 0.5 * dim * math.log(2 * math.pi * math.e * std**2)


def check_ring_entropy(fn) -> bool:
    """Exercise checker: ``fn(n_modes, std)`` should return the entropy of the well-separated ring (nats)."""
    cases = [(8, 0.1), (8, 0.02), (4, 0.05), (1, 1.0), (16, 0.01)]
    for k, s in cases:
        got, want = float(fn(k, s)), ring_entropy(k, s)
        if not math.isfinite(got) or abs(got - want) > 1e-6:
            if abs(got - (want - math.log(k))) < 1e-6:
                return verdict(False, f"for K={k}, sigma={s} you return {got:.4f}: the entropy of one mode; "
                                      "the choice of mode adds log K")
            return verdict(False, f"for K={k}, sigma={s} expected {want:.4f} nats, got {got:.4f}")
    return verdict(True, "H = log K + log(2 pi e sigma^2) in two dimensions; it falls without bound as sigma -> 0")
