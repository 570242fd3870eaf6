"""Runs of the book's models as a library: reference images and the real-vs-real baseline (chapter "Capstone").

The command line (:mod:`companion.cli`) is a thin layer over this module.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from companion.data import load_mnist
from companion.metrics import image_metrics

__all__ = ["reference_images", "real_baseline"]


def reference_images(split: str, n: int | None = None, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` images and labels of an MNIST split, drawn at random (seeded) without replacement.

    Random, not the first ``n``: the official test set is ordered (its first 5,000 images come
    from a group of writers whose digits are cleaner than the last 5,000), so its first images are
    not a fair sample of it. With ``n`` = the size of the split (the default) this is the whole
    split, shuffled.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*offline fallback.*")
        x, y = load_mnist(split)
    n = x.shape[0] if n is None else int(n)
    if not 1 <= n <= x.shape[0]:
        raise ValueError(f"n must be in [1, {x.shape[0]}] for the {split} split, got {n}")
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def real_baseline(classifier: nn.Module, n: int | None = None, *, seed: int = 0) -> dict:
    """The metrics of real images, scored as if they were samples: what a perfect model of the data gets.

    FID: ``n`` random training images against the ``n`` random test images that models are scored
    against (:func:`reference_images` with the same ``seed``): the level a model that reproduced
    its training distribution exactly would reach at this sample size (two finite samples never
    score 0). IS, coverage and label accuracy: of those test images, which the classifier never
    saw (on its own training images it is over-confident).

    On the offline fallback split the training images (the first 8,000 official test images)
    mix two groups of writers and the test images (the last 2,000) come from one, so the
    training data itself is some distance from the test images and a model can land below this
    baseline. On full MNIST both splits mix the same groups.

    Args:
        n: images on each side (default: the size of the test split).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*offline fallback.*")
        n_test = load_mnist("test")[0].shape[0]
    n = n_test if n is None else int(n)
    x_ref, y_ref = reference_images("test", n, seed=seed)
    x_train, _ = reference_images("train", n, seed=seed)
    return image_metrics(x_ref, classifier, x_train, labels=y_ref)  # the FID is symmetric
