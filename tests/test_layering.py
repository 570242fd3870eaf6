"""The package's layering (CONTRIBUTING.md, "Layers"): no module imports from a layer above it, no cycles.

Every import of a ``companion`` module counts, at the top of a file or inside a function.
A new module must be given a layer here, in the same change that adds it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "companion"

# Lower numbers are lower layers. A module may import from its own layer and the layers below.
LAYERS: dict[str, int] = {
    # 0: math and building blocks: pure functions and layers, no data, no training
    "checks": 0,
    "layers": 0,
    "divergences": 0,
    "attention": 0,
    "positional": 0,
    "metrics": 0,
    "bleu": 0,
    "toy2d": 0,
    "tokenizers": 0,
    "calibration": 0,
    "sampling": 0,
    "clustering": 0,
    # 1: models (nn.Modules and the math of their chapter); they never train themselves
    "lm": 1,
    "classifiers": 1,
    "transformer": 1,
    "seq2seq": 1,
    "conv_seq2seq": 1,
    "gpt": 1,
    "bert": 1,
    "gan": 1,
    "gan_networks": 1,
    "infogan": 1,
    "diffaugment": 1,
    "vae": 1,
    "vqvae": 1,
    "linear_gaussian": 1,
    "gradient_estimators": 1,
    "flows": 1,
    "diffusion": 1,
    "v_prediction": 1,
    "flow_matching": 1,
    "unet": 1,
    "autoencoder": 1,
    "hvae": 1,
    # 2: beside the stack, for recipes and above: training helpers, data, plotting
    "train": 2,
    "distributed": 2,
    "data": 2,
    "plotting": 2,
    "figure_translation": 2,
    "human_eval": 2,
    "probes": 2,
    "env": 2,
    # 3: recipes (a model's config, data and training loop)
    "recipes": 3,
    # 4: runs (registry, checkpoints, train/sample/evaluate as a library)
    "runs": 4,
    "registry": 4,
    "checkpoints": 4,
    # 5: the command line
    "cli": 5,
    "__main__": 5,
}
LAYER_NAMES = ["math and building blocks", "models", "training, data and plotting", "recipes", "runs", "command line"]


def module_name(path: Path) -> str:
    """``companion/recipes/gan.py`` -> ``recipes.gan``; the package's ``__init__`` files -> their package."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(name: str) -> int | None:
    head = name.split(".")[0]
    return LAYERS.get(name, LAYERS.get(head))


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_companion_modules(path: Path, known: set[str]) -> set[str]:
    """The ``companion`` modules a file imports (``from companion import gan`` counts as ``gan``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("companion."):
                    found.add(alias.name.removeprefix("companion."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "companion":  # from companion import gan, __version__
                found.update(a.name for a in node.names if a.name in known)
            elif node.module.startswith("companion."):
                base = node.module.removeprefix("companion.")
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        if name == "":  # the package's __init__: re-exports seed_everything and __version__ only
            continue
        graph[name] = {m for m in imported_companion_modules(path, known) if m and m != name}
    return graph


def test_every_module_has_a_layer():
    missing = sorted(n for n in modules() if n and layer_of(n) is None)
    assert not missing, f"give these modules a layer in tests/test_layering.py and CONTRIBUTING.md: {missing}"


def test_no_module_imports_from_a_layer_above_it():
    violations = []
    for name, deps in import_graph().items():
        mine = layer_of(name)
        for dep in sorted(deps):
            theirs = layer_of(dep)
            if theirs is not None and mine is not None and theirs > mine:
                violations.append(f"companion.{name} ({LAYER_NAMES[mine]}) imports companion.{dep} "
                                  f"({LAYER_NAMES[theirs]})")
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of module names, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(f"companion.{m}" for m in cycle)


def test_the_checks_would_catch_a_violation_and_a_cycle(tmp_path):
    # the two detectors on made-up graphs: they must be able to fail
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from companion.runs import MODELS\n    import companion.cli\n")
    assert imported_companion_modules(bad, {"runs", "cli"}) == {"runs", "cli"}
    assert layer_of("recipes.gan") == 3 and layer_of("gan") == 1


def test_no_module_is_longer_than_about_450_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    too_long = {n: k for n, k in long.items() if k > 480}
    assert not too_long, f"split these modules by concept: {too_long}"


def test_ruff_is_clean_over_the_package_tests_and_benchmarks():
    import ruff  # noqa: F401  (part of the test extra; a missing ruff fails this test)

    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "companion", "tests", "benchmarks"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
