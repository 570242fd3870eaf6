r"""Training helpers shared by every chapter: seeding, mini-batches, a loop with a progress bar,
the learning-rate schedule, and the weight cache of the notebooks.

Models never train themselves: a recipe (:mod:`companion.recipes`) or a chapter writes a
``step(i) -> dict of floats`` function (one optimisation step) and hands it to
:func:`train_loop`, which runs it, shows a ``tqdm`` progress bar with running averages, and
returns the history.

The learning-rate schedule of every recipe is a linear warm-up times a cosine decay
(:func:`warmup_cosine_lr`): at step :math:`i` with a fraction :math:`p \in [0, 1]` of the run
done,

.. math::

    \eta_i = \min\Big(1, \frac{i + 1}{w}\Big) \cdot
             \Big(\eta_{\min} + \tfrac12 (\eta_{\max} - \eta_{\min})(1 + \cos \pi p)\Big),

where :math:`w` is the number of warm-up steps (no warm-up for :math:`w = 0`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from companion.env import env_flag

__all__ = ["seed_everything", "minibatches", "History", "train_loop", "cosine_decay", "linear_warmup",
           "warmup_cosine_lr", "warmup_schedule", "WeightAverage", "recalibrate_batch_norm", "cache_dir",
           "train_or_load"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, numpy and torch, and return a seeded ``torch.Generator``.

    With the same seed, the same code gives the same numbers on the same machine and
    torch build (CPU kernels are deterministic for the operations the course uses).
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses; this one's hash seed is fixed at start
    return torch.Generator().manual_seed(seed)


def minibatches(*tensors: Tensor, batch_size: int, generator: torch.Generator | None = None,
                shuffle: bool = True, drop_last: bool = False) -> Iterator[tuple[Tensor, ...]]:
    """Yield mini-batches of one epoch: tuples of aligned slices of ``tensors``.

    Args:
        tensors: tensors with the same first dimension N.
        batch_size: examples per batch (>= 1).
        generator: seeds the shuffle, for reproducible epochs.
    """
    if not tensors:
        raise ValueError("minibatches() needs at least one tensor")
    n = tensors[0].shape[0]
    for i, t in enumerate(tensors[1:], 1):
        if t.shape[0] != n:
            raise ValueError(f"tensor 0 has {n} examples but tensor {i} has {t.shape[0]}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield tuple(t[idx] for t in tensors)


@dataclass
class History:
    """Per-step metrics of a training run, plus its wall-clock time in seconds."""

    metrics: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    seconds: float = 0.0

    def __getitem__(self, key: str) -> list[float]:
        return self.metrics[key]

    def last(self, key: str, n: int = 1) -> float:
        """Mean of the last ``n`` recorded values of ``key``."""
        values = self.metrics[key][-n:]
        return float(np.mean(values))


def train_loop(step: Callable[[int], Mapping[str, float | Tensor]], n_steps: int, *,
               desc: str = "training", every: int = 10, history: History | None = None,
               callback: Callable[[int, History], None] | None = None, progress: bool = True,
               show_total: bool = True) -> History:
    """Run ``step(i)`` for i = 0 .. n_steps - 1 with a progress bar; return the history.

    Args:
        step: one optimisation step; returns named scalars (floats or 0-d tensors),
            e.g. ``{"loss": loss}``. Tensors are detached and converted here.
        n_steps: number of steps.
        every: refresh the progress-bar averages every ``every`` steps.
        history: continue an earlier run's history (for resumed training).
        callback: called as ``callback(i, history)`` after each step (snapshots, evals).
        progress: show the bar (``tqdm.auto``: a widget in Jupyter, text elsewhere).
        show_total: show ``n_steps`` as the bar's total; ``False`` when another limit (a time
            budget) ends the run first, so the bar counts steps without a misleading total.
    """
    from tqdm.auto import tqdm

    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    history = history if history is not None else History()
    start = time.perf_counter()
    steps = range(n_steps) if show_total else iter(range(n_steps))  # an iterator has no len(): no total
    bar = tqdm(steps, desc=desc, disable=not progress, mininterval=0.5)
    for i in bar:
        out = step(i)
        for key, value in out.items():
            history.metrics[key].append(float(value.detach()) if isinstance(value, Tensor) else float(value))
        if callback is not None:
            callback(i, history)
        if progress and (i + 1) % every == 0:
            bar.set_postfix({k: f"{history.last(k, every):.4g}" for k in out})
    history.seconds += time.perf_counter() - start
    return history


def cosine_decay(progress: float, start: float, end: float = 0.0) -> float:
    r"""Half a cosine from ``start`` (progress 0) to ``end`` (progress 1): :math:`e + \tfrac12 (s - e)(1 + \cos \pi p)`.

    ``progress`` is clipped to [0, 1], so a run that overshoots its planned length stays at ``end``.
    """
    progress = min(max(float(progress), 0.0), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def linear_warmup(step: int, warmup_steps: int) -> float:
    r"""The warm-up factor :math:`\min(1, (i + 1) / w)` of step ``i`` (0-based); 1 when ``warmup_steps <= 0``."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def warmup_cosine_lr(step: int, progress: float, *, peak: float, final: float = 0.0, warmup_steps: int = 0) -> float:
    """The learning rate of every recipe: :func:`linear_warmup` times :func:`cosine_decay` from ``peak`` to ``final``.

    Args:
        step: 0-based index of the optimisation step.
        progress: fraction of the run done, in [0, 1] (steps done / steps planned, or time used /
            time budget for a run that ends on the clock).
        peak: the learning rate after warm-up at progress 0.
        final: the learning rate at progress 1 (``peak`` with ``final = peak`` is a constant rate).
        warmup_steps: steps of the linear warm-up (0: none).
    """
    if peak <= 0 or final < 0:
        raise ValueError(f"need peak > 0 and final >= 0, got peak={peak}, final={final}")
    return linear_warmup(step, warmup_steps) * cosine_decay(progress, peak, final)


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int,
                    total_steps: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 to the optimizer's lr over ``warmup_steps`` steps, then decay.

    With ``total_steps``: cosine decay to 0 at ``total_steps``. Without: the paper's
    inverse-square-root decay, i.e. :func:`companion.transformer.noam_lr` rescaled so that
    its peak is the optimizer's lr.
    Call ``scheduler.step()`` after each ``optimizer.step()``.
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if total_steps is not None and total_steps < max(warmup_steps, 1):
        raise ValueError(f"total_steps = {total_steps} must be >= warmup_steps = {warmup_steps}")
    w = max(warmup_steps, 1)

    def factor(i: int) -> float:  # i = number of scheduler steps taken so far
        s = i + 1
        if s <= warmup_steps:
            return s / w
        if total_steps is None:
            return (w / s) ** 0.5
        return cosine_decay((s - warmup_steps) / max(1, total_steps - warmup_steps), 1.0, 0.0)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


