"""Benchmark: every GAN variant of the chapter on the 8-Gaussians ring, one budget, one table.

    .venv/bin/python benchmarks/gan_variants.py                  # 2,000 generator steps, seeds 0 1 2
    .venv/bin/python benchmarks/gan_variants.py --steps 500 --seeds 0 --json /tmp/gan.json

Each variant (``companion.recipes.gan_variants.VARIANTS``) trains with the same architecture, batch
size and number of generator updates (the Wasserstein critics take their usual 5 critic steps
per generator step); the table gives the modes captured (of 8) per seed, the mean fraction of
high-quality samples (within 3 sigma of a mode), the KL divergence of the mode histogram from
uniform, the label accuracy of the conditional GAN and the training time. Goal: the
non-saturating GAN and WGAN-GP capture at least 7 of 8 modes with every seed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict

import torch

from companion.recipes import gan as R
from companion.recipes import gan_variants as V

GOAL = {"GAN (non-saturating)": 7, "WGAN-GP": 7}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="generator updates per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=None, help="a subset of the variant names")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (tiny nets: 1 is fastest)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    variants = V.VARIANTS if args.variants is None else {k: V.VARIANTS[k] for k in args.variants}
    base = R.Config(data="ring", steps=args.steps)
    print(f"ring: {base.n_modes} Gaussians, radius {base.ring_radius}, std {base.ring_std}; "
          f"{args.steps} generator steps, seeds {args.seeds}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    start = time.perf_counter()
    rows = []
    for name, overrides in variants.items():
        for seed in args.seeds:
            (row,) = V.compare_variants(base, {name: overrides}, seeds=(seed,), progress=False)
            rows.append(row)
            print(f"  {name:24s} seed {seed}: {int(row['modes_captured'])} modes, "
                  f"high quality {row['high_quality_fraction']:.3f}, {row['seconds']:.1f} s", flush=True)
    total = time.perf_counter() - start

    header = (f"| {'variant':24s} | modes per seed | mean modes | high quality | KL to uniform | label acc. "
              "| seconds/run |")
    print("\n" + header + "\n|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    ok = True
    for name in variants:
        runs = [r for r in rows if r["variant"] == name]
        modes = [int(r["modes_captured"]) for r in runs]

        def mean(key: str, runs: list = runs) -> float:
            return sum(r[key] for r in runs) / len(runs)

        kl = [r["kl_to_uniform"] for r in runs if not math.isnan(r["kl_to_uniform"])]
        acc = f"{mean('label_accuracy'):.3f}" if "label_accuracy" in runs[0] else "-"
        print(f"| {name:24s} | {' '.join(map(str, modes)):14s} | {sum(modes) / len(modes):10.2f} | "
              f"{mean('high_quality_fraction'):12.3f} | {(sum(kl) / len(kl) if kl else float('nan')):13.3f} | "
              f"{acc:>10s} | {mean('seconds'):11.1f} |")
        if name in GOAL and min(modes) < GOAL[name]:
            ok = False
    print(f"\ntotal {total:.0f} s; load average now {os.getloadavg()[0]:.1f}")
    for name, need in GOAL.items():
        if name in variants:
            got = min(int(r["modes_captured"]) for r in rows if r["variant"] == name)
            verdict = "PASS" if got >= need else "FAIL"
            print(f"goal {name}: >= {need} of 8 modes with every seed -> worst seed {got}: {verdict}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"config": asdict(base), "rows": rows, "seconds": total}, fh, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
