"""Benchmark: the GAN tricks that seed ``000`` names, each added to the MNIST DCGAN and measured.

    .venv/bin/python benchmarks/gan_tricks.py                          # every trick, seed 0, 3,000 steps
    .venv/bin/python benchmarks/gan_tricks.py --tricks baseline sn --out /tmp/a
    .venv/bin/python benchmarks/gan_tricks.py --merge /tmp/a.json /tmp/b.json   # one table from parallel runs

Each row trains ``python -m companion train dcgan`` with one change (``TRICKS``): spectral
normalisation of every discriminator layer, a SAGAN self-attention block in both networks,
the WGAN-GP loss (gradient penalty, 5 critic steps per generator step, its optimiser settings),
DiffAugment (translation and cut-out), an InfoGAN code (``companion.infogan``: a latent space
in ten disconnected pieces, meant for samples that fall between two digits) and self-conditioning
(``self_condition``: 50 k-means clusters of the training images as labels; the DCGAN's command-line
default since, so every other row sets it to 0). All rows use the same
number of generator steps (``--steps``, default 3,000: half the command-line default, so that
the table fits in an hour of one CPU thread per run) and the same seed, and are scored like ``mnist_targets.py``: 1,000
samples against the 1,000 fixed test images (feature FID, classifier IS, class coverage, the
shares of the rarest and commonest digit), with the wall-clock training time.

Writes ``OUT.json`` and ``OUT.md`` (default ``benchmarks/results/gan_tricks``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import mnist_targets
import torch
from provenance import merged_provenance, provenance

from companion.metrics import NOT_COMPARABLE_TO_PAPERS
from companion.recipes.classifier import mnist_classifier
from companion.runs import data_tag, real_baseline

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gan_tricks"
N = mnist_targets.N
TRICKS: dict[str, tuple[str, dict]] = {  # name -> (what it changes, config overrides of the dcgan model)
    "baseline": ("the DCGAN with its command-line settings, without self-conditioning", {}),
    "sn": ("spectral normalisation of every layer of D", {"spectral_norm": True}),
    "sagan": ("a self-attention block in G and D (SAGAN)", {"self_attention": True}),
    "wgan-gp": ("Wasserstein loss with gradient penalty, 5 critic steps, Adam (0.5, 0.9)",
                {"loss": "wgan-gp", "n_critic": 5, "beta1": 0.5, "beta2": 0.9}),
    "diffaugment": ("DiffAugment: translation and cut-out of real and fake images before D",
                    {"diffaugment": "translation,cutout"}),
    "infogan": ("InfoGAN: a 10-way categorical code beside z, read back from the image by a head on D",
                {"info_codes": 10}),
    "self-cond": ("self-conditioning: G and D conditioned on 50 k-means clusters of the training images",
                  {"self_condition": 50}),
}


def run_one(name: str, steps: int, seed: int, classifier, progress: bool) -> dict:
    """One row: the dcgan with trick ``name``, scored as in ``mnist_targets.py`` (its targets are not checked)."""
    what, overrides = TRICKS[name]
    # every row starts from the plain DCGAN: self-conditioning (the command-line default since) is a row of its own
    row = mnist_targets.run_one("dcgan", seed, classifier, progress,
                                overrides={"self_condition": 0, **overrides, "steps": steps})
    return {"trick": name, "what": what, "steps": steps, **{k: v for k, v in row.items() if k != "targets"}}


def markdown(results: dict) -> str:
    base = results["baseline"]
    lines = ["| trick | what it changes | train time (s) | feature FID ↓ | classifier IS ↑ | coverage | rarest digit "
             "| commonest digit |", "|---|---|---|---|---|---|---|---|",
             f"| real images | – | – | {base['fid']:.1f} | {base['inception_score']:.2f} | {base['coverage']:.1f} "
             "| – | – |"]
    for r in results["rows"]:
        lines.append(f"| {r['trick']} | {r['what']} | {r['train_seconds']:.0f} | {r['fid']:.1f} | "
                     f"{r['inception_score']:.2f} | {r['coverage']:.1f} | {r['digit_min']:.1%} | "
                     f"{r['digit_max']:.1%} |")
    lines += ["", f"Produced by `benchmarks/gan_tricks.py` (torch {results['meta']['torch']}, data: "
              f"{results['meta']['data']}), seed {results['rows'][0]['seed']}, {results['rows'][0]['steps']:,} "
              "generator steps each; train time is wall-clock (inflated when runs share the machine). Feature FID "
              "and IS use the package's MNIST classifier, not Inception."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tricks", nargs="+", default=list(TRICKS), choices=list(TRICKS))
    parser.add_argument("--steps", type=int, default=3000, help="generator steps of every run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="writes OUT.json and OUT.md")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--merge", nargs="+", type=Path, default=None,
                        help="combine the rows of these result JSONs into OUT (no training)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.merge:
        parts = [json.loads(p.with_suffix(".json").read_text()) for p in args.merge]
        rows = sorted((r for p in parts for r in p["rows"]), key=lambda r: list(TRICKS).index(r["trick"]))
        results = {**parts[0], "rows": rows,
                   "merged_from": merged_provenance(parts)}
    else:
        if args.steps < 1:
            parser.error(f"--steps must be >= 1, got {args.steps}")
        if args.threads:
            torch.set_num_threads(args.threads)
        warnings.filterwarnings("ignore", message=".*offline fallback.*")
        classifier = mnist_classifier(progress=not args.no_progress)
        rows = []
        for name in args.tricks:
            print(f"\n== {name}", flush=True)
            t = time.perf_counter()
            rows.append(run_one(name, args.steps, args.seed, classifier, progress=not args.no_progress))
            print({k: rows[-1][k] for k in ("train_seconds", "fid", "inception_score", "digit_min", "digit_max")},
                  f"({time.perf_counter() - t:.0f} s with the evaluation)", flush=True)
        results = {"meta": {**provenance("benchmarks/gan_tricks.py"), "data": data_tag(), "n_samples": N,
                            "not_comparable": NOT_COMPARABLE_TO_PAPERS, "threads": torch.get_num_threads()},
                   "baseline": real_baseline(classifier, N), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print("\n" + markdown(results))


if __name__ == "__main__":
    main()
