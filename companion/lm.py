r"""Language-model basics (chapter "Autoregressive language models").

A language model assigns a probability to every sequence through the chain rule,
:math:`p(x_1, \dots, x_T) = \prod_t p(x_t \mid x_{<t})`, and is scored by its mean negative
log-likelihood (NLL) on held-out text, which equals the cross-entropy between the data and
the model:

.. math::

    \mathrm{NLL} = -\frac{1}{N} \sum_{t=1}^{N} \ln p_\theta(x_t \mid x_{<t}) \quad\text{nats/char},
    \qquad
    \mathrm{PPL} = e^{\mathrm{NLL}},
    \qquad
    \mathrm{bpc} = \frac{\mathrm{NLL}}{\ln 2}.

Perplexity is the size of a uniform distribution that would be as surprised as the model;
bits per character is the code length an arithmetic coder driven by the model would need.

The simplest models keep only the previous character (a **bigram** model,
:math:`p(x_t \mid x_{<t}) = p(x_t \mid x_{t-1})`):

* :class:`BigramCounts`: the maximum-likelihood estimate, counts with add-:math:`\alpha`
  smoothing, :math:`\hat p(b \mid a) = (c_{ab} + \alpha) / (c_a + \alpha V)`;
* :class:`NeuralBigram`: the same model as a one-layer network, logits :math:`= W[x_{t-1}]`,
  trained by gradient descent on the same NLL; it converges to the count model's
  log-probabilities (up to the smoothing).

Every model here has the interface of :class:`companion.gpt.GPT`: ``model(idx, targets)``
returns ``(logits (B, T, V), mean cross-entropy or None)``, so :func:`evaluate_nll` scores
all of them the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.checks import verdict

__all__ = [
    "perplexity",
    "bits_per_char",
    "get_batch",
    "evaluate_nll",
    "BigramCounts",
    "NeuralBigram",
    "check_bigram_probability",
    "check_perplexity",
    "check_bits_per_character",
]


def perplexity(nll: float | Tensor) -> float | Tensor:
    """``exp(nll)``: perplexity from a mean NLL in nats per token."""
    return torch.exp(nll) if isinstance(nll, Tensor) else math.exp(nll)


def bits_per_char(nll: float | Tensor) -> float | Tensor:
    """``nll / ln 2``: bits per character from a mean NLL in nats per character."""
    return nll / math.log(2)


def _check_tokens(data: Tensor, name: str = "data") -> None:
    if not isinstance(data, Tensor) or data.ndim != 1 or data.dtype != torch.long:
        got = f"{data.dtype} tensor of shape {tuple(data.shape)}" if isinstance(data, Tensor) else type(data).__name__
        raise ValueError(f"{name} must be a 1-D int64 tensor of token ids, got a {got}")


def get_batch(data: Tensor, batch_size: int, block_size: int,
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """A random batch of windows for teacher forcing.

    Args:
        data: (N,) token ids, N > block_size.
        batch_size: number of windows B.
        block_size: window length T.
        generator: seeds the window offsets.

    Returns:
        ``(x, y)``, both (B, T): ``x = data[i : i + T]`` and the next tokens
        ``y = data[i + 1 : i + T + 1]`` for B random offsets ``i``.
    """
    _check_tokens(data)
    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be >= 1, got {batch_size} and {block_size}")
    if len(data) <= block_size:
        raise ValueError(f"data has {len(data)} tokens, need more than block_size = {block_size}")
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size)
    x = data[ix[:, None] + offsets]
    y = data[ix[:, None] + offsets + 1]
    return x, y


@torch.no_grad()
def evaluate_nll(model: nn.Module, data: Tensor, block_size: int, batch_size: int = 64) -> float:
    """Mean NLL (nats/token) of ``model`` on **every** next-token prediction of ``data``.

    The protocol: ``data`` is cut into consecutive non-overlapping windows of ``block_size``
    tokens (the last one shorter); in each window the model predicts tokens 2..T+1 from the
    tokens before them *in that window*, as in training. So every token but the first is
    predicted exactly once, with 1 to ``block_size`` characters of context. The mean is over
    tokens, not windows.

    Args:
        model: ``model(x, y) -> (logits, loss)`` (a GPT or a bigram model); put in eval mode
            for the evaluation and restored afterwards.
        data: (N,) token ids, e.g. the whole validation split.
        block_size: window length (the model's context length).
        batch_size: windows per forward pass (memory only; the result does not depend on it).
    """
    _check_tokens(data)
    if len(data) < 2:
        raise ValueError(f"need at least 2 tokens to evaluate, got {len(data)}")
    was_training = model.training
    model.eval()
    n_pred = len(data) - 1
    n_full = n_pred // block_size
    total = 0.0
    try:
        if n_full:
            x_all = data[: n_full * block_size].view(n_full, block_size)
            y_all = data[1 : n_full * block_size + 1].view(n_full, block_size)
            for s in range(0, n_full, batch_size):
                logits, _ = model(x_all[s : s + batch_size])
                total += F.cross_entropy(logits.flatten(0, 1).float(), y_all[s : s + batch_size].flatten(),
                                         reduction="sum").item()
        rest = n_pred - n_full * block_size
        if rest:
            x = data[n_full * block_size : n_pred].view(1, rest)
            y = data[n_full * block_size + 1 :].view(1, rest)
            logits, _ = model(x)
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
    finally:
        model.train(was_training)
    return total / n_pred


class BigramCounts(nn.Module):
    r"""Count-based bigram model: :math:`\hat p(b \mid a) = (c_{ab} + \alpha) / (c_a + \alpha V)`.

    Args:
        vocab_size: V.
        alpha: add-alpha (Laplace for 1) smoothing; > 0 gives unseen pairs a probability,
            so the validation NLL stays finite.

    Call :meth:`fit` with training tokens. ``forward(idx, targets)`` returns the
    log-probabilities as logits (B, T, V) and the mean NLL, like a GPT.
    """

    def __init__(self, vocab_size: int, alpha: float = 1.0):
        super().__init__()
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.vocab_size, self.alpha = vocab_size, alpha
        self.register_buffer("counts", torch.zeros(vocab_size, vocab_size))
        self.register_buffer("log_probs", torch.full((vocab_size, vocab_size), -math.log(vocab_size)))

    def fit(self, data: Tensor) -> BigramCounts:
        """Count the pairs ``(data[t], data[t + 1])`` and set the smoothed log-probabilities."""
        _check_tokens(data)
        V = self.vocab_size
        pairs = data[:-1] * V + data[1:]
        self.counts = torch.bincount(pairs, minlength=V * V).view(V, V).float()
        smoothed = self.counts + self.alpha
        self.log_probs = (smoothed / smoothed.sum(dim=1, keepdim=True)).log()
        return self

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        logits = self.log_probs[idx]  # (B, T, V): row x_t of the table
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


class NeuralBigram(nn.Module):
    """The bigram model as a one-layer network: ``logits = W[x_t]``, i.e. one-hot(x_t) @ W.

    A single ``V x V`` weight matrix (an embedding table whose row is the logits), trained
    with the cross-entropy loss. Its softmax rows can represent any bigram table, so at
    the optimum it equals the unsmoothed count model on the training data.
    """

    def __init__(self, vocab_size: int):
        super().__init__()
        self.W = nn.Embedding(vocab_size, vocab_size)
        nn.init.zeros_(self.W.weight)  # uniform start: loss = ln V

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        logits = self.W(idx)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


# ------------------------------------------------------------------- exercise checkers


def check_bigram_probability(answer: float, text: str, a: str, b: str, alpha: float = 0.0) -> bool:
    """Exercise checker: is ``answer`` the (add-alpha) bigram estimate of p(b | a) in ``text``?

    Prints a verdict and returns it. The vocabulary is the set of characters of ``text``.
    """
    chars = sorted(set(text))
    if a not in chars or b not in chars:
        raise ValueError(f"{a!r} and {b!r} must be characters of the text")
    c_ab = sum(1 for x, y in zip(text, text[1:], strict=False) if x == a and y == b)
    c_a = sum(1 for x in text[:-1] if x == a)
    expected = (c_ab + alpha) / (c_a + alpha * len(chars))
    ok = math.isclose(answer, expected, rel_tol=1e-6, abs_tol=1e-9)
    return verdict(ok, f"p({b!r} | {a!r}) = ({c_ab} + {alpha}) / ({c_a} + {alpha} x {len(chars)}) = {expected:.6g}"
                   + ("" if ok else f"; you gave {answer:.6g}"))


def check_perplexity(nll: float, ppl: float, bpc: float) -> bool:
    """Exercise checker: are ``ppl`` and ``bpc`` the perplexity and bits/char of ``nll`` (nats)?"""
    ok_ppl = math.isclose(ppl, perplexity(nll), rel_tol=1e-4)
    ok_bpc = math.isclose(bpc, bits_per_char(nll), rel_tol=1e-4)
    ppl_says = "right" if ok_ppl else f"expected exp({nll}) = {perplexity(nll):.4f}, got {ppl:.4f}"
    bpc_says = "right" if ok_bpc else f"expected {nll} / ln 2 = {bits_per_char(nll):.4f}, got {bpc:.4f}"
    return verdict(ok_ppl and ok_bpc, f"perplexity: {ppl_says}; bits/char: {bpc_says}")


def check_bits_per_character(fn) -> bool:
    r"""Exercise checker: does ``fn(token_nlls, token_texts) -> float`` return bits per character,
    :math:`\sum_i \mathrm{NLL}_i / (\ln 2 \sum_i |\text{text}_i|)`, for tokens of any length?

    ``token_nlls`` is a ``(N,)`` tensor of nats, ``token_texts`` the N strings the tokens spell.
    Two cases: characters (one per token) and subword tokens of unequal lengths, where the
    mean NLL per token divided by ln 2 is not the answer.
    """
    cases = {"one character per token": (torch.tensor([1.2, 0.4, 2.0, 0.9]), ["T", "h", "e", " "]),
             "subword tokens": (torch.tensor([3.1, 0.7, 4.2]), ["The", " king", "'s"])}
    for name, (nlls, texts) in cases.items():
        want = float(nlls.sum()) / (math.log(2) * sum(len(t) for t in texts))
        try:
            got = float(fn(nlls.clone(), list(texts)))
        except Exception as exc:  # a reader's bug: report it, do not crash the notebook
            return verdict(False, f"your function raised {exc.__class__.__name__}: {exc}")
        if not abs(got - want) < 1e-6:
            return verdict(False, f"{name}: you gave {got:.4f} bits per character, the answer is {want:.4f}")
    return verdict(True, "bits per character: total nats over total characters, in bits")
