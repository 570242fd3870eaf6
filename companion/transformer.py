r"""The Transformer encoder-decoder (chapter "Attention and the Transformer", notebook ``02_3``).

:cite:`vaswani2017attention`. Every sub-layer (self-attention, cross-attention, feed-forward)
is wrapped in a residual connection and layer normalisation (层归一化), in one of two orders:

.. math::

    \text{post-LN (2017 paper):}\quad x \leftarrow \operatorname{LayerNorm}(x + \operatorname{Sublayer}(x)),
    \qquad
    \text{pre-LN:}\quad x \leftarrow x + \operatorname{Sublayer}(\operatorname{LayerNorm}(x)).

The feed-forward sub-layer is :math:`\operatorname{FFN}(x) = \max(0, x W_1 + b_1) W_2 + b_2`.

* Encoder layer: self-attention, then FFN. The encoder maps T input tokens to **T vectors**,
  one per position (the memory), not to one fixed-length vector.
* Decoder layer: masked (causal) self-attention, cross-attention whose queries come from the
  decoder and whose keys and values are the encoder memory, then FFN.
* Embeddings are scaled by :math:`\sqrt{d_{model}}` and added to a positional encoding.

Training helpers of the chapter:

* label smoothing with weight :math:`\varepsilon`: the target distribution is
  :math:`(1 - \varepsilon)\,\mathbb 1[c = y] + \varepsilon / K` over K classes, so
  :math:`\mathcal L = (1 - \varepsilon)(-\log p_y) + \varepsilon \cdot \frac1K \sum_c (-\log p_c)`,
  the definition of ``torch.nn.functional.cross_entropy(..., label_smoothing=eps)``;
* the warm-up schedule :math:`\text{lrate} = d_{model}^{-0.5} \min(\text{step}^{-0.5},\,
  \text{step} \cdot \text{warmup}^{-1.5})` of the paper (:func:`noam_lr`), and a linear
  warm-up with cosine decay (:func:`companion.train.warmup_schedule`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.attention import MultiHeadAttention, causal_mask
from companion.checks import verdict
from companion.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding

__all__ = [
    "FeedForward",
    "EncoderLayer",
    "DecoderLayer",
    "Transformer",
    "greedy_decode_by_prefix",
    "label_smoothing_cross_entropy",
    "noam_lr",
    "grad_norms_by_layer",
    "check_label_smoothing",
    "check_label_smoothing_minimum",
]


class FeedForward(nn.Module):
    """Position-wise FFN(x) = max(0, x W_1 + b_1) W_2 + b_2; x: (B, T, d_model) -> (B, T, d_model)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(self.drop(F.relu(self.w_1(x))))


class _Residual(nn.Module):
    """One residual sub-layer with LayerNorm, post-LN ``LN(x + f(x))`` or pre-LN ``x + f(LN(x))``."""

    def __init__(self, d_model: int, dropout: float, norm_first: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: Tensor, f: Callable[[Tensor], Tensor]) -> Tensor:
        if self.norm_first:
            return x + self.drop(f(self.norm(x)))
        return self.norm(x + self.drop(f(x)))


