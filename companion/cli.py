"""The command-line trainer: ``python -m companion {train,sample,evaluate} MODEL ...`` (chapter "Capstone").

Every model of the book trains through its recipe (:mod:`companion.recipes`), the same code
the notebooks call, so a chapter's quick run and a long run here differ only in the config::

    # progress bar, then checkpoint, config and metrics JSON in runs/vae
    python -m companion train vae --epochs 60 --out runs/vae
    # 20 more epochs from the checkpoint
    python -m companion train vae --out runs/vae --resume --epochs 20
    python -m companion sample vae --checkpoint runs/vae/checkpoint.pt \\
        -n 64 --out vae.png
    python -m companion evaluate dcgan \\
        --checkpoint runs/dcgan/checkpoint.pt --json dcgan.json
    # data parallel over two processes (gloo on CPU)
    torchrun --nproc_per_node=2 -m companion train classifier --epochs 2

Every field of a recipe's ``Config`` is an option (``--z-dim 16``, ``--hidden 512,256``,
``--spectral-norm/--no-spectral-norm``); ``python -m companion train MODEL --help`` lists them.

Checkpoints (``checkpoint.pt``) hold plain data only, the model's ``state_dict``, the config,
the step count and the history, so they load with ``torch.load(path, weights_only=True)``,
which cannot run code hidden in a file; the config is also written as readable JSON
(``config.json``) beside it.

Quality over training: ``train MODEL --eval-every 500`` (MNIST image generators) records FID, IS and
class coverage of ``--eval-n`` samples (default 1,000) every 500 steps in the metrics JSON. ``sample gpt``
takes ``--temperature``, ``--top-k`` and ``--top-p`` over the checkpoint's config, ``sample flow`` and
``sample cflow`` take ``--steps``, ``--sampler`` and (``cflow``) ``--guidance``, ``sample ddpm`` ``--steps``,
``--sampler`` (``ddim`` or ``ddpm``) and ``--eta``. Output paths are checked
before any training, sampling or evaluation; a NaN or infinite loss stops training with an error and
keeps the last good checkpoint; JSON files are strict (non-finite numbers are written as ``null``).

Resuming: ``--resume`` reloads the weights and trains one more run of the configured length.
Recipes that expose their optimizer state (``init_state``, as the GPT recipe does) resume
exactly where they stopped (same optimizer moments, same batches); for the others the
optimizer starts afresh and the data order is reseeded (``seed + segment``), so a resumed
run does not replay the batches it has already seen.

This module only parses arguments; the runs themselves (model registry, checkpoints, training,
sampling, evaluation) are the library :mod:`companion.runs`, which notebooks and scripts import.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import re
import sys
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

from companion import checkpoints, distributed, runs
from companion.plotting import save_image_grid
from companion.runs import MODELS, ModelSpec, RunError

__all__ = ["main", "build_parser", "CLIError"]

CLIError = RunError  # the name of the user-error exception before it moved to companion.runs


# ------------------------------------------------------------------------- config <-> argparse


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


_finite_float.__name__ = "float"


def _optional(parse):
    def parse_optional(text: str):
        return None if text.lower() in ("none", "null", "default") else parse(text)

    parse_optional.__name__ = f"{parse.__name__} (or none)"
    return parse_optional


def _list_of(parse):
    def parse_list(text: str) -> list:
        items = [t for t in re.split(r"[,\s]+", text.strip()) if t]
        if not items:
            raise ValueError(text)
        return [parse(t) for t in items]

    parse_list.__name__ = f"comma-separated list of {parse.__name__}"
    return parse_list


def _parser_for(annotation) -> tuple[object, str]:
    """An argparse ``type`` for a dataclass field's annotation, and a kind (``bool`` or ``value``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return None, "bool"
    if annotation in (int, float, str):
        return {int: int, float: _finite_float, str: str}[annotation], "value"
    if origin in (list, tuple) and args and args[0] in (int, float, str):
        return _list_of({int: int, float: _finite_float, str: str}[args[0]]), "value"
    if args and type(None) in args:  # X | None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            inner, kind = _parser_for(rest[0])
            if kind == "value":
                return _optional(inner), "value"
    return str, "value"


def _field_docs(config_cls) -> dict[str, str]:
    """``name -> description`` from the ``Attributes:`` section of a config's docstring."""
    doc = inspect.getdoc(config_cls) or ""
    out: dict[str, str] = {}
    if "Attributes:" not in doc:
        return out
    current: list[str] = []
    for line in doc.split("Attributes:", 1)[1].splitlines():
        m = re.match(r"^\s{0,8}([a-z_][\w, ]*):\s*(.*)$", line)
        if m and all(re.fullmatch(r"[a-z_]\w*", n.strip()) for n in m.group(1).split(",")):
            current = [n.strip() for n in m.group(1).split(",")]
            for n in current:
                out[n] = m.group(2).strip()
        elif line.strip() and current:
            for n in current:
                out[n] += " " + line.strip()
    return out


