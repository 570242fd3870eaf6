"""Benchmark: flow matching without labels, self-conditioned on k-means clusters, against the guidance scale.

    .venv/bin/python benchmarks/flow_self_guidance.py                       # K = 100, seed 0, w = 0, 1, 1.5, 2, 3
    .venv/bin/python benchmarks/flow_self_guidance.py --model ddpm --clusters 100 --out /tmp/d

Trains ``python -m companion train MODEL`` (``flow`` or ``ddpm``) with ``self_condition = K``: the U-Net
sees one of K k-means clusters of the training images (no labels are read), dropped to "no cluster"
with probability ``p_uncond``; sampling draws each cluster as often as in the training set and guides
towards it with scale w (w = 0: the network's unconditional field, w = 1: the plain cluster-conditional
one). The one trained network is then sampled at every w of ``--guidance`` and each set of 1,000
samples is scored like ``mnist_targets.py`` (feature FID, classifier IS, the rarest and commonest digit,
sampling time). The untouched command-line model (``self_condition = 0``) is the row of
``mnist_targets.json``.

Writes ``OUT.json`` and ``OUT.md`` (default ``benchmarks/results/MODEL_self_guidance``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from pathlib import Path

import mnist_targets
import torch
from provenance import provenance

from companion.metrics import NOT_COMPARABLE_TO_PAPERS
from companion.recipes.classifier import mnist_classifier
from companion.runs import data_tag, make_config, real_baseline, train_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
N = mnist_targets.N


def markdown(results: dict) -> str:
    base, meta = results["baseline"], results["meta"]
    clip = any(r.get("clip_x0") for r in results["rows"])
    lines = ["| guidance w" + (" | clipped $\\hat x_0$" if clip else "")
             + " | feature FID ↓ | classifier IS ↑ | rarest digit | commonest digit | sampling s |",
             "|---|---|---|---|---|---|" + ("---|" if clip else ""),
             "| real images" + (" | –" if clip else "")
             + f" | {base['fid']:.1f} | {base['inception_score']:.2f} | – | – | – |"]
    for r in results["rows"]:
        lines.append(f"| {r['guidance']:g}" + ((" | yes" if r["clip_x0"] else " | no") if clip else "")
                     + f" | {r['fid']:.1f} | {r['inception_score']:.2f} | {r['digit_min']:.1%} | "
                     f"{r['digit_max']:.1%} | {r['sample_seconds']:.0f} |")
    pred = meta["config"].get("prediction")
    lines += ["", f"Produced by `benchmarks/flow_self_guidance.py`: `{meta['model']}`"
              + (f" (predicting {'the noise' if pred == 'eps' else 'v'})" if pred else "") + " self-conditioned on "
              f"{meta['clusters']} k-means clusters, seed {meta['seed']}, trained once in "
              f"{meta['train_seconds']:.0f} s "
              f"(torch {meta['torch']}, {meta['threads']} thread(s), data: {meta['data']}); 1,000 samples per row. "
              "Feature FID and IS use the package's MNIST classifier, not Inception."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["flow", "ddpm"], default="flow")
    parser.add_argument("--clusters", type=int, default=100, help="K, the number of k-means clusters")
    parser.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip-x0", action="store_true", help="ddpm only: clip the predicted x0 to [-1, 1]")
    parser.add_argument("--prediction", choices=["eps", "v"], default=None,
                        help="ddpm only: what the network predicts (default: the command line's)")
    parser.add_argument("--also-unclipped", type=float, nargs="*", default=[],
                        help="with --clip-x0: guidance scales sampled a second time without clipping (same network)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the command line's)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/MODEL_self_guidance")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.out = args.out or RESULTS / f"{args.model}_self_guidance"
    if args.clusters < 2:
        parser.error(f"--clusters must be >= 2, got {args.clusters}")
    if args.clip_x0 and args.model != "ddpm":
        parser.error("--clip-x0 applies to --model ddpm only")
    if args.prediction and args.model != "ddpm":
        parser.error("--prediction applies to --model ddpm only")
    if args.also_unclipped and not args.clip_x0:
        parser.error("--also-unclipped compares with --clip-x0; give both")
    for suffix in (".json", ".md"):  # nothing a user made is overwritten by surprise: say where it goes
        print(f"writes {args.out.with_suffix(suffix)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        classifier = mnist_classifier(progress=progress)
        overrides = {"self_condition": args.clusters, "seed": args.seed, **({"clip_x0": True} if args.clip_x0 else {}),
                     **({"prediction": args.prediction} if args.prediction else {})}
        cfg = make_config(args.model, {**overrides, **({"steps": args.steps} if args.steps is not None else {})})
        model, history, _ = train_model(args.model, cfg, progress=progress, retrain=True)
        rows = []
        settings = [(w, args.clip_x0) for w in args.guidance] + [(w, False) for w in args.also_unclipped]
        for w, clip in settings:  # the one network, sampled and scored as in mnist_targets.py at each setting
            sampled = dataclasses.replace(cfg, guidance=w, **({"clip_x0": clip} if args.model == "ddpm" else {}))
            row = {"guidance": w, **({"clip_x0": clip} if args.model == "ddpm" else {}),
                   **mnist_targets.score(args.model, sampled, model, classifier, progress)}
            rows.append(row)
            print({k: row.get(k) for k in ("guidance", "clip_x0", "fid", "inception_score", "digit_min", "digit_max",
                                           "sample_seconds")}, flush=True)
        baseline = real_baseline(classifier, N)
    meta = {**provenance("benchmarks/flow_self_guidance.py"), "model": args.model, "clusters": args.clusters,
            "seed": args.seed,
            "config": dataclasses.asdict(cfg), "train_seconds": history.seconds, "data": data_tag(),
            "n_samples": N, "not_comparable": NOT_COMPARABLE_TO_PAPERS}
    results = {"meta": meta, "baseline": baseline, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
