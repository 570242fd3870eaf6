r"""A GPT: the decoder-only Transformer (chapter "Autoregressive language models").

The chain rule factorises the probability of a sequence into next-token predictions,

.. math::

    p_\theta(x_1, \dots, x_T) = \prod_{t=1}^{T} p_\theta(x_t \mid x_{<t}),

and training maximises the log-likelihood, i.e. minimises the mean cross-entropy

.. math::

    \mathcal{L}(\theta) = -\frac{1}{T} \sum_{t=1}^{T} \log p_\theta(x_t \mid x_{<t})
    \quad\text{(nats per token)}.

The network (pre-LayerNorm GPT, as in GPT-2 and nanoGPT):

.. math::

    h^0_t &= E[x_t] + P[t], \\
    h^{l} &= h^{l-1} + \operatorname{Attn}(\operatorname{LN}(h^{l-1})), \qquad
    h^{l} \leftarrow h^{l} + \operatorname{MLP}(\operatorname{LN}(h^{l})), \\
    \text{logits}_t &= \operatorname{LN}(h^L_t)\, E^\top \quad\text{(weight tying)},

with causal self-attention: query :math:`t` sees keys :math:`s \le t` only,

.. math::

    \operatorname{Attn}(Q, K, V) = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}} + M\right) V,
    \qquad M_{ts} = \begin{cases} 0 & s \le t \\ -\infty & s > t. \end{cases}

So the logits at position :math:`t` depend on :math:`x_1, \dots, x_t` only, and one forward
pass over a window gives all :math:`T` next-token predictions at once (teacher forcing).

Generation samples :math:`x_{t+1} \sim p_\theta(\cdot \mid x_{\le t})` one token at a time, after
reshaping the distribution (:func:`companion.sampling.next_token_probs`): temperature :math:`\tau` (softmax of
:math:`z / \tau`; :math:`\tau = 0` is greedy decoding), top-k and nucleus (top-p) filtering.
A :class:`KVCache` keeps the keys and values of the tokens already processed, so each new
token costs one position's computation instead of the whole window's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.attention import causal_mask, scaled_dot_product_attention
from companion.checks import verdict
from companion.positional import rotary_embedding

# the decoding filters (companion.sampling) stay importable from here, as before they had their own module
from companion.sampling import (  # noqa: F401 (re-exported)
    apply_temperature,
    check_knobs,
    check_top_p_filter,
    next_token_probs,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)

__all__ = [
    "GPTConfig",
    "KVCache",
    "CausalSelfAttention",
    "MLP",
    "Block",
    "GPT",
    "kv_cache_floats",
    "check_kv_cache_floats",
]


@dataclass
class GPTConfig:
    """Sizes of a GPT.

    Attributes:
        vocab_size: number of token ids V (65 characters for tiny-shakespeare).
        block_size: context length T_max, the most positions the model attends over.
        n_layer: number of Transformer blocks L.
        n_head: attention heads h per block.
        n_embd: model width d_model (a multiple of ``n_head``).
        dropout: dropout on attention weights and residual branches (0 for short runs).
        bias: biases in the linear layers and LayerNorms.
        fast: use :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernel);
            ``False`` uses the explicit :func:`companion.attention.scaled_dot_product_attention`.
        positions: ``"learned"`` adds a learned embedding :math:`P[t]` to the token embedding (GPT-2);
            ``"rotary"`` adds nothing and rotates every head's queries and keys instead
            (:func:`companion.positional.rotary_embedding`), so attention sees relative offsets only.
    """

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    fast: bool = True
    positions: str = "learned"

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd = {self.n_embd} is not divisible by n_head = {self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.positions not in ("learned", "rotary"):
            raise ValueError(f"positions must be 'learned' or 'rotary', got {self.positions!r}")
        if self.positions == "rotary" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"rotary positions need an even head size, got n_embd / n_head = "
                             f"{self.n_embd // self.n_head}")


class KVCache:
    """The keys and values of the positions processed so far, one ``(k, v)`` pair per layer.

    ``k, v: (B, H, T_past, d_k)``. A forward pass with a cache appends the new positions'
    keys and values and attends over all of them; the new tokens get positions
    ``len(cache), len(cache) + 1, ...``.
    """

    def __init__(self, n_layer: int):
        self.layers: list[tuple[Tensor, Tensor] | None] = [None] * n_layer

    def __len__(self) -> int:
        first = self.layers[0]
        return 0 if first is None else first[0].shape[2]

    def past_length(self, layer: int) -> int:
        """Positions cached in layer ``layer`` (before this forward pass appends to it)."""
        past = self.layers[layer]
        return 0 if past is None else past[0].shape[2]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``k, v`` (B, H, T_new, d_k) to layer ``layer``; return all keys and values."""
        past = self.layers[layer]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        self.layers[layer] = (k, v)
        return k, v


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with fused Q, K, V projections.

    ``x: (B, T, d_model) -> (B, T, d_model)``. With a :class:`KVCache` holding ``T_past``
    positions, the ``T`` queries sit at positions ``T_past .. T_past + T - 1`` and attend
    over all ``T_past + T`` keys up to their own position.
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.d_k, self.fast = cfg.n_head, cfg.n_embd // cfg.n_head, cfg.fast
        self.rotary = cfg.positions == "rotary"
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # W^Q, W^K, W^V side by side
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)  # W^O
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.last_weights: Tensor | None = None  # (B, H, T, T_k), kept when need_weights=True

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0,
                need_weights: bool = False) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, self.d_k).transpose(1, 2) for t in (q, k, v))  # (B, H, T, d_k)
        if self.rotary:  # R_m q and R_n k at the absolute positions; the cache keeps rotated keys
            t0 = cache.past_length(layer) if cache is not None else 0
            pos = torch.arange(t0, t0 + T, device=x.device)
            q, k = rotary_embedding(torch.cat([q, k], dim=1), pos).split(self.n_head, dim=1)  # one call for both
        if cache is not None:
            k, v = cache.update(layer, k, v)
        T_k = k.shape[2]
        p = self.dropout if self.training else 0.0
        if self.fast and not need_weights:
            if T_k == T:  # no past: the fused kernel builds the causal mask itself
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            elif T == 1:  # one new token sees every cached key
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
            else:  # is_causal aligns the mask top-left; with a past it must be shifted
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=_shifted_causal_mask(T, T_k, x.device),
                                                   dropout_p=p)
            self.last_weights = None
        else:
            mask = causal_mask(T, x.device) if T_k == T else _shifted_causal_mask(T, T_k, x.device)
            y, self.last_weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p, training=self.training)
        y = y.transpose(1, 2).reshape(B, T, C)  # Concat(head_1, ..., head_h)
        return self.resid_dropout(self.c_proj(y))


