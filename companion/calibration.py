r"""Calibration of a classifier's probabilities: the reliability diagram and the expected calibration error.

A classifier is *calibrated* when its confidence means what it says: of all the inputs it
labels with confidence 0.8, 80% are right. For ``N`` predictions, probability vectors
:math:`p_i \in \Delta^{K-1}` with targets :math:`y_i`, the confidence is
:math:`\hat p_i = \max_c p_{ic}` and the prediction :math:`\hat y_i = \arg\max_c p_{ic}`.
Split [0, 1] into ``M`` equal-width bins :math:`I_m = \big(\frac{m-1}{M}, \frac mM\big]` (the
first also holds 0) and let :math:`B_m` be the samples whose confidence falls in :math:`I_m`.
Per bin,

.. math::

    \mathrm{acc}(B_m) = \frac1{|B_m|} \sum_{i \in B_m} \mathbf 1[\hat y_i = y_i], \qquad
    \mathrm{conf}(B_m) = \frac1{|B_m|} \sum_{i \in B_m} \hat p_i,

the reliability diagram plots :math:`\mathrm{acc}(B_m)` against :math:`\mathrm{conf}(B_m)` (a
calibrated model lies on the diagonal), and the expected calibration error is the gap averaged
over the samples :cite:`guo2017calibration`,

.. math::

    \mathrm{ECE} = \sum_{m=1}^M \frac{|B_m|}{N} \big|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)\big|.

ECE is 0 for a perfectly calibrated model only in the limit of many samples: with finite ``N``
each bin's accuracy is a noisy estimate, so ECE of a calibrated model is of order
:math:`\sqrt{M / N}`. It depends on ``M``, so report the number of bins with it. An
overconfident model (accuracy below confidence) and an underconfident one both raise it; the
diagram tells which. The figure is :func:`companion.plotting.plot_reliability_diagram`.
Used on the classifiers of the book, e.g. the MNIST classifier whose features and
probabilities score generated images (chapter "Capstone: MNIST end to end").

This module is pure: it receives tensors and loads nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["reliability_diagram", "expected_calibration_error"]


def _check_inputs(probs: Tensor, targets: Tensor, n_bins: int) -> tuple[Tensor, Tensor, torch.dtype]:
    """``probs`` as float64 ``(N, K)`` probabilities, ``targets`` as int64 ``(N,)``, and the dtype of ``probs``."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
    if not isinstance(probs, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(f"probs and targets must be torch.Tensors, got {type(probs).__name__} and "
                        f"{type(targets).__name__}")
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"probs must be a non-empty (N, K) tensor of class probabilities, got shape "
                         f"{tuple(probs.shape)}")
    if not probs.dtype.is_floating_point:
        raise TypeError(f"probs must be float probabilities, got dtype {probs.dtype}")
    if targets.shape != (probs.shape[0],):
        raise ValueError(f"targets must have shape ({probs.shape[0]},), one class index per row of probs "
                         f"{tuple(probs.shape)}, got {tuple(targets.shape)}")
    if targets.dtype.is_floating_point or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer class indices, got dtype {targets.dtype}")
    dtype = probs.dtype
    probs = probs.detach().to(device="cpu", dtype=torch.float64)
    targets = targets.detach().to(device="cpu", dtype=torch.long)
    if not bool(torch.isfinite(probs).all()) or float(probs.min()) < 0:
        raise ValueError("probs must be finite and >= 0; pass softmax outputs, not logits")
    sums = probs.sum(1)
    worst = int((sums - 1).abs().argmax())
    if abs(float(sums[worst]) - 1) > 1e-4:
        raise ValueError(f"each row of probs must sum to 1, but row {worst} sums to {float(sums[worst]):.6g}; "
                         "pass softmax outputs, not logits")
    k = probs.shape[1]
    if int(targets.min()) < 0 or int(targets.max()) >= k:
        raise ValueError(f"targets must be class indices in [0, {k}) for probs with K={k} columns, got range "
                         f"[{int(targets.min())}, {int(targets.max())}]")
    return probs, targets, dtype


def reliability_diagram(probs: Tensor, targets: Tensor, n_bins: int = 15) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per-bin mean confidence, accuracy and sample count of predictions ``probs`` for ``targets``.

    Bin ``m`` (0-based) holds the confidences in :math:`\big(\frac m{M}, \frac{m+1}M\big]`; a
    confidence on an edge belongs to the lower bin (the edges are rounded to the dtype of
    ``probs``, so a float32 or float64 0.7 counts as the edge 7/10).

    Args:
        probs: ``(N, K)`` class probabilities (rows >= 0, summing to 1).
        targets: ``(N,)`` integer class indices in ``[0, K)``.
        n_bins: the number of equal-width bins ``M`` over [0, 1].

    Returns:
        ``(confidence, accuracy, count)``, each ``(M,)``: :math:`\mathrm{conf}(B_m)`,
        :math:`\mathrm{acc}(B_m)` (float64; ``nan`` for an empty bin) and :math:`|B_m|` (int64).
    """
    probs, targets, dtype = _check_inputs(probs, targets, n_bins)
    confidence, prediction = probs.max(1)
    correct = (prediction == targets).double()
    # inner edges m / M rounded to the precision of probs, so 0.7 (float32 or float64) lands in (0.6, 0.7]
    edges = (torch.arange(1, n_bins, dtype=torch.float64) / n_bins).to(dtype).double()
    bins = torch.bucketize(confidence, edges, right=False)
    count = torch.bincount(bins, minlength=n_bins)
    conf_sum = torch.bincount(bins, weights=confidence, minlength=n_bins)
    acc_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    denominator = count.double().where(count > 0, torch.tensor(float("nan"), dtype=torch.float64))
    return conf_sum / denominator, acc_sum / denominator, count


def expected_calibration_error(probs: Tensor, targets: Tensor, n_bins: int = 15) -> float:
    r"""ECE :math:`= \sum_m \frac{|B_m|}{N} |\mathrm{acc}(B_m) - \mathrm{conf}(B_m)|` over ``n_bins`` equal-width bins.

    Args:
        probs: ``(N, K)`` class probabilities (rows >= 0, summing to 1).
        targets: ``(N,)`` integer class indices in ``[0, K)``.
        n_bins: the number of bins ``M`` (Guo et al. use 15).

    Returns:
        The ECE, in [0, 1].
    """
    confidence, accuracy, count = reliability_diagram(probs, targets, n_bins)
    full = count > 0
    weights = count[full].double() / count.sum()
    return float((weights * (accuracy[full] - confidence[full]).abs()).sum())
