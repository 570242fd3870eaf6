r"""Clusters without labels: k-means (chapter "GAN training and variants", self-conditioned GANs).

k-means looks for :math:`K` centres :math:`c_1, \dots, c_K` that minimise the within-cluster sum of squares

.. math::

    W = \sum_{i=1}^{N} \min_k \lVert x_i - c_k \rVert^2 ,

by Lloyd's iterations: assign every point to its nearest centre, then move every centre to the mean of its
points; neither step can raise :math:`W`, so the iterations settle, in a local minimum that depends on the
start. The start is k-means++: the first centre is a random point, each next one a point drawn with
probability proportional to its squared distance to the nearest centre so far. SciPy's ``kmeans2`` runs both;
:func:`kmeans` fixes its settings and takes and returns tensors. :func:`cluster_shares` gives each cluster's
share of the data (what a self-conditioned model draws clusters with); :func:`cluster_purity` measures clusters
against labels they never saw.

Shapes: ``x: (N, ...)``, each example flattened to a vector; cluster ids ``(N,)`` int64 in ``[0, K)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["kmeans", "cluster_shares", "cluster_purity"]


def kmeans(x: Tensor, k: int, seed: int = 0, iterations: int = 50) -> Tensor:
    """The k-means cluster of every example of ``x (N, ...)`` (flattened): ``(N,)`` ids in ``[0, k)``.

    ``iterations`` Lloyd steps (SciPy's ``kmeans2``) from a k-means++ start drawn with ``seed``; the same
    seed gives the same clusters.
    """
    from scipy.cluster.vq import kmeans2

    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be an int in [1, {x.shape[0]}] (the number of examples), got {k!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    points = x.reshape(x.shape[0], -1).double().numpy()
    _, ids = kmeans2(points, k, iter=iterations, minit="++", seed=np.random.default_rng(seed))
    return torch.from_numpy(ids).long()


def cluster_shares(ids: Tensor, k: int) -> Tensor:
    """``(k,)`` float: the share of the examples in each cluster of ``ids (N,)`` (ids in ``[0, k)``); sums to 1."""
    if ids.ndim != 1 or ids.numel() == 0:
        raise ValueError(f"ids must have shape (N,) with N >= 1, got {tuple(ids.shape)}")
    if int(ids.min()) < 0 or int(ids.max()) >= k:
        raise ValueError(f"cluster ids must lie in [0, {k}), got [{int(ids.min())}, {int(ids.max())}]")
    counts = torch.bincount(ids.long(), minlength=k).float()
    return counts / counts.sum()


def cluster_purity(ids: Tensor, labels: Tensor) -> float:
    """The share of examples whose label is the commonest label of their cluster.

    1 when every cluster holds one class; the share of the largest class when the clusters ignore the
    labels (one cluster); always at least that.
    """
    if ids.shape != labels.shape or ids.ndim != 1:
        raise ValueError(f"ids and labels must both have shape (N,), got {tuple(ids.shape)} and {tuple(labels.shape)}")
    pairs = ids.long() * (int(labels.max()) + 1) + labels.long()
    counts = torch.bincount(pairs, minlength=(int(ids.max()) + 1) * (int(labels.max()) + 1))
    per_cluster = counts.reshape(int(ids.max()) + 1, int(labels.max()) + 1)
    return float(per_cluster.max(dim=1).values.sum()) / ids.numel()
