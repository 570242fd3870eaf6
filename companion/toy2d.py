r"""2-D toy data for GANs: Gaussians on a ring, and a mode-coverage metric (chapter "GAN training and variants").

The data distribution is an equal mixture of K isotropic Gaussians whose means sit on a
circle of radius r:

.. math::

    p_{\mathrm{data}}(x) = \frac1K \sum_{k=0}^{K-1} \mathcal N\!\left(x;\, \mu_k, \sigma^2 I_2\right),
    \qquad \mu_k = r\,(\cos \tfrac{2\pi k}{K},\ \sin \tfrac{2\pi k}{K}).

With K = 8, r = 2 and a small sigma this is the "8 Gaussians" benchmark of the GAN
literature (unrolled GAN, VEEGAN, PacGAN), where mode collapse is easy to see and to count.

The mode-coverage metric (after VEEGAN, Srivastava et al., 2017) assigns each generated
sample to its nearest mode centre :math:`\mu_k`:

* a sample is **high quality** if it lies within ``n_std`` standard deviations (default 3)
  of its nearest centre, i.e. :math:`\min_k \lVert x - \mu_k \rVert \le 3\sigma`;
* a mode is **captured** if at least ``min_fraction`` of all samples are high-quality
  samples assigned to it (default 0.008: 20 of 2,500 samples, the convention of PacGAN,
  Lin et al., 2018);
* ``kl_to_uniform`` is :math:`\mathrm{KL}(h \,\|\, u)` between the histogram *h* of
  high-quality samples over the modes and the uniform distribution *u* (0 for perfectly
  balanced modes, :math:`\log K` when every good sample falls on one mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from companion.divergences import kl_divergence

__all__ = ["ring_centers", "sample_ring", "ModeCoverage", "mode_coverage"]


def ring_centers(n_modes: int = 8, radius: float = 2.0) -> Tensor:
    """The K mode centres on a circle: (n_modes, 2), mode k at angle 2 pi k / K."""
    if n_modes < 1:
        raise ValueError(f"n_modes must be >= 1, got {n_modes}")
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    angles = 2 * math.pi * torch.arange(n_modes, dtype=torch.float32) / n_modes
    return radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)


def sample_ring(n: int, n_modes: int = 8, radius: float = 2.0, std: float = 0.05, *,
                generator: torch.Generator | None = None, return_labels: bool = False):
    """Draw ``n`` points from the ring mixture.

    Args:
        n: number of samples.
        n_modes, radius, std: K, r and sigma of the mixture (see the module docstring).
        generator: seeds the draw.
        return_labels: also return the mode index of each sample.

    Returns:
        ``x: (n, 2)`` float32, or ``(x, labels: (n,) int64)`` when ``return_labels``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    centers = ring_centers(n_modes, radius)
    labels = torch.randint(0, n_modes, (n,), generator=generator)
    x = centers[labels] + std * torch.randn(n, 2, generator=generator)
    return (x, labels) if return_labels else x


@dataclass
class ModeCoverage:
    """Result of :func:`mode_coverage`.

    Attributes:
        modes_captured: number of modes with at least ``min_fraction`` of the samples as
            high-quality samples.
        n_modes: K.
        high_quality_fraction: fraction of samples within ``n_std`` sigma of their nearest mode.
        kl_to_uniform: KL(h || uniform) of the histogram of high-quality samples over modes
            (nats; ``nan`` when there is no high-quality sample).
        counts: (K,) number of high-quality samples per mode.
        label_accuracy: for conditional samples, fraction of high-quality samples that fall
            on the mode their label asked for (``None`` without labels).
    """

    modes_captured: int
    n_modes: int
    high_quality_fraction: float
    kl_to_uniform: float
    counts: Tensor
    label_accuracy: float | None = None

    def as_dict(self) -> dict[str, float]:
        out = {"modes_captured": float(self.modes_captured), "high_quality_fraction": self.high_quality_fraction,
               "kl_to_uniform": self.kl_to_uniform}
        if self.label_accuracy is not None:
            out["label_accuracy"] = self.label_accuracy
        return out


def mode_coverage(samples: Tensor, centers: Tensor, std: float, *, n_std: float = 3.0,
                  min_fraction: float = 0.008, labels: Tensor | None = None) -> ModeCoverage:
    """Count the modes a sample set captures, and the fraction of high-quality samples.

    Args:
        samples: (N, 2) generated points (N >= 1).
        centers: (K, 2) mode centres, e.g. :func:`ring_centers`.
        std: sigma of each mode; a sample is high quality within ``n_std * std`` of its nearest centre.
        min_fraction: share of the N samples a mode needs (as high-quality samples) to count as
            captured; default 0.008 (20 of 2,500, as in PacGAN).
        labels: (N,) requested mode of each sample, for conditional generators.
    """
    if samples.ndim != 2 or samples.shape[1] != centers.shape[-1]:
        raise ValueError(f"samples must have shape (N, {centers.shape[-1]}), got {tuple(samples.shape)}")
    if centers.ndim != 2:
        raise ValueError(f"centers must have shape (K, D), got {tuple(centers.shape)}")
    if samples.shape[0] == 0:
        raise ValueError("samples is empty; need at least one sample")
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    if not torch.isfinite(samples).all():
        raise ValueError("samples contain NaN or inf (did training diverge?)")
    n, k = samples.shape[0], centers.shape[0]
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
    dist = torch.cdist(samples.double(), centers.double())  # (N, K)
    nearest_dist, nearest = dist.min(dim=1)
    good = nearest_dist <= n_std * std
    counts = torch.bincount(nearest[good], minlength=k)
    captured = int((counts >= min_fraction * n).sum())
    if good.any():
        h = counts.double() / counts.sum()
        kl = float(kl_divergence(h, torch.full_like(h, 1.0 / k)))
    else:
        kl = float("nan")
    accuracy = None
    if labels is not None:
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},) to match samples, got {tuple(labels.shape)}")
        accuracy = float((nearest[good] == labels[good]).double().mean()) if good.any() else 0.0
    return ModeCoverage(captured, k, float(good.double().mean()), kl, counts, accuracy)
