"""The command-line trainer: ``python -m companion {train,sample,evaluate} MODEL ...`` (chapter "Capstone").

Every model of the book trains through its recipe (:mod:`companion.recipes`), the same code
the notebooks call, so a chapter's quick run and a long run here differ only in the config::

    python -m companion train vae --epochs 60 --out runs/vae            # tqdm progress, checkpoint, metrics JSON
    python -m companion train vae --out runs/vae --resume --epochs 20   # 20 more epochs from the checkpoint
    python -m companion sample vae --checkpoint runs/vae/checkpoint.pt -n 64 --out vae.png
    python -m companion evaluate dcgan --checkpoint runs/dcgan/checkpoint.pt --json dcgan.json
    torchrun --nproc_per_node=2 -m companion train classifier --epochs 2   # data parallel (gloo on CPU)

Every field of a recipe's ``Config`` is an option (``--z-dim 16``, ``--hidden 512,256``,
``--spectral-norm/--no-spectral-norm``); ``python -m companion train MODEL --help`` lists them.

Checkpoints (``checkpoint.pt``) hold plain data only, the model's ``state_dict``, the config,
the step count and the history, so they load with ``torch.load(path, weights_only=True)``,
which cannot run code hidden in a file; the config is also written as readable JSON
(``config.json``) beside it.

Resuming: ``--resume`` reloads the weights and trains one more run of the configured length.
Recipes that expose their optimizer state (``init_state``, as the GPT recipe does) resume
exactly where they stopped (same optimizer moments, same batches); for the others the
optimizer starts afresh and the data order is reseeded (``seed + segment``), so a resumed
run does not replay the batches it has already seen.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import math
import re
import sys
import time
import typing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

from companion import distributed

__all__ = ["MODELS", "ModelSpec", "CLIError", "main", "build_parser", "make_config", "save_checkpoint",
           "load_checkpoint", "load_model", "evaluate_model", "train_model", "sample_model", "data_tag",
           "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "companion-checkpoint-v1"


class CLIError(Exception):
    """A user error: printed as ``companion: error: ...`` with exit status 2."""


@dataclass(frozen=True)
class ModelSpec:
    """A model name of the CLI: its recipe module and the config fields that define it.

    ``fixed`` fields are set by the name (not options); ``defaults`` are options whose
    default differs from the recipe's.
    """

    name: str
    recipe: str
    help: str
    fixed: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    kind: str = "image"  # "image" (MNIST generator), "text", or "classifier"
    conditional: bool = False
    likelihood: bool = False  # has an IWAE NLL bound

    def load(self) -> ModuleType:
        try:
            return importlib.import_module(self.recipe)
        except ImportError as exc:
            raise CLIError(f"model {self.name!r}: its recipe {self.recipe} cannot be imported ({exc})") from exc


MODELS: dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec("vae", "companion.recipes.vae", "MLP variational autoencoder, Bernoulli decoder (MNIST)",
              fixed={"family": "vae"}, likelihood=True),
    ModelSpec("cvae", "companion.recipes.vae", "conditional VAE: generates a requested digit (MNIST)",
              fixed={"family": "cvae"}, conditional=True, likelihood=True),
    ModelSpec("vqvae", "companion.recipes.vae", "vector-quantised VAE with a per-position code prior (MNIST)",
              fixed={"family": "vqvae"}),
    ModelSpec("gan", "companion.recipes.gan", "MLP GAN, non-saturating loss (MNIST)",
              fixed={"data": "mnist", "arch": "mlp", "conditional": False}, defaults={"loss": "ns"}),
    ModelSpec("dcgan", "companion.recipes.gan", "DCGAN: convolutional generator and discriminator (MNIST)",
              fixed={"data": "mnist", "arch": "dcgan", "conditional": False}, defaults={"loss": "ns"}),
    ModelSpec("cgan", "companion.recipes.gan", "conditional DCGAN: generates a requested digit (MNIST)",
              fixed={"data": "mnist", "arch": "dcgan", "conditional": True}, defaults={"loss": "ns"},
              conditional=True),
    ModelSpec("wgan-gp", "companion.recipes.gan", "Wasserstein GAN with gradient penalty (MNIST)",
              fixed={"data": "mnist", "loss": "wgan-gp", "conditional": False}, defaults={"arch": "dcgan"}),
    ModelSpec("gpt", "companion.recipes.gpt", "character-level GPT on tiny-shakespeare", kind="text"),
    ModelSpec("transformer", "companion.recipes.transformer", "encoder-decoder Transformer", kind="text"),
    ModelSpec("classifier", "companion.recipes.classifier", "the MNIST CNN classifier behind the image metrics",
              kind="classifier"),
]}


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


def make_config(spec: ModelSpec | str, overrides: dict | None = None, *, base: dict | None = None):
    """The recipe ``Config`` of a model name.

    Precedence: recipe defaults < spec defaults < ``base`` < ``overrides``; the fixed fields last.

    Raises:
        CLIError: an unknown model, an unknown field, or a value the recipe rejects.
    """
    if isinstance(spec, str):
        if spec not in MODELS:
            raise CLIError(f"unknown model {spec!r}; choose one of: {', '.join(MODELS)}")
        spec = MODELS[spec]
    recipe = spec.load()
    names = {f.name for f in dataclasses.fields(recipe.Config)}
    values = {**spec.defaults, **(base or {}), **(overrides or {})}
    unknown = sorted(set(values) - names)
    if unknown:
        raise CLIError(f"{spec.name}: unknown config field(s) {unknown}; known: {sorted(names)}")
    for k, v in spec.fixed.items():
        if k in (overrides or {}) and overrides[k] != v:
            raise CLIError(f"{spec.name}: {k} is fixed to {v!r} by the model name; pick another model instead")
        values[k] = v
    try:
        return recipe.Config(**values)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"invalid {spec.name} config: {exc}") from exc


def _config_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# ------------------------------------------------------------------------------ checkpoints


def save_checkpoint(path: str | Path, *, model_name: str, cfg, model: torch.nn.Module, steps: int,
                    history: dict | None = None, seconds: float = 0.0, segments: list | None = None,
                    train_state: dict | None = None) -> Path:
    """Write ``state_dict`` + config (+ steps, history, timing) atomically, and ``config.json`` beside it.

    The file loads with ``torch.load(path, weights_only=True)``.
    """
    from companion import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = _config_dict(cfg)
    blob = {
        "format": CHECKPOINT_FORMAT,
        "model": model_name,
        "config": config,
        "state_dict": distributed.unwrap(model).state_dict(),
        "steps": int(steps),
        "seconds": float(seconds),
        "history": {k: [float(v) for v in vs] for k, vs in (history or {}).items()},
        "segments": list(segments or []),
        "version": __version__,
    }
    if train_state is not None:
        blob["train_state"] = train_state
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written checkpoint
    meta = {k: blob[k] for k in ("format", "model", "config", "steps", "seconds", "segments", "version")}
    (path.parent / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_checkpoint(path: str | Path, model_name: str | None = None) -> dict:
    """Read a checkpoint with ``torch.load(..., weights_only=True)`` and check that it is one of ours.

    Raises:
        CLIError: missing file, not a checkpoint of this program, or a checkpoint of another model.
    """
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"checkpoint {path} does not exist" + (
            f" (train one with: python -m companion train {model_name} --out {path.parent})" if model_name else ""))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, forbidden globals
        raise CLIError(f"cannot read checkpoint {path}: {exc.__class__.__name__}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CLIError(f"{path} is not a checkpoint written by `python -m companion train` "
                       f"(expected format {CHECKPOINT_FORMAT!r})")
    if model_name is not None and ckpt["model"] != model_name:
        raise CLIError(f"{path} holds a {ckpt['model']!r} model, not {model_name!r}")
    return ckpt


def load_model(path: str | Path, model_name: str | None = None):
    """``(spec, cfg, model, ckpt)`` from a checkpoint: the model rebuilt by its recipe, weights loaded, in eval mode."""
    ckpt = load_checkpoint(path, model_name)
    spec = MODELS.get(ckpt["model"])
    if spec is None:
        raise CLIError(f"{path} holds an unknown model {ckpt['model']!r}")
    cfg = make_config(spec, base=ckpt["config"])
    model = spec.load().build_model(cfg)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return spec, cfg, model, ckpt


# ------------------------------------------------------------------------------ evaluation


def _recipe_sample(recipe: ModuleType, cfg, model, n: int, generator: torch.Generator, labels=None):
    if labels is not None and "labels" in inspect.signature(recipe.sample).parameters:
        return recipe.sample(cfg, model, n, generator=generator, labels=labels)
    return recipe.sample(cfg, model, n, generator=generator)


def sample_model(name: str, cfg, model, n: int, *, seed: int = 0):
    """``n`` samples of a model by name, seeded by ``seed`` (the ones :func:`evaluate_model` scores).

    Conditional models get the digits ``0, 1, ..., 9, 0, 1, ...`` (``torch.arange(n) % 10``).
    """
    spec = MODELS[name]
    labels = torch.arange(n) % 10 if spec.conditional else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*offline fallback.*")
        return _recipe_sample(spec.load(), cfg, model, n, torch.Generator().manual_seed(seed), labels)


def evaluate_model(spec: ModelSpec | str, cfg, model, *, image_metrics: bool = True, n: int | None = None,
                   iwae_k: int = 100, seed: int = 0, progress: bool = True, classifier=None) -> dict:
    """The recipe's own metrics plus, for MNIST generators, the shared ones of :mod:`companion.metrics`.

    Image generators: ``n`` samples (default: as many as test images, at most 2,000) scored
    against ``n`` random test images (:func:`companion.runs.reference_images`, seed 0:
    the same for every model) (feature FID, classifier IS, coverage, class KL;
    label accuracy for conditional models), the real-vs-real baseline at the same ``n``, and
    for the VAEs the IWAE NLL bound with ``iwae_k`` samples on those test images.
    ``classifier`` defaults to :func:`companion.recipes.classifier.mnist_classifier` (trained once, cached).
    """
    spec = MODELS[spec] if isinstance(spec, str) else spec
    recipe = spec.load()
    out: dict = {"model": spec.name}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the fallback warning: "fallback" is in the output
        out.update({f"recipe_{k}": v for k, v in recipe.evaluate(cfg, model).items()})
        if spec.kind != "image" or not image_metrics:
            return out
        from companion import metrics as M
        from companion import runs
        from companion.data import load_mnist, mnist_is_fallback
        from companion.recipes.classifier import mnist_classifier
        from companion.vae import iwae_nll

        n_test = load_mnist("test")[0].shape[0]
        n = min(2000, n_test) if n is None else int(n)
        if not 2 <= n <= n_test:
            raise CLIError(f"--n-eval must be in [2, {n_test}], got {n}")
        x_test, y_test = runs.reference_images("test", n, seed=0)  # the same reference for every model
        if classifier is None:
            classifier = mnist_classifier(progress=progress, verbose=False)
        labels = torch.arange(n) % 10 if spec.conditional else None
        x = sample_model(spec.name, cfg, model, n, seed=seed)
        found = M.image_metrics(x.float().clamp(0, 1), classifier, x_test, labels=labels)
        base = runs.real_baseline(classifier, n)
        out.update({k: v for k, v in found.items()})
        out.update({f"real_{k}": v for k, v in base.items() if k != "histogram"})
        out["classifier_accuracy"] = classifier.test_accuracy
        out["data"] = "mnist-fallback" if mnist_is_fallback() else "mnist"
        if spec.likelihood:
            out["iwae_k"] = iwae_k
            out["nll_iwae"] = iwae_nll(model, x_test, k=iwae_k, labels=y_test if spec.conditional else None,
                                         generator=torch.Generator().manual_seed(seed + 1))
    return out


def data_tag() -> str:
    """``"mnist"`` or ``"mnist-fallback"``: which MNIST a model is trained on (part of every cache key)."""
    from companion.data import mnist_is_fallback

    return "mnist-fallback" if mnist_is_fallback() else "mnist"


def train_model(name: str, cfg=None, *, snapshot_every: int = 0, n_snapshot: int = 10, snapshot_seed: int = 1234,
                progress: bool = True, retrain: bool = False, **overrides):
    """Train a model by name once and cache it (:func:`companion.train.train_or_load`); later calls load it.

    The notebooks' entry point: the same recipe and config as ``python -m companion train``.
    With ``snapshot_every``, ``n_snapshot`` samples from *fixed* noise (seeded by
    ``snapshot_seed``; digits 0-9 cycling for conditional models) are taken after step 1 and
    every ``snapshot_every`` steps; they are stored in the cached history, so a re-run that
    loads the weights still has them.

    Args:
        name: a key of :data:`MODELS`.
        cfg: the recipe config (default: ``make_config(name, overrides)``).

    Returns:
        ``(model, history, snapshots)``: the model in eval mode, its
        :class:`~companion.train.History`, and a list of ``(step, images (n_snapshot, 1, 28, 28))``.
    """
    from companion.train import train_or_load

    spec = MODELS[name] if name in MODELS else None
    if spec is None:
        raise CLIError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    recipe = spec.load()
    cfg = make_config(spec, overrides) if cfg is None else cfg
    if not isinstance(cfg, recipe.Config):
        raise TypeError(f"cfg must be a {recipe.__name__}.Config, got {type(cfg).__name__}")
    model = recipe.build_model(cfg)
    key = {"model": name, "config": _config_dict(cfg), "data": data_tag(), "snapshot_every": snapshot_every,
           "n_snapshot": n_snapshot, "snapshot_seed": snapshot_seed}
    labels = torch.arange(n_snapshot) % 10 if spec.conditional else None

    def run(m):
        def snapshot(i: int, history) -> None:
            if snapshot_every and (i == 0 or (i + 1) % snapshot_every == 0):
                was_training = m.training
                x = _recipe_sample(recipe, cfg, m, n_snapshot, torch.Generator().manual_seed(snapshot_seed), labels)
                m.train(was_training)
                history.metrics["snapshot_step"].append(i + 1)
                history.metrics["snapshot_pixels"].extend(x.detach().float().flatten().tolist())

        return recipe.train(cfg, m, progress=progress, callback=snapshot)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*offline fallback.*")  # data_tag() records it
        history = train_or_load(f"{name}-{data_tag()}", model, run, key, retrain=retrain)
    model.eval()
    steps = [int(s) for s in history.metrics.pop("snapshot_step", [])]
    pixels = torch.tensor(history.metrics.pop("snapshot_pixels", []), dtype=torch.float32)
    snapshots = list(zip(steps, pixels.reshape(len(steps), n_snapshot, 1, 28, 28), strict=True)) if steps else []
    return model, history, snapshots


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
        except CLIError as exc:
            p.description = f"{p.description}\n\nUNAVAILABLE: {exc}"
            return
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


# ------------------------------------------------------------------------------- commands


def _log(*args) -> None:
    if distributed.is_main():
        print(*args, flush=True)


def _train_signature(recipe: ModuleType) -> set[str]:
    return set(inspect.signature(recipe.train).parameters)


def cmd_train(args) -> int:
    spec = MODELS[args.model]
    recipe = spec.load()
    info = distributed.init()
    if info.world_size > 1 and not getattr(recipe, "DISTRIBUTED", False):
        raise CLIError(f"{spec.name}: its recipe {recipe.__name__} does not support torchrun (no DISTRIBUTED = True); "
                       "run it as a single process")
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
    out: Path = args.out
    ckpt_path = out / "checkpoint.pt"
    exact = "init_state" in vars(recipe) and "state" in _train_signature(recipe)
    ckpt, segments, history_before, steps_before, seconds_before = None, [], {}, 0, 0.0
    if args.resume:
        ckpt = load_checkpoint(ckpt_path, spec.name)
        cfg = make_config(spec, overrides, base=ckpt["config"])
        segments = list(ckpt["segments"])
        history_before = ckpt["history"]
        steps_before, seconds_before = int(ckpt["steps"]), float(ckpt["seconds"])
    else:
        cfg = make_config(spec, overrides)
        if ckpt_path.exists() and distributed.is_main():
            _log(f"note: overwriting {ckpt_path} (use --resume to continue it)")
    from companion.train import seed_everything

    seed_everything(int(cfg.seed))
    model = recipe.build_model(cfg)
    if info.device != "cpu":
        model.to(info.device)
    state = None
    train_cfg = cfg
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
        if exact and "train_state" in ckpt:
            state = recipe.init_state(cfg, model)
            state.load_state_dict(ckpt["train_state"])
        else:  # a new segment: new data order, fresh optimizer
            train_cfg = dataclasses.replace(cfg, seed=int(cfg.seed) + len(segments))
    elif exact:
        state = recipe.init_state(cfg, model)
    segment = len(segments)
    _log(f"training {spec.name} ({spec.help})" + (f", segment {segment + 1} (resumed at step {steps_before})"
                                                   if args.resume else "")
         + (f" on {info.world_size} ranks ({info.backend})" if info.world_size > 1 else ""))

    steps_done = 0

    def snapshot(total_steps: int, hist: dict, seconds: float) -> None:
        if state is not None:  # an exact-resume recipe keeps the whole history in its state
            merged = {k: list(v) for k, v in hist.items()}
        else:
            merged = {k: list(history_before.get(k, [])) + list(v) for k, v in hist.items()}
        save_checkpoint(ckpt_path, model_name=spec.name, cfg=cfg, model=model, steps=total_steps, history=merged,
                        seconds=seconds, segments=segments + [{"seed": int(train_cfg.seed), "steps": steps_done,
                                                                "world_size": info.world_size}],
                        train_state=state.state_dict() if state is not None else None)

    t0 = time.perf_counter()

    def callback(i, history) -> None:
        nonlocal steps_done
        steps_done += 1
        if args.save_every and steps_done % args.save_every == 0 and distributed.is_main():
            snapshot(steps_before + steps_done, history.metrics, seconds_before + time.perf_counter() - t0)

    kwargs = {"progress": not args.no_progress and distributed.is_main(), "callback": callback}
    if state is not None:
        kwargs["state"] = state
    history = recipe.train(train_cfg, model, **kwargs)
    seconds = time.perf_counter() - t0
    distributed.broadcast_buffers(model)  # the batch-norm statistics of rank 0's last batch, everywhere
    checksums = distributed.replica_checksums(model)
    total_steps = steps_before + steps_done
    result = {"model": spec.name, "config": _config_dict(cfg), "steps": total_steps, "segment_steps": steps_done,
              "seconds": seconds_before + seconds, "segment_seconds": seconds, "world_size": info.world_size,
              "backend": info.backend, "replica_checksums": checksums,
              "final": {k: float(v[-1]) for k, v in history.metrics.items() if v}}
    if distributed.is_main():
        snapshot(total_steps, history.metrics, seconds_before + seconds)
        if not args.no_eval:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                result["eval"] = recipe.evaluate(cfg, model)
        metrics_path = args.metrics or out / "metrics.json"
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text(json.dumps(result, indent=2) + "\n")
        _log(f"{steps_done} steps in {seconds:.1f} s; checkpoint {ckpt_path}; metrics {metrics_path}")
        if "eval" in result:
            _log(json.dumps(result["eval"], indent=2))
    distributed.barrier()
    return 0


def _save_image_grid(x: torch.Tensor, path: Path, title: str, labels=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = x.shape[0]
    cols = min(n, 10 if labels is not None else 8)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(x[i].reshape(28, 28).cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
            if labels is not None:
                ax.set_title(str(int(labels[i])), fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_sample(args) -> int:
    spec, cfg, model, ckpt = load_model(args.checkpoint, args.model)
    recipe = spec.load()
    g = torch.Generator().manual_seed(args.seed)
    labels = None
    if spec.conditional:
        labels = (torch.full((args.num,), args.digit) if args.digit is not None else torch.arange(args.num) % 10)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            samples = _recipe_sample(recipe, cfg, model, args.num, g, labels)
    except NotImplementedError as exc:
        raise CLIError(f"{spec.name} cannot sample: {exc}") from exc
    text = isinstance(samples, str) or (isinstance(samples, list) and all(isinstance(s, str) for s in samples))
    out = args.out or args.checkpoint.parent / ("samples.txt" if text else "samples.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    if text:
        items = [samples] if isinstance(samples, str) else samples
        out.write_text("\n\n=====\n\n".join(items) + "\n")
        print(items[0][:500])
    elif isinstance(samples, torch.Tensor) and samples.ndim == 4:
        title = f"{spec.name}: {args.num} samples after {ckpt['steps']} steps (seed {args.seed})"
        _save_image_grid(samples, out, title, labels)
    else:
        raise CLIError(f"{spec.name}: do not know how to save samples of type {type(samples).__name__}")
    if args.tensor is not None:
        torch.save(samples if isinstance(samples, torch.Tensor) else {"text": samples}, args.tensor)
    print(f"wrote {out}")
    return 0


def cmd_evaluate(args) -> int:
    spec, cfg, model, ckpt = load_model(args.checkpoint, args.model)
    result = evaluate_model(spec, cfg, model, image_metrics=not getattr(args, "no_image_metrics", False),
                            n=getattr(args, "n_eval", None), iwae_k=getattr(args, "iwae_k", 100), seed=args.seed)
    result["steps"] = ckpt["steps"]
    result["train_seconds"] = ckpt["seconds"]
    out = args.json or args.checkpoint.parent / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
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
    except CLIError as exc:
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
