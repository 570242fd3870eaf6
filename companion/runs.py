"""Runs of the book's models as a library: registry, checkpoints, train / sample / evaluate (chapter "Capstone").

* :data:`MODELS` names every model (a :class:`ModelSpec`: its recipe in :mod:`companion.recipes` and the
  config fields the name fixes); :func:`make_config` builds a recipe ``Config`` from a name.
* :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`load_model`: checkpoints of plain data.
* :func:`train_run` is ``python -m companion train``; :func:`train_model` the notebooks' cached training.
* :func:`sample_model` and :func:`evaluate_model` draw and score samples against :func:`reference_images`,
  next to :func:`real_baseline`. User errors raise :class:`RunError`.

The command line (:mod:`companion.cli`) is a thin layer of argument parsing over this module.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from companion import distributed
from companion.data import load_mnist
from companion.metrics import image_metrics

__all__ = ["MODELS", "ModelSpec", "RunError", "CHECKPOINT_FORMAT", "get_spec", "make_config", "config_dict",
           "save_checkpoint", "load_checkpoint", "load_model", "sample_model", "evaluate_model", "data_tag",
           "train_model", "train_run", "reference_images", "real_baseline"]

CHECKPOINT_FORMAT = "companion-checkpoint-v1"


class RunError(Exception):
    """A user error (unknown model, bad config, missing or foreign checkpoint); the CLI prints it with status 2."""


@dataclass(frozen=True)
class ModelSpec:
    """A model name: its recipe module, the config fields the name ``fixed``, and ``defaults`` that differ
    from the recipe's."""

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
            raise RunError(f"model {self.name!r}: its recipe {self.recipe} cannot be imported ({exc})") from exc


MODELS: dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec("vae", "companion.recipes.vae", "MLP variational autoencoder, Bernoulli decoder (MNIST)",
              fixed={"family": "vae"}, defaults={"z_dim": 20}, likelihood=True),
    ModelSpec("cvae", "companion.recipes.vae", "conditional VAE: generates a requested digit (MNIST)",
              fixed={"family": "cvae"}, defaults={"z_dim": 4}, conditional=True, likelihood=True),
    ModelSpec("vqvae", "companion.recipes.vae", "vector-quantised VAE with a per-position code prior (MNIST)",
              fixed={"family": "vqvae"}),
    # unconditional GANs: lr 1e-3 (the recipe's MNIST rate, 2e-4, collapses the MLP GAN: one digit
    # is 99% of its samples after 500 steps), more steps, and for the MLP GAN a moving average of
    # G's weights (FID 142 -> 81 at 3,000 steps); measured on the offline fallback split
    ModelSpec("gan", "companion.recipes.gan", "MLP GAN, non-saturating loss (MNIST)",
              fixed={"data": "mnist", "arch": "mlp", "conditional": False},
              defaults={"loss": "ns", "steps": 6000, "lr_g": 1e-3, "lr_d": 1e-3, "g_ema": 0.999}),
    ModelSpec("dcgan", "companion.recipes.gan", "DCGAN: convolutional generator and discriminator (MNIST)",
              fixed={"data": "mnist", "arch": "dcgan", "conditional": False},
              defaults={"loss": "ns", "lr_g": 1e-3, "lr_d": 1e-3}),
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


