"""Recipe: a character-level GPT on tiny-shakespeare (chapter "Autoregressive language models").

Data: tiny-shakespeare, the course's 90/10 split (:func:`companion.data.train_val_split`), as
character tokens (``tokenizer="char"``) or as byte-level BPE tokens (``tokenizer="bpe"``: merges
learned by :func:`companion.tokenizers.train_bpe` on the training text only, ``bpe_vocab_size``
tokens). Training: AdamW on random windows (teacher forcing,
:func:`companion.lm.get_batch`), linear warm-up then cosine decay of the learning rate,
gradient clipping. Evaluation: the mean NLL over the *whole* validation split
(:func:`companion.lm.evaluate_nll`), in nats per token, with perplexity and **bits per character**
(the token NLL summed and divided by the characters it predicts: the one unit in which a
character model and a BPE model can be compared).

With ``time_budget`` set, training stops after that many seconds and the cosine schedule
follows the elapsed *time*, so the learning rate reaches its minimum when the time is up
whatever the speed of the machine.

Checkpoints and resuming: :func:`init_state` returns a :class:`TrainState` (optimizer,
batch-sampling generator, step, elapsed time, history) whose ``state_dict()`` /
``load_state_dict()`` round-trip through ``torch.save``/``torch.load(weights_only=True)``.
Pass it to :func:`train` and save it (with ``model.state_dict()``) from the ``callback``;
after loading both, ``train(cfg, model, state=state)`` continues where it stopped, and a
step-budget run resumed this way gives the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from companion.data import CharTokenizer, load_shakespeare, train_val_split
from companion.gpt import GPT, GPTConfig
from companion.lm import evaluate_nll, get_batch, perplexity
from companion.tokenizers import train_bpe
from companion.train import History, train_loop, warmup_cosine_lr

__all__ = ["Config", "chapter_config", "benchmark_config", "TrainState", "load_data", "build_model", "init_state",
           "lr_at", "train", "evaluate", "sample", "generate_text"]


@dataclass
class Config:
    """Everything that defines a GPT run (JSON-serialisable)."""

    seed: int = 1337
    tokenizer: str = "char"  # "char" or "bpe"
    bpe_vocab_size: int = 512  # 256 bytes + merges (tokenizer="bpe")
    # model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = True
    fast: bool = True
    positions: str = "learned"  # or "rotary" (companion.gpt.GPTConfig)
    # optimisation
    batch_size: int = 32
    max_steps: int = 1000
    time_budget: float | None = None  # seconds; stop then, and schedule the LR by elapsed time
    lr: float = 2e-3  # peak learning rate
    min_lr: float = 2e-4  # end of the cosine
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    bf16: bool = False  # bfloat16 autocast for the matmuls (fast on CPUs with AVX512-BF16)
    eval_every: int = 0  # > 0: estimate the validation loss every this many steps
    eval_batches: int = 8  # batches of ``batch_size`` windows for that estimate
    # evaluation and sampling
    eval_batch_size: int = 64
    sample_prompt: str = "\n"
    sample_length: int = 500
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

        for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "max_steps", "eval_batches",
                     "eval_batch_size"):
            need(getattr(self, name) >= 1, name, "an int >= 1")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd must be divisible by n_head (each head gets n_embd / n_head dimensions), "
                             f"got n_embd = {self.n_embd} and n_head = {self.n_head}")
        need(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)")
        need(self.time_budget is None or self.time_budget >= 0, "time_budget", "None or >= 0 seconds")
        need(self.lr > 0, "lr", "> 0")
        need(self.min_lr >= 0, "min_lr", ">= 0")
        for name in ("warmup_steps", "eval_every", "sample_length", "weight_decay", "grad_clip"):
            need(getattr(self, name) >= 0, name, ">= 0")
        need(0.0 <= self.beta1 < 1.0, "beta1", "in [0, 1)")
        need(0.0 <= self.beta2 < 1.0, "beta2", "in [0, 1)")
        need(self.temperature >= 0, "temperature", ">= 0 (0 = greedy decoding)")
        need(self.top_k is None or self.top_k >= 1, "top_k", "None or an int >= 1")
        need(self.top_p is None or 0.0 < self.top_p <= 1.0, "top_p", "None or in (0, 1]")
        need(self.tokenizer in ("char", "bpe"), "tokenizer", "'char' or 'bpe'")
        need(self.bpe_vocab_size >= 257, "bpe_vocab_size", "an int >= 257 (256 bytes + at least one merge)")

    def to_dict(self) -> dict:
        return asdict(self)


def chapter_config() -> Config:
    """The chapter's run: a 4-layer, 128-wide GPT, context 64, trained for about two minutes on
    two CPU cores (notebooks ``03_2`` and ``03_3`` share its cached weights)."""
    return Config(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=16, max_steps=1500,
                  lr=2e-3, min_lr=2e-4, warmup_steps=50, eval_every=150)


def benchmark_config(minutes: float = 8.0) -> Config:
    """The benchmark's run (``benchmarks/gpt_shakespeare.py``): ``minutes`` of training, the
    cosine schedule following the clock; a context of 256 in batches of 8, bfloat16 matmuls and rotary
    positions (the trials behind these choices: ``benchmarks/results/gpt_shakespeare_trials.json``)."""
    return Config(n_layer=4, n_head=4, n_embd=128, block_size=256, batch_size=8, max_steps=10**9,
                  time_budget=60.0 * minutes, lr=3e-3, min_lr=2e-4, warmup_steps=100, bf16=True,
                  positions="rotary")


@functools.lru_cache(maxsize=1)
def _corpus() -> tuple[CharTokenizer, torch.Tensor, torch.Tensor]:
    text = load_shakespeare()
    tok = CharTokenizer(text)
    train_ids, val_ids = train_val_split(tok.encode(text))
    return tok, train_ids, val_ids


class _BPE:
    """A :class:`~companion.tokenizers.BPETokenizer` with the interface of :class:`CharTokenizer`."""

    def __init__(self, text: str, vocab_size: int):
        self.bpe = train_bpe(text, vocab_size)
        self.vocab_size = self.bpe.vocab_size

    def encode(self, s: str) -> torch.Tensor:
        return torch.tensor(self.bpe.encode(s), dtype=torch.long)

    def decode(self, ids) -> str:
        return self.bpe.decode(ids.tolist() if isinstance(ids, torch.Tensor) else ids)


@functools.lru_cache(maxsize=2)
def _bpe_corpus(vocab_size: int) -> tuple[_BPE, torch.Tensor, torch.Tensor]:
    train_text, val_text = train_val_split(load_shakespeare())  # the characters' split
    tok = _BPE(train_text, vocab_size)  # merges from the training text only
    return tok, tok.encode(train_text), tok.encode(val_text)


def load_data(cfg: Config | None = None) -> tuple[CharTokenizer, torch.Tensor, torch.Tensor]:
    """``(tokenizer, train_ids, val_ids)``: tiny-shakespeare split 90/10, as character ids or BPE ids."""
    if cfg is not None and cfg.tokenizer == "bpe":
        return _bpe_corpus(cfg.bpe_vocab_size)
    return _corpus()


def build_model(cfg: Config) -> GPT:
    """A GPT with the recipe's sizes and the corpus's vocabulary, seeded by ``cfg.seed``."""
    tok, _, _ = load_data(cfg)
    torch.manual_seed(cfg.seed)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                         n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias, fast=cfg.fast,
                         positions=cfg.positions))


def lr_at(cfg: Config, step: int, progress: float) -> float:
    """Learning rate: linear warm-up over ``warmup_steps``, times a cosine from ``lr`` to ``min_lr``.

    ``progress`` in [0, 1] is the fraction of the run done (steps or time).
    """
    return warmup_cosine_lr(step, progress, peak=cfg.lr, final=cfg.min_lr, warmup_steps=cfg.warmup_steps)


@dataclass
class TrainState:
    """What resuming needs besides the weights: optimizer, sampler RNG, step, time, history."""

    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    elapsed: float = 0.0
    history: History | None = None

    def state_dict(self) -> dict:
        h = self.history or History()
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "step": self.step, "elapsed": self.elapsed, "metrics": {k: list(v) for k, v in h.metrics.items()},
                "seconds": h.seconds}

    def load_state_dict(self, d: dict) -> None:
        self.optimizer.load_state_dict(d["optimizer"])
        self.generator.set_state(d["generator"])
        self.step, self.elapsed = int(d["step"]), float(d["elapsed"])
        self.history = History(seconds=float(d["seconds"]))
        self.history.metrics.update({k: list(v) for k, v in d["metrics"].items()})


def init_state(cfg: Config, model: GPT) -> TrainState:
    """A fresh :class:`TrainState`: AdamW (weight decay on matrices only) and a seeded sampler."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    return TrainState(opt, torch.Generator().manual_seed(cfg.seed), history=History())


