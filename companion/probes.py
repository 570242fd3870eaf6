r"""Linear probes: how much of a property a representation exposes (chapter "Representation learning").

A representation :math:`h = f(x) \in \mathbb R^d` is *good for* a property :math:`y` when a simple
model on top of it predicts :math:`y`. The standard measurement :cite:`alain2017understanding` is
a **linear probe**: freeze :math:`f`, fit a multinomial logistic regression

.. math::

    p(y = c \mid h) = \operatorname{softmax}(W \hat h + b)_c, \qquad
    \hat h = (h - \mu) / \sigma \;\; \text{(standardised with the training set's statistics)},

by minimising the mean cross-entropy plus :math:`\tfrac{\lambda}{2} \|W\|_F^2` on labelled
training examples (:func:`fit_linear_probe`, full-batch L-BFGS: the problem is convex, so the fit
does not depend on a seed), and report its accuracy on held-out examples
(:func:`probe_accuracy`). Only :math:`W, b` are learned; the representation never sees the
labels. :func:`label_efficiency` repeats the fit with few labels per class: a representation in
which the classes are already separated needs few.

Representations of text come from :func:`gpt_hidden_states` (the vector that the GPT's output
layer reads at each position, :math:`\operatorname{LN}(x_t^{(L)})`).

Shapes: features ``(N, d)``, labels ``(N,)`` (``torch.long``, classes ``0 .. C-1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.checks import verdict

__all__ = ["LinearProbe", "fit_linear_probe", "probe_accuracy", "label_efficiency", "few_per_class",
           "gpt_hidden_states", "check_probe"]


def _check(features: Tensor, labels: Tensor) -> None:
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, d) matrix, got shape {tuple(features.shape)}")
    if labels.shape != (features.shape[0],) or labels.dtype != torch.long:
        raise ValueError(f"labels must be a (N,) = ({features.shape[0]},) long tensor, "
                         f"got shape {tuple(labels.shape)} and dtype {labels.dtype}")
    if int(labels.min()) < 0:
        raise ValueError(f"labels must be classes 0 .. C-1, got {int(labels.min())}")


@dataclass
class LinearProbe:
    """A fitted probe: standardisation ``(mu, sigma)`` and the logistic regression ``(W, b)``."""

    mu: Tensor
    sigma: Tensor
    weight: Tensor
    bias: Tensor

    def logits(self, features: Tensor) -> Tensor:
        """``(N, d)`` -> ``(N, C)``."""
        if features.ndim != 2 or features.shape[1] != self.mu.numel():
            raise ValueError(f"features must be (N, {self.mu.numel()}), got {tuple(features.shape)}")
        h = (features.double() - self.mu) / self.sigma
        return h @ self.weight.T + self.bias

    def predict(self, features: Tensor) -> Tensor:
        """The most probable class of each row, ``(N,)``."""
        return self.logits(features).argmax(1)


def fit_linear_probe(features: Tensor, labels: Tensor, n_classes: int | None = None, weight_decay: float = 1e-3,
                     max_iter: int = 200) -> LinearProbe:
    r"""Fit :math:`\min_{W,b} \frac1N \sum_i -\log p(y_i \mid h_i) + \frac{\lambda}{2}\|W\|^2` (float64, L-BFGS).

    Args:
        features: ``(N, d)`` frozen representations of the training examples.
        labels: ``(N,)`` classes.
        n_classes: C (default: ``labels.max() + 1``).
        weight_decay: :math:`\lambda >= 0`; a little keeps the fit finite when the classes are
            separable.
        max_iter: L-BFGS iterations.
    """
    _check(features, labels)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    C = int(labels.max()) + 1 if n_classes is None else n_classes
    if C <= int(labels.max()):
        raise ValueError(f"n_classes = {n_classes} but the labels go up to {int(labels.max())}")
    x = features.detach().double()
    mu = x.mean(0)
    sigma = x.std(0, unbiased=False).clamp(min=1e-8)
    h = (x - mu) / sigma
    linear = nn.Linear(h.shape[1], C).double()
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(linear(h), labels) + 0.5 * weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LinearProbe(mu, sigma, linear.weight.detach(), linear.bias.detach())


def probe_accuracy(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                   **fit_kwargs) -> float:
    """Held-out accuracy of a linear probe fitted on the training features (see :func:`fit_linear_probe`)."""
    _check(test_features, test_labels)
    C = max(int(train_labels.max()), int(test_labels.max())) + 1
    probe = fit_linear_probe(train_features, train_labels, n_classes=C, **fit_kwargs)
    return float((probe.predict(test_features) == test_labels).double().mean())


def few_per_class(labels: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Indices of ``k`` examples of every class present in ``labels`` (drawn without replacement)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    picks = []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        if idx.numel() < k:
            raise ValueError(f"class {c} has {idx.numel()} examples, fewer than k = {k}")
        picks.append(idx[torch.randperm(idx.numel(), generator=generator)[:k]])
    return torch.cat(picks)


def label_efficiency(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                     per_class: list[int], repeats: int = 3, seed: int = 0, **fit_kwargs) -> dict[int, float]:
    """Mean held-out probe accuracy when only ``k`` labelled examples per class are available, for each k.

    Each k is drawn ``repeats`` times (seeded by ``seed``); the accuracies are averaged.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in per_class:
        accs = []
        for _ in range(repeats):
            idx = few_per_class(train_labels, k, g)
            accs.append(probe_accuracy(train_features[idx], train_labels[idx], test_features, test_labels,
                                       **fit_kwargs))
        out[k] = sum(accs) / len(accs)
    return out