CACHE_ENV = "COMPANION_CACHE"
RETRAIN_ENV = "COMPANION_RETRAIN"


class WeightAverage:
    r"""An exponential moving average of parameters (Polyak averaging), kept beside the live weights.

    After step :math:`i` (from 0), :math:`\bar\theta \leftarrow d_i \bar\theta + (1 - d_i)\, \theta` with
    :math:`d_i = \min\big(\text{decay}, \frac{1 + i}{10 + i}\big)`: the warm-up lets the average forget the
    random initialisation quickly. :meth:`copy_to_params` puts the average into the parameters at the end of
    training. Used for the GANs' generators and the flow-matching and diffusion networks.
    """

    def __init__(self, params, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.params = list(params)
        self.decay = float(decay)
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, i: int) -> None:
        """Fold in the parameters after step ``i``."""
        d = min(self.decay, (1 + i) / (10 + i))
        for e, p in zip(self.average, self.params, strict=True):
            e.lerp_(p, 1.0 - d)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        """Overwrite the parameters with their average."""
        for p, e in zip(self.params, self.average, strict=True):
            p.copy_(e)


@torch.no_grad()
def recalibrate_batch_norm(net: nn.Module, draw_inputs: Callable[[], Sequence[Tensor]], n_batches: int = 50) -> None:
    """Re-estimate the running statistics of ``net``'s batch-norm layers for its current weights.

    After a moving average of the weights (:class:`WeightAverage`) replaces them, the running means and
    variances still describe the activations of the last *live* weights, and eval-mode outputs would
    be normalised with the wrong statistics. ``n_batches`` forward passes ``net(*draw_inputs())`` in
    train mode, averaged with equal weights (``momentum=None``), give the statistics of the averaged
    network (for a GAN's generator, ``draw_inputs`` draws a batch of noise, and labels if conditional).
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = net.training
    net.train()
    for _ in range(n_batches):
        net(*draw_inputs())
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.train(was_training)


def cache_dir() -> Path:
    """Where notebooks keep trained weights: ``$COMPANION_CACHE``, else ``<user cache>/companion/checkpoints``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("companion")) / "checkpoints"


def train_or_load(name: str, model: torch.nn.Module, train: Callable[[torch.nn.Module], History],
                  config: Mapping, *, retrain: bool = False) -> History:
    """Train ``model`` with ``train(model)`` once and cache the weights; later calls load them.

    The cache key is ``name`` plus a hash of ``config`` (every setting that changes the
    result: sizes, steps, seed, ...) and the package version, so a changed setting trains
    anew. Checkpoints hold ``state_dict``, the history and the config, and are read with
    ``torch.load(..., weights_only=True)``. Set ``COMPANION_RETRAIN=1`` (or ``retrain=True``)
    to ignore the cache.

    Returns:
        The training history (loaded from the cache when there was one).
    """
    from companion import __version__

    blob = json.dumps({"config": dict(config), "version": __version__}, sort_keys=True, default=str)
    key = hashlib.sha1(blob.encode()).hexdigest()[:12]
    path = cache_dir() / f"{name}-{key}.pt"
    retrain = retrain or env_flag(RETRAIN_ENV)
    if path.exists() and not retrain:
        fresh = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(ckpt["state_dict"])
            history = History(seconds=float(ckpt["seconds"]))
            history.metrics.update({k: list(v) for k, v in ckpt["metrics"].items()})
        except Exception as exc:  # truncated, zero-byte, foreign or mismatched file: train again
            import warnings

            model.load_state_dict(fresh)  # a failed load may have copied some tensors already
            reason = " ".join(str(exc).split())[:300]
            warnings.warn(f"cached weights for {name!r} in {path} cannot be used ({type(exc).__name__}: "
                          f"{reason}); training again and replacing the file", RuntimeWarning, stacklevel=2)
        else:
            print(f"Loaded cached weights for {name!r} (trained in {history.seconds:.1f} s).")
            return history
    history = train(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict(), "metrics": dict(history.metrics),
                "seconds": history.seconds, "config": json.loads(blob)}, tmp)
    tmp.replace(path)  # atomic: a killed run never leaves a half-written checkpoint
    return history
