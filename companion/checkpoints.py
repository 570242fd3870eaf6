"""Checkpoints and output files of the runs (chapter "Capstone"): write them safely, read them with clear errors.

* :func:`save_checkpoint` writes ``checkpoint.pt`` atomically (plain data only, so it loads with
  ``torch.load(path, weights_only=True)``) and ``config.json`` beside it; it refuses weights that are
  not finite (a diverged model never replaces a good checkpoint).
* :func:`load_checkpoint` reads one back, naming the file and what is wrong with it (missing, a directory,
  empty, truncated, not ours, another model's).
* :func:`check_output_dir` and :func:`check_output_file` check an output path *before* the work that
  fills it; :func:`to_json` and :func:`write_json` write strict JSON: non-finite numbers become ``null``.

User errors raise :class:`RunError` (the command line prints it with status 2); :mod:`companion.runs`
re-exports all of this.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from companion import distributed
from companion.data import DataError

__all__ = ["CHECKPOINT_FORMAT", "RunError", "DivergenceError", "config_dict", "to_json", "write_json",
           "check_output_dir", "check_output_file", "data_errors", "load_weights", "non_finite_tensors", "check_finite",
           "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "companion-checkpoint-v1"


class RunError(Exception):
    """A user error (unknown model, bad config, missing or foreign checkpoint); the CLI prints it with status 2."""


class DivergenceError(RunError):
    """Training produced a non-finite loss or non-finite weights."""


def _finite_or_none(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def to_json(obj, **kwargs) -> str:
    """Strict JSON (``allow_nan=False``): NaN and infinities become ``null`` instead of the invalid ``NaN``."""
    return json.dumps(_finite_or_none(obj), allow_nan=False, **kwargs)


def write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented strict JSON (:func:`to_json`), atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_json(obj, indent=2) + "\n")
    tmp.replace(path)
    return path


def config_dict(cfg) -> dict:
    """A config as plain JSON data (tuples become lists, non-finite numbers ``None``)."""
    return json.loads(to_json(dataclasses.asdict(cfg)))


def _check_creatable(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise RunError(f"{what} {path} cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunError(f"{what} {path} cannot be created: directory {parent} is not writable")


def check_output_dir(path: str | Path, what: str = "output directory") -> Path:
    """Check that ``path`` is, or can be created as, a writable directory; :class:`RunError` if not."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise RunError(f"{what} {path} is an existing file, expected a directory (choose another path)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise RunError(f"{what} {path} is not writable")
        return path
    _check_creatable(path / "x", what)
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Check that ``path`` can be written as a file (not a directory; its folder creatable and writable)."""
    path = Path(path)
    if path.is_dir():
        raise RunError(f"{what} {path} is a directory, expected a file path (e.g. {path / 'name'}.ext)")
    if path.exists() and not os.access(path, os.W_OK):
        raise RunError(f"{what} {path} exists and is not writable")
    _check_creatable(path, what)
    return path


@contextlib.contextmanager
def data_errors():
    """Turn a :class:`companion.data.DataError` (missing or damaged data) into a :class:`RunError`."""
    try:
        yield
    except DataError as exc:
        raise RunError(f"the data cannot be loaded: {exc}") from exc


def load_weights(model: nn.Module, ckpt: dict, cfg, path: Path, hint: str) -> None:
    """``model.load_state_dict(ckpt["state_dict"])``, a :class:`RunError` naming the changed fields on a mismatch."""
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        new = config_dict(cfg)
        changed = [f"{k}: {v!r} -> {new[k]!r}" for k, v in ckpt["config"].items() if k in new and new[k] != v]
        raise RunError(f"the weights in {path} do not fit the {ckpt['model']} model of this config"
                       + (f" (changed: {'; '.join(changed)})" if changed else "") + f"; {hint} "
                       f"({str(exc).splitlines()[0]}{' ...' if len(str(exc).splitlines()) > 1 else ''})") from exc


def non_finite_tensors(state: dict) -> list[str]:
    """Names of the floating-point tensors of a ``state_dict`` that hold NaN or infinite values."""
    return [k for k, t in state.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_finite(metrics: dict, step: int, kept=lambda: "") -> None:
    """:class:`DivergenceError` if the last value of a metric (``{name: [values per step]}``) is NaN or infinite;
    ``kept()`` says what happened to the checkpoint."""
    bad = {k: v[-1] for k, v in metrics.items() if len(v) and not math.isfinite(v[-1])}
    if bad:
        raise DivergenceError(f"training diverged at step {step}: {', '.join(f'{k} = {v}' for k, v in bad.items())} "
                              f"(expected finite values; try a lower learning rate); {kept()}")


def save_checkpoint(path: str | Path, *, model_name: str, cfg, model: nn.Module, steps: int,
                    history: dict | None = None, seconds: float = 0.0, segments: list | None = None,
                    train_state: dict | None = None) -> Path:
    """Write ``state_dict`` + config (+ steps, history, timing) atomically, and ``config.json`` beside it.

    The file loads with ``torch.load(path, weights_only=True)``. Raises :class:`DivergenceError`, and writes
    nothing, when a weight is NaN or infinite.
    """
    from companion import __version__

    path = Path(path)
    state = distributed.unwrap(model).state_dict()
    bad = non_finite_tensors(state)
    if bad:
        raise DivergenceError(f"refusing to save {model_name} weights with NaN or infinite values after step "
                              f"{steps} ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}) to {path}; "
                              "the training diverged (try a lower learning rate)")
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": CHECKPOINT_FORMAT, "model": model_name, "config": config_dict(cfg),
            "state_dict": state, "steps": int(steps), "seconds": float(seconds),
            "history": {k: [float(v) for v in vs] for k, vs in (history or {}).items()},
            "segments": list(segments or []), "version": __version__}
    if train_state is not None:
        blob["train_state"] = train_state
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written checkpoint
    meta = {k: blob[k] for k in ("format", "model", "config", "steps", "seconds", "segments", "version")}
    (path.parent / "config.json").write_text(to_json(meta, indent=2) + "\n")
    return path


def load_checkpoint(path: str | Path, model_name: str | None = None) -> dict:
    """Read a checkpoint with ``torch.load(..., weights_only=True)`` and check that it is one of ours.

    Raises :class:`RunError` naming the file and the problem: missing, a directory, empty, truncated or not a
    torch file, holding objects other than plain data, not our format, or another model's.
    """
    path = Path(path)
    train_hint = f" (train one with: python -m companion train {model_name} --out {path.parent})" if model_name else ""
    if path.is_dir():
        raise RunError(f"checkpoint {path} is a directory, expected the checkpoint.pt file inside it — "
                       f"did you mean {path / 'checkpoint.pt'}?")
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist{train_hint}")
    if path.stat().st_size == 0:
        raise RunError(f"checkpoint {path} is empty (0 bytes): an interrupted copy or download? Copy it again or "
                       f"retrain{train_hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated files, foreign pickles, forbidden globals
        detail = f"{exc.__class__.__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
        if isinstance(exc, pickle.UnpicklingError) and zipfile.is_zipfile(path):
            raise RunError(f"cannot read checkpoint {path}: it holds objects other than plain data, which "
                           f"weights-only loading refuses (only load checkpoints you trust) ({detail})") from exc
        raise RunError(f"cannot read checkpoint {path}: it is truncated or not a torch file "
                       f"({path.stat().st_size:,} bytes; {detail}){train_hint}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path} is not a checkpoint written by `python -m companion train` "
                       f"(expected format {CHECKPOINT_FORMAT!r})")
    if model_name is not None and ckpt["model"] != model_name:
        raise RunError(f"{path} holds a {ckpt['model']!r} model, not {model_name!r}")
    return ckpt