def _shifted_causal_mask(T: int, T_k: int, device) -> Tensor:
    """(T, T_k) bool: query i (absolute position T_k - T + i) sees keys 0 .. T_k - T + i."""
    return torch.ones(T, T_k, dtype=torch.bool, device=device).tril(diagonal=T_k - T)


class MLP(nn.Module):
    """Position-wise feed-forward network: ``Linear(d, 4d) -> GELU -> Linear(4d, d)``."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """A pre-LN Transformer block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0,
                need_weights: bool = False) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer, need_weights)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A decoder-only Transformer language model.

    Args:
        cfg: the sizes (:class:`GPTConfig`).

    Shapes:
        ``idx: (B, T)`` int64 token ids with ``T <= block_size`` (counting a cache's positions);
        ``forward`` returns ``(logits (B, T, V), loss or None)``.
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)  # token embedding E
        # learned position embedding P (GPT-2), or none: rotary positions act inside attention
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.positions == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: logits_t = h_t E^T
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: residual branches scaled by 1/sqrt(2L)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (without the position embedding when ``non_embedding``)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding and self.wpe is not None else n

    def _check_ids(self, idx: Tensor, name: str = "idx") -> None:
        if not isinstance(idx, Tensor) or idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name} must be an int64 tensor of token ids, got "
                            f"{type(idx).__name__ if not isinstance(idx, Tensor) else idx.dtype}")
        if idx.ndim != 2:
            raise ValueError(f"{name} must have shape (B, T), got {tuple(idx.shape)}"
                             + ("; add a batch dimension with idx[None]" if idx.ndim == 1 else ""))
        if idx.shape[0] == 0:
            raise ValueError(f"{name} holds no sequence (shape {tuple(idx.shape)}): the batch size B must be >= 1")
        if idx.shape[1] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(idx.shape)}): give at least one token, "
                             "e.g. the id of a newline")
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}) (the vocabulary), "
                             f"got ids from {lo} to {hi}")

    def forward(self, idx: Tensor, targets: Tensor | None = None, cache: KVCache | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Logits of the next token at every position, and the mean cross-entropy if ``targets``.

        Args:
            idx: (B, T) token ids.
            targets: (B, T) the next tokens (``idx`` shifted left by one); ``-100`` is ignored.
            cache: a :class:`KVCache` of earlier positions; it is extended in place.
            need_weights: use the explicit attention and keep each layer's weights in
                ``block.attn.last_weights`` (for plots).
        """
        self._check_ids(idx)
        B, T = idx.shape
        t0 = len(cache) if cache is not None else 0
        if t0 + T > self.config.block_size:
            raise ValueError(f"{t0 + T} positions ({t0} cached + {T} new) exceed the context length "
                             f"block_size = {self.config.block_size}; crop the input (generate() does)")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(t0, t0 + T, device=idx.device))
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer, need_weights)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise ValueError(f"targets have shape {tuple(targets.shape)} but idx has {tuple(idx.shape)}")
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> Tensor:
        """Continue each prompt by ``max_new_tokens`` tokens, sampled one at a time.

        Each step computes the next-token logits from the last ``block_size`` tokens and
        draws from ``next_token_probs(logits, temperature, top_k, top_p)``:

        * ``temperature``: divide the logits by it; ``< 1`` sharpens, ``> 1`` flattens.
          **``temperature=0`` is greedy decoding** (always the most probable token; ties
          go to the lowest id); ``top_k`` and ``top_p`` then change nothing.
        * ``top_k``: keep the ``k`` most probable tokens (ties with the k-th are kept).
        * ``top_p``: nucleus sampling, keep the smallest set of most probable tokens whose
          probability sums to at least ``p``. Applied after temperature and top-k.

        **Past the context length** the model sees only the last ``block_size`` tokens (the
        prompt is cropped from the left), so generation can run for any number of tokens.
        With ``use_cache=True`` a :class:`KVCache` makes each new token cost one position
        while the sequence fits in the context; once it is longer, the window slides, every
        position's embedding changes, and the cache is rebuilt from the cropped window at
        each step. The tokens are the same with and without the cache.

        Args:
            idx: (B, T) prompt token ids, T >= 1, each in [0, vocab_size).
            max_new_tokens: number of tokens to append (>= 0).
            generator: a seeded ``torch.Generator`` makes the samples reproducible.

        Returns:
            (B, T + max_new_tokens) the prompts followed by their continuations.

        Raises:
            ValueError: empty prompt, ids outside the vocabulary, ``temperature < 0``,
                ``top_k < 1``, ``top_p`` outside (0, 1], ``max_new_tokens < 0``.
        """
        self._check_ids(idx, "the prompt idx")
        check_knobs(temperature, top_k, top_p)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        was_training = self.training
        self.eval()
        block_size = self.config.block_size
        cache = None
        try:
            for _ in range(max_new_tokens):
                if not use_cache:
                    logits, _ = self(idx[:, -block_size:])
                elif cache is None or idx.shape[1] > block_size:
                    cache = KVCache(self.config.n_layer)  # (re)build from the (cropped) window
                    logits, _ = self(idx[:, -block_size:], cache=cache)
                else:  # the cache holds every position but the last token's
                    logits, _ = self(idx[:, -1:], cache=cache)
                next_id = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator)
                idx = torch.cat([idx, next_id], dim=1)
        finally:
            self.train(was_training)
        return idx

    def config_dict(self) -> dict:
        """The model's :class:`GPTConfig` as a JSON-serialisable dict."""
        return asdict(self.config)


# ------------------------------------------------------------------- exercise checkers


def kv_cache_floats(n_layer: int, n_ctx: int, n_embd: int, batch: int = 1) -> int:
    """Numbers a :class:`KVCache` holds for ``batch`` sequences of ``n_ctx`` positions:
    one key and one value vector of size ``n_embd`` (all heads) per layer and position."""
    return 2 * n_layer * n_ctx * n_embd * batch


def check_kv_cache_floats(answer: int, n_layer: int, n_ctx: int, n_embd: int, batch: int = 1) -> bool:
    """Exercise checker: is ``answer`` the number of floats in a full KV cache? Prints a verdict."""
    expected = kv_cache_floats(n_layer, n_ctx, n_embd, batch)
    ok = answer == expected
    return verdict(ok, f"2 (K and V) x {n_layer} layers x {n_ctx} positions x {n_embd} numbers x {batch} "
                       f"sequences = {expected:,}" + ("" if ok else f"; you gave {answer:,}"))
