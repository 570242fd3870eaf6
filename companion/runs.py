"""Runs of the book's models as a library: registry, checkpoints, train / sample / evaluate (chapter "Capstone").

* :data:`MODELS` names every model (a :class:`ModelSpec` of :mod:`companion.registry`: its recipe in
  :mod:`companion.recipes` and the config fields the name fixes); :func:`make_config` builds a recipe ``Config``
  from a name.
* :func:`save_checkpoint`, :func:`load_checkpoint` (of :mod:`companion.checkpoints`), :func:`load_model`.
* :func:`train_run` is ``python -m companion train``; :func:`train_model` the notebooks' cached training.
* :func:`sample_model` and :func:`evaluate_model` draw and score samples against :func:`reference_images`,
  next to :func:`real_baseline`. User errors (bad configs, missing data, checkpoints that do not fit) raise
  :class:`RunError`. Every JSON file is strict JSON: non-finite numbers are written as ``null``.

The command line (:mod:`companion.cli`) is a thin layer of argument parsing over this module.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from companion import checkpoints, distributed
from companion.checkpoints import CHECKPOINT_FORMAT, RunError, config_dict, load_checkpoint, save_checkpoint
from companion.data import load_mnist
from companion.metrics import image_metrics
from companion.registry import DCGAN_DEFAULTS, MODELS, ModelSpec, get_spec

__all__ = ["MODELS", "ModelSpec", "DCGAN_DEFAULTS", "RunError", "CHECKPOINT_FORMAT", "get_spec", "make_config",
           "config_dict", "save_checkpoint", "load_checkpoint", "load_model", "sample_model", "evaluate_model",
           "data_tag", "train_model", "train_run", "reference_images", "real_baseline"]


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


def load_model(path: str | Path, model_name: str | None = None, *, overrides: dict | None = None):
    """``(spec, cfg, model, ckpt)`` from a checkpoint: the model rebuilt by its recipe, weights loaded, in eval mode;
    ``overrides`` change config fields that leave the weights alone (a GPT's ``temperature``, say)."""
    ckpt = load_checkpoint(path, model_name)
    spec = MODELS.get(ckpt["model"])
    if spec is None:
        raise RunError(f"{path} holds an unknown model {ckpt['model']!r}")
    cfg = make_config(spec, overrides, base=ckpt["config"])
    with checkpoints.data_errors():
        model = spec.load().build_model(cfg)
    checkpoints.load_weights(model, ckpt, cfg, Path(path), "the file does not match its own config (was it edited?)")
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
    with warnings.catch_warnings(), checkpoints.data_errors():
        warnings.filterwarnings("ignore", message=".*offline fallback.*")
        return _recipe_sample(spec.load(), cfg, model, n, torch.Generator().manual_seed(seed),
                              labels if spec.conditional else None)


def evaluate_model(spec: ModelSpec | str, cfg, model, *, image_metrics: bool = True, n: int | None = None,
                   iwae_k: int = 100, seed: int = 0, progress: bool = True, classifier=None,
                   samples: Tensor | None = None) -> dict:
    """The recipe's own metrics plus, for MNIST generators, the shared ones of :mod:`companion.metrics`.

    Image generators: ``n`` samples (default: as many as test images, at most 2,000) scored
    against ``n`` random test images (:func:`reference_images`, seed 0: the same for every model)
    (feature FID, classifier IS, coverage, class KL; label accuracy for conditional models), the
    real-vs-real baseline at the same ``n`` (:func:`real_baseline`), and for the VAEs the IWAE NLL
    bound with ``iwae_k`` samples on those test images. ``classifier`` defaults to
    :func:`companion.recipes.classifier.mnist_classifier` (trained once, cached). ``samples``: the ``n`` images
    of ``sample_model(spec, cfg, model, n, seed=seed)`` when the caller has drawn them already.
    """
    spec = get_spec(spec)
    recipe = spec.load()
    out: dict = {"model": spec.name}
    with warnings.catch_warnings(), checkpoints.data_errors():
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
        x = sample_model(spec, cfg, model, n, seed=seed) if samples is None else samples
        if x.shape[0] != n:
            raise RunError(f"samples must hold n = {n} images, got {x.shape[0]}")
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


def _quality_probe(spec: ModelSpec, cfg, every: int, n: int, classifier, progress: bool):
    """``probe(model, step, seconds) -> record``: the image metrics of ``n`` samples (own generator, inside
    ``fork_rng``, every module's mode restored: the training's random numbers and modes are untouched)."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise RunError(f"--eval-every must be a number of steps >= 1, got {every!r}")
    if spec.kind != "image":
        images = ", ".join(s.name for s in MODELS.values() if s.kind == "image")
        raise RunError(f"--eval-every records image metrics of the MNIST generators ({images}); {spec.name} is not one")
    from companion import metrics as M
    from companion.recipes import classifier as classifier_recipe

    with warnings.catch_warnings(), checkpoints.data_errors():
        warnings.filterwarnings("ignore", message=".*offline fallback.*")
        n_test = load_mnist("test")[0].shape[0]
        if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= n_test:
            raise RunError(f"--eval-n must be an int in [2, {n_test}] (samples scored against as many test "
                           f"images), got {n!r}")
        x_ref, _ = reference_images("test", n, seed=0)
        if classifier is None:
            with torch.random.fork_rng(devices=[]):
                classifier = classifier_recipe.mnist_classifier(progress=progress, verbose=False)
    labels = torch.arange(n) % 10 if spec.conditional else None

    def probe(model: nn.Module, step: int, seconds: float) -> dict:
        modes = [(m, m.training) for m in model.modules()]
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            x = sample_model(spec, cfg, model, n, seed=0)
            found = M.image_metrics(x.float().clamp(0, 1), classifier, x_ref, labels=labels)
        for m, mode in modes:
            m.training = mode
        return {"step": step, "seconds": seconds, **found}

    return probe


@checkpoints.data_errors()
def train_run(spec: ModelSpec | str, cfg_overrides: dict | None = None, out_dir: str | Path | None = None, *,
              resume: bool = False, save_every: int | None = None, progress: bool = True, evaluate: bool = True,
              metrics_path: str | Path | None = None, verbose: bool = True, eval_every: int | None = None,
              eval_n: int = 1000, classifier: nn.Module | None = None) -> dict:
    """Train a model into ``out_dir`` (default ``runs/NAME``): ``python -m companion train`` as a function.

    Writes ``checkpoint.pt`` (and ``config.json``) at the end and every ``save_every`` steps, and returns the
    result (config, steps, seconds, ranks, final losses, the recipe's evaluation unless ``evaluate=False``),
    also written to ``metrics_path`` (default ``out_dir/metrics.json``, written at the end; the first checkpoint
    a run writes removes the stale one in ``out_dir``); only rank 0 writes; output paths are checked first.
    Under ``torchrun`` every rank calls it (the recipe must declare ``DISTRIBUTED = True``).

    ``resume`` reloads ``out_dir/checkpoint.pt`` (its config, updated by ``cfg_overrides``) and trains one more
    run of the configured length. Recipes that expose their optimizer state (``init_state``) continue exactly;
    for the others the optimizer starts afresh and the data order is reseeded (``seed + segment``).

    A non-finite loss or weight stops the run (:class:`~companion.checkpoints.DivergenceError`, a ``RunError``)
    and no checkpoint is written with non-finite weights: ``checkpoint.pt`` keeps the last good ones.

    ``eval_every`` (MNIST image generators): every that many steps, ``eval_n`` samples scored against the reference
    test images (:func:`reference_images`, seed 0) with ``classifier`` (default: the cached ``mnist_classifier``)
    give a record ``{"step", "seconds" (of training), "fid", "inception_score", "coverage", "class_kl",
    "histogram", "n"[, "label_accuracy"]}`` in ``result["quality"]``; their time is ``quality_seconds``.
    """
    from companion.train import seed_everything

    spec = get_spec(spec)
    recipe = spec.load()
    out = Path("runs") / spec.name if out_dir is None else Path(out_dir)
    ckpt_path = out / "checkpoint.pt"
    metrics_file = Path(metrics_path) if metrics_path is not None else out / "metrics.json"
    checkpoints.check_output_dir(out, "output directory (--out)")
    checkpoints.check_output_file(ckpt_path, "checkpoint")
    checkpoints.check_output_file(metrics_file, "metrics file (--metrics)")
    info = distributed.init()
    if info.world_size > 1 and not getattr(recipe, "DISTRIBUTED", False):
        raise RunError(f"{spec.name}: its recipe {recipe.__name__} does not support torchrun (no DISTRIBUTED = True); "
                       "run it as a single process")
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
    probe = None if eval_every is None else _quality_probe(spec, cfg, eval_every, eval_n, classifier, progress)
    seed_everything(int(cfg.seed))
    model = recipe.build_model(cfg)
    if info.device != "cpu":
        model.to(info.device)
    state, train_cfg = None, cfg
    if ckpt is not None:
        checkpoints.load_weights(model, ckpt, cfg, ckpt_path, "--resume keeps the architecture: drop the options "
                                 "that change it, or train a new run into another --out")
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

    steps_done, saved_step, eval_seconds, quality = 0, None, 0.0, []

    def kept() -> str:
        return (f"{ckpt_path} keeps the last good weights, of step {saved_step}" if saved_step is not None
                else f"{ckpt_path} was left as it was" if ckpt_path.exists() else "nothing was saved")

    def snapshot(total_steps: int, hist: dict, seconds: float) -> None:
        nonlocal saved_step
        if state is not None:  # an exact-resume recipe keeps the whole history in its state
            merged = {k: list(v) for k, v in hist.items()}
        else:
            merged = {k: list(history_before.get(k, [])) + list(v) for k, v in hist.items()}
        if saved_step is None and not checkpoints.non_finite_tensors(model.state_dict()):  # before the first save,
            for stale in {out / "metrics.json", metrics_file}:  # remove the metrics of the checkpoint it replaces
                if stale.parent.resolve() == out.resolve() and stale.is_file():
                    stale.unlink()
        try:
            segment = {"seed": int(train_cfg.seed), "steps": steps_done, "world_size": info.world_size}
            save_checkpoint(ckpt_path, model_name=spec.name, cfg=cfg, model=model, steps=total_steps, history=merged,
                            seconds=seconds, segments=segments + [segment],
                            train_state=state.state_dict() if state is not None else None)
        except checkpoints.DivergenceError as exc:
            raise checkpoints.DivergenceError(f"{exc}; {kept()}") from None
        saved_step = total_steps

    t0 = time.perf_counter()

    def callback(i, history) -> None:
        nonlocal steps_done, eval_seconds
        steps_done += 1
        checkpoints.check_finite(history.metrics, steps_before + steps_done, kept)
        if save_every and steps_done % save_every == 0 and distributed.is_main():
            snapshot(steps_before + steps_done, history.metrics,
                     seconds_before + time.perf_counter() - t0 - eval_seconds)
        if probe is not None and steps_done % eval_every == 0 and distributed.is_main():
            t = time.perf_counter()
            quality.append(probe(model, steps_before + steps_done, seconds_before + t - t0 - eval_seconds))
            eval_seconds += time.perf_counter() - t

    kwargs = {"progress": progress and distributed.is_main(), "callback": callback}
    if state is not None:
        kwargs["state"] = state
    history = recipe.train(train_cfg, model, **kwargs)
    seconds = time.perf_counter() - t0 - eval_seconds
    distributed.broadcast_buffers(model)  # the batch-norm statistics of rank 0's last batch, everywhere
    checksums = distributed.replica_checksums(model)
    total_steps = steps_before + steps_done
    result = {"model": spec.name, "config": config_dict(cfg), "steps": total_steps, "segment_steps": steps_done,
              "seconds": seconds_before + seconds, "segment_seconds": seconds, "world_size": info.world_size,
              "backend": info.backend, "replica_checksums": checksums,
              "final": {k: float(v[-1]) for k, v in history.metrics.items() if v},
              **({"quality": quality, "quality_seconds": eval_seconds, "eval_n": eval_n} if probe else {})}
    if distributed.is_main():
        snapshot(total_steps, history.metrics, seconds_before + seconds)
        if evaluate:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                result["eval"] = recipe.evaluate(cfg, model)
        checkpoints.write_json(metrics_file, result)
        _log(verbose, f"{steps_done} steps in {seconds:.1f} s; checkpoint {ckpt_path}; metrics {metrics_file}")
        if "eval" in result:
            _log(verbose, checkpoints.to_json(result["eval"], indent=2))
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
