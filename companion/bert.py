r"""A small BERT: a bidirectional Transformer encoder trained by masked language modelling
(chapter "BERT and evaluating generated text").

A causal LM (:mod:`companion.gpt`) predicts :math:`x_t` from :math:`x_{<t}`. BERT
:cite:`devlin2019bert` hides a random 15% of the positions, :math:`M \subset \{1..T\}`, and
predicts each hidden token from **both sides**, every other position of the corrupted input
:math:`\tilde x`:

.. math::

    \mathcal{L}_{\mathrm{MLM}}(\theta) = -\frac{1}{|M|} \sum_{t \in M} \log p_\theta(x_t \mid \tilde x),
    \qquad
    \tilde x_t = \begin{cases}
        \texttt{[MASK]} & \text{with prob. } 0.8 \\
        \text{a random token} & \text{with prob. } 0.1 \\
        x_t & \text{with prob. } 0.1
    \end{cases} \quad (t \in M).

The encoder is the GPT's stack without the causal mask: its self-attention is
:class:`companion.attention.MultiHeadAttention` with no mask, so every position sees every
other. What it gains (context on both sides) is what it loses: the conditionals
:math:`p(x_t \mid \tilde x)` do not multiply into a probability of the sequence (no chain
rule), so BERT has no perplexity and no left-to-right sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.attention import MultiHeadAttention
from companion.checks import verdict
from companion.gpt import MLP, GPTConfig
from companion.lm import get_batch

__all__ = ["BERTConfig", "EncoderBlock", "BERT", "mask_tokens", "fill_in_comparison", "pseudo_log_likelihood",
           "check_pseudo_log_likelihood"]


@dataclass
class BERTConfig(GPTConfig):
    """Sizes of a :class:`BERT`; as :class:`companion.gpt.GPTConfig`, where ``vocab_size``
    counts the characters **plus one** ``[MASK]`` token, whose id is ``vocab_size - 1``."""

    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1


class EncoderBlock(nn.Module):
    """Pre-LN encoder block: ``x + MHA(LN(x))`` with no mask, then ``x + MLP(LN(x))``."""

    def __init__(self, cfg: BERTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = MultiHeadAttention(cfg.n_embd, cfg.n_head, dropout=cfg.dropout, fast=cfg.fast)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)
        self.last_weights: Tensor | None = None

    def forward(self, x: Tensor, need_weights: bool = False) -> Tensor:
        h = self.ln_1(x)
        a, self.last_weights = self.attn(h, h, h, mask=None, need_weights=need_weights)
        x = x + a
        return x + self.mlp(self.ln_2(x))


class BERT(nn.Module):
    """A bidirectional encoder with a masked-token head.

    Shapes:
        ``idx: (B, T)`` ids in [0, vocab_size) (``[MASK]`` included), ``T <= block_size``;
        ``forward`` returns ``(logits (B, T, vocab_size), loss or None)``.
    """

    def __init__(self, cfg: BERTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, idx: Tensor, labels: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Logits for every position; with ``labels`` (the original ids at masked positions,
        ``-100`` elsewhere), the mean cross-entropy over the masked positions."""
        if idx.ndim != 2 or idx.shape[1] == 0:
            raise ValueError(f"idx must have shape (B, T) with T >= 1, got {tuple(idx.shape)}")
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"T = {T} exceeds block_size = {self.config.block_size}")
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got ids from {lo} to {hi}")
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x, need_weights)
        logits = self.head(self.ln_f(x))
        mask_col = torch.tensor([self.config.mask_id], device=idx.device)
        logits = logits.index_fill(-1, mask_col, float("-inf"))  # [MASK] is never an answer
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return logits, loss


