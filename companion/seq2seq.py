r"""Synthetic sequence-to-sequence tasks and an LSTM baseline (chapter "Attention and the Transformer").

The task: map a sequence of digits :math:`x_1 \dots x_n` (n between ``min_len`` and
``max_len``) to its reversal :math:`x_n \dots x_1` (or to its sorted version). Tokens:

====== ===== =====================================
id     name  role
====== ===== =====================================
0      PAD   padding (masked as a key, ignored by the loss)
1      BOS   first decoder input
2      EOS   end of the output
3..12  0..9  the digits
====== ===== =====================================

Sources are ``(B, max_len)`` digits padded with PAD; targets are ``(B, max_len + 2)``:
BOS, the answer, EOS, then PAD. The decoder reads ``tgt[:, :-1]`` and predicts ``tgt[:, 1:]``.

**Held-out split by content.** A sequence belongs to the held-out set iff a fixed hash of its
digits is divisible by 10 (about 10 % of all sequences). Training batches are drawn fresh each
step but never contain a held-out sequence, so test accuracy is measured on sequences the
model has never seen (:func:`is_held_out`).

**Exact-sequence accuracy**: the fraction of outputs that equal the target token for token up
to and including EOS (:func:`exact_sequence_accuracy`).

The baseline :class:`LSTMSeq2Seq` is the encoder-decoder of :cite:`sutskever2014sequence`:
without attention the encoder's final state is the *only* path from input to output, a
fixed-size vector whatever the input length; with ``attention=True`` the decoder also attends
(dot-product) over the encoder's per-position outputs :cite:`luong2015effective`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from companion.checks import verdict
from companion.transformer import label_smoothing_cross_entropy

__all__ = [
    "PAD", "BOS", "EOS", "N_SPECIAL", "VOCAB_SIZE",
    "DigitTask",
    "is_held_out",
    "token_probabilities",
    "tokens_to_str",
    "str_to_tokens",
    "exact_sequence_accuracy",
    "accuracy_by_length",
    "evaluate_seq2seq",
    "seq2seq_loss",
    "time_per_step",
    "attention_offset_profile",
    "LSTMSeq2Seq",
    "check_bottleneck",
    "check_loglog_slope",
]

PAD, BOS, EOS = 0, 1, 2
N_SPECIAL = 3
VOCAB_SIZE = N_SPECIAL + 10
_NAMES = {PAD: "·", BOS: "<s>", EOS: "</s>"}

_HASH_MOD = 2**31 - 1  # a prime; every product below stays far inside int64


def is_held_out(src: Tensor) -> Tensor:
    """(B, T) padded digit tokens -> (B,) bool: True for the ~10 % of sequences in the held-out set.

    A polynomial hash of the digits modulo a prime, then a few mixing rounds; the sequence is
    held out iff the result is divisible by 10. Depends on the digits and the length only (not
    on the padding width).
    """
    h = torch.full((src.shape[0],), 7, dtype=torch.long)
    for j in range(src.shape[1]):
        tok = src[:, j].long()
        h = torch.where(tok != PAD, (h * 1_000_003 + tok) % _HASH_MOD, h)
    for _ in range(3):
        h = ((h ^ (h >> 13)) * 48_271) % _HASH_MOD
    return h % 10 == 0


@dataclass(frozen=True)
class DigitTask:
    """Digit sequences of length ``min_len .. max_len`` (uniform) and their reversal or sorting.

    Args:
        task: ``"reverse"`` or ``"sort"``.
        min_len, max_len: range of the source lengths (inclusive).
    """

    task: str = "reverse"
    min_len: int = 1
    max_len: int = 8

    def __post_init__(self):
        if self.task not in ("reverse", "sort"):
            raise ValueError(f"task must be 'reverse' or 'sort', got {self.task!r}")
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}")

    def answer(self, digits: list[int]) -> list[int]:
        """The correct output for a list of digits 0..9."""
        return list(reversed(digits)) if self.task == "reverse" else sorted(digits)

    def targets(self, src: Tensor) -> Tensor:
        """(B, T) padded source tokens -> (B, T + 2) targets: BOS, answer, EOS, PAD..."""
        B, T = src.shape
        lengths = (src != PAD).sum(1)
        if self.task == "reverse":
            pos = torch.arange(T)[None, :]
            idx = (lengths[:, None] - 1 - pos).clamp(min=0)
            out = torch.where(pos < lengths[:, None], src.gather(1, idx), torch.full_like(src, PAD))
        else:  # sort the real tokens; PAD (0) would sort first, so lift it above the digits
            key = torch.where(src == PAD, torch.full_like(src, VOCAB_SIZE), src)
            out = key.sort(1).values
            out = torch.where(out == VOCAB_SIZE, torch.full_like(out, PAD), out)
        tgt = torch.full((B, T + 2), PAD, dtype=torch.long)
        tgt[:, 0] = BOS
        tgt[:, 1 : T + 1] = out
        tgt[torch.arange(B), lengths + 1] = EOS
        return tgt

    def _raw(self, n: int, generator: torch.Generator | None, length: int | None) -> Tensor:
        T = self.max_len
        if length is None:
            lengths = torch.randint(self.min_len, self.max_len + 1, (n,), generator=generator)
        else:
            lengths = torch.full((n,), length)
        digits = torch.randint(N_SPECIAL, VOCAB_SIZE, (n, T), generator=generator)
        return torch.where(torch.arange(T)[None, :] < lengths[:, None], digits, torch.full_like(digits, PAD))

    def sample(self, n: int, generator: torch.Generator | None = None, split: str = "train",
               length: int | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` pairs ``(src (n, max_len), tgt (n, max_len + 2))`` from ``split``.

        Args:
            split: ``"train"`` (never a held-out sequence) or ``"test"`` (only held-out ones).
            length: fix every source length (default: uniform in ``min_len .. max_len``).
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if length is not None and not self.min_len <= length <= self.max_len:
            raise ValueError(f"length must lie in [{self.min_len}, {self.max_len}], got {length}")
        want_test = split == "test"
        chunks, have = [], 0
        for _ in range(1000):
            raw = self._raw(max(2 * n, 64) if not want_test else 12 * n + 64, generator, length)
            raw = raw[is_held_out(raw) == want_test]
            chunks.append(raw)
            have += raw.shape[0]
            if have >= n:
                break
        else:
            raise RuntimeError(f"could not draw {n} {split} sequences (lengths {self.min_len}..{self.max_len})")
        src = torch.cat(chunks)[:n]
        return src, self.targets(src)


def tokens_to_str(tokens: Tensor | list[int], strip: bool = True) -> str:
    """Token ids -> text, e.g. ``"3 1 4 </s>"``; with ``strip``, stop at EOS and drop BOS/PAD."""
    out = []
    for t in (tokens.tolist() if isinstance(tokens, Tensor) else tokens):
        if strip and t in (PAD, BOS):
            continue
        out.append(_NAMES.get(t, str(t - N_SPECIAL)))
        if strip and t == EOS:
            break
    return " ".join(out)


def str_to_tokens(text: str) -> Tensor:
    """``"3 1 4"`` or ``"314"`` -> (T,) digit tokens (no BOS/EOS)."""
    digits = [c for c in text if not c.isspace()]
    if not digits or not all(c.isdigit() for c in digits):
        raise ValueError(f"expected a non-empty string of digits, got {text!r}")
    return torch.tensor([int(c) + N_SPECIAL for c in digits])


def exact_sequence_accuracy(pred: Tensor, tgt_out: Tensor, per_example: bool = False) -> Tensor | float:
    """Fraction of rows where ``pred`` equals ``tgt_out`` up to and including the first EOS of ``tgt_out``.

    Args:
        pred: (B, L) generated tokens (no BOS), e.g. from ``greedy_decode``.
        tgt_out: (B, T) target tokens without BOS (``tgt[:, 1:]``), each row containing EOS.
        per_example: return the (B,) bool vector instead of the mean.
    """
    if pred.shape[0] != tgt_out.shape[0]:
        raise ValueError(f"pred has {pred.shape[0]} rows but tgt_out has {tgt_out.shape[0]}")
    if not bool((tgt_out == EOS).any(1).all()):
        raise ValueError("every target row must contain EOS")
    B, T = tgt_out.shape
    if pred.shape[1] < T:
        pred = torch.cat([pred, torch.full((B, T - pred.shape[1]), PAD, dtype=pred.dtype)], 1)
    pred = pred[:, :T]
    eos_at = (tgt_out == EOS).int().argmax(1)  # first EOS
    relevant = torch.arange(T)[None, :] <= eos_at[:, None]
    correct = ((pred == tgt_out) | ~relevant).all(1)
    return correct if per_example else float(correct.float().mean())


@torch.no_grad()
def evaluate_seq2seq(model: nn.Module, src: Tensor, tgt: Tensor, batch_size: int = 500) -> dict[str, float]:
    """Greedy-decode ``src`` and score against ``tgt`` (with BOS).

    Returns ``{"exact_acc": ..., "token_acc": ...}``; token accuracy is teacher-forced, over non-pad targets.
    """
    was = model.training
    model.eval()
    exact, tok_right, tok_total = [], 0, 0
    for i in range(0, src.shape[0], batch_size):
        s, t = src[i : i + batch_size], tgt[i : i + batch_size]
        pred = model.greedy_decode(s, max_len=t.shape[1] - 1, bos_id=BOS, eos_id=EOS)
        exact.append(exact_sequence_accuracy(pred, t[:, 1:], per_example=True))
        logits = model(s, t[:, :-1])
        real = t[:, 1:] != PAD
        tok_right += int(((logits.argmax(-1) == t[:, 1:]) & real).sum())
        tok_total += int(real.sum())
    model.train(was)
    return {"exact_acc": float(torch.cat(exact).float().mean()), "token_acc": tok_right / tok_total}


@torch.no_grad()
def token_probabilities(model: nn.Module, src: Tensor, tgt: Tensor) -> tuple[Tensor, Tensor]:
    """Teacher-forced next-token distributions on the non-pad target positions, for calibration.

    ``src: (B, S)``, ``tgt: (B, T)`` (with BOS) -> ``probs: (N, VOCAB_SIZE)`` (softmax of
    ``model(src, tgt[:, :-1])``) and ``targets: (N,)`` (``tgt[:, 1:]``), N = the non-pad targets.
    """
    was = model.training
    model.eval()
    logits = model(src, tgt[:, :-1])
    model.train(was)
    targets = tgt[:, 1:]
    keep = targets != PAD
    return logits.softmax(-1)[keep], targets[keep]


@torch.no_grad()
def accuracy_by_length(model: nn.Module, task: DigitTask, n_per_length: int = 200,
                       generator: torch.Generator | None = None) -> dict[int, float]:
    """Held-out exact-sequence accuracy for each source length ``min_len .. max_len``."""
    out = {}
    for n in range(task.min_len, task.max_len + 1):
        try:
            src, tgt = task.sample(n_per_length, generator, split="test", length=n)
        except RuntimeError:  # very short lengths may have (almost) no held-out sequences
            continue
        out[n] = evaluate_seq2seq(model, src, tgt)["exact_acc"]
    return out


def seq2seq_loss(model: nn.Module, src: Tensor, tgt: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Teacher-forced, label-smoothed cross-entropy of ``model(src, tgt[:, :-1])`` against ``tgt[:, 1:]``.

    PAD targets are ignored.
    """
    logits = model(src, tgt[:, :-1])
    return label_smoothing_cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), label_smoothing, ignore_index=PAD)


