"""Recipe: the encoder-decoder Transformer on a synthetic digit task (notebooks ``02_3``, ``02_4``).

``Config`` holds every setting; ``build_model``, ``train``, ``evaluate`` and ``sample`` are what
the notebooks (through :func:`companion.train.train_or_load`) and the command-line trainer call.
The defaults train a 2+2-layer, d_model = 64 model to 100 % exact-sequence accuracy on held-out
digit sequences of length 1 to 8 (reversal) in well under two minutes on 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from companion.seq2seq import BOS, EOS, VOCAB_SIZE, DigitTask, evaluate_seq2seq, train_seq2seq
from companion.train import History
from companion.transformer import Transformer

__all__ = ["Config", "build_model", "train", "evaluate", "sample", "task_of", "test_set"]


@dataclass
class Config:
    """Every setting that changes the trained model (JSON-serialisable)."""

    seed: int = 0
    task: str = "reverse"  # "reverse" or "sort"
    min_len: int = 1
    max_len: int = 8
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2  # encoder layers = decoder layers
    d_ff: int = 128
    dropout: float = 0.0
    norm_first: bool = True  # pre-LN
    positional: str = "sinusoidal"
    steps: int = 800
    batch_size: int = 128
    lr: float = 3e-3
    warmup: int = 100
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    clip_norm: float = 1.0
    n_test: int = 1000
    test_seed: int = 12345


def task_of(cfg: Config) -> DigitTask:
    return DigitTask(cfg.task, cfg.min_len, cfg.max_len)


def test_set(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed held-out evaluation set ``(src, tgt)``: ``n_test`` sequences never drawn for training."""
    return task_of(cfg).sample(cfg.n_test, torch.Generator().manual_seed(cfg.test_seed), split="test")


def build_model(cfg: Config) -> Transformer:
    """A freshly initialised :class:`~companion.transformer.Transformer`, seeded by ``cfg.seed``."""
    with torch.random.fork_rng(devices=[]):  # do not disturb the caller's global RNG
        torch.manual_seed(cfg.seed)
        return Transformer(VOCAB_SIZE, VOCAB_SIZE, d_model=cfg.d_model, n_heads=cfg.n_heads,
                           n_encoder_layers=cfg.n_layers, n_decoder_layers=cfg.n_layers, d_ff=cfg.d_ff,
                           dropout=cfg.dropout, max_len=cfg.max_len + 2, norm_first=cfg.norm_first,
                           positional=cfg.positional)


def train(cfg: Config, model: torch.nn.Module, *, progress: bool = True, callback=None) -> History:
    """Train on fresh batches of the training split; returns the history (loss, grad_norm, lr)."""
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG
        torch.manual_seed(cfg.seed + 2)
        return train_seq2seq(model, task_of(cfg), steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                             warmup=cfg.warmup, schedule=cfg.schedule, label_smoothing=cfg.label_smoothing,
                             clip_norm=cfg.clip_norm, generator=generator, progress=progress, callback=callback,
                             desc=f"Transformer ({cfg.task})")


def evaluate(cfg: Config, model: torch.nn.Module) -> dict[str, float]:
    """Held-out ``exact_acc`` (greedy decoding, whole sequence right) and teacher-forced ``token_acc``."""
    return evaluate_seq2seq(model, *test_set(cfg))


def sample(cfg: Config, model: torch.nn.Module, n: int, generator: torch.Generator | None = None):
    """Greedy outputs for ``n`` random held-out inputs: returns ``(src (n, max_len), output (n, L))``."""
    src, _ = task_of(cfg).sample(n, generator, split="test")
    return src, model.greedy_decode(src, max_len=cfg.max_len + 1, bos_id=BOS, eos_id=EOS)
