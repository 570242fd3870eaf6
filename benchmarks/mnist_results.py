"""Benchmark: the MNIST generative models of the book, trained on stated budgets and scored with shared metrics.

    .venv/bin/python benchmarks/mnist_results.py                        # every model, writes the results table
    .venv/bin/python benchmarks/mnist_results.py --models vae dcgan --out /tmp/mnist_results
    .venv/bin/python benchmarks/mnist_results.py --quick                # tiny budgets: checks the script only

For each model (:data:`BUDGETS`: config and training budget) the script trains it through its
recipe (the same code as the notebooks and ``python -m companion train``), timing the training
loop, then evaluates it with :func:`companion.runs.evaluate_model`: 2,000 samples (digits 0-9
cycling for conditional models) against 2,000 random test images, the same for every model
(:func:`companion.runs.reference_images`), scored with the metrics classifier
(:func:`companion.recipes.classifier.mnist_classifier`; feature FID, classifier inception score, class coverage,
KL of the class histogram to uniform, label accuracy), and for the VAEs the IWAE bound on the
NLL of those test images (k = 256). The first row is the real-vs-real baseline
(:func:`companion.runs.real_baseline`): FID of random training images against the test
images, IS, coverage and label accuracy of the test images.

Writes ``OUT.json`` (everything, with the machine, the load average and the data used) and
``OUT.md`` (a Markdown table); default ``OUT`` is ``benchmarks/results/mnist_results``.
Training times are wall-clock seconds of the training loop on this machine with
``torch.get_num_threads()`` threads; on a shared machine they are inflated by the other
processes, so the load average before and after each run is recorded next to them.

Feature FID and IS are NOT comparable to Inception-network values in papers (see
:data:`companion.metrics.NOT_COMPARABLE_TO_PAPERS`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import torch
from provenance import provenance

from companion.metrics import NOT_COMPARABLE_TO_PAPERS
from companion.recipes.classifier import mnist_classifier
from companion.runs import MODELS, data_tag, evaluate_model, make_config, real_baseline, train_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "mnist_results"

# model -> (config overrides, short description of the budget)
BUDGETS: dict[str, dict] = {
    "vae": {"epochs": 30.0},
    "cvae": {"epochs": 30.0},
    "vqvae": {"epochs": 10.0},
    "gan": {"steps": 3000, "lr_g": 1e-3, "lr_d": 1e-3},
    "dcgan": {"steps": 3000, "lr_g": 1e-3, "lr_d": 1e-3},
    "cgan": {"steps": 3000, "lr_g": 1e-3, "lr_d": 1e-3},
    "wgan-gp": {"steps": 1000, "arch": "mlp"},
}
QUICK: dict[str, dict] = {
    "vae": {"epochs": 0.2},
    "cvae": {"epochs": 0.2},
    "vqvae": {"epochs": 0.1},
    "gan": {"steps": 20},
    "dcgan": {"steps": 20},
    "cgan": {"steps": 20},
    "wgan-gp": {"steps": 5, "arch": "mlp"},
}
COLUMNS = [  # (key, header, format)
    ("model", "model", "{}"),
    ("budget", "training budget", "{}"),
    ("train_seconds", "train time (s)", "{:.0f}"),
    ("train_cpu_seconds", "train CPU (s)", "{:.0f}"),
    ("fid", "feature FID ↓", "{:.1f}"),
    ("inception_score", "classifier IS ↑", "{:.2f}"),
    ("coverage", "coverage ↑", "{:.1f}"),
    ("class_kl", "class KL ↓", "{:.3f}"),
    ("label_accuracy", "label accuracy ↑", "{:.1%}"),
    ("nll_iwae", "NLL bound (nats) ↓", "{:.1f}"),
]


def budget_text(name: str, overrides: dict) -> str:
    parts = []
    if "epochs" in overrides:
        parts.append(f"{overrides['epochs']:g} epochs")
    if "steps" in overrides:
        parts.append(f"{overrides['steps']:,} steps")
    parts += [f"{k}={v}" for k, v in overrides.items() if k not in ("epochs", "steps")]
    return ", ".join(parts)


def run_model(name: str, overrides: dict, *, retrain: bool, iwae_k: int, progress: bool, classifier) -> dict:
    cfg = make_config(name, overrides)
    load_before = os.getloadavg()[0]
    cpu0 = time.process_time()
    model, history, _ = train_model(name, cfg, progress=progress, retrain=retrain)
    cpu = time.process_time() - cpu0
    load_after = os.getloadavg()[0]
    result = evaluate_model(name, cfg, model, iwae_k=iwae_k, progress=progress, classifier=classifier)
    first_metric = next(iter(history.metrics.values()), [])
    return {
        "model": name,
        "description": MODELS[name].help,
        "budget": budget_text(name, overrides),
        "config": json.loads(json.dumps(cfg.__dict__, default=str)),
        "steps": len(first_metric),
        "train_seconds": history.seconds,
        "train_cpu_seconds": cpu if retrain else None,
        "load_average_before": load_before,
        "load_average_after": load_after,
        **{k: v for k, v in result.items() if k != "model"},
    }


def markdown(results: dict) -> str:
    meta = results["meta"]
    rows = [results["baseline"], *results["models"]]
    lines = [
        "| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        cells = []
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            cells.append("–" if value is None else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    data = ("the offline fallback split (trained on the first 8,000 official MNIST test images, "
            "evaluated on the last 2,000)" if meta["data"] == "mnist-fallback"
            else "full MNIST (60,000 training images, evaluated on the 10,000 official test images)")
    note = [
        "",
        f"Produced by `benchmarks/mnist_results.py` on {meta['date']} (commit {meta.get('git', 'unknown')}, "
        f"torch {meta['torch']}, {meta['threads']} thread{'s' if meta['threads'] != 1 else ''} on a "
        f"{meta['cpus']}-CPU machine; load average "
        f"{meta['load_average_start']:.1f} at the start, {meta['load_average_end']:.1f} at the end). "
        "Train time: wall-clock seconds of the training loop, which other jobs on the machine inflate; train CPU: "
        "CPU seconds the training used (all threads), which the load does not inflate much. "
        f"Data: {data}. Each model: {meta['n_samples']:,} samples against {meta['n_samples']:,} random test images; "
        "baseline row: FID of as many random training images against them, IS, coverage and label accuracy of "
        "the test images themselves; "
        f"metrics classifier test accuracy {meta['classifier_accuracy']:.2%}. "
        f"NLL bound: IWAE with k = {meta['iwae_k']} on the test images (CVAE: of x given its label). "
        "Feature FID and IS use the package's MNIST classifier and are not comparable to "
        "Inception-network values in papers.",
    ]
    return "\n".join(lines + note) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="writes OUT.json and OUT.md")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (a smoke test of the script)")
    parser.add_argument("--use-cache", action="store_true",
                        help="reuse cached weights (their recorded training time) instead of retraining")
    parser.add_argument("--iwae-k", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--render-only", action="store_true",
                        help="only rewrite OUT.md from an existing OUT.json (no training)")
    args = parser.parse_args(argv)
    if args.render_only:
        results = json.loads(args.out.with_suffix(".json").read_text())
        args.out.with_suffix(".md").write_text(markdown(results))
        print(markdown(results))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*offline fallback.*")
    budgets = QUICK if args.quick else BUDGETS
    progress = not args.no_progress
    load_start = os.getloadavg()[0]

    classifier = mnist_classifier(progress=progress)  # prints its test accuracy
    baseline = {"model": "real images (baseline)", "budget": "–", **real_baseline(classifier, 2000)}
    rows = []
    for name in args.models:
        print(f"\n== {name}: {budget_text(name, budgets[name])}", flush=True)
        row = run_model(name, budgets[name], retrain=not args.use_cache, iwae_k=args.iwae_k, progress=progress,
                        classifier=classifier)
        rows.append(row)
        print({k: row[k] for k in ("train_seconds", "fid", "inception_score", "coverage") if k in row}, flush=True)

    results = {
        "meta": {
            **provenance("benchmarks/mnist_results.py"),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg()[0],
            "data": data_tag(),
            "quick": args.quick,
            "n_samples": 2000,
            "iwae_k": args.iwae_k,
            "classifier_accuracy": classifier.test_accuracy,
            "not_comparable": NOT_COMPARABLE_TO_PAPERS,
        },
        "baseline": baseline,
        "models": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(markdown(results))
    print("\n" + markdown(results))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