def time_per_step(model: nn.Module, src: Tensor, tgt: Tensor, repeats: int = 5, warmup: int = 1) -> float:
    """Wall-clock seconds of one training step (forward, backward, Adam update) on a fixed batch:
    the fastest of ``repeats`` steps. As Python's ``timeit`` advises, slower repeats measure what
    else the machine was doing, not the step, so the minimum is the stable estimate."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        loss = seq2seq_loss(model, src, tgt, 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return min(times)


@torch.no_grad()
def attention_offset_profile(model: nn.Module, src: Tensor, tgt: Tensor, max_offset: int = 3) -> dict[str, Tensor]:
    """Where does each head look, relative to the position it "should" look at? (reversal task)

    For a source of length n and decoder input position t (which emits output token t, the
    copy of source token n - 1 - t), the anchor of a query is

    * ``"encoder"`` (self-attention): its own position t;
    * ``"decoder_self"``: its own position t (only offsets <= 0 are visible);
    * ``"cross"``: the source position n - 1 - t it must copy.

    Args:
        model: a :class:`~companion.transformer.Transformer` (with ``attention_weights``).
        src: (B, T_s) sources; tgt: (B, T_s + 2) targets with BOS (from :class:`DigitTask`).
        max_offset: offsets -max_offset .. max_offset are reported.

    Returns:
        ``{kind: (n_layers, n_heads, 2 * max_offset + 1)}``: the mean weight on key anchor + offset,
        averaged over real queries for which that key exists (NaN where none does).
    """
    tgt_in = tgt[:, :-1]
    weights = model.attention_weights(src, tgt_in)
    n = (src != PAD).sum(1)  # (B,)
    offsets = torch.arange(-max_offset, max_offset + 1)
    out = {}
    for kind, ws in weights.items():
        T_q = ws[0].shape[-2]
        t = torch.arange(T_q)[None, :]  # (1, T_q)
        if kind == "cross":
            anchor, q_ok, k_hi = n[:, None] - 1 - t, t < n[:, None], n[:, None] - 1
        elif kind == "encoder":
            anchor, q_ok, k_hi = t.expand(len(n), T_q), t < n[:, None], n[:, None] - 1
        else:  # decoder self-attention: queries BOS .. last digit, keys up to the query itself
            anchor, q_ok, k_hi = t.expand(len(n), T_q), t <= n[:, None], t.expand(len(n), T_q)
        keys = anchor[..., None] + offsets  # (B, T_q, n_offsets)
        ok = q_ok[..., None] & (keys >= 0) & (keys <= k_hi[..., None])  # (B, T_q, n_offsets)
        layers = []
        for w in ws:  # (B, H, T_q, T_k)
            picked = w.gather(-1, keys.clamp(0, w.shape[-1] - 1)[:, None].expand(-1, w.shape[1], -1, -1))
            picked = picked * ok[:, None]
            layers.append(picked.sum((0, 2)) / ok.sum((0, 1)))  # (H, n_offsets)
        out[kind] = torch.stack(layers)
    return out


class LSTMSeq2Seq(nn.Module):
    r"""LSTM encoder-decoder (:cite:`sutskever2014sequence`), optionally with dot-product attention.

    Encoder: an LSTM over the embedded source (packed, so padding does not enter the state).
    Decoder: an LSTM started from the encoder's final (h, c), reading the embedded previous
    target token. Without attention the output is ``Linear(h_t)``: all information about the
    source passes through the final state, a vector of fixed size ``2 * n_layers * d_hidden``.
    With ``attention=True`` (Luong-style, no input feeding): ``Linear(tanh(W [h_t; c_t]))`` with
    the context :math:`c_t = \sum_s \operatorname{softmax}_s(h_t \cdot e_s / \sqrt{d})\, e_s`
    over the encoder outputs :math:`e_s`.

    Same interface as :class:`companion.transformer.Transformer`: ``forward(src, tgt_in) -> logits``
    and ``greedy_decode(src, max_len, bos_id, eos_id)``.
    """

    def __init__(self, vocab_size: int = VOCAB_SIZE, d_embed: int = 64, d_hidden: int = 128, n_layers: int = 1,
                 attention: bool = False, pad_id: int = PAD):
        super().__init__()
        self.pad_id, self.attention, self.d_hidden = pad_id, attention, d_hidden
        self.src_embed = nn.Embedding(vocab_size, d_embed)
        self.tgt_embed = nn.Embedding(vocab_size, d_embed)
        self.encoder = nn.LSTM(d_embed, d_hidden, n_layers, batch_first=True)
        self.decoder = nn.LSTM(d_embed, d_hidden, n_layers, batch_first=True)
        self.combine = nn.Linear(2 * d_hidden, d_hidden) if attention else None
        self.generator = nn.Linear(d_hidden, vocab_size)

    def encode(self, src: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """src (B, T_s) -> (outputs (B, T_s, d_hidden), final (h, c) each (n_layers, B, d_hidden))."""
        lengths = (src != self.pad_id).sum(1)
        if bool((lengths == 0).any()):
            raise ValueError("a source sequence consists only of padding")
        packed = pack_padded_sequence(self.src_embed(src), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        return out, state

    def _readout(self, h: Tensor, enc_out: Tensor, src: Tensor) -> Tensor:
        """Decoder states h (B, T_t, d) -> logits, attending over enc_out if enabled."""
        if not self.attention:
            return self.generator(h)
        scores = h @ enc_out.transpose(1, 2) / self.d_hidden**0.5  # (B, T_t, T_s)
        scores = scores.masked_fill((src == self.pad_id)[:, None, :], float("-inf"))
        context = scores.softmax(-1) @ enc_out
        return self.generator(torch.tanh(self.combine(torch.cat([h, context], -1))))

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits (B, T_t, vocab)."""
        enc_out, state = self.encode(src)
        h, _ = self.decoder(self.tgt_embed(tgt_in), state)
        return self._readout(h, enc_out, src)

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, max_len: int, bos_id: int, eos_id: int) -> Tensor:
        """(B, L) generated tokens without BOS; PAD after each row's first EOS."""
        was = self.training
        self.eval()
        enc_out, state = self.encode(src)
        B = src.shape[0]
        tok = torch.full((B, 1), bos_id, dtype=torch.long)
        done = torch.zeros(B, dtype=torch.bool)
        out = []
        for _ in range(max_len):
            h, state = self.decoder(self.tgt_embed(tok), state)
            logits = self._readout(h, enc_out, src)[:, -1]
            if not bool(torch.isfinite(logits).all()):
                self.train(was)
                raise FloatingPointError(f"non-finite logits at decoding step {len(out) + 1}: the model's weights "
                                         "or inputs hold NaN or inf (did training diverge?)")
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            out.append(nxt)
            done |= nxt == eos_id
            tok = nxt[:, None]
            if bool(done.all()):
                break
        self.train(was)
        return torch.stack(out, 1)