def _config_fields(config_cls) -> list[tuple[dataclasses.Field, object]]:
    hints = typing.get_type_hints(config_cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(config_cls)]


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _add_config_options(parser: argparse.ArgumentParser, spec: ModelSpec, recipe: ModuleType) -> None:
    group = parser.add_argument_group(f"{spec.name} config ({recipe.__name__}.Config)")
    docs = _field_docs(recipe.Config)
    for f, annotation in _config_fields(recipe.Config):
        if f.name in spec.fixed:
            continue
        default = spec.defaults.get(f.name, _field_default(f))
        flag = "--" + f.name.replace("_", "-")
        parse, kind = _parser_for(annotation)
        text = docs.get(f.name, "").replace("``", "")
        help_ = f"{text} (default: {json.dumps(default)})" if text else f"(default: {json.dumps(default)})"
        help_ = help_.replace("%", "%%")
        if kind == "bool":
            group.add_argument(flag, dest=f"cfg_{f.name}", action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_)
        else:
            group.add_argument(flag, dest=f"cfg_{f.name}", type=parse, default=argparse.SUPPRESS,
                               metavar=f.name.upper(), help=help_)


# ----------------------------------------------------------------------------------- parser


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m companion`` parser: ``train``, ``sample``, ``evaluate``, each with one sub-parser per model."""
    parser = argparse.ArgumentParser(
        prog="python -m companion", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train, sample and evaluate the models of 'Generative models from first principles'.",
        epilog="models:\n" + "\n".join(f"  {s.name:<12} {s.help}" for s in MODELS.values())
        + "\n\nexample: python -m companion train vae --epochs 10 --out runs/vae",
    )
    commands = parser.add_subparsers(dest="command", metavar="{train,sample,evaluate}", required=True)
    about = {
        "train": "train a model; writes checkpoint.pt, config.json and metrics.json into --out",
        "sample": "draw samples from a trained model into an image (or text) file",
        "evaluate": "evaluate a trained model; prints the metrics and writes them as JSON",
    }
    for command, text in about.items():
        p = commands.add_parser(command, help=text, description=text,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        models = p.add_subparsers(dest="model", metavar="MODEL", required=True,
                                  title="models", description=", ".join(MODELS))
        for spec in MODELS.values():
            mp = models.add_parser(spec.name, help=spec.help, description=f"{text}: {spec.help}",
                                   formatter_class=_Formatter)
            _add_command_options(command, mp, spec)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive_int.__name__ = "positive int"


def _add_command_options(command: str, p: argparse.ArgumentParser, spec: ModelSpec) -> None:
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (unset: torch's choice)")
    if command == "train":
        p.add_argument("--out", type=Path, default=Path("runs") / spec.name, help="output directory")
        p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
        p.add_argument("--save-every", type=_positive_int, default=None, metavar="STEPS",
                       help="also save a checkpoint every STEPS steps (rank 0)")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        p.add_argument("--no-eval", action="store_true", help="skip the recipe's evaluation after training")
        p.add_argument("--metrics", type=Path, default=None, help="metrics JSON path (unset: OUT/metrics.json)")
        try:
            recipe = spec.load()
        except RunError as exc:
            p.description = f"{p.description}\n\nUNAVAILABLE: {exc}"
            return
        fields = {f.name for f in dataclasses.fields(recipe.Config)}
        if "eval_every" not in fields:  # the GPT recipe's own --eval-every estimates its validation loss
            p.add_argument("--eval-every", type=int, default=None, metavar="STEPS",
                           help="MNIST image generators: record FID, IS and class coverage of --eval-n samples "
                                "every STEPS steps in the metrics JSON (\"quality\")")
            p.add_argument("--eval-n", type=int, default=1000, metavar="N",
                           help="samples (and reference test images) of each --eval-every evaluation")
        _add_config_options(p, spec, recipe)
        return
    p.add_argument("--checkpoint", type=Path, default=Path("runs") / spec.name / "checkpoint.pt",
                   help="checkpoint written by `train`")
    p.add_argument("--seed", type=int, default=0, help="seeds the samples")
    if command == "sample":
        p.add_argument("-n", "--num", type=_positive_int, default=4 if spec.kind == "text" else 64,
                       help="number of samples")
        p.add_argument("--out", type=Path, default=None,
                       help="output file: .png (image grid) or .txt (text); unset: samples.png or .txt beside "
                            "the checkpoint")
        p.add_argument("--tensor", type=Path, default=None, help="also save the raw samples with torch.save")
        _add_sampling_options(p, spec)
        if spec.conditional:
            p.add_argument("--digit", type=int, default=None, choices=range(10), metavar="0-9",
                           help="generate only this digit (default: 0, 1, ..., 9 cycling)")
    else:
        p.add_argument("--json", type=Path, default=None,
                       help="write the metrics here (unset: eval.json beside the checkpoint)")
        if spec.kind == "image":
            p.add_argument("--n-eval", type=_positive_int, default=None,
                           help="samples for the image metrics (unset: min(2000, test images))")
            p.add_argument("--no-image-metrics", action="store_true",
                           help="only the recipe's metrics (skip FID/IS/coverage and the classifier)")
        if spec.likelihood:
            p.add_argument("--iwae-k", type=_positive_int, default=100, help="importance samples of the NLL bound")


SAMPLING_FIELDS = {  # config fields `sample` may override, and what they do
    "temperature": "divide the logits by it: < 1 sharpens, > 1 flattens, 0 = greedy",
    "top_k": "keep only the k most probable tokens (none: all)",
    "top_p": "nucleus sampling: keep the most probable tokens up to probability p, in (0, 1] (none: all)",
    "sampler": "flow matching: euler or heun (ODE solvers); ddpm: ddim or ddpm",
    "sample_steps": "steps from noise to image (flow matching; DDIM)",
    "eta": "DDIM's noise scale: 0 deterministic, 1 as noisy as DDPM",
    "guidance": "classifier-free guidance scale: 0 unconditional, 1 conditional, > 1 guided",
}
SAMPLING_FLAGS = {"sample_steps": "steps"}  # `sample --steps N`: the sampler's steps, not the training's


def _add_sampling_options(p: argparse.ArgumentParser, spec: ModelSpec) -> None:
    try:
        config_cls = spec.load().Config
    except RunError:
        return
    docs = _field_docs(config_cls)
    for f, annotation in _config_fields(config_cls):
        if f.name in SAMPLING_FIELDS:
            text = docs.get(f.name) or SAMPLING_FIELDS[f.name]
            help_ = f"{text} (default: the checkpoint's config)".replace("%", "%%")
            flag = "--" + SAMPLING_FLAGS.get(f.name, f.name).replace("_", "-")
            p.add_argument(flag, dest=f"cfg_{f.name}", type=_parser_for(annotation)[0],
                           default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_)


# ------------------------------------------------------------------------------- commands


def cmd_train(args) -> int:
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
    runs.train_run(args.model, overrides, args.out, resume=args.resume, save_every=args.save_every,
                   progress=not args.no_progress, evaluate=not args.no_eval, metrics_path=args.metrics,
                   eval_every=getattr(args, "eval_every", None), eval_n=getattr(args, "eval_n", 1000))
    return 0


def cmd_sample(args) -> int:
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
    spec, cfg, model, ckpt = runs.load_model(args.checkpoint, args.model, overrides=overrides)
    out = args.out or args.checkpoint.parent / ("samples.txt" if spec.kind == "text" else "samples.png")
    checkpoints.check_output_file(out, "sample file (--out)")
    if args.tensor is not None:
        checkpoints.check_output_file(args.tensor, "tensor file (--tensor)")
    labels = None
    if spec.conditional:
        labels = (torch.full((args.num,), args.digit) if args.digit is not None else torch.arange(args.num) % 10)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            samples = runs.sample_model(spec, cfg, model, args.num, seed=args.seed, labels=labels)
    except NotImplementedError as exc:
        raise RunError(f"{spec.name} cannot sample: {exc}") from exc
    text = isinstance(samples, str) or (isinstance(samples, list) and all(isinstance(s, str) for s in samples))
    out.parent.mkdir(parents=True, exist_ok=True)
    if text:
        items = [samples] if isinstance(samples, str) else samples
        out.write_text("\n\n=====\n\n".join(items) + "\n")
        print(items[0][:500])
    elif isinstance(samples, torch.Tensor) and samples.ndim == 4:
        title = f"{spec.name}: {args.num} samples after {ckpt['steps']} steps (seed {args.seed})"
        save_image_grid(samples, out, title, labels)
    else:
        raise RunError(f"{spec.name}: do not know how to save samples of type {type(samples).__name__}")
    if args.tensor is not None:
        args.tensor.parent.mkdir(parents=True, exist_ok=True)
        torch.save(samples if isinstance(samples, torch.Tensor) else {"text": samples}, args.tensor)
    print(f"wrote {out}")
    return 0


def cmd_evaluate(args) -> int:
    spec, cfg, model, ckpt = runs.load_model(args.checkpoint, args.model)
    out = args.json or args.checkpoint.parent / "eval.json"
    checkpoints.check_output_file(out, "metrics file (--json)")
    result = runs.evaluate_model(spec, cfg, model, image_metrics=not getattr(args, "no_image_metrics", False),
                                 n=getattr(args, "n_eval", None), iwae_k=getattr(args, "iwae_k", 100),
                                 seed=args.seed)
    result["steps"] = ckpt["steps"]
    result["train_seconds"] = ckpt["seconds"]
    checkpoints.write_json(out, result)  # strict JSON: NaN and infinities are written as null
    print(checkpoints.to_json(result, indent=2))
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 usage or input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 and a message on bad arguments
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return {"train": cmd_train, "sample": cmd_sample, "evaluate": cmd_evaluate}[args.command](args)
    except RunError as exc:
        print(f"{parser.prog} {args.command} {args.model}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if args.command == "train":
            distributed.shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
