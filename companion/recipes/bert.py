"""Training loop of the small BERT of chapter "BERT and evaluating generated text": the masked-LM objective.

Each step draws random windows of the corpus, hides tokens with
:func:`companion.bert.mask_tokens` (80% ``[MASK]``, 10% a random token, 10% unchanged) and
minimises the cross-entropy at the hidden positions only, with AdamW, gradient clipping and
the warm-up + cosine schedule of :func:`companion.train.warmup_cosine_lr` (down to lr / 10).
"""

from __future__ import annotations

import torch
from torch import Tensor

from companion.bert import BERT, mask_tokens
from companion.lm import get_batch
from companion.train import History, train_loop, warmup_cosine_lr

__all__ = ["train_mlm"]


def train_mlm(model: BERT, data: Tensor, *, steps: int, batch_size: int = 32, lr: float = 2e-3,
              warmup: int = 30, mask_prob: float = 0.15, generator: torch.Generator | None = None,
              progress: bool = True) -> History:
    """Train ``model`` with the masked-LM loss on random windows of ``data`` (AdamW,
    warm-up then cosine decay to lr/10). Returns the :class:`companion.train.History`."""
    cfg = model.config
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.1)
    model.train()

    def step(i: int) -> dict[str, float | Tensor]:
        lr_i = warmup_cosine_lr(i, i / max(steps - 1, 1), peak=lr, final=0.1 * lr, warmup_steps=warmup)
        for group in opt.param_groups:
            group["lr"] = lr_i
        x, _ = get_batch(data, batch_size, cfg.block_size, generator)
        inputs, labels = mask_tokens(x, cfg.mask_id, cfg.vocab_size - 1, mask_prob, generator)
        _, loss = model(inputs, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return {"loss": loss.detach(), "lr": lr_i}

    history = train_loop(step, steps, desc="BERT (masked LM)", progress=progress)
    model.eval()
    return history