def check_bottleneck(numbers: int, bits: float, model: LSTMSeq2Seq, n: int) -> bool:
    """Exercise checker: how many numbers the encoder's final ``(h, c)`` of ``model`` holds, and how
    many bits of information a sequence of ``n`` uniformly random digits carries.

    ``numbers`` is compared with the size of the state that ``model.encode`` returns for one
    sequence of ``n`` digits (exact); ``bits`` with the entropy ``n log2(10)`` of the digits
    (tolerance 0.01 bits).
    """
    if not isinstance(model, LSTMSeq2Seq):
        raise TypeError(f"model must be an LSTMSeq2Seq (the LSTM without attention), got {type(model).__name__}")
    if n < 1:
        raise ValueError(f"n must be a positive number of digits, got {n}")
    with torch.no_grad():
        _, (h, c) = model.encode(torch.full((1, n), N_SPECIAL, dtype=torch.long))  # one sequence of n digits
    true_numbers = h.numel() + c.numel()
    true_bits = n * math.log2(VOCAB_SIZE - N_SPECIAL)
    ok_numbers, ok_bits = int(numbers) == true_numbers, abs(float(bits) - true_bits) <= 0.01
    says = [f"(h, c) holds {true_numbers:,} numbers" if ok_numbers else
            f"{int(numbers):,} numbers is not the size of (h, c) (look at model.encode's second output)",
            f"{n} digits carry {true_bits:.2f} bits" if ok_bits else
            f"{float(bits):.2f} bits is not right for {n} digits (each is one of 10, equally likely)"]
    return verdict(ok_numbers and ok_bits, "; ".join(says))


