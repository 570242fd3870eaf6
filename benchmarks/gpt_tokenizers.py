"""Benchmark: the GPT on characters against the same GPT on byte-level BPE tokens, at equal training time.

    .venv/bin/python benchmarks/gpt_tokenizers.py [--minutes 3] [--vocab 512] \
        [--json benchmarks/results/gpt_tokenizers.json]

Both runs are ``companion.recipes.gpt.benchmark_config(minutes)`` as it was when the committed results
were measured (4 layers, 128 wide, context 128 tokens in batches of 16, learned positions, float32: the
fields of ``MEASURED_WITH`` pin them), the cosine schedule following the clock, with only the tokenizer
changed: characters
(65 symbols) or byte-level BPE with ``--vocab`` tokens (256 bytes + merges learned on the training
text only, ``companion.tokenizers.train_bpe``). Each trains for the same wall-clock time, one after
the other on the same machine, and is scored on the *whole* validation text in **bits per
character** (the token NLL summed and divided by the characters predicted), the only unit in which
the two can be compared: a BPE token carries several characters, so its loss per token is not
comparable with a character model's. Note what else changes with the tokenizer: the same context
of 128 tokens covers more characters with BPE, and the embedding and output layers grow with the
vocabulary.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import torch
from provenance import write_results

from companion.recipes import gpt as recipe

# the benchmark configuration of the committed run (benchmark_config() has since moved to a context of 256,
# batches of 8, bfloat16 and rotary positions)
MEASURED_WITH = {"block_size": 128, "batch_size": 16, "bf16": False, "positions": "learned"}


def run(tokenizer: str, minutes: float, vocab: int) -> dict:
    cfg = replace(recipe.benchmark_config(minutes), tokenizer=tokenizer, bpe_vocab_size=vocab, **MEASURED_WITH)
    t0 = time.perf_counter()
    tok, train_ids, val_ids = recipe.load_data(cfg)
    tokenize_seconds = time.perf_counter() - t0
    model = recipe.build_model(cfg)
    load_before = os.getloadavg()[0]
    history = recipe.train(cfg, model, progress=False)
    metrics = recipe.evaluate(cfg, model)
    sample = recipe.generate_text(cfg, model, "ROMEO:", max_length=60, temperature=0.8,
                                  generator=torch.Generator().manual_seed(0))
    return {"tokenizer": tokenizer, "vocab_size": tok.vocab_size, "config": cfg.to_dict(),
            "tokenize_seconds": tokenize_seconds, "train_seconds": history.seconds,
            "steps": len(history["loss"]), "load_before": load_before, "load_after": os.getloadavg()[0],
            "parameters": sum(p.numel() for p in model.parameters()),
            "chars_per_token": metrics["val_chars"] / metrics["val_tokens"],
            "context_chars": cfg.block_size * metrics["val_chars"] / metrics["val_tokens"],
            "sample": sample, **metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="training time of each run")
    parser.add_argument("--vocab", type=int, default=512, help="BPE vocabulary size")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()
    runs = []
    for tokenizer in ("char", "bpe"):
        r = run(tokenizer, args.minutes, args.vocab)
        runs.append(r)
        print(f"{tokenizer:>4}: {r['val_bpc']:.3f} bits/char ({r['val_loss']:.3f} nats/token, "
              f"{r['chars_per_token']:.2f} chars/token), {r['steps']} steps in {r['train_seconds']:.0f} s "
              f"(load {r['load_before']:.1f})", flush=True)
    if args.json:
        write_results(args.json, "benchmarks/gpt_tokenizers.py", minutes=args.minutes, runs=runs)


if __name__ == "__main__":
    main()
