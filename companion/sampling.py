r"""Decoding: the distribution a language model's next token is drawn from (chapter "Autoregressive language models").

Pure functions of the next-token logits :math:`z \in \mathbb R^V`:

* **temperature** :math:`\tau`: :math:`\operatorname{softmax}(z / \tau)`; :math:`\tau < 1` sharpens, :math:`\tau > 1`
  flattens, :math:`\tau = 0` is greedy decoding (the argmax);
* **top-k**: keep the k largest logits (Fan et al., 2018);
* **top-p** (nucleus): keep the smallest set of most probable tokens whose probability sums to at least p
  (Holtzman et al., 2020).

:func:`next_token_probs` applies them in that order; :func:`sample_next_token` draws from the result.
:class:`companion.gpt.GPT` generates with them (and re-exports them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from companion.checks import verdict

__all__ = ["check_knobs", "apply_temperature", "top_k_filter", "top_p_filter", "next_token_probs", "sample_next_token",
           "check_top_p_filter"]


def check_knobs(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """A clear ``ValueError`` for a temperature < 0, a ``top_k`` < 1 or a ``top_p`` outside (0, 1]."""
    if not (isinstance(temperature, (int, float)) and temperature >= 0):  # NaN fails too
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature`` (``temperature > 0``; 0 is greedy, see :func:`next_token_probs`)."""
    check_knobs(temperature, None, None)
    if temperature == 0:
        raise ValueError("temperature 0 is greedy decoding: take argmax instead of dividing by 0")
    return logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Set every logit below the k-th largest (along the last dim) to ``-inf``.

    ``logits: (..., V)``. Ties with the k-th largest are kept, so more than ``k`` entries may
    survive; ``k >= V`` changes nothing.
    """
    check_knobs(1.0, k, None)
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the smallest set of most probable tokens with total probability >= p.

    ``logits: (..., V)``. Sorting the probabilities in decreasing order, token i is kept when
    the mass of the tokens before it is below ``p``; so the most probable token is always
    kept, and ``p = 1`` keeps everything. The others get ``-inf``.
    """
    check_knobs(1.0, None, p)
    if p == 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    remove_sorted = mass_before >= p
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def next_token_probs(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None) -> Tensor:
    """The distribution generation samples from: temperature, then top-k, then top-p.

    ``logits: (..., V) -> probs (..., V)``. ``temperature = 0`` gives the one-hot of the
    argmax (greedy decoding; the lowest id wins a tie).
    """
    check_knobs(temperature, top_k, top_p)
    if temperature == 0:
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits.softmax(dim=-1)


def sample_next_token(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Draw one token per row: ``logits (B, V) -> ids (B, 1)`` from :func:`next_token_probs`."""
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (B, V), got {tuple(logits.shape)}")
    if temperature == 0:
        check_knobs(temperature, top_k, top_p)
        return logits.argmax(dim=-1, keepdim=True)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator)


# ------------------------------------------------------------------- exercise checkers


def check_top_p_filter(fn, trials: int = 200, seed: int = 0) -> bool:
    """Exercise checker: does ``fn(logits (B, V), p) -> logits`` keep exactly the nucleus?

    Compares the set of finite entries of ``fn``'s output with :func:`top_p_filter`'s on
    random logits (ties are unlikely with continuous random values). Prints a verdict.
    """
    g = torch.Generator().manual_seed(seed)
    for i in range(trials):
        logits = torch.randn(3, 12, generator=g) * (1 + 3 * torch.rand(1, generator=g))
        p = float(torch.rand(1, generator=g).clamp(0.05, 0.99))
        got, want = torch.isfinite(fn(logits.clone(), p)), torch.isfinite(top_p_filter(logits, p))
        if not torch.equal(got, want):
            return verdict(False, f"trial {i}, p = {p:.3f}: you kept {got.sum(-1).tolist()} tokens per row, "
                                  f"the nucleus has {want.sum(-1).tolist()}. Logits:\n{logits}")
    return verdict(True, f"your filter kept exactly the nucleus in all {trials} trials.")