def check_loglog_slope(fn) -> bool:
    """Exercise checker: does ``fn(lengths, seconds) -> float`` return the least-squares slope of
    log(time) against log(T), the exponent a of a fitted ``time ~ T^a``?

    Compared with :func:`torch.linalg.lstsq` on the logarithms (float64, tolerance 1e-5) for a
    linear cost, a fixed overhead plus a quadratic cost, and a noisy power law (the last two are
    not straight lines, so a slope through the end points does not pass).
    """
    lengths = [8, 16, 32, 64, 128]
    cases = {"time = T / 1000": [t / 1000 for t in lengths],
             "time = 0.002 + 1e-5 T^2": [0.002 + 1e-5 * t * t for t in lengths],
             "a noisy T^1.5": [1e-4 * t**1.5 * w for t, w in zip(lengths, (1.0, 1.3, 0.8, 1.1, 0.9), strict=True)]}
    for name, seconds in cases.items():
        x = torch.tensor(lengths, dtype=torch.float64).log()
        design = torch.stack([x, torch.ones_like(x)], dim=1)  # log time = a log T + c
        want = torch.linalg.lstsq(design, torch.tensor(seconds, dtype=torch.float64).log()[:, None]).solution[0, 0]
        try:
            got = float(fn(list(lengths), list(seconds)))
        except Exception as exc:  # a reader's bug: report it, do not crash the notebook
            return verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
        if not math.isfinite(got) or abs(got - want.item()) > 1e-5:
            return verdict(False, f"{name}: you gave {got:.4f}, the least-squares slope of log time on log T is "
                                  f"{want.item():.4f}")
    return verdict(True, "your slope matches the least-squares fit for a linear, a curved and a noisy timing")
