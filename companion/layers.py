r"""Small building blocks shared by the models: the multilayer perceptron.

An MLP with sizes :math:`(n_0, n_1, \dots, n_L)` is

.. math::

    h_0 = x, \qquad h_\ell = \sigma(W_\ell h_{\ell-1} + b_\ell)\ (\ell < L), \qquad
    y = W_L h_{L-1} + b_L,

with the activation :math:`\sigma` after every layer but the last (and after the last too
with ``last_activation=True``). The GAN chapter's networks use the leaky ReLU, the VAE
chapter's the SiLU or the ReLU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

__all__ = ["ACTIVATIONS", "mlp"]

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
