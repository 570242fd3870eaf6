"""Benchmark: how MNIST GANs learn, measured during training (the GAN chapter's "Debugging a GAN" section).

    .venv/bin/python benchmarks/gan_debugging.py                      # all runs, writes the results JSON
    .venv/bin/python benchmarks/gan_debugging.py --runs dcgan --out /tmp/gan_debugging.json
    .venv/bin/python benchmarks/gan_debugging.py --runs dcgan-long --every 1000 --out /tmp/long.json
    .venv/bin/python benchmarks/gan_debugging.py --merge /tmp/gan_debugging.json /tmp/long.json

Each run trains one model as ``python -m companion train MODEL`` did before self-conditioning became
its default (its command-line defaults with ``self_condition=0``, seed 0; ``dcgan+diffaugment`` adds
DiffAugment's translation and cutout) and, every ``--every``
generator steps, records

* the image metrics of ``--n`` samples against as many fixed test images (feature FID, classifier
  IS, class coverage), with the training time so far (the evaluations' own time excluded);
* the discriminator's mean output D(x) (a probability) on ``--n`` *training* images and on as many
  held-out *test* images: a discriminator that memorises its training set scores the first
  higher than the second, and the gap is how DiffAugment and ADA diagnose overfitting
  (Karras et al. 2020 use the sign of D's output on the training images);
* D's mean output on the generator's samples.

Writes one JSON (default ``benchmarks/results/gan_debugging.json``) that the chapter plots.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
from provenance import merged_provenance, provenance

from companion import metrics as M
from companion.data import load_mnist
from companion.recipes import gan as R
from companion.recipes.classifier import mnist_classifier
from companion.runs import data_tag, make_config, reference_images

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gan_debugging.json"
RUNS = {  # name -> (model name of the registry, config overrides)
    "gan": ("gan", {}),
    "dcgan": ("dcgan", {}),
    "cgan": ("cgan", {}),
    "dcgan+diffaugment": ("dcgan", {"diffaugment": "translation,cutout"}),
    "dcgan-long": ("dcgan", {"steps": 12000}),  # twice the default budget
}
# The committed JSON also holds runs named dcgan-2stage*: the same measurements of the DCGAN networks
# before they gained a third stage (their "networks" field says which), kept as the chapter's
# "before" curves; the script of those commits (see "merged_from") produced them.


def run(name: str, every: int, n: int, classifier, progress: bool, steps: int | None = None) -> dict:
    model_name, overrides = RUNS[name]
    # the GANs as they were diagnosed: without self-conditioning (their command-line default since)
    cfg = R.resolve(make_config(model_name, {"self_condition": 0, **overrides, **({"steps": steps} if steps else {})}))
    model = R.build_model(cfg)
    x_ref, y_ref = reference_images("test", n, seed=0)
    x_train, y_train = load_mnist("train")
    train_images = x_train[:n] * 2 - 1  # the discriminator sees images in [-1, 1]
    test_images = x_ref * 2 - 1
    labels = torch.arange(n) % 10 if model.n_classes else None
    train_labels = y_train[:n] if model.n_classes else None
    test_labels = y_ref if model.n_classes else None
    records, eval_seconds, t0 = [], 0.0, time.perf_counter()

    def d_mean(x, y):
        with torch.no_grad():
            logits = model.discriminator(x, y) if y is not None else model.discriminator(x)
        return torch.sigmoid(logits).mean().item()

    def callback(i: int, history) -> None:
        nonlocal eval_seconds
        step = i + 1
        if step % every and step != cfg.steps:
            return
        t = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            x = R.sample(cfg, model, n, generator=torch.Generator().manual_seed(0), labels=labels)
            found = M.image_metrics(x.float().clamp(0, 1), classifier, x_ref, labels=labels)
            records.append({
                "step": step, "seconds": t - t0 - eval_seconds,
                "fid": found["fid"], "inception_score": found["inception_score"], "coverage": found["coverage"],
                "d_train": d_mean(train_images, train_labels), "d_test": d_mean(test_images, test_labels),
                "d_fake": d_mean(x * 2 - 1, labels),
            })
        model.train()
        eval_seconds += time.perf_counter() - t
        if progress:
            r = records[-1]
            print(f"{name} step {step}: FID {r['fid']:.1f} IS {r['inception_score']:.2f} "
                  f"D(train) {r['d_train']:.3f} D(test) {r['d_test']:.3f} D(fake) {r['d_fake']:.3f}", flush=True)

    R.train(cfg, model, progress=False, callback=callback)
    networks = f"{type(model.generator).__name__} / {type(model.discriminator).__name__} (companion.gan_networks)"
    return {"run": name, "model": model_name, "config": R.config_dict(cfg), "networks": networks, "every": every,
            "n": n, "records": records}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--every", type=int, default=250, help="generator steps between two evaluations")
    parser.add_argument("--n", type=int, default=500, help="samples (and real images) per evaluation")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="override the models' step counts (a quick check)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--merge", nargs="+", type=Path, default=None, help="combine result JSONs into OUT")
    args = parser.parse_args(argv)
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        runs = [{"every": p["meta"]["every"], "n": p["meta"]["n"], **r} for p in parts for r in p["runs"]]
        results = {**parts[0], "runs": runs, "merged_from": merged_provenance(parts)}
    else:
        if args.every < 1 or args.n < 2:
            parser.error(f"--every must be >= 1 and --n >= 2, got {args.every} and {args.n}")
        if args.threads:
            torch.set_num_threads(args.threads)
        warnings.filterwarnings("ignore", message=".*offline fallback.*")
        classifier = mnist_classifier(progress=False, verbose=False)
        runs = [run(name, args.every, args.n, classifier, progress=True, steps=args.steps) for name in args.runs]
        results = {"meta": {**provenance("benchmarks/gan_debugging.py"), "data": data_tag(), "n": args.n,
                            "every": args.every, "threads": torch.get_num_threads()}, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
