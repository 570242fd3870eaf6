r"""Generative vs discriminative classifiers (chapter "Generative vs discriminative models").

A **generative** classifier models the joint distribution

.. math::

    p(x, y) = p(y)\, p(x \mid y), \qquad p(x \mid y = c) = \mathcal N(x; \mu_c, \Sigma_c),

and classifies with Bayes' rule, :math:`p(y \mid x) = p(x, y) / \sum_c p(x, c)`; because it
models :math:`p(x \mid y)` it can also *sample* new points :math:`x \sim p(x \mid y)`.
A **discriminative** classifier, logistic regression here, models only

.. math::

    p(y \mid x) = \operatorname{softmax}(W x + b)_y

and cannot generate anything.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.checks import verdict

__all__ = ["check_xy", "GaussianClassifier", "LogisticRegression", "accuracy", "MNISTClassifier",
           "check_generative"]


def check_xy(x: Tensor, y: Tensor) -> None:
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, D), got {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},) to match x, got {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32, torch.uint8):
        raise TypeError(f"y must hold integer class labels, got {y.dtype}")


class GaussianClassifier:
    """Class-conditional Gaussians with full covariances (quadratic discriminant analysis).

    Fitting is maximum likelihood in closed form: class frequencies for :math:`p(y)`,
    per-class sample means and covariances for :math:`p(x \\mid y)`.

    Args:
        n_classes: number of classes C.
        ridge: added to each covariance's diagonal, so a class with few points stays invertible.
    """

    def __init__(self, n_classes: int, ridge: float = 1e-6):
        self.n_classes, self.ridge = n_classes, ridge
        self.log_prior: Tensor | None = None  # (C,)
        self.means: Tensor | None = None  # (C, D)
        self.covs: Tensor | None = None  # (C, D, D)

    def fit(self, x: Tensor, y: Tensor) -> GaussianClassifier:
        """Maximum-likelihood fit on x: (N, D), y: (N,) labels in [0, C)."""
        check_xy(x, y)
        d = x.shape[1]
        counts = torch.bincount(y.long(), minlength=self.n_classes)
        if (counts < 2).any():
            raise ValueError(f"every class needs at least 2 points to estimate a covariance; counts {counts.tolist()}")
        if len(counts) > self.n_classes:
            raise ValueError(f"labels go up to {len(counts) - 1} but n_classes = {self.n_classes}")
        self.log_prior = (counts.float() / counts.sum()).log()
        self.means = torch.stack([x[y == c].mean(0) for c in range(self.n_classes)])
        eye = torch.eye(d, dtype=x.dtype)
        self.covs = torch.stack(
            [torch.cov(x[y == c].T, correction=0) + self.ridge * eye for c in range(self.n_classes)]
        )
        return self

    def _dists(self) -> torch.distributions.MultivariateNormal:
        if self.means is None:
            raise RuntimeError("call fit() first")
        return torch.distributions.MultivariateNormal(self.means, covariance_matrix=self.covs)

    def log_joint(self, x: Tensor) -> Tensor:
        """log p(x, y=c) for every class: (N, D) -> (N, C)."""
        return self._dists().log_prob(x[:, None, :]) + self.log_prior

    def predict_proba(self, x: Tensor) -> Tensor:
        """p(y | x) by Bayes' rule: (N, D) -> (N, C)."""
        return self.log_joint(x).softmax(-1)

    def log_likelihood(self, x: Tensor) -> Tensor:
        """log p(x) = log sum_c p(x, c): (N, D) -> (N,). A discriminative model has no such number."""
        return self.log_joint(x).logsumexp(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw n new labelled points: y ~ p(y), then x ~ p(x | y). Returns x (n, D), y (n,)."""
        y = torch.multinomial(self.log_prior.exp(), n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)  # (C, D, D)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=self.means.dtype)
        x = self.means[y] + (chol[y] @ eps[:, :, None])[:, :, 0]
        return x, y


class LogisticRegression(nn.Module):
    """Multinomial logistic regression, p(y | x) = softmax(W x + b): (N, D) -> logits (N, C)."""

    def __init__(self, n_features: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)

    def predict_proba(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self(x).softmax(-1)


def accuracy(proba: Tensor, y: Tensor) -> float:
    """Fraction of argmax predictions equal to the labels."""
    if proba.shape[0] != y.shape[0]:
        raise ValueError(f"{proba.shape[0]} predictions but {y.shape[0]} labels")
    return (proba.argmax(-1) == y).float().mean().item()


def two_moons_and_blob(n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """A toy 2-D dataset: class 0 is a curved 'moon', class 1 a Gaussian blob beside it.

    The moon is not Gaussian, so the generative classifier's assumption is wrong for it: the
    chapter shows what that costs (and what the generative model still offers).
    """
    n0 = n // 2
    t = torch.rand(n0, generator=generator) * math.pi
    moon = torch.stack([torch.cos(t), torch.sin(t)], 1) * 1.5 + 0.15 * torch.randn(n0, 2, generator=generator)
    blob = torch.tensor([1.2, -0.4]) + 0.45 * torch.randn(n - n0, 2, generator=generator)
    x = torch.cat([moon, blob])
    y = torch.cat([torch.zeros(n0, dtype=torch.long), torch.ones(n - n0, dtype=torch.long)])
    return x, y


__all__.append("two_moons_and_blob")


class MNISTClassifier(nn.Module):
    r"""The small CNN whose features and probabilities the image metrics use.

    ``x: (N, 1, 28, 28)`` in [0, 1] -> standardise with MNIST's pixel mean 0.1307 and standard
    deviation 0.3081 -> conv 4x4 stride 2 (``channels[0]``, 14x14) -> ReLU -> conv 4x4 stride 2
    (``channels[1]``, 7x7) -> ReLU -> linear to ``hidden`` -> ReLU = the features
    :math:`\phi(x)` -> dropout -> linear to 10 logits.

    Args:
        channels: widths of the two convolutions.
        hidden: feature dimension (128).
        dropout: dropout probability before the last layer (training only).
    """

    MEAN, STD = 0.1307, 0.3081

    def __init__(self, channels: tuple[int, int] | list[int] = (16, 32), hidden: int = 128, dropout: float = 0.25,
                 n_classes: int = 10):
        super().__init__()
        if len(channels) != 2 or min(channels) < 1:
            raise ValueError(f"channels must be two positive widths, got {list(channels)}")
        if hidden < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"need hidden >= 1 and 0 <= dropout < 1, got {hidden}, {dropout}")
        c1, c2 = (int(c) for c in channels)
        self.conv1 = nn.Conv2d(1, c1, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 4, stride=2, padding=1)
        self.fc = nn.Linear(c2 * 7 * 7, hidden)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_classes)

    def features(self, x: Tensor) -> Tensor:
        """``x: (N, 1, 28, 28)`` -> penultimate features ``(N, hidden)``."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"MNISTClassifier expects x of shape (N, 1, 28, 28), got {tuple(x.shape)}")
        h = (x - self.MEAN) / self.STD
        h = F.relu(self.conv1(h))
        h = F.relu(self.conv2(h))
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """``x: (N, 1, 28, 28)`` -> logits ``(N, 10)``."""
        return self.head(self.dropout(self.features(x)))


# What each model of the history page defines (the book's sense of "generative": a distribution
# over data that one can sample from), with the reason the checker gives back.
_GENERATIVE = {
    "AlexNet": (False, "a classifier: it models p(y | x) only, nothing to sample images from"),
    "word2vec": (False, "it predicts context words to learn vectors; used as a representation, not sampled"),
    "VAE": (True, "sample z ~ p(z) and decode: a distribution over data"),
    "GPT-2": (True, "sample one token at a time from p(x_t | x_<t): a distribution over whole texts"),
    "BERT": (False, "it predicts masked tokens from both sides; the conditionals make no distribution over "
                    "whole texts to sample left to right"),
}


def check_generative(answers: dict[str, bool]) -> bool:
    """Exercise checker (page "A short history"): ``{model name: is it generative?}`` for AlexNet,
    word2vec, VAE, GPT-2 and BERT, where generative means that the model defines a distribution
    over data that one can sample from. Prints the reason for each wrong answer."""
    if not isinstance(answers, dict) or set(answers) != set(_GENERATIVE):
        got = sorted(answers) if isinstance(answers, dict) else type(answers).__name__
        raise ValueError(f"answers must be a dict with exactly the keys {sorted(_GENERATIVE)}, got {got}")
    wrong = [f"{name} is {'' if truth else 'not '}generative: {reason}"
             for name, (truth, reason) in _GENERATIVE.items() if bool(answers[name]) != truth]
    return verdict(not wrong, "; ".join(wrong) if wrong else "generative: VAE and GPT-2; not: AlexNet, word2vec, BERT")
