"""Training loop of the sequence-to-sequence models of chapter "RNN vs Transformer" (digit tasks).

:func:`train_seq2seq` trains any ``model(src, tgt_in) -> logits`` (the Transformer of
:mod:`companion.transformer`, the LSTMs of :mod:`companion.seq2seq`) on fresh batches of a
:class:`~companion.seq2seq.DigitTask`, with AdamW, a warm-up and gradient clipping. The
Transformer recipe (:mod:`companion.recipes.transformer`) and the notebooks call it.
"""

from __future__ import annotations

import torch
from torch import nn

from companion.seq2seq import DigitTask, seq2seq_loss
from companion.train import History, train_loop, warmup_schedule

__all__ = ["train_seq2seq"]


def train_seq2seq(model: nn.Module, task: DigitTask, *, steps: int, batch_size: int = 64, lr: float = 1e-3,
                  warmup: int = 100, label_smoothing: float = 0.0, clip_norm: float | None = 1.0,
                  weight_decay: float = 0.0, generator: torch.Generator | None = None, progress: bool = True,
                  callback=None, desc: str = "training", schedule: str = "cosine") -> History:
    """Train a seq2seq model (``model(src, tgt_in) -> logits``) with Adam(W), warm-up and clipping.

    Every step draws a fresh training batch from ``task`` (never a held-out sequence). Records
    ``loss`` (label-smoothed, the optimised quantity), ``grad_norm`` (before clipping) and ``lr``.

    Args:
        schedule: ``"cosine"`` (linear warm-up, cosine decay to 0 at ``steps``), ``"inverse_sqrt"``
            (linear warm-up, then the paper's inverse-square-root decay) or ``"constant"``
            (linear warm-up, then constant; ``warmup=0``: constant from the start).
        clip_norm: clip the global gradient norm to this value (``None``: no clipping).
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=weight_decay)
    if schedule == "cosine":
        sched = warmup_schedule(opt, warmup, total_steps=max(steps, warmup, 1))
    elif schedule == "inverse_sqrt":
        sched = warmup_schedule(opt, warmup)
    elif schedule == "constant":  # linear warm-up (if warmup > 0), then constant
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup) if warmup > 0 else 1.0)
    else:
        raise ValueError(f"schedule must be 'cosine', 'inverse_sqrt' or 'constant', got {schedule!r}")
    model.train()

    def step(i: int) -> dict[str, float]:
        src, tgt = task.sample(batch_size, generator, split="train")
        loss = seq2seq_loss(model, src, tgt, label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = clip_norm if clip_norm is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        current_lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        return {"loss": loss.detach(), "grad_norm": grad_norm, "lr": current_lr}

    return train_loop(step, steps, desc=desc, progress=progress, callback=callback)