def get_spec(spec: ModelSpec | str) -> ModelSpec:
    """The :class:`ModelSpec` of a model name (a spec is returned as is); :class:`RunError` for an unknown name."""
    if isinstance(spec, ModelSpec):
        return spec
    if spec not in MODELS:
        raise RunError(f"unknown model {spec!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[spec]


def make_config(spec: ModelSpec | str, overrides: dict | None = None, *, base: dict | None = None):
    """The recipe ``Config`` of a model name: recipe defaults < spec defaults < ``base`` < ``overrides`` < fixed.

    Raises :class:`RunError` for an unknown model, an unknown field, or a value the recipe rejects.
    """
    spec = get_spec(spec)
    recipe = spec.load()
    names = {f.name for f in dataclasses.fields(recipe.Config)}
    values = {**spec.defaults, **(base or {}), **(overrides or {})}
    unknown = sorted(set(values) - names)
    if unknown:
        raise RunError(f"{spec.name}: unknown config field(s) {unknown}; known: {sorted(names)}")
    for k, v in spec.fixed.items():
        if k in (overrides or {}) and overrides[k] != v:
            raise RunError(f"{spec.name}: {k} is fixed to {v!r} by the model name; pick another model instead")
        values[k] = v
    try:
        return recipe.Config(**values)
    except (TypeError, ValueError) as exc:
        raise RunError(f"invalid {spec.name} config: {exc}") from exc


def config_dict(cfg) -> dict:
    """A config as plain JSON data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# ------------------------------------------------------------------------------ checkpoints


def save_checkpoint(path: str | Path, *, model_name: str, cfg, model: nn.Module, steps: int,
                    history: dict | None = None, seconds: float = 0.0, segments: list | None = None,
                    train_state: dict | None = None) -> Path:
    """Write ``state_dict`` + config (+ steps, history, timing) atomically, and ``config.json`` beside it.

    The file loads with ``torch.load(path, weights_only=True)``.
    """
    from companion import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": CHECKPOINT_FORMAT, "model": model_name, "config": config_dict(cfg),
            "state_dict": distributed.unwrap(model).state_dict(), "steps": int(steps), "seconds": float(seconds),
            "history": {k: [float(v) for v in vs] for k, vs in (history or {}).items()},
            "segments": list(segments or []), "version": __version__}
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

    Raises :class:`RunError` for a missing file, a file that is not our checkpoint, or another model's.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist" + (
            f" (train one with: python -m companion train {model_name} --out {path.parent})" if model_name else ""))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, forbidden globals
        raise RunError(f"cannot read checkpoint {path}: {exc.__class__.__name__}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path} is not a checkpoint written by `python -m companion train` "
                       f"(expected format {CHECKPOINT_FORMAT!r})")
    if model_name is not None and ckpt["model"] != model_name:
        raise RunError(f"{path} holds a {ckpt['model']!r} model, not {model_name!r}")
    return ckpt


def load_model(path: str | Path, model_name: str | None = None):
    """``(spec, cfg, model, ckpt)`` from a checkpoint: the model rebuilt by its recipe, weights loaded, in eval mode."""
    ckpt = load_checkpoint(path, model_name)
    spec = MODELS.get(ckpt["model"])
    if spec is None:
        raise RunError(f"{path} holds an unknown model {ckpt['model']!r}")
    cfg = make_config(spec, base=ckpt["config"])
    model = spec.load().build_model(cfg)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return spec, cfg, model, ckpt


# ------------------------------------------------------------------------------ sampling and evaluation


def _recipe_sample(recipe: ModuleType, cfg, model, n: int, generator: torch.Generator, labels=None):
    if labels is not None and "labels" in inspect.signature(recipe.sample).parameters:
        return recipe.sample(cfg, model, n, generator=generator, labels=labels)
    return recipe.sample(cfg, model, n, generator=generator)


def sample_model(name: ModelSpec | str, cfg, model, n: int, *, seed: int = 0, labels: Tensor | None = None):
    """``n`` samples of a model by name, seeded by ``seed`` (the ones :func:`evaluate_model` scores).

    Conditional models get ``labels``, by default the digits ``0, 1, ..., 9, 0, 1, ...``
    (``torch.arange(n) % 10``). Text models return strings; a classifier raises ``NotImplementedError``.
    """
    spec = get_spec(name)
    if spec.conditional and labels is None:
        labels = torch.arange(n) % 10
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*offline fallback.*")
        return _recipe_sample(spec.load(), cfg, model, n, torch.Generator().manual_seed(seed),
                              labels if spec.conditional else None)


def evaluate_model(spec: ModelSpec | str, cfg, model, *, image_metrics: bool = True, n: int | None = None,
                   iwae_k: int = 100, seed: int = 0, progress: bool = True, classifier=None) -> dict:
    """The recipe's own metrics plus, for MNIST generators, the shared ones of :mod:`companion.metrics`.

    Image generators: ``n`` samples (default: as many as test images, at most 2,000) scored
    against ``n`` random test images (:func:`reference_images`, seed 0: the same for every model)
    (feature FID, classifier IS, coverage, class KL; label accuracy for conditional models), the
    real-vs-real baseline at the same ``n`` (:func:`real_baseline`), and for the VAEs the IWAE NLL
    bound with ``iwae_k`` samples on those test images. ``classifier`` defaults to
    :func:`companion.recipes.classifier.mnist_classifier` (trained once, cached).
    """
    spec = get_spec(spec)
    recipe = spec.load()
    out: dict = {"model": spec.name}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the fallback warning: "fallback" is in the output
        out.update({f"recipe_{k}": v for k, v in recipe.evaluate(cfg, model).items()})
        if spec.kind != "image" or not image_metrics:
            return out
        from companion import metrics as M
        from companion.recipes import classifier as classifier_recipe
        from companion.vae import iwae_nll

        n_test = load_mnist("test")[0].shape[0]
        n = min(2000, n_test) if n is None else int(n)
        if not 2 <= n <= n_test:
            raise RunError(f"--n-eval must be in [2, {n_test}], got {n}")
        x_test, y_test = reference_images("test", n, seed=0)  # the same reference for every model
        if classifier is None:
            classifier = classifier_recipe.mnist_classifier(progress=progress, verbose=False)
        labels = torch.arange(n) % 10 if spec.conditional else None
        x = sample_model(spec, cfg, model, n, seed=seed)
        found = M.image_metrics(x.float().clamp(0, 1), classifier, x_test, labels=labels)
        base = real_baseline(classifier, n)
        out.update(found)
        out.update({f"real_{k}": v for k, v in base.items() if k != "histogram"})
        out["classifier_accuracy"] = classifier.test_accuracy
        out["data"] = data_tag()
        if spec.likelihood:
            out["iwae_k"] = iwae_k
            out["nll_iwae"] = iwae_nll(model, x_test, k=iwae_k, labels=y_test if spec.conditional else None,
                                       generator=torch.Generator().manual_seed(seed + 1))
    return out


def data_tag() -> str:
    """``"mnist"`` or ``"mnist-fallback"``: which MNIST a model is trained on (part of every cache key)."""
    from companion.data import mnist_is_fallback

    return "mnist-fallback" if mnist_is_fallback() else "mnist"


# ------------------------------------------------------------------------------ training


def train_model(name: str, cfg=None, *, snapshot_every: int = 0, n_snapshot: int = 10, snapshot_seed: int = 1234,
                progress: bool = True, retrain: bool = False, **overrides):
    """Train a model by name once and cache it (:func:`companion.train.train_or_load`); later calls load it.

    The notebooks' entry point: the same recipe and config (``cfg``, default ``make_config(name, overrides)``) as
    ``python -m companion train``. With ``snapshot_every``, ``n_snapshot`` samples from *fixed* noise (seeded by
    ``snapshot_seed``; digits 0-9 cycling for conditional models) are taken after step 1 and every
    ``snapshot_every`` steps; they are kept in the cached history, so a re-run that loads the weights has them.

    Returns:
        ``(model, history, snapshots)``: the model in eval mode, its :class:`~companion.train.History`, and a
        list of ``(step, images (n_snapshot, 1, 28, 28))``.
    """
    from companion.train import train_or_load

    spec = get_spec(name)
    recipe = spec.load()
    cfg = make_config(spec, overrides) if cfg is None else cfg
    if not isinstance(cfg, recipe.Config):
        raise TypeError(f"cfg must be a {recipe.__name__}.Config, got {type(cfg).__name__}")
    model = recipe.build_model(cfg)
    key = {"model": name, "config": config_dict(cfg), "data": data_tag(), "snapshot_every": snapshot_every,
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


def _log(verbose: bool, *args) -> None:
    if verbose and distributed.is_main():
        print(*args, flush=True)


def train_run(spec: ModelSpec | str, cfg_overrides: dict | None = None, out_dir: str | Path | None = None, *,
              resume: bool = False, save_every: int | None = None, progress: bool = True, evaluate: bool = True,
              metrics_path: str | Path | None = None, verbose: bool = True) -> dict:
    """Train a model into ``out_dir`` (default ``runs/NAME``): ``python -m companion train`` as a function.

    Writes ``checkpoint.pt`` (and ``config.json``) at the end and every ``save_every`` steps, and returns the
    result (config, steps, seconds, ranks, final losses, the recipe's evaluation unless ``evaluate=False``),
    also written to ``metrics_path`` (default ``out_dir/metrics.json``); only rank 0 writes. Under ``torchrun``
    every rank calls it (the recipe must declare ``DISTRIBUTED = True``).

    ``resume`` reloads ``out_dir/checkpoint.pt`` (its config, updated by ``cfg_overrides``) and trains one more
    run of the configured length. Recipes that expose their optimizer state (``init_state``) continue exactly;
    for the others the optimizer starts afresh and the data order is reseeded (``seed + segment``).
    """
    from companion.train import seed_everything

    spec = get_spec(spec)
    recipe = spec.load()
    info = distributed.init()
    if info.world_size > 1 and not getattr(recipe, "DISTRIBUTED", False):
        raise RunError(f"{spec.name}: its recipe {recipe.__name__} does not support torchrun (no DISTRIBUTED = True); "
                       "run it as a single process")
    out = Path("runs") / spec.name if out_dir is None else Path(out_dir)
    ckpt_path = out / "checkpoint.pt"
    exact = "init_state" in vars(recipe) and "state" in inspect.signature(recipe.train).parameters
    ckpt, segments, history_before, steps_before, seconds_before = None, [], {}, 0, 0.0
    if resume:
        ckpt = load_checkpoint(ckpt_path, spec.name)
        cfg = make_config(spec, cfg_overrides, base=ckpt["config"])
        segments, history_before = list(ckpt["segments"]), ckpt["history"]
        steps_before, seconds_before = int(ckpt["steps"]), float(ckpt["seconds"])
    else:
        cfg = make_config(spec, cfg_overrides)
        if ckpt_path.exists():
            _log(verbose, f"note: overwriting {ckpt_path} (use --resume to continue it)")
    seed_everything(int(cfg.seed))
    model = recipe.build_model(cfg)
    if info.device != "cpu":
        model.to(info.device)
    state, train_cfg = None, cfg
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
        if exact and "train_state" in ckpt:
            state = recipe.init_state(cfg, model)
            state.load_state_dict(ckpt["train_state"])
        else:  # a new segment: new data order, fresh optimizer
            train_cfg = dataclasses.replace(cfg, seed=int(cfg.seed) + len(segments))
    elif exact:
        state = recipe.init_state(cfg, model)
    _log(verbose, f"training {spec.name} ({spec.help})"
         + (f", segment {len(segments) + 1} (resumed at step {steps_before})" if resume else "")
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
        if save_every and steps_done % save_every == 0 and distributed.is_main():
            snapshot(steps_before + steps_done, history.metrics, seconds_before + time.perf_counter() - t0)

    kwargs = {"progress": progress and distributed.is_main(), "callback": callback}
    if state is not None:
        kwargs["state"] = state
    history = recipe.train(train_cfg, model, **kwargs)
    seconds = time.perf_counter() - t0
    distributed.broadcast_buffers(model)  # the batch-norm statistics of rank 0's last batch, everywhere
    checksums = distributed.replica_checksums(model)
    total_steps = steps_before + steps_done
    result = {"model": spec.name, "config": config_dict(cfg), "steps": total_steps, "segment_steps": steps_done,
              "seconds": seconds_before + seconds, "segment_seconds": seconds, "world_size": info.world_size,
              "backend": info.backend, "replica_checksums": checksums,
              "final": {k: float(v[-1]) for k, v in history.metrics.items() if v}}
    if distributed.is_main():
        snapshot(total_steps, history.metrics, seconds_before + seconds)
        if evaluate:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                result["eval"] = recipe.evaluate(cfg, model)
        metrics_path = Path(metrics_path) if metrics_path is not None else out / "metrics.json"
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text(json.dumps(result, indent=2) + "\n")
        _log(verbose, f"{steps_done} steps in {seconds:.1f} s; checkpoint {ckpt_path}; metrics {metrics_path}")
        if "eval" in result:
            _log(verbose, json.dumps(result["eval"], indent=2))
    distributed.barrier()
    return result


# ------------------------------------------------------------------------------ reference images


def reference_images(split: str, n: int | None = None, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` images and labels of an MNIST split, drawn at random (seeded) without replacement.

    Random, not the first ``n``: the official test set is ordered (its first 5,000 images come
    from a group of writers whose digits are cleaner than the last 5,000), so its first images are
    not a fair sample of it. With ``n`` = the size of the split (the default) this is the whole
    split, shuffled.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*offline fallback.*")
        x, y = load_mnist(split)
    n = x.shape[0] if n is None else int(n)
    if not 1 <= n <= x.shape[0]:
        raise ValueError(f"n must be in [1, {x.shape[0]}] for the {split} split, got {n}")
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def real_baseline(classifier: nn.Module, n: int | None = None, *, seed: int = 0) -> dict:
    """The metrics of real images, scored as if they were samples: what a perfect model of the data gets.

    FID: ``n`` random training images against the ``n`` random test images that models are scored
    against (:func:`reference_images` with the same ``seed``): the level a model that reproduced
    its training distribution exactly would reach at this sample size (two finite samples never
    score 0). IS, coverage and label accuracy: of those test images, which the classifier never
    saw (on its own training images it is over-confident).

    On the offline fallback split the training images (the first 8,000 official test images)
    mix two groups of writers and the test images (the last 2,000) come from one, so the
    training data itself is some distance from the test images and a model can land below this
    baseline. On full MNIST both splits mix the same groups.

    Args:
        n: images on each side (default: the size of the test split).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*offline fallback.*")
        n_test = load_mnist("test")[0].shape[0]
    n = n_test if n is None else int(n)
    x_ref, y_ref = reference_images("test", n, seed=seed)
    x_train, _ = reference_images("train", n, seed=seed)
    return image_metrics(x_ref, classifier, x_train, labels=y_ref)  # the FID is symmetric