def mask_tokens(idx: Tensor, mask_id: int, n_real: int, mask_prob: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """BERT's corruption: choose each position with prob. ``mask_prob``; of the chosen,
    80% become ``[MASK]``, 10% a random real token, 10% stay.

    Args:
        idx: (B, T) original ids, all in [0, n_real).
        mask_id: the id of ``[MASK]``.
        n_real: number of real tokens (random replacements are drawn from them).
        mask_prob: fraction of positions to predict. At least one per row is chosen, so
            that every row contributes to the loss.

    Returns:
        ``(inputs, labels)``: the corrupted ids, and the original ids at the chosen
        positions with ``-100`` (ignored by the loss) elsewhere.
    """
    if not 0.0 < mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
    u = torch.rand(idx.shape, generator=generator)
    chosen = u < mask_prob
    first = torch.randint(idx.shape[1], (idx.shape[0],), generator=generator)
    chosen[torch.arange(idx.shape[0]), first] |= ~chosen.any(dim=1)  # at least one per row
    action = torch.rand(idx.shape, generator=generator)
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    inputs = idx.clone()
    inputs[to_mask] = mask_id
    inputs[to_random] = torch.randint(n_real, (int(to_random.sum()),), generator=generator)
    labels = torch.where(chosen, idx, torch.full_like(idx, -100))
    return inputs, labels


# ------------------------------------------------------------------ evaluation


@torch.no_grad()
def fill_in_comparison(bert: BERT, gpt: nn.Module, data: Tensor, *, n_windows: int = 256, mask_prob: float = 0.15,
                       generator: torch.Generator | None = None) -> dict[str, float]:
    """Score both models at the same hidden positions of the same windows of ``data``.

    BERT sees the window with the chosen positions replaced by ``[MASK]`` (context on both
    sides); the GPT predicts each chosen token from the tokens before it (left context
    only, its usual job). Position 0 is never chosen, so the GPT always has some context.

    Returns:
        ``{"bert_nll", "gpt_nll"}`` (nats per hidden token) and ``{"bert_acc", "gpt_acc"}``
        (fraction whose most probable prediction is right), and ``n_hidden``.
    """
    bert.eval()
    gpt.eval()
    T = bert.config.block_size
    x, _ = get_batch(data, n_windows, T, generator)
    chosen = torch.rand(x.shape, generator=generator) < mask_prob
    chosen[:, 0] = False
    inputs = x.masked_fill(chosen, bert.config.mask_id)
    b_logits = bert(inputs)[0][chosen]  # (n_hidden, V + 1)
    g_logits = gpt(x)[0][:, :-1][chosen[:, 1:]]  # logits at t-1 predict x_t
    target = x[chosen]
    b_logits = b_logits[:, : g_logits.shape[-1]]  # drop the [MASK] column (its logit is -inf)
    return {
        "bert_nll": F.cross_entropy(b_logits, target).item(),
        "gpt_nll": F.cross_entropy(g_logits, target).item(),
        "bert_acc": (b_logits.argmax(-1) == target).float().mean().item(),
        "gpt_acc": (g_logits.argmax(-1) == target).float().mean().item(),
        "n_hidden": float(chosen.sum()),
    }


def pseudo_log_likelihood(bert: BERT, x: Tensor) -> float:
    r"""The pseudo-log-likelihood :math:`\sum_t \log p_\theta(x_t \mid x_{\setminus t})` of one window ``x: (T,)``.

    Position t is replaced by ``[MASK]`` in copy t of the window; the T copies go through the
    model as one batch ``(T, T)`` (T forward passes' worth of work). Not the log of a
    probability distribution over texts: each term conditions on both sides.
    """
    if not isinstance(x, Tensor) or x.ndim != 1 or not 1 <= x.shape[0] <= bert.config.block_size:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be one window of token ids, shape (T,) with 1 <= T <= {bert.config.block_size}; "
                         f"got {got}")
    T, rows = x.shape[0], torch.arange(x.shape[0])
    inputs = x.repeat(T, 1)
    inputs[rows, rows] = bert.config.mask_id
    was_training = bert.training
    bert.eval()
    with torch.no_grad():
        log_p = bert(inputs)[0].log_softmax(-1)[rows, rows, x]  # (T,): log p(x_t | x without t)
    bert.train(was_training)
    return float(log_p.sum())


def check_pseudo_log_likelihood(fn, seed: int = 0) -> bool:
    """Exercise checker: does ``fn(bert, x) -> float`` return the pseudo-log-likelihood of the window ``x: (T,)``?

    Compared with :func:`pseudo_log_likelihood` on a small random BERT (in eval mode) and two
    random windows; tolerance 1e-4 nats.
    """
    g = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()  # the reader's global seed is left as it was
    torch.manual_seed(seed)
    bert = BERT(BERTConfig(vocab_size=12, block_size=10, n_layer=1, n_head=2, n_embd=16)).eval()
    torch.random.set_rng_state(torch_state)
    for T in (10, 4):
        x = torch.randint(0, bert.config.mask_id, (T,), generator=g)
        try:
            with torch.no_grad():
                got = float(fn(bert, x))
        except Exception as exc:  # a reader's bug: report it, do not crash the notebook
            return verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
        want = pseudo_log_likelihood(bert, x)
        if not abs(got - want) <= 1e-4:
            return verdict(False, f"T = {T}: you gave {got:.4f}, the pseudo-log-likelihood is {want:.4f} "
                                  "(mask one position per copy, and score only that position's true token)")
    return verdict(True, "your pseudo-log-likelihood matches on windows of 10 and 4 tokens of a random BERT")
