r"""Attention (chapter "Attention and the Transformer").

Scaled dot-product attention :cite:`vaswani2017attention`:

.. math::

    \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}}\right) V,

a weighted sum :math:`y_t = \sum_s \alpha_{ts} v_s` whose weights
:math:`\alpha_{ts} = \operatorname{softmax}_s(q_t \cdot k_s / \sqrt{d_k})` sum to 1 over the keys.
Dividing by :math:`\sqrt{d_k}` keeps the scores at unit variance: for independent components
with mean 0 and variance 1, :math:`\operatorname{Var}(q \cdot k) = d_k`.

Multi-head attention projects the inputs once per head and concatenates:

.. math::

    \mathrm{head}_i = \operatorname{Attention}(Q W_i^Q, K W_i^K, V W_i^V), \qquad
    \operatorname{MultiHead}(Q, K, V) = \operatorname{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_h) W^O.

Masks follow :func:`torch.nn.functional.scaled_dot_product_attention`: a **bool** tensor,
**True where attention is allowed**, broadcastable to the scores' shape ``(..., T_q, T_k)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "scaled_dot_product_attention",
    "causal_mask",
    "padding_mask",
    "MultiHeadAttention",
]


def _check_mask(mask: Tensor, scores_shape: torch.Size) -> None:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a bool tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must have dtype torch.bool (True = may attend), got {mask.dtype}")
    try:
        shape = torch.broadcast_shapes(mask.shape, scores_shape)
    except RuntimeError:
        shape = None
    if shape != scores_shape:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but scores have shape {tuple(scores_shape)}; "
            "the mask must broadcast to (..., T_q, T_k)"
        )


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ValueError(f"q, k, v need at least 2 dims (..., T, d); got {q.ndim}, {k.ndim}, {v.ndim}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q has d_k = {q.shape[-1]} but k has d_k = {k.shape[-1]}; they must match")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k has T_k = {k.shape[-2]} positions but v has {v.shape[-2]}; they must match")


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                                 dropout_p: float = 0.0, training: bool = False) -> tuple[Tensor, Tensor]:
    """Explicit scaled dot-product attention, returning the weights so they can be plotted.

    Args:
        q: (..., T_q, d_k) queries.
        k: (..., T_k, d_k) keys.
        v: (..., T_k, d_v) values.
        mask: bool, broadcastable to (..., T_q, T_k); True where attention is allowed.
        dropout_p: dropout on the weights (only when ``training``).

    Returns:
        ``(output, weights)``: output (..., T_q, d_v); weights (..., T_q, T_k), each row a
        probability distribution over the keys.

    Raises:
        ValueError: mismatched shapes, or a query row whose every key is masked (its
            softmax would be 0/0 = NaN).
        TypeError: a mask that is not a bool tensor.
    """
    _check_qkv(q, k, v)
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, T_k)
    if mask is not None:
        _check_mask(mask, scores.shape)
        if not mask.any(-1).all():
            raise ValueError("a query row has every key masked; its attention weights would be NaN")
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    if dropout_p > 0.0 and training:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights


def causal_mask(T: int, device: torch.device | str | None = None) -> Tensor:
    """(T, T) bool mask, True on and below the diagonal: position t sees positions <= t."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def padding_mask(lengths: Tensor, T: int) -> Tensor:
    """Key-padding mask from sequence lengths.

    Args:
        lengths: (B,) number of real (non-padding) tokens in each sequence, each in [1, T].
        T: padded length.

    Returns:
        (B, 1, 1, T) bool, True for real keys: broadcasts over heads and query positions
        against scores of shape (B, H, T_q, T).
    """
    lengths = torch.as_tensor(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D (B,), got shape {tuple(lengths.shape)}")
    if (lengths < 1).any() or (lengths > T).any():
        raise ValueError(f"lengths must lie in [1, {T}], got {lengths.tolist()}")
    keep = torch.arange(T, device=lengths.device) < lengths[:, None]  # (B, T)
    return keep[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate Q, K, V projections and an output projection W^O.

    Args:
        d_model: model width; split into ``n_heads`` heads of ``d_k = d_model // n_heads``.
        n_heads: number of heads h.
        dropout: dropout on the attention weights.
        fast: use :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernel)
            when the weights are not requested; same output as the explicit path.

    Shapes:
        query (B, T_q, d_model), key and value (B, T_k, d_model);
        mask bool broadcastable to (B, n_heads, T_q, T_k), True = may attend.
        Returns ``(output (B, T_q, d_model), weights (B, n_heads, T_q, T_k) or None)``.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, fast: bool = True):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model = {d_model} is not divisible by n_heads = {n_heads}")
        self.d_model, self.n_heads, self.d_k = d_model, n_heads, d_model // n_heads
        self.w_q = nn.Linear(d_model, d_model)  # the h matrices W_i^Q side by side
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.fast = fast

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, T, d_model) -> (B, n_heads, T, d_k)."""
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.d_k).transpose(1, 2)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None,
                need_weights: bool = True) -> tuple[Tensor, Tensor | None]:
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.ndim != 3 or t.shape[-1] != self.d_model:
                raise ValueError(f"{name} must have shape (B, T, {self.d_model}), got {tuple(t.shape)}")
        if key.shape[:2] != value.shape[:2]:
            raise ValueError(f"key has shape {tuple(key.shape)} but value has {tuple(value.shape)}")
        q, k, v = self.split_heads(self.w_q(query)), self.split_heads(self.w_k(key)), self.split_heads(self.w_v(value))
        p = self.dropout if self.training else 0.0
        if self.fast and not need_weights:
            if mask is not None:
                _check_mask(mask, torch.Size((q.shape[0], self.n_heads, q.shape[2], k.shape[2])))
            out, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p), None
        else:
            out, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p, training=self.training)
        B, _, T_q, _ = out.shape
        out = out.transpose(1, 2).reshape(B, T_q, self.d_model)  # Concat(head_1, ..., head_h)
        return self.w_o(out), weights