class _TimeUp(Exception):
    pass


def train(cfg: Config, model: GPT, *, progress: bool = True, callback: Callable[[int, History], None] | None = None,
          state: TrainState | None = None) -> History:
    """Train ``model`` for ``cfg.max_steps`` steps or ``cfg.time_budget`` seconds, whichever ends first.

    Args:
        progress: show a tqdm bar.
        callback: ``callback(step, history)`` after every step (``step`` counts from the
            start of the run, across resumes): save checkpoints, log, plot.
        state: a :class:`TrainState` to continue (from :func:`init_state`, possibly loaded
            from a checkpoint); updated in place.

    Returns:
        The history: per step ``loss`` (train, nats/char) and ``lr``; with ``eval_every``,
        ``val_loss`` estimates at the steps in ``val_step``.
    """
    state = state if state is not None else init_state(cfg, model)
    history = state.history if state.history is not None else History()
    state.history = history
    _, train_ids, val_ids = load_data(cfg)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if cfg.bf16 else contextlib.nullcontext
    start_step, start_elapsed = state.step, state.elapsed
    t0 = time.perf_counter()
    model.train()

    def elapsed() -> float:
        return start_elapsed + time.perf_counter() - t0

    def step(i: int) -> dict[str, float]:
        s = start_step + i
        if cfg.time_budget is not None and elapsed() >= cfg.time_budget:
            raise _TimeUp
        frac = s / cfg.max_steps
        if cfg.time_budget is not None:
            frac = max(frac, elapsed() / cfg.time_budget)
        lr = lr_at(cfg, s, frac)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_ids, cfg.batch_size, cfg.block_size, state.generator)
        with autocast():
            _, loss = model(x, y)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        state.optimizer.step()
        state.step = s + 1
        state.elapsed = elapsed()
        return {"loss": loss.detach(), "lr": lr}

    def after(i: int, h: History) -> None:
        s = start_step + i
        if cfg.eval_every and ((s + 1) % cfg.eval_every == 0 or s + 1 == cfg.max_steps):
            h.metrics["val_step"].append(s + 1)
            h.metrics["val_loss"].append(_estimate_val(cfg, model, val_ids))
            model.train()
        if callback is not None:
            callback(s, h)

    try:
        train_loop(step, max(cfg.max_steps - start_step, 0), desc="GPT", history=history, callback=after,
                   progress=progress, show_total=cfg.time_budget is None)
    except _TimeUp:  # train_loop adds its time only when it finishes: account for it here
        history.seconds += time.perf_counter() - t0
    model.eval()
    return history