class EncoderLayer(nn.Module):
    """Self-attention and feed-forward, each with a residual connection and LayerNorm.

    Args:
        d_model, n_heads, d_ff: sizes; dropout: on attention weights and sub-layer outputs.
        norm_first: pre-LN if True, post-LN (the 2017 paper) if False.

    ``forward(x (B, T, d_model), mask, need_weights) -> (x, weights (B, H, T, T) or None)``.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, norm_first: bool = False):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.sub_attn = _Residual(d_model, dropout, norm_first)
        self.sub_ff = _Residual(d_model, dropout, norm_first)

    def forward(self, x: Tensor, mask: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        weights = None

        def attend(h: Tensor) -> Tensor:
            nonlocal weights
            out, weights = self.self_attn(h, h, h, mask, need_weights=need_weights)
            return out

        x = self.sub_attn(x, attend)
        x = self.sub_ff(x, self.ff)
        return x, weights


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder memory, feed-forward; each residual + LayerNorm.

    ``forward(y (B, T_t, d), memory (B, T_s, d), tgt_mask, memory_mask, need_weights)
    -> (y, self_weights (B, H, T_t, T_t), cross_weights (B, H, T_t, T_s))`` (weights None unless requested).
    ``tgt_mask`` must contain the causal mask; ``memory_mask`` hides padded source positions.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, norm_first: bool = False):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.sub_self = _Residual(d_model, dropout, norm_first)
        self.sub_cross = _Residual(d_model, dropout, norm_first)
        self.sub_ff = _Residual(d_model, dropout, norm_first)

    def forward(self, y: Tensor, memory: Tensor, tgt_mask: Tensor | None = None, memory_mask: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
        w_self = w_cross = None

        def self_attend(h: Tensor) -> Tensor:
            nonlocal w_self
            out, w_self = self.self_attn(h, h, h, tgt_mask, need_weights=need_weights)
            return out

        def cross_attend(h: Tensor) -> Tensor:
            nonlocal w_cross
            out, w_cross = self.cross_attn(h, memory, memory, memory_mask, need_weights=need_weights)
            return out

        y = self.sub_self(y, self_attend)
        y = self.sub_cross(y, cross_attend)
        y = self.sub_ff(y, self.ff)
        return y, w_self, w_cross


class Transformer(nn.Module):
    """Encoder-decoder Transformer for sequence-to-sequence tasks.

    Args:
        src_vocab_size, tgt_vocab_size: vocabulary sizes (token ids in [0, size)).
        d_model, n_heads, d_ff: widths; ``d_model % n_heads == 0``.
        n_encoder_layers, n_decoder_layers: depths.
        dropout: dropout rate everywhere (attention weights, sub-layer outputs, embeddings).
        max_len: rows of the positional table; longer sequences raise ``ValueError``.
        norm_first: pre-LN (True) or post-LN as in the paper (False). Pre-LN adds a final
            LayerNorm after each stack.
        positional: ``"sinusoidal"`` or ``"learned"``.
        pad_id: the padding token id (masked as a key, ignored by the loss).

    Shapes: ``src`` (B, T_s) and ``tgt_in`` (B, T_t) long tensors; ``forward`` returns logits
    (B, T_t, tgt_vocab_size), where position t predicts token t + 1 of the target.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, d_model: int = 64, n_heads: int = 4,
                 n_encoder_layers: int = 2, n_decoder_layers: int = 2, d_ff: int = 256, dropout: float = 0.0,
                 max_len: int = 128, norm_first: bool = False, positional: str = "sinusoidal", pad_id: int = 0):
        super().__init__()
        if positional not in ("sinusoidal", "learned"):
            raise ValueError(f"positional must be 'sinusoidal' or 'learned', got {positional!r}")
        self.d_model, self.pad_id, self.norm_first = d_model, pad_id, norm_first
        self.src_embed = nn.Embedding(src_vocab_size, d_model)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, d_model)

        def pos() -> nn.Module:
            if positional == "sinusoidal":
                return SinusoidalPositionalEncoding(d_model, max_len, dropout)
            return LearnedPositionalEmbedding(max_len, d_model, dropout)

        self.src_pos, self.tgt_pos = pos(), pos()
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, dropout, norm_first) for _ in range(n_encoder_layers))
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(d_model, n_heads, d_ff, dropout, norm_first) for _ in range(n_decoder_layers))
        self.encoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.generator = nn.Linear(d_model, tgt_vocab_size)
        for name, p in self.named_parameters():
            if p.dim() > 1 and "pos" not in name:
                nn.init.xavier_uniform_(p)

    # ------------------------------------------------------------------ masks
    def src_mask(self, src: Tensor) -> Tensor:
        """(B, 1, 1, T_s) bool: True for real (non-pad) source tokens."""
        return (src != self.pad_id)[:, None, None, :]

    def tgt_mask(self, tgt_in: Tensor) -> Tensor:
        """(B, 1, T_t, T_t) bool: causal AND real target keys."""
        T = tgt_in.shape[1]
        return causal_mask(T, device=tgt_in.device) & (tgt_in != self.pad_id)[:, None, None, :]

    def _check_tokens(self, name: str, x: Tensor) -> None:
        if x.ndim != 2 or x.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise ValueError(f"{name} must be a (B, T) tensor of token ids, got {x.dtype} of shape {tuple(x.shape)}")

    # ------------------------------------------------------------------ the two stacks
    def encode(self, src: Tensor, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """src (B, T_s) -> (memory (B, T_s, d_model): one vector per position, [per-layer weights])."""
        self._check_tokens("src", src)
        mask = self.src_mask(src)
        if not bool(mask.any(-1).all()):
            raise ValueError("a source sequence consists only of padding; give each at least one token")
        x = self.src_pos(self.src_embed(src) * math.sqrt(self.d_model))
        weights = []
        for layer in self.encoder_layers:
            x, w = layer(x, mask, need_weights)
            weights.append(w)
        return self.encoder_norm(x), weights

    def decode(self, tgt_in: Tensor, memory: Tensor, src: Tensor,
               need_weights: bool = False) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """tgt_in (B, T_t), memory (B, T_s, d) -> (logits (B, T_t, V), [self weights], [cross weights])."""
        self._check_tokens("tgt_in", tgt_in)
        y = self.tgt_pos(self.tgt_embed(tgt_in) * math.sqrt(self.d_model))
        tgt_mask, memory_mask = self.tgt_mask(tgt_in), self.src_mask(src)
        w_self, w_cross = [], []
        for layer in self.decoder_layers:
            y, ws, wc = layer(y, memory, tgt_mask, memory_mask, need_weights)
            w_self.append(ws)
            w_cross.append(wc)
        return self.generator(self.decoder_norm(y)), w_self, w_cross

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits (B, T_t, tgt_vocab_size) for target inputs ``tgt_in`` (starting with BOS)."""
        memory, _ = self.encode(src)
        logits, _, _ = self.decode(tgt_in, memory, src)
        return logits

    @torch.no_grad()
    def attention_weights(self, src: Tensor, tgt_in: Tensor) -> dict[str, list[Tensor]]:
        """Every layer's and head's attention weights, for plots.

        Returns:
            A dict of lists, one tensor per layer: ``"encoder"`` (B, H, T_s, T_s),
            ``"decoder_self"`` (B, H, T_t, T_t) and ``"cross"`` (B, H, T_t, T_s).
        """
        memory, w_enc = self.encode(src, need_weights=True)
        _, w_self, w_cross = self.decode(tgt_in, memory, src, need_weights=True)
        return {"encoder": w_enc, "decoder_self": w_self, "cross": w_cross}

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, max_len: int, bos_id: int, eos_id: int) -> Tensor:
        """Greedy decoding: start from BOS, append the arg-max token until EOS or ``max_len`` tokens.

        Returns:
            (B, L) long tensor of generated tokens without BOS, L <= max_len; after a row's
            first EOS the row is filled with ``pad_id``.
        """
        was_training = self.training
        self.eval()
        try:
            memory, _ = self.encode(src)
            return greedy_decode_by_prefix(lambda ys: self.decode(ys, memory, src)[0][:, -1], src.shape[0], max_len,
                                           bos_id, eos_id, self.pad_id, src.device)
        finally:
            self.train(was_training)


@torch.no_grad()
def greedy_decode_by_prefix(next_logits, batch: int, max_len: int, bos_id: int, eos_id: int, pad_id: int,
                            device=None) -> Tensor:
    """The greedy loop of a model that re-reads the whole prefix at each step (this Transformer, the CNN of
    :mod:`companion.conv_seq2seq`): ``next_logits(ys: (B, t)) -> (B, V)`` logits of the token after ``ys``.

    Starts from BOS, appends the arg-max until every row has emitted EOS or ``max_len`` tokens are made;
    returns ``(B, L)`` tokens without BOS, ``pad_id`` after each row's first EOS. Raises
    ``FloatingPointError`` on non-finite logits (a diverged model).
    """
    ys = torch.full((batch, 1), bos_id, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    for _ in range(max_len):
        logits = next_logits(ys)
        if not bool(torch.isfinite(logits).all()):
            raise FloatingPointError(f"non-finite logits at decoding step {ys.shape[1]}: the model's "
                                     "weights or inputs hold NaN or inf (did training diverge?)")
        nxt = torch.where(done, torch.full_like(logits[:, 0], pad_id, dtype=torch.long), logits.argmax(-1))
        ys = torch.cat([ys, nxt[:, None]], dim=1)
        done |= nxt == eos_id
        if bool(done.all()):
            break
    return ys[:, 1:]


# ----------------------------------------------------------------------------- training helpers


def label_smoothing_cross_entropy(logits: Tensor, target: Tensor, epsilon: float = 0.1,
                                  ignore_index: int = -100) -> Tensor:
    r"""Cross-entropy against the smoothed target :math:`(1-\varepsilon)\,\mathbb 1[c=y] + \varepsilon/K`.

    :math:`\mathcal L = (1-\varepsilon)(-\log p_y) + \varepsilon \frac1K \sum_{c=1}^K (-\log p_c)`,
    averaged over the positions whose target is not ``ignore_index``. Equals
    ``F.cross_entropy(logits, target, label_smoothing=epsilon, ignore_index=ignore_index)``.

    Args:
        logits: (N, K) unnormalised scores.
        target: (N,) class indices in [0, K) or ``ignore_index``.
        epsilon: smoothing weight in [0, 1].
    """
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, K) and target (N,), got {tuple(logits.shape)} and {tuple(target.shape)}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
    keep = target != ignore_index
    if not bool(keep.any()):
        raise ValueError("every target is ignore_index; the mean loss is undefined")
    log_p = logits[keep].log_softmax(-1)
    y = target[keep]
    nll = -log_p.gather(1, y[:, None]).squeeze(1)
    uniform = -log_p.mean(-1)
    return ((1.0 - epsilon) * nll + epsilon * uniform).mean()


def noam_lr(step: int, d_model: int, warmup_steps: int, factor: float = 1.0) -> float:
    r"""The paper's schedule :math:`\text{factor} \cdot d_{model}^{-0.5} \min(s^{-0.5}, s \cdot w^{-1.5})`, step s >= 1.

    Rises linearly for ``warmup_steps`` steps, peaks at :math:`d_{model}^{-0.5} w^{-0.5}`, then decays as
    :math:`s^{-0.5}`.
    """
    if step < 1 or warmup_steps < 1:
        raise ValueError(f"step and warmup_steps must be >= 1, got {step} and {warmup_steps}")
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def grad_norms_by_layer(model: Transformer) -> dict[str, float]:
    """After ``loss.backward()``: the gradient norm of each encoder and decoder layer's parameters.

    Keys ``"encoder.0"``, ..., ``"decoder.0"``, ...; used for the post-LN vs pre-LN comparison.
    """
    out = {}
    for prefix, layers in (("encoder", model.encoder_layers), ("decoder", model.decoder_layers)):
        for i, layer in enumerate(layers):
            grads = [p.grad.pow(2).sum() for p in layer.parameters() if p.grad is not None]
            out[f"{prefix}.{i}"] = float(torch.stack(grads).sum().sqrt()) if grads else 0.0
    return out


def check_label_smoothing(fn: Callable[[Tensor, Tensor, float], Tensor], seed: int = 0) -> bool:
    """Exercise checker: does ``fn(logits, target, epsilon)`` equal torch's label-smoothed cross-entropy?"""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64)
    target = torch.randint(0, 5, (6,), generator=g)
    for eps in (0.0, 0.1, 0.5):
        got = torch.as_tensor(fn(logits, target, eps), dtype=torch.float64)
        ref = F.cross_entropy(logits, target, label_smoothing=eps)
        if got.shape != () or not torch.allclose(got, ref, atol=1e-8):
            return verdict(False, f"epsilon = {eps}: got {got.detach().numpy()}, expected the scalar "
                                  f"{ref.item():.6f}. Is the smoothing mass spread over all K classes, "
                                  "the true one included?")
    return verdict(True, "matches F.cross_entropy(..., label_smoothing=eps) for eps in (0, 0.1, 0.5)")


def check_label_smoothing_minimum(loss: float, p: Tensor, n_classes: int = 13, epsilon: float = 0.1) -> bool:
    """Exercise checker: the smallest label-smoothed loss of one token, and the ``p`` (K,) that reaches it.

    The target class is 0. ``p`` is checked against the loss's minimiser, the smoothed target
    ``q = (1 - eps) one_hot + eps / K`` (atol 1e-4); ``loss`` against
    :func:`label_smoothing_cross_entropy` at ``q`` (atol 1e-4), which must not exceed the loss
    at the reader's ``p``.
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    if p.shape != (n_classes,):
        raise ValueError(f"p must be a ({n_classes},) probability vector (target class 0), got shape {tuple(p.shape)}")
    q = torch.full((n_classes,), epsilon / n_classes, dtype=torch.float64)
    q[0] += 1.0 - epsilon
    target = torch.zeros(1, dtype=torch.long)
    minimum = label_smoothing_cross_entropy(q.log()[None], target, epsilon).item()
    at_p = label_smoothing_cross_entropy(p.clamp_min(1e-300).log()[None], target, epsilon).item()
    ok_p = bool(torch.allclose(p, q, atol=1e-4))
    ok_loss = math.isfinite(float(loss)) and abs(float(loss) - minimum) <= 1e-4
    if ok_p and ok_loss:
        return verdict(True, f"the minimum is H(q) = {minimum:.4f} nats, at p = q = ({q[0]:.4f}, {q[1]:.4f}, ...)")
    says = ["p is right" if ok_p else f"your p gives the loss {at_p:.4f}, not the minimum",
            "the loss is right" if ok_loss else f"your loss {float(loss):.4f} is not the minimum"]
    return verdict(False, "; ".join(says) + " (which distribution does the smoothed target describe?)")
