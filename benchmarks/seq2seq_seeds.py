"""Benchmark: the contestants of chapter "RNN or Transformer?", each trained with three seeds.

    .venv/bin/python benchmarks/seq2seq_seeds.py [--seeds 0 1 2] [--json benchmarks/results/seq2seq_seeds.json]

Every contestant is ``companion.recipes.transformer.Config()`` with one change (the chapter's
settings): the LSTM, the LSTM with attention, the Transformer, the causal dilated CNN (receptive
field 32 positions) and the same CNN one layer shallower (receptive field 16, too short to reverse
the longest sequences). For each seed (which seeds the initialisation and the training batches)
the script records the held-out exact-sequence accuracy on the recipe's fixed test set, the
accuracy for each source length (200 held-out sequences per length, drawn with a fixed seed, as
in the chapter) and the training time. The chapter reads the JSON and states only what holds for
every seed.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, replace

import torch
from provenance import write_results

from companion.recipes import transformer as recipe
from companion.seq2seq import accuracy_by_length

CONTESTANTS = {
    "LSTM": {"arch": "lstm", "n_layers": 1},
    "LSTM + attention": {"arch": "lstm_attention", "n_layers": 1},
    "Transformer": {},
    "CNN": {"arch": "conv"},
    "CNN, shallow": {"arch": "conv", "conv_layers": 4},
}


def run(name: str, seed: int) -> dict:
    cfg = replace(recipe.Config(), seed=seed, **CONTESTANTS[name])
    model = recipe.build_model(cfg)
    load_before = os.getloadavg()[0]
    history = recipe.train(cfg, model, progress=False)
    by_length = accuracy_by_length(model, recipe.task_of(cfg), n_per_length=200,
                                   generator=torch.Generator().manual_seed(7))
    result = {"name": name, "seed": seed, "config": asdict(cfg), "seconds": history.seconds,
              "load_before": load_before, "load_after": os.getloadavg()[0],
              "params": sum(p.numel() for p in model.parameters()),
              "accuracy_by_length": {str(n): a for n, a in by_length.items()}, **recipe.evaluate(cfg, model)}
    if hasattr(model, "receptive_field"):
        result["receptive_field"] = model.receptive_field
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=list(CONTESTANTS), help="run only these contestants")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()
    runs = []
    for name in args.only or CONTESTANTS:
        for seed in args.seeds:
            r = run(name, seed)
            runs.append(r)
            print(f"{name:>17} seed {seed}: exact accuracy {r['exact_acc']:.3f}, "
                  f"length 12: {r['accuracy_by_length']['12']:.3f}, {r['seconds']:.0f} s "
                  f"(load {r['load_before']:.1f})", flush=True)
    if args.json:
        write_results(args.json, "benchmarks/seq2seq_seeds.py", seeds=args.seeds, runs=runs)


if __name__ == "__main__":
    main()
