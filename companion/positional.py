r"""Positional encoding (chapter "Attention and the Transformer", notebook ``02_2``).

Self-attention is permutation-equivariant: without position information, shuffling the
input tokens shuffles the outputs the same way. A Transformer therefore adds a vector
:math:`PE(pos) \in \mathbb R^{d_{model}}` to the embedding of the token at position ``pos``.
The sinusoidal encoding of :cite:`vaswani2017attention` is

.. math::

    PE(pos, 2i) = \sin\!\left(\frac{pos}{10000^{2i/d_{model}}}\right), \qquad
    PE(pos, 2i+1) = \cos\!\left(\frac{pos}{10000^{2i/d_{model}}}\right),

i.e. pair i is a point on a circle turning at angular frequency
:math:`\omega_i = 10000^{-2i/d_{model}}`. Hence a shift by k positions is a fixed rotation of
every pair, independent of pos:

.. math::

    \begin{pmatrix} PE(pos+k, 2i) \\ PE(pos+k, 2i+1) \end{pmatrix} =
    \begin{pmatrix} \cos \omega_i k & \sin \omega_i k \\ -\sin \omega_i k & \cos \omega_i k \end{pmatrix}
    \begin{pmatrix} PE(pos, 2i) \\ PE(pos, 2i+1) \end{pmatrix},

so :math:`PE(pos + k) = M_k \, PE(pos)` with the block-diagonal :math:`M_k` of
:func:`pe_shift_matrix`.

Seed article ``003`` (section 4.3) prints a different formula, with a constant exponent
2/3, no dimension index and cases on pos. It is kept here, clearly named,
as :func:`seed003_wrong_positional_encoding`, only so the chapter can show why it fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from companion.checks import verdict

__all__ = [
    "sinusoidal_positional_encoding",
    "seed003_wrong_positional_encoding",
    "pe_frequencies",
    "pe_shift_matrix",
    "rotary_embedding",
    "count_collisions",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "check_pe_shift_matrix",
    "check_pe_dot",
    "check_pair_distance",
    "check_rotary_embedding",
]


def _check_sizes(n_positions: int, d_model: int) -> None:
    if not isinstance(n_positions, int) or n_positions < 1:
        raise ValueError(f"n_positions must be a positive int, got {n_positions!r}")
    if not isinstance(d_model, int) or d_model < 1:
        raise ValueError(f"d_model must be a positive int, got {d_model!r}")


def pe_frequencies(d_model: int, base: float = 10000.0) -> Tensor:
    r"""Angular frequencies :math:`\omega_i = base^{-2i/d_{model}}` of the ceil(d_model / 2) pairs, float64."""
    i = torch.arange(0, (d_model + 1) // 2, dtype=torch.float64)
    return base ** (-2.0 * i / d_model)


def sinusoidal_positional_encoding(n_positions: int, d_model: int, base: float = 10000.0,
                                   dtype: torch.dtype = torch.float32) -> Tensor:
    """The sinusoidal table of :cite:`vaswani2017attention`.

    ``PE[pos, 2i] = sin(pos / base^(2i/d_model))`` and ``PE[pos, 2i+1] = cos(pos / base^(2i/d_model))``.
    Computed in float64, then cast to ``dtype``. For odd ``d_model`` the last column is a sine.

    Returns:
        (n_positions, d_model) tensor; row ``pos`` is :math:`PE(pos)`.
    """
    _check_sizes(n_positions, d_model)
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (n, 1)
    angles = pos * pe_frequencies(d_model, base)[None, :]  # (n, ceil(d/2))
    pe = torch.empty(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return pe.to(dtype)


def seed003_wrong_positional_encoding(n_positions: int, d_model: int, modulus: int = 3) -> Tensor:
    r"""WRONG: the formula printed in seed article 003, section 4.3, for the errata demonstration only.

    .. math::

        P(pos) = \begin{cases} \sin(pos / 10000^{2/3}) & pos \equiv 2 \\
                               \cos(pos / 10000^{2/3}) & pos \equiv 0 \\
                               0 & \text{otherwise} \end{cases}

    The article does not say modulo what; we read it as ``pos mod modulus`` with ``modulus = 3``
    (modulo 2, "pos ≡ 2" and "pos ≡ 0" would be the same case). The formula has no dimension
    index, so all ``d_model`` components get the same number. Use
    :func:`sinusoidal_positional_encoding` for the correct table.

    Returns:
        (n_positions, d_model) float32 tensor.
    """
    _check_sizes(n_positions, d_model)
    if modulus < 3:
        raise ValueError(f"modulus must be >= 3 for the three cases to be distinct, got {modulus}")
    pos = torch.arange(n_positions, dtype=torch.float64)
    angle = pos / 10000.0 ** (2.0 / 3.0)
    r = torch.remainder(pos, modulus)
    value = torch.where(r == 2, torch.sin(angle), torch.where(r == 0, torch.cos(angle), torch.zeros_like(angle)))
    return value[:, None].expand(n_positions, d_model).to(torch.float32).contiguous()


def pe_shift_matrix(k: int | float, d_model: int, base: float = 10000.0, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""The fixed linear map :math:`M_k` with :math:`PE(pos + k) = M_k\, PE(pos)` for every pos.

    Block diagonal: block i is the 2x2 rotation
    :math:`\begin{pmatrix} \cos \omega_i k & \sin \omega_i k \\ -\sin \omega_i k & \cos \omega_i k \end{pmatrix}`
    acting on columns (2i, 2i+1). For odd ``d_model`` the last (sine-only) column has no
    partner; then the identity holds only for the first ``d_model - 1`` components.

    Returns:
        (d_model, d_model) tensor; for a table ``pe`` with rows as positions,
        ``pe[pos + k] == pe[pos] @ M_k.T``.
    """
    if d_model < 1:
        raise ValueError(f"d_model must be >= 1, got {d_model}")
    omega = pe_frequencies(d_model, base)
    c, s = torch.cos(omega * k), torch.sin(omega * k)
    m = torch.zeros(d_model, d_model, dtype=torch.float64)
    for i in range(d_model // 2):
        a, b = 2 * i, 2 * i + 1
        m[a, a], m[a, b], m[b, a], m[b, b] = c[i], s[i], -s[i], c[i]
    if d_model % 2:
        m[-1, -1] = c[-1]  # sin(w(p+k)) is not a function of sin(wp) alone; documented above
    return m.to(dtype)


def rotary_embedding(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    r"""Rotary position embedding (RoPE, 旋转位置编码) of :cite:`su2024roformer`: rotate each pair of coordinates.

    The vector :math:`x \in \mathbb R^d` of the token at position :math:`m` (a query or a key of one head)
    becomes :math:`R_m x`, where :math:`R_m` turns the pair :math:`(x_{2i}, x_{2i+1})` by the angle
    :math:`m \omega_i`, :math:`\omega_i = base^{-2i/d}` (the frequencies of the sinusoidal encoding,
    :func:`pe_frequencies`); in complex numbers, :math:`x_{2i} + \mathrm i\, x_{2i+1}` is multiplied by
    :math:`e^{\mathrm i m \omega_i}`, and :math:`R_m = M_m^\top` for the shift matrix :math:`M_m` of
    :func:`pe_shift_matrix`. Rotations compose, :math:`R_m^\top R_n = R_{n - m}`, so a query at :math:`m`
    and a key at :math:`n` score

    .. math::

        \langle R_m q, R_n k \rangle = q^\top R_m^\top R_n k = \langle q, R_{n-m} k \rangle :

    the attention logit sees only the offset :math:`n - m`, and the norms are unchanged. Nothing is
    added to the token embeddings, and there is no parameter.

    Args:
        x: ``(..., T, d)`` with ``d`` even (e.g. ``(B, H, T, d_k)``).
        positions: ``(T,)`` the positions of the ``T`` rows (integers or floats).
        base: the frequency base.

    Returns:
        ``(..., T, d)``, the rotated vectors, in ``x``'s dtype.
    """
    if x.ndim < 2 or x.shape[-1] % 2:
        raise ValueError(f"x must have shape (..., T, d) with d even, got {tuple(x.shape)}")
    if positions.shape != (x.shape[-2],):
        raise ValueError(f"positions must have shape (T,) = ({x.shape[-2]},), got {tuple(positions.shape)}")
    d = x.shape[-1]
    omega = base ** (-torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)  # (d/2,)
    angle = positions.to(device=x.device, dtype=torch.float32)[:, None] * omega[None, :]  # (T, d/2)
    # the pair (x_2i, x_2i+1) as the complex number x_2i + i x_2i+1: turning it by m omega_i multiplies it by
    # exp(i m omega_i) (one complex product instead of four real ones), in float32
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    turned = pairs * torch.polar(torch.ones_like(angle), angle)
    return torch.view_as_real(turned).flatten(-2).to(x.dtype)


def count_collisions(pe: Tensor, atol: float = 1e-6) -> int:
    """Number of positions whose encoding equals (within ``atol``, max-norm) that of an earlier position.

    0 means every position gets a distinct vector; n - 1 means all rows are the same.
    """
    if pe.ndim != 2:
        raise ValueError(f"pe must be (n_positions, d_model), got shape {tuple(pe.shape)}")
    dist = torch.cdist(pe.double(), pe.double(), p=float("inf"))  # (n, n)
    earlier = torch.ones_like(dist, dtype=torch.bool).tril(-1)
    return int(((dist <= atol) & earlier).any(1).sum())


class _AddPositions(nn.Module):
    """Shared forward: ``x + table[:T]``, with a clear error past the end of the table."""

    max_len: int
    d_model: int

    def table(self) -> Tensor:  # (max_len, d_model)
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, d_model) -> x + PE[:T] (then dropout)."""
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected input of shape (B, T, {self.d_model}), got {tuple(x.shape)}")
        T = x.shape[1]
        if T > self.max_len:
            raise ValueError(
                f"sequence has {T} positions but the positional table has only max_len = {self.max_len}; "
                "build the model with a larger max_len"
            )
        return self.drop(x + self.table()[:T].to(x.dtype))


class SinusoidalPositionalEncoding(_AddPositions):
    """Adds the fixed sinusoidal table :func:`sinusoidal_positional_encoding` (no parameters).

    Args:
        d_model: model width.
        max_len: longest sequence accepted; longer inputs raise ``ValueError``.
        dropout: dropout after the addition, as in :cite:`vaswani2017attention`.
    """

    def __init__(self, d_model: int, max_len: int = 512, dropout: float = 0.0):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        # not persistent: the table is a function of (max_len, d_model), not a learned state
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model), persistent=False)
        self.drop = nn.Dropout(dropout)

    def table(self) -> Tensor:
        return self.pe


class LearnedPositionalEmbedding(_AddPositions):
    """Adds a learned vector per position (as in BERT and GPT-2): one ``nn.Embedding(max_len, d_model)``.

    Cannot represent positions it never saw in training, and has ``max_len * d_model`` parameters.

    Args:
        max_len: number of positions (rows of the table); longer inputs raise ``ValueError``.
        d_model: model width.
        dropout: dropout after the addition.
        init_std: standard deviation of the normal initialisation.
    """

    def __init__(self, max_len: int, d_model: int, dropout: float = 0.0, init_std: float = 0.02):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.embedding = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.embedding.weight, std=init_std)
        self.drop = nn.Dropout(dropout)

    def table(self) -> Tensor:
        return self.embedding.weight


def check_pe_shift_matrix(fn: Callable[[int, int], Tensor], d_model: int = 16, n_positions: int = 100) -> bool:
    """Exercise checker: does ``fn(k, d_model)`` return M_k with PE(pos + k) = M_k PE(pos) for every pos?"""
    pe = sinusoidal_positional_encoding(n_positions, d_model, dtype=torch.float64)
    for k in (0, 1, 3, 17):
        m = torch.as_tensor(fn(k, d_model), dtype=torch.float64)
        if m.shape != (d_model, d_model):
            return verdict(False, f"fn({k}, {d_model}) has shape {tuple(m.shape)}, expected ({d_model}, {d_model})")
        err = (pe[:-k or None] @ m.T - pe[k:]).abs().max().item()
        if not math.isfinite(err) or err > 1e-8:
            return verdict(False, f"with k = {k}: max |M_k PE(pos) - PE(pos + k)| = {err:.3g}. "
                                  "Check the sign of the sines and which column is the sine.")
    return verdict(True, f"PE(pos + k) = M_k PE(pos) for k in (0, 1, 3, 17) and all {n_positions - 17} "
                         "valid pos")


def check_pe_dot(fn: Callable[[int, int], float], n_positions: int = 200) -> bool:
    """Exercise checker: is ``fn(k, d_model)`` the dot product ``PE(pos) . PE(pos + k)``, for every pos?

    Compares with the dot products of rows of :func:`sinusoidal_positional_encoding` (float64) at
    all ``pos`` of a ``n_positions`` table, for several offsets and widths; tolerance 1e-6.
    """
    for d_model in (2, 8, 64):
        pe = sinusoidal_positional_encoding(n_positions, d_model, dtype=torch.float64)
        for k in (0, 1, 5, 44):
            dots = (pe[: n_positions - k] * pe[k:]).sum(-1)  # one value per pos
            try:
                got = float(fn(k, d_model))
            except Exception as exc:  # a reader's bug: report it, do not crash the notebook
                return verdict(False, f"fn({k}, {d_model}) raised {exc.__class__.__name__}: {exc}")
            err = (dots - got).abs().max().item()
            if not math.isfinite(got) or err > 1e-6:
                return verdict(False, f"k = {k}, d_model = {d_model}: you gave {got:.6g}, but PE(pos) . PE(pos + k) "
                                      f"= {dots[0].item():.6g} (at pos = 0). Each pair contributes cos(omega_i k).")
    return verdict(True, "your dot product matches the table for k in (0, 1, 5, 44) and d_model in (2, 8, 64), "
                         "at every pos: it depends on the offset only")


def check_pair_distance(fn: Callable[[int, int, int], float], n_positions: int = 200) -> bool:
    """Exercise checker: is ``fn(k, i, d_model)`` the distance between the points of pair ``i``
    (dimensions ``2i, 2i + 1``) of the encoding at positions ``pos`` and ``pos + k``, for every pos?

    Compared with the rows of :func:`sinusoidal_positional_encoding` (float64) for several offsets,
    pairs and widths; tolerance 1e-6.
    """
    for d_model, i, k in ((2, 0, 44), (2, 0, 1), (16, 3, 7), (64, 10, 100)):
        pe = sinusoidal_positional_encoding(n_positions, d_model, dtype=torch.float64)[:, 2 * i: 2 * i + 2]
        dist = (pe[k:] - pe[: n_positions - k]).norm(dim=-1)  # one distance per pos
        try:
            got = float(fn(k, i, d_model))
        except Exception as exc:  # a reader's bug: report it, do not crash the notebook
            return verdict(False, f"fn({k}, {i}, {d_model}) raised {exc.__class__.__name__}: {exc}")
        if not math.isfinite(got) or (dist - got).abs().max().item() > 1e-6:
            return verdict(False, f"k = {k}, pair i = {i}, d_model = {d_model}: you gave {got:.6g}, the distance "
                                  f"is {dist[0].item():.6g} at every pos (a chord of the unit circle, angle omega_i k)")
    return verdict(True, "your distance matches the table for four (k, i, d_model), at every pos: "
                         "2 |sin(omega_i k / 2)|")


def check_rotary_embedding(fn: Callable[[Tensor, Tensor], Tensor], d: int = 8) -> bool:
    """Exercise checker: does ``fn(x (T, d), positions (T,))`` rotate each pair (x_2i, x_2i+1) of row t by
    ``positions[t] * omega_i``, omega_i = 10000^(-2i/d), as :func:`rotary_embedding` does? Prints a verdict."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, d, generator=g, dtype=torch.float64)
    positions = torch.tensor([0, 1, 2, 5, 40, 300])
    want = rotary_embedding(x, positions)
    try:
        got = torch.as_tensor(fn(x.clone(), positions.clone()), dtype=torch.float64)
    except Exception as exc:  # the reader's code: report, do not crash
        return verdict(False, f"fn raised {type(exc).__name__}: {exc}")
    if got.shape != want.shape:
        return verdict(False, f"fn returned shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    err = (got - want).abs().max().item()
    if not math.isfinite(err) or err > 1e-5:
        hint = ("position 0 must leave x unchanged" if (got[0] - x[0]).abs().max() > 1e-5 else
                "each pair is (x_2i, x_2i+1), turned anticlockwise: (a cos - b sin, a sin + b cos)")
        return verdict(False, f"max |fn - R_m x| = {err:.3g}; {hint}")
    return verdict(True, f"every row is R_m x for the positions {positions.tolist()}")
