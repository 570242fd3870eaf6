r"""Attention (chapter "Attention and the Transformer", notebooks ``02_1`` and ``02_3``).

Attention is a learned weighted sum :math:`y = \sum_i \alpha_i x_i` with weights that depend
on the data. Scaled dot-product attention :cite:`vaswani2017attention`:

.. math::

    \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}}\right) V,

a weighted sum :math:`y_t = \sum_s \alpha_{ts} v_s` whose weights
:math:`\alpha_{ts} = \operatorname{softmax}_s(q_t \cdot k_s / \sqrt{d_k})` sum to 1 over the keys.
Dividing by :math:`\sqrt{d_k}` keeps the scores at unit variance: for independent components
with mean 0 and variance 1, :math:`\operatorname{Var}(q \cdot k) = d_k`.

Multi-head attention projects the inputs once per head and concatenates:

.. math::

    \mathrm{head}_i = \operatorname{Attention}(Q W_i^Q, K W_i^K, V W_i^V), \qquad
    \operatorname{MultiHead}(Q, K, V) = \operatorname{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_h) W^O,

with :math:`W_i^Q, W_i^K \in \mathbb R^{d_{model} \times d_k}`, :math:`W_i^V \in \mathbb R^{d_{model} \times d_v}`,
:math:`W^O \in \mathbb R^{h d_v \times d_{model}}` and :math:`d_k = d_v = d_{model} / h`.

Masks follow :func:`torch.nn.functional.scaled_dot_product_attention`: a **bool** tensor,
**True where attention is allowed**, broadcastable to the scores' shape ``(..., T_q, T_k)``.
A query row whose every key is masked has no defined softmax (0/0). The explicit path raises a
``ValueError`` for it rather than return NaN; the fast path follows torch's kernel and returns a
zero output row (no NaN), without reading the mask's values.

Two paths compute the same function:

* :func:`scaled_dot_product_attention`: the formula, step by step; returns the weights for plots.
* :func:`fused_attention`: the same checks, then torch's fused kernel, which never stores the
  ``(T_q, T_k)`` weight matrix when it can avoid it (faster, less memory); returns the output only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.checks import verdict

__all__ = [
    "scaled_dot_product_attention",
    "fused_attention",
    "causal_mask",
    "padding_mask",
    "MultiHeadAttention",
    "check_causal_mask",
    "check_attention",
    "check_mha_parameter_count",
    "check_score_variance",
    "check_attention_weight_bytes",
]


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether ``shape`` broadcasts to exactly ``target`` (a cheap ``torch.broadcast_shapes`` check)."""
    if len(shape) > len(target):
        return False
    return all(s == t or s == 1 for s, t in zip(reversed(shape), reversed(target), strict=False))


