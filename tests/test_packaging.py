"""The repository's promises: dependency lists agree, notebooks are stored clean, the README's commands exist."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    r = Requirement(req)
    return f"{r.name.lower().replace('_', '-')}{r.specifier}"


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    from_pyproject = {_norm(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        from_pyproject |= {_norm(r) for r in extra}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    from_conda = {_norm(r) for r in pip_section if not r.startswith("-e")}
    assert from_conda == from_pyproject, (
        f"only in pyproject: {sorted(from_pyproject - from_conda)}; "
        f"only in environment.yml: {sorted(from_conda - from_pyproject)}"
    )


def test_constraints_pin_the_cpu_torch_and_the_book_tool():
    pins = dict(
        line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert pins["torch"].startswith("2.13.0")
    assert pins["jupyter-book"] == "1.0.4.post1"


def test_notebooks_are_stored_without_outputs():
    dirty = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count")):
                dirty.append(path.name)
                break
    assert not dirty, f"notebooks with stored outputs (run nbconvert --clear-output): {dirty}"


def test_every_notebook_sets_a_seed_in_its_first_code_cell():
    missing = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        first = next(("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"), "")
        if "seed_everything(" not in first:
            missing.append(path.name)
    assert not missing, f"first code cell does not call seed_everything: {missing}"


def test_readme_commands_are_make_targets_and_ci_calls_them():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.M)
    assert "make book" in commands and "make test" in commands
    targets = subprocess.run(["make", "-pn", "-C", str(ROOT)], capture_output=True, text=True).stdout
    assert re.search(r"^book:", targets, re.M) and re.search(r"^test:", targets, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make book" in ci


def test_every_toc_entry_exists():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part["chapters"]:
            files.append(chapter["file"])
            files += [s["file"] for s in chapter.get("sections", [])]
    missing = [f for f in files if not any((ROOT / f).with_suffix(ext).exists() for ext in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml names files that do not exist: {missing}"


def test_openmp_threads_spin_only_briefly_unless_told_otherwise():
    """Long-spinning OpenMP threads make small models ~3x slower on a busy machine (README, "A busy machine")."""
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    code = "import companion, os, torch; print(os.environ['GOMP_SPINCOUNT'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1000"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "GOMP_SPINCOUNT": "300000"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "300000"  # a user's choice wins
    makefile = (ROOT / "Makefile").read_text()
    assert "GOMP_SPINCOUNT ?= 1000" in makefile and "--env GOMP_SPINCOUNT $(GOMP_SPINCOUNT)" in makefile
