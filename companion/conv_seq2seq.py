r"""A causal dilated convolutional sequence model, the CNN contestant of chapter "RNN or Transformer?".

Article ``003`` (section 2) lists convolutional networks (卷积神经网络) beside RNNs, LSTMs and the
Transformer. This module gives them a fair entry in the chapter's race: a WaveNet/ByteNet-style
stack of *causal dilated* 1-D convolutions :cite:`oord2016wavenet,kalchbrenner2016neural` that
reads the source and the answer so far as one sequence and predicts the next token, with no
recurrence and no attention.

**Layout.** The source (right-padded with PAD, length :math:`S`) is moved to the right edge
(left-padded), and the decoder input follows it:

.. math::

    z = (\underbrace{\text{PAD} \dots \text{PAD}\; x_1 \dots x_n}_{S}\; \text{BOS}\; y_1 \dots y_{k}),

so that BOS always sits at position :math:`S` and the logits at positions :math:`S, S+1, \dots`
predict :math:`y_1, y_2, \dots`. Token and learned position embeddings are summed.

**Causal dilated convolution.** Layer :math:`\ell` (dilation :math:`d_\ell = 2^{\ell \bmod L}`,
kernel size :math:`k`) sees only the present and the past,

.. math::

    h^{(\ell)}_t = h^{(\ell-1)}_t + \operatorname{GLU}\Big(\sum_{j=0}^{k-1} W^{(\ell)}_j\,
        \operatorname{LN}(h^{(\ell-1)})_{t - j d_\ell}\Big),

with :math:`h_{t} = 0` for :math:`t < 0` (left padding). A stack whose dilations double from 1 to
:math:`2^{L-1}` sees the last

.. math::

    R = 1 + (k - 1) \sum_{\ell} d_\ell

positions (:func:`receptive_field`): it grows exponentially with depth, where an undilated
stack grows linearly. To copy :math:`x_{n-i}` into :math:`y_{i+1}` (reversal) the output at
position :math:`S + i` must look back :math:`2i + 1` positions, and to end with EOS after
:math:`n` digits the output at :math:`S + n` must see the position before :math:`x_1`, :math:`2n + 1`
back; so :math:`R \ge 2n + 2` is needed to reverse :math:`n` digits. A token outside the receptive
field cannot influence the output at all (tested).

Same interface as :class:`companion.transformer.Transformer` and
:class:`companion.seq2seq.LSTMSeq2Seq`: ``forward(src, tgt_in) -> logits`` and
``greedy_decode(src, max_len, bos_id, eos_id)``.

Shapes: ``src: (B, S)``, ``tgt_in: (B, T)``, logits ``(B, T, vocab)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.checks import verdict
from companion.seq2seq import PAD, VOCAB_SIZE
from companion.transformer import greedy_decode_by_prefix

__all__ = ["CausalConv1d", "receptive_field", "left_align", "ConvSeq2Seq", "check_layers_needed"]


def receptive_field(kernel_size: int, dilations: list[int]) -> int:
    r"""Positions a stack of causal convolutions sees: :math:`R = 1 + (k - 1) \sum_\ell d_\ell`."""
    if kernel_size < 1 or any(d < 1 for d in dilations):
        raise ValueError(f"kernel_size and dilations must be >= 1, got {kernel_size}, {dilations}")
    return 1 + (kernel_size - 1) * sum(dilations)


def left_align(src: Tensor, pad_id: int = PAD) -> Tensor:
    """Move each row's tokens to the right edge: ``(B, S)`` right-padded -> left-padded, order kept."""
    B, S = src.shape
    lengths = (src != pad_id).sum(1)
    shift = S - lengths  # each row moves right by its amount of padding
    idx = (torch.arange(S, device=src.device)[None, :] - shift[:, None])
    out = src.gather(1, idx.clamp(min=0))
    return torch.where(idx >= 0, out, torch.full_like(out, pad_id))


class CausalConv1d(nn.Module):
    """A 1-D convolution over ``(B, T, C)`` whose output at ``t`` depends on inputs ``<= t`` only."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int = 1):
        super().__init__()
        if kernel_size < 1 or dilation < 1:
            raise ValueError(f"kernel_size and dilation must be >= 1, got {kernel_size}, {dilation}")
        self.left = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, T, C_in)`` -> ``(B, T, C_out)``."""
        y = self.conv(F.pad(x.transpose(1, 2), (self.left, 0)))
        return y.transpose(1, 2)