def _check_mask(mask: Tensor, scores_shape: tuple[int, ...], check_rows: bool = True) -> None:
    """Raise unless ``mask`` is a bool tensor broadcastable to ``scores_shape``.

    With ``check_rows``, also raise for a query row with no allowed key. That check reads the
    mask's values (a device synchronisation on a GPU), so the fast path skips it.
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a bool tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must have dtype torch.bool (True = may attend), got {mask.dtype}")
    if not _broadcasts_to(tuple(mask.shape), tuple(scores_shape)):
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but scores have shape {tuple(scores_shape)}; "
            "the mask must broadcast to (..., T_q, T_k)"
        )
    # Checked on the (usually small, un-broadcast) mask itself: cheap even for long sequences.
    # (sum + min is cheaper than any + all on CPU.)
    if check_rows and not bool(mask.sum(-1).min()):
        raise ValueError(
            "a query row has every key masked (mask.any(-1) is False somewhere); its attention "
            "weights would be 0/0 = NaN. Give every query at least one key it may attend to."
        )


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> tuple[int, ...]:
    """Validate shapes; return the shape of the scores ``(..., T_q, T_k)``."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim < 2:
            raise ValueError(f"{name} needs at least 2 dims (..., T, d), got shape {tuple(t.shape)}")
    qs, ks, vs = q.shape, k.shape, v.shape
    if qs[-1] != ks[-1]:
        raise ValueError(f"q has d_k = {qs[-1]} but k has d_k = {ks[-1]}; they must match")
    if ks[-2] != vs[-2]:
        raise ValueError(f"k has T_k = {ks[-2]} positions but v has {vs[-2]}; they must match")
    if ks[-2] == 0:
        raise ValueError("k and v have T_k = 0 positions: attention needs at least one key to attend to")
    if not (q.dtype.is_floating_point and q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share one floating-point dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    batch = qs[:-2]
    if not batch == ks[:-2] == vs[:-2]:  # the common case needs no broadcasting
        try:
            batch = torch.broadcast_shapes(qs[:-2], ks[:-2], vs[:-2])
        except RuntimeError:
            raise ValueError(
                f"batch dims of q {tuple(qs[:-2])}, k {tuple(ks[:-2])} and v {tuple(vs[:-2])} do not broadcast"
            ) from None
    return (*batch, qs[-2], ks[-2])


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                                 dropout_p: float = 0.0, training: bool = False) -> tuple[Tensor, Tensor]:
    """Explicit scaled dot-product attention, returning the weights so they can be plotted.

    Args:
        q: (..., T_q, d_k) queries.
        k: (..., T_k, d_k) keys.
        v: (..., T_k, d_v) values.
        mask: bool, broadcastable to (..., T_q, T_k); True where attention is allowed.
        dropout_p: dropout on the weights (only when ``training``).
        training: apply dropout.

    Returns:
        ``(output, weights)``: output (..., T_q, d_v); weights (..., T_q, T_k), each row a
        probability distribution over the keys. The weights are returned *before* dropout (so
        they stay distributions); with dropout in training the output uses the dropped-out weights.

    Raises:
        ValueError: mismatched shapes, a mask that does not broadcast, or a query row whose
            every key is masked (its softmax would be 0/0 = NaN).
        TypeError: a mask that is not a bool tensor.
    """
    scores_shape = _check_qkv(q, k, v)
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, T_k)
    if mask is not None:
        _check_mask(mask, scores_shape)
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0.0 and training else weights
    return dropped @ v, weights


def fused_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                    dropout_p: float = 0.0, is_causal: bool = False) -> Tensor:
    """The fast path: the shape and dtype checks of :func:`scaled_dot_product_attention`, then torch's fused kernel.

    Same arguments and the same output as the explicit function (without the weights), except
    for a query row whose every key is masked: the explicit path raises, this one returns a zero
    output row and zero gradients (torch's convention; no NaN). It does not inspect the mask's
    values, which would cost time and, on a GPU, a synchronisation.
    ``is_causal=True`` applies :func:`causal_mask` without building it (requires T_q == T_k);
    it may be combined with ``mask``.
    """
    scores_shape = _check_qkv(q, k, v)
    if is_causal:
        T_q, T_k = scores_shape[-2:]
        if T_q != T_k:
            raise ValueError(f"is_causal needs T_q == T_k, got T_q = {T_q}, T_k = {T_k}")
        if mask is not None:
            mask = mask & causal_mask(T_q, device=mask.device)
            is_causal = False
    if mask is not None:
        _check_mask(mask, scores_shape, check_rows=False)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)


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

    ``w_q`` holds the h matrices :math:`W_i^Q` side by side (column block i is head i), and
    likewise ``w_k`` and ``w_v``; ``w_o`` is :math:`W^O`. Parameters:
    :math:`4 d_{model}^2 + 4 d_{model}`, whatever the number of heads.

    Args:
        d_model: model width; split into ``n_heads`` heads of ``d_k = d_model // n_heads``.
        n_heads: number of heads h.
        dropout: dropout on the attention weights.
        fast: use :func:`fused_attention` (torch's fused kernel) when the weights are not
            requested; same output as the explicit path.

    Shapes:
        query (B, T_q, d_model), key and value (B, T_k, d_model);
        mask bool, True = may attend, either broadcastable to (B, n_heads, T_q, T_k)
        (e.g. (T_q, T_k) or (B, 1, 1, T_k)) or 3-D (B, T_q, T_k), which is applied to every head.
        Returns ``(output (B, T_q, d_model), weights (B, n_heads, T_q, T_k))``; weights is
        ``None`` when ``need_weights=False`` and the fast path ran.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, fast: bool = True):
        super().__init__()
        if n_heads < 1 or d_model % n_heads != 0:
            raise ValueError(f"d_model = {d_model} is not divisible by n_heads = {n_heads}")
        self.d_model, self.n_heads, self.d_k = d_model, n_heads, d_model // n_heads
        self.w_q = nn.Linear(d_model, d_model)  # the h matrices W_i^Q side by side
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.fast = fast

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, T, d_model) -> (B, n_heads, T, d_k): column block i of the projection is head i."""
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.d_k).transpose(1, 2)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None,
                need_weights: bool = True, *, is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``key``/``value``.

        Args:
            query: (B, T_q, d_model).
            key: (B, T_k, d_model).
            value: (B, T_k, d_model).
            mask: bool, True = may attend (see the class docstring for shapes).
            need_weights: return the (B, n_heads, T_q, T_k) weights (explicit path); with
                ``False`` and ``fast=True`` the fused kernel runs and the weights are ``None``.
            is_causal: add the causal mask (self-attention, T_q == T_k).
        """
        dtype = self.w_q.weight.dtype
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor of shape (B, T, {self.d_model}), "
                                f"got {type(t).__name__}")
            if t.ndim != 3 or t.shape[-1] != self.d_model:
                raise ValueError(f"{name} must have shape (B, T, {self.d_model}), got {tuple(t.shape)}")
            if t.dtype != dtype:
                raise TypeError(f"{name} has dtype {t.dtype} but the layer's weights are {dtype}: pass {dtype} "
                                f"inputs (e.g. x.to({dtype})) or convert the layer (e.g. .to({t.dtype}))")
        if key.shape[:2] != value.shape[:2]:
            raise ValueError(f"key has shape {tuple(key.shape)} but value has {tuple(value.shape)}")
        if query.shape[0] != key.shape[0]:
            raise ValueError(f"query has batch size {query.shape[0]} but key has {key.shape[0]}")
        if mask is not None and isinstance(mask, Tensor) and mask.ndim == 3:
            mask = mask.unsqueeze(1)  # (B, T_q, T_k) -> (B, 1, T_q, T_k): the same mask for every head
        q, k, v = self.split_heads(self.w_q(query)), self.split_heads(self.w_k(key)), self.split_heads(self.w_v(value))
        p = self.dropout if self.training else 0.0
        if self.fast and not need_weights:
            out, weights = fused_attention(q, k, v, mask, dropout_p=p, is_causal=is_causal), None
        else:
            if is_causal:
                if q.shape[2] != k.shape[2]:
                    raise ValueError(f"is_causal needs T_q == T_k, got {q.shape[2]} and {k.shape[2]}")
                causal = causal_mask(q.shape[2], device=q.device)
                mask = causal if mask is None else mask & causal
            out, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p, training=self.training)
        B, _, T_q, _ = out.shape
        out = out.transpose(1, 2).reshape(B, T_q, self.d_model)  # Concat(head_1, ..., head_h)
        return self.w_o(out), weights