@torch.no_grad()
def _estimate_val(cfg: Config, model: GPT, val_ids: torch.Tensor) -> float:
    """A quick, fixed-batch estimate of the validation loss (the full pass is :func:`evaluate`)."""
    model.eval()
    g = torch.Generator().manual_seed(0)  # the same windows at every evaluation
    losses = [model(*get_batch(val_ids, cfg.batch_size, cfg.block_size, g))[1].item()
              for _ in range(cfg.eval_batches)]
    return sum(losses) / len(losses)


def evaluate(cfg: Config, model: GPT) -> dict[str, float]:
    r"""NLL over the whole validation split (every token but the first predicted once; see
    :func:`companion.lm.evaluate_nll`): ``val_loss`` in nats per token, its perplexity, and
    ``val_bpc``, bits per character, :math:`\sum_i \mathrm{NLL}_i / (\ln 2 \cdot \#\text{characters predicted})`
    (for character tokens, the loss divided by ln 2)."""
    tok, _, val_ids = load_data(cfg)
    nll = evaluate_nll(model, val_ids, cfg.block_size, cfg.eval_batch_size)
    n_tokens = len(val_ids) - 1
    n_chars = len(tok.decode(val_ids[1:]))  # the characters that the predicted tokens spell
    return {"val_loss": nll, "val_bpc": nll * n_tokens / (n_chars * math.log(2)), "val_ppl": perplexity(nll),
            "val_tokens": float(n_tokens), "val_chars": float(n_chars), "block_size": float(cfg.block_size)}


def sample(cfg: Config, model: GPT, n: int, generator: torch.Generator | None = None) -> list[str]:
    """``n`` samples of ``cfg.sample_length`` characters after ``cfg.sample_prompt`` (prompt included)."""
    tok, _, _ = load_data(cfg)
    prompt = tok.encode(cfg.sample_prompt).repeat(n, 1)
    out = model.generate(prompt, cfg.sample_length, temperature=cfg.temperature, top_k=cfg.top_k,
                         top_p=cfg.top_p, generator=generator)
    return [tok.decode(row) for row in out]


@torch.no_grad()
def generate_text(cfg: Config, model: GPT, prompt: str, max_length: int, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None,
                  generator: torch.Generator | None = None) -> str:
    """Continue ``prompt`` to ``max_length`` tokens *in all*, prompt included, as Hugging Face's
    ``model.generate(input_ids, max_length=...)`` counts them (article ``003``, section 5); the
    knobs are :meth:`companion.gpt.GPT.generate`'s. Returns the text, prompt included."""
    tok, _, _ = load_data(cfg)
    ids = tok.encode(prompt)
    if len(ids) == 0:
        raise ValueError("prompt must not be empty (it gives the first token)")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < len(ids):
        raise ValueError(f"max_length counts the prompt's {len(ids)} tokens too: it must be an int >= {len(ids)}, "
                         f"got {max_length!r}")
    out = model.generate(ids[None, :], max_length - len(ids), temperature=temperature, top_k=top_k, top_p=top_p,
                         generator=generator)
    return tok.decode(out[0])
