"""Recipe: sequence-to-sequence models on a synthetic digit task (notebooks ``02_3``, ``02_4``).

``Config`` holds every setting; ``build_model``, ``train``, ``evaluate`` and ``sample`` are what
the notebooks (through :func:`companion.train.train_or_load`) and the command-line trainer call.
``arch`` picks the model: the encoder-decoder :class:`~companion.transformer.Transformer`
(default), the LSTM baselines of :class:`~companion.seq2seq.LSTMSeq2Seq` without
(``"lstm"``) or with (``"lstm_attention"``) attention, or the causal dilated CNN of
:class:`~companion.conv_seq2seq.ConvSeq2Seq` (``"conv"``), all trained the same way.
The defaults train a 2+2-layer, d_model = 32 Transformer to 100 % exact-sequence accuracy on
held-out reversals of 3 to 12 digits in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from companion.conv_seq2seq import ConvSeq2Seq
from companion.recipes.seq2seq import train_seq2seq
from companion.seq2seq import (
    BOS,
    EOS,
    VOCAB_SIZE,
    DigitTask,
    LSTMSeq2Seq,
    evaluate_seq2seq,
    tokens_to_str,
)
from companion.train import History
from companion.transformer import Transformer

__all__ = ["Config", "build_model", "train", "evaluate", "sample", "task_of", "test_set"]


@dataclass
class Config:
    """Every setting that changes the trained model (JSON-serialisable)."""

    seed: int = 0
    arch: str = "transformer"  # "transformer", "lstm", "lstm_attention" or "conv"
    task: str = "reverse"  # "reverse" or "sort"
    min_len: int = 3
    max_len: int = 12
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2  # encoder layers = decoder layers (LSTM: stacked layers)
    d_ff: int = 64
    dropout: float = 0.0
    norm_first: bool = True  # pre-LN
    positional: str = "sinusoidal"
    d_hidden: int = 64  # LSTM state size (the LSTM embeds tokens in d_model dimensions)
    conv_channels: int = 64  # the CNN's channels, layers (dilations 1, 2, 4, ...) and kernel size
    conv_layers: int = 5
    conv_kernel: int = 2
    steps: int = 800
    batch_size: int = 64
    lr: float = 5e-3
    warmup: int = 100
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    clip_norm: float = 1.0  # 0: no clipping
    n_test: int = 1000
    test_seed: int = 12345


def task_of(cfg: Config) -> DigitTask:
    return DigitTask(cfg.task, cfg.min_len, cfg.max_len)


def test_set(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed held-out evaluation set ``(src, tgt)``: ``n_test`` distinct sequences never drawn for training.

    (Fewer than ``n_test`` if the held-out split has fewer distinct sequences of these lengths.)
    """
    src, _ = task_of(cfg).sample(4 * cfg.n_test, torch.Generator().manual_seed(cfg.test_seed), split="test")
    seen, keep = set(), []
    for n, row in enumerate(map(tuple, src.tolist())):
        if row not in seen:
            seen.add(row)
            keep.append(n)
    src = src[torch.tensor(keep[: cfg.n_test])]
    return src, task_of(cfg).targets(src)


def build_model(cfg: Config) -> torch.nn.Module:
    """A freshly initialised model of architecture ``cfg.arch``, seeded by ``cfg.seed``."""
    if cfg.arch not in ("transformer", "lstm", "lstm_attention", "conv"):
        raise ValueError(f"arch must be 'transformer', 'lstm', 'lstm_attention' or 'conv', got {cfg.arch!r}")
    with torch.random.fork_rng(devices=[]):  # do not disturb the caller's global RNG
        torch.manual_seed(cfg.seed)
        if cfg.arch == "conv":
            return ConvSeq2Seq(VOCAB_SIZE, max_src_len=cfg.max_len, max_tgt_len=cfg.max_len + 1,
                               d_model=cfg.conv_channels, n_layers=cfg.conv_layers, kernel_size=cfg.conv_kernel)
        if cfg.arch != "transformer":
            return LSTMSeq2Seq(VOCAB_SIZE, d_embed=cfg.d_model, d_hidden=cfg.d_hidden, n_layers=cfg.n_layers,
                               attention=cfg.arch == "lstm_attention")
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
                             clip_norm=cfg.clip_norm if cfg.clip_norm > 0 else None, generator=generator,
                             progress=progress, callback=callback, desc=f"{cfg.arch} ({cfg.task})")


def evaluate(cfg: Config, model: torch.nn.Module) -> dict[str, float]:
    """Held-out ``exact_acc`` (greedy decoding, whole sequence right) and teacher-forced ``token_acc``."""
    return evaluate_seq2seq(model, *test_set(cfg))


def sample(cfg: Config, model: torch.nn.Module, n: int, generator: torch.Generator | None = None) -> list[str]:
    """Greedy outputs for ``n`` random held-out inputs, as lines ``"3 1 4  ->  4 1 3 </s>"``."""
    src, _ = task_of(cfg).sample(n, generator, split="test")
    out = model.greedy_decode(src, max_len=cfg.max_len + 1, bos_id=BOS, eos_id=EOS)
    return [f"{tokens_to_str(s)}  ->  {tokens_to_str(o)}" for s, o in zip(src, out, strict=True)]