# ----------------------------------------------------------------------------- exercise checkers


def check_causal_mask(fn: Callable[[int], Tensor], sizes: tuple[int, ...] = (1, 2, 5, 8)) -> bool:
    """Exercise checker: does ``fn(T)`` return the (T, T) bool causal mask (True = may attend)?

    Prints a verdict and returns ``True`` when every size matches :func:`causal_mask`.
    """
    for T in sizes:
        got = fn(T)
        if not isinstance(got, Tensor):
            return verdict(False, f"fn({T}) returned {type(got).__name__}, expected a torch.Tensor")
        if got.dtype != torch.bool:
            return verdict(False, f"fn({T}) has dtype {got.dtype}; a mask must be torch.bool (True = may attend)")
        if got.shape != (T, T):
            return verdict(False, f"fn({T}) has shape {tuple(got.shape)}, expected ({T}, {T})")
        ref = causal_mask(T)
        if not torch.equal(got, ref):
            i, j = (got != ref).nonzero()[0].tolist()
            verb = "may" if bool(got[i, j]) else "may not"
            return verdict(False, f"fn({T}): query {i} {verb} attend to key {j}; it should be the other way round")
    return verdict(True, f"causal mask correct for T in {sizes}")


def check_attention(fn: Callable[..., Tensor], seed: int = 0) -> bool:
    """Exercise checker: does ``fn(q, k, v, mask)`` compute softmax(q k^T / sqrt(d_k)) v?

    ``fn`` may return the output or ``(output, weights)``. Tested with and without a causal
    mask against :func:`torch.nn.functional.scaled_dot_product_attention`.
    """
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, 5, d, generator=g, dtype=torch.float64) for d in (4, 4, 6))
    for mask in (None, causal_mask(5)):
        got = fn(q, k, v, mask)
        got = got[0] if isinstance(got, tuple) else got
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if not isinstance(got, Tensor) or got.shape != ref.shape:
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            return verdict(False, f"output has shape {shape}, expected {tuple(ref.shape)}")
        if not torch.allclose(got, ref, atol=1e-8, rtol=1e-6):
            what = "without a mask" if mask is None else "with a causal mask"
            err = (got - ref).abs().max().item()
            hint = (" (did you divide by sqrt(d_k)?)" if mask is None
                    else " (masked scores must become -inf before softmax)")
            return verdict(False, f"wrong output {what}: max |error| = {err:.3g}{hint}")
    return verdict(True, "your attention matches torch's scaled_dot_product_attention, with and without a mask")