@torch.no_grad()
def gpt_hidden_states(model: nn.Module, idx: Tensor) -> Tensor:
    r"""The vectors :math:`\operatorname{LN}(x_t^{(L)})` that a :class:`companion.gpt.GPT`'s output layer reads.

    ``idx: (B, T)`` token ids -> ``(B, T, n_embd)``, read with a forward hook on ``model.ln_f``.
    """
    if not hasattr(model, "ln_f"):
        raise ValueError("model must be a companion.gpt.GPT (it has no final LayerNorm ln_f)")
    seen = []
    handle = model.ln_f.register_forward_hook(lambda module, inputs, output: seen.append(output))
    was = model.training
    model.eval()
    try:
        model(idx)
    finally:
        handle.remove()
        model.train(was)
    return seen[0]


def check_probe(fn) -> bool:
    """Exercise checker: does ``fn(train_x, train_y, test_x, test_y) -> float`` fit a linear probe and return
    its held-out accuracy?

    Two synthetic cases with known answers: classes that differ only along a direction that is
    tiny in scale (a probe that does not standardise, or is not linear enough to use it, falls
    short), and pure noise (a probe that reports training accuracy, or peeks at the test labels,
    overshoots chance). Within 0.03 of :func:`probe_accuracy`.
    """
    g = torch.Generator().manual_seed(0)
    n, d = 1500, 10
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, d, generator=g) * 10
    x[:, 0] = 1e-3 * (y.double() * 3 + torch.randn(n, generator=g, dtype=torch.float64)).float()
    noise = torch.randn(n, 200, generator=g)
    cases = {"a small but informative feature": (x[:1000], y[:1000], x[1000:], y[1000:]),
             "pure noise (200 features, 1,000 training examples)": (noise[:1000], y[:1000], noise[1000:], y[1000:])}
    for name, (a, b, c, e) in cases.items():
        want = probe_accuracy(a, b, c, e)
        try:
            got = float(fn(a.clone(), b.clone(), c.clone(), e.clone()))
        except Exception as exc:  # a reader's bug: report it, do not crash the notebook
            return verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
        if not abs(got - want) <= 0.03:
            return verdict(False, f"{name}: you report accuracy {got:.3f}, a standardised linear probe reaches "
                                  f"{want:.3f} on the held-out examples")
    return verdict(True, "your probe's held-out accuracy matches on an informative and a pure-noise case")
