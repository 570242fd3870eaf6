"""Where a benchmark figure came from: date, commit, library versions and machine load.

Imported by the benchmark scripts (run as ``python benchmarks/NAME.py``, so this directory is on
``sys.path``) and recorded in their JSON results.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from companion import __version__

ROOT = Path(__file__).resolve().parents[1]


def git_revision(*paths: str) -> str:
    """The commit the code was run from (``+local changes`` when ``paths`` differ from it), or ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", *paths], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" +local changes" if dirty else "")


def provenance(*paths: str) -> dict:
    """Date, commit (checked for local changes in ``companion/`` and ``paths``), versions and CPU facts."""
    return {
        "date": datetime.date.today().isoformat(),
        "git": git_revision("companion", *paths),
        "companion_version": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }


def merged_provenance(parts: list[dict]) -> list[dict]:
    """The ``meta`` of every run behind result files being merged (a merged file lists all of its own parts)."""
    return [m for p in parts for m in p.get("merged_from", [p["meta"]])]


def write_results(path: str | Path, script: str, **fields) -> None:
    """Write ``{provenance of script, **fields}`` as indented JSON to ``path`` and say so."""
    Path(path).write_text(json.dumps({**provenance(script), **fields}, indent=1) + "\n")
    print(f"wrote {path}")