def check_mha_parameter_count(answer: int, d_model: int, n_heads: int, bias: bool = True) -> bool:
    """Exercise checker: the number of parameters of ``MultiHeadAttention(d_model, n_heads)``."""
    if d_model % n_heads:
        raise ValueError(f"d_model = {d_model} is not divisible by n_heads = {n_heads}")
    mha = MultiHeadAttention(d_model, n_heads)
    true = sum(p.numel() for name, p in mha.named_parameters() if bias or not name.endswith("bias"))
    if int(answer) == true:
        return verdict(True, f"{true:,} parameters for d_model = {d_model}, h = {n_heads}")
    return verdict(False, f"{int(answer):,} is not right for d_model = {d_model}, h = {n_heads}. "
                          "Count the four d_model x d_model projections and their biases; does h change them?")


def check_score_variance(fn: Callable[[int, float, float], float], seed: int = 0) -> bool:
    """Exercise checker: is ``fn(d_k, sigma_q, sigma_k)`` the variance of ``q . k``?

    ``q`` and ``k`` have independent components of mean 0 and standard deviations ``sigma_q`` and
    ``sigma_k``. The truth is measured on 40,000 simulated pairs (float64) for three settings; an
    answer within 5 % of the measurement passes (the sampling error is below 1 %).
    """
    g = torch.Generator().manual_seed(seed)
    for d_k, s_q, s_k in ((16, 2.0, 3.0), (64, 0.5, 1.5), (5, 1.0, 0.2)):
        try:
            got = float(fn(d_k, s_q, s_k))
        except Exception as exc:  # a reader's bug: report it, do not crash the notebook
            return verdict(False, f"fn({d_k}, {s_q}, {s_k}) raised {exc.__class__.__name__}: {exc}")
        q = s_q * torch.randn(40_000, d_k, generator=g, dtype=torch.float64)
        k = s_k * torch.randn(40_000, d_k, generator=g, dtype=torch.float64)
        measured = float((q * k).sum(-1).var())
        if not math.isfinite(got) or abs(got - measured) > 0.05 * measured:
            return verdict(False, f"d_k = {d_k}, sigma_q = {s_q}, sigma_k = {s_k}: you gave {got:.4g}, the simulated "
                                  f"variance is {measured:.4g} (each of the d_k products has variance ...?)")
    return verdict(True, "your variance matches simulation for three (d_k, sigma_q, sigma_k); divide the scores "
                         "by its square root")


def check_attention_weight_bytes(fn: Callable[[int], int]) -> bool:
    """Exercise checker: is ``fn(T)`` the memory, in bytes, of one head's float32 ``(T, T)`` attention weights?

    Measured on the weights that :func:`scaled_dot_product_attention` returns for one head and one
    sequence (T = 1, 7, 1024), then extrapolated as bytes per weight x T^2 to T = 8192 and 65536.
    """
    per_weight = None
    for T in (1, 7, 1024, 8192, 65536):
        if T <= 1024:
            q = torch.zeros(1, 1, T, 1)  # (B, H, T, d_k): one head, one sequence, float32
            weights = scaled_dot_product_attention(q, q, q)[1]
            truth = weights.numel() * weights.element_size()
            per_weight = weights.element_size()
        else:
            truth = per_weight * T * T
        try:
            got = fn(T)
        except Exception as exc:
            return verdict(False, f"fn({T}) raised {exc.__class__.__name__}: {exc}")
        if not isinstance(got, (int, float)) or got != truth:
            return verdict(False, f"fn({T}) = {got!r}, but the weights take {truth:,} bytes "
                                  "(how many weights, and how many bytes is one float32?)")
    return verdict(True, f"{per_weight} T^2 bytes: 4 MiB at T = 1024, 256 MiB at 8192, 16 GiB at 65536, per head "
                         "and per sequence")
