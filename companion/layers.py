r"""Small building blocks shared by the models: the multilayer perceptron, and the TransE score.

An MLP with sizes :math:`(n_0, n_1, \dots, n_L)` is

.. math::

    h_0 = x, \qquad h_\ell = \sigma(W_\ell h_{\ell-1} + b_\ell)\ (\ell < L), \qquad
    y = W_L h_{L-1} + b_L,

with the activation :math:`\sigma` after every layer but the last (and after the last too
with ``last_activation=True``). The GAN chapter's networks use the leaky ReLU, the VAE
chapter's the SiLU or the ReLU.

The TransE score of a knowledge-graph triple (page "Representation learning",
:cite:`bordes2013translating`) is :math:`-\lVert e_{\text{head}} + r - e_{\text{tail}} \rVert_2`
(:func:`transe_score`): a relation is a translation of the embedding space.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from companion.checks import verdict

__all__ = ["ACTIVATIONS", "mlp", "transe_score", "check_transe_scores"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
}


def mlp(sizes: Sequence[int], activation: str = "relu", *, last_activation: bool = False) -> nn.Sequential:
    """``nn.Sequential`` of ``Linear(sizes[i], sizes[i + 1])`` layers with ``activation`` between them.

    Args:
        sizes: widths :math:`(n_0, \\dots, n_L)`, at least two, each >= 1.
        activation: a name of :data:`ACTIVATIONS` (``"leaky_relu"`` has slope 0.2).
        last_activation: also apply the activation after the last layer.

    Raises:
        ValueError: an unknown activation, fewer than two sizes, or a size below 1.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must be at least two widths, each >= 1, got {sizes}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def transe_score(head: Tensor, relation: Tensor, tail: Tensor) -> Tensor:
    """TransE score ``-||head + relation - tail||``; ``(..., d)`` embeddings broadcast, result ``(...)``."""
    return -torch.linalg.vector_norm(head + relation - tail, dim=-1)


# The embeddings of the exercise on the representation-learning page.
_TRANSE_EXAMPLE = {"Paris": (1.0, 0.0), "France": (1.0, 2.0), "Berlin": (3.0, 0.0), "Germany": (3.0, 2.0),
                   "Spain": (5.0, 2.0), "capital_of": (0.0, 2.0)}


def check_transe_scores(scores: dict[str, float], head: str = "Berlin", relation: str = "capital_of",
                        candidates: tuple[str, ...] = ("France", "Germany", "Spain")) -> bool:
    """Exercise checker: ``{tail: score}`` of the triples (head, relation, tail) for the candidate
    tails, with the 2-D embeddings of the exercise, computed by :func:`transe_score` (tolerance 1e-6)."""
    if not isinstance(scores, dict) or set(scores) != set(candidates):
        got = sorted(scores) if isinstance(scores, dict) else type(scores).__name__
        raise ValueError(f"scores must be a dict with the keys {sorted(candidates)}, got {got}")
    e = {name: torch.tensor(v, dtype=torch.float64) for name, v in _TRANSE_EXAMPLE.items()}
    truth = {t: transe_score(e[head], e[relation], e[t]).item() + 0.0 for t in candidates}  # + 0.0: no "-0"
    wrong = [f"{t}: you gave {float(scores[t]):.4g}, the score is {v:.4g}" for t, v in truth.items()
             if not abs(float(scores[t]) - v) <= 1e-6]
    ranking = " > ".join(f"{t} ({v:g})" for t, v in sorted(truth.items(), key=lambda kv: -kv[1]))
    return verdict(not wrong, "; ".join(wrong) + " (the score is minus the distance from head + r to the tail)"
                   if wrong else f"({head}, {relation}, ?): {ranking}")
