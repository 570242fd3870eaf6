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
from torch import Tensor, nn

from companion.train import train_loop

__all__ = ["GaussianClassifier", "LogisticRegression", "fit_logistic_regression", "accuracy"]


def _check_xy(x: Tensor, y: Tensor) -> None:
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
        _check_xy(x, y)
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


def fit_logistic_regression(x: Tensor, y: Tensor, n_classes: int, steps: int = 500, lr: float = 0.1,
                            progress: bool = False) -> LogisticRegression:
    """Maximum (conditional) likelihood: minimise the cross-entropy of p(y | x) with full-batch Adam."""
    _check_xy(x, y)
    model = LogisticRegression(x.shape[1], n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def step(i):
        loss = nn.functional.cross_entropy(model(x), y.long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"nll": loss}

    model.history = train_loop(step, steps, desc="logistic regression", progress=progress)
    return model


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