class _Block(nn.Module):
    def __init__(self, d_model: int, kernel_size: int, dilation: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.conv = CausalConv1d(d_model, 2 * d_model, kernel_size, dilation)

    def forward(self, h: Tensor) -> Tensor:
        return h + F.glu(self.conv(self.norm(h)), dim=-1)


class ConvSeq2Seq(nn.Module):
    """Causal dilated CNN over ``(left-aligned source, BOS, answer so far)`` (see the module docstring).

    Args:
        vocab_size: tokens (source and target share the vocabulary, as in the digit tasks).
        max_src_len: ``S``, the padded source length.
        max_tgt_len: longest decoder input (BOS + answer), for the position embedding.
        d_model: channels.
        n_layers: convolution blocks; dilations cycle through ``1, 2, 4, ..., 2**(cycle - 1)``.
        kernel_size: ``k``.
        cycle: dilations double ``cycle`` times, then restart at 1 (default: all of ``n_layers``).
    """

    def __init__(self, vocab_size: int = VOCAB_SIZE, max_src_len: int = 12, max_tgt_len: int = 14,
                 d_model: int = 64, n_layers: int = 5, kernel_size: int = 2, cycle: int | None = None,
                 pad_id: int = PAD):
        super().__init__()
        if min(vocab_size, max_src_len, max_tgt_len, d_model, n_layers, kernel_size) < 1:
            raise ValueError("vocab_size, max_src_len, max_tgt_len, d_model, n_layers and kernel_size must be >= 1")
        cycle = n_layers if cycle is None else cycle
        if cycle < 1:
            raise ValueError(f"cycle must be >= 1, got {cycle}")
        self.pad_id, self.max_src_len = pad_id, max_src_len
        self.dilations = [2 ** (i % cycle) for i in range(n_layers)]
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(max_src_len + max_tgt_len, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, kernel_size, d) for d in self.dilations)
        self.norm = nn.LayerNorm(d_model)
        self.generator = nn.Linear(d_model, vocab_size)
        self.receptive_field = receptive_field(kernel_size, self.dilations)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits ``(B, T, vocab)`` for ``tgt_in: (B, T)`` (BOS first)."""
        B, S = src.shape
        if S != self.max_src_len:
            raise ValueError(f"src must have {self.max_src_len} positions (padded), got {S}")
        if bool(((src != self.pad_id).sum(1) == 0).any()):
            raise ValueError("a source sequence consists only of padding")
        z = torch.cat([left_align(src, self.pad_id), tgt_in], 1)
        if z.shape[1] > self.position.num_embeddings:
            raise ValueError(f"tgt_in has {tgt_in.shape[1]} positions, more than the "
                             f"{self.position.num_embeddings - S} the model was built for")
        h = self.embed(z) + self.position(torch.arange(z.shape[1], device=z.device))
        for block in self.blocks:
            h = block(h)
        return self.generator(self.norm(h[:, S:]))

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, max_len: int, bos_id: int, eos_id: int) -> Tensor:
        """``(B, L)`` generated tokens without BOS, ``L <= max_len``; PAD after each row's first EOS."""
        was = self.training
        self.eval()
        try:
            return greedy_decode_by_prefix(lambda ys: self(src, ys)[:, -1], src.shape[0], max_len, bos_id, eos_id,
                                           self.pad_id, src.device)
        finally:
            self.train(was)


def check_layers_needed(fn) -> bool:
    """Exercise checker: does ``fn(max_len, kernel_size) -> int`` return the fewest layers, with dilations
    ``1, 2, 4, ...``, whose receptive field covers the reversal of ``max_len`` digits (:math:`R \\ge 2n + 2`)?"""
    for max_len, k in [(12, 2), (7, 2), (8, 2), (12, 3), (1, 2), (100, 4)]:
        want = 1
        while receptive_field(k, [2**i for i in range(want)]) < 2 * max_len + 2:
            want += 1
        try:
            got = fn(max_len, k)
        except Exception as exc:  # a reader's bug: report it, do not crash the notebook
            return verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
        if got != want:
            return verdict(False, f"max_len = {max_len}, kernel_size = {k}: you gave {got!r}, the fewest layers "
                                  f"is {want} (receptive field {receptive_field(k, [2**i for i in range(want)])} "
                                  f">= 2 * {max_len} + 2)")
    return verdict(True, "your depths give the smallest receptive field that sees the whole reversal")
