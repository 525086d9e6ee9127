"""The shape of the house: imports run one way, the run package is framework-neutral, files and functions stay small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from import_graph import Import, Rule, cycles, import_graph, path_to, reachable, under, violations

from conftest import REPO

FRAMEWORK_NAMES = {"jax", "torch", "tensorflow", "mxnet"}
NEUTRAL_MODULES = [
    "mlp_research.config", "mlp_research.spec", "mlp_research.batching", "mlp_research.schedules",
    "mlp_research.optimizers", "mlp_research.files", "mlp_research.errors", "mlp_research.cli",
    "mlp_research.data", "mlp_research.backends.base", "mlp_research.backends.registry",
    *(f"mlp_research.run.{p.stem}" for p in sorted((REPO / "mlp_research" / "run").glob("*.py"))),
    *(f"mlp_research.testing.{p.stem}" for p in sorted((REPO / "mlp_research" / "testing").glob("*.py"))),
]
# Entry points define absl flags at import, so each is imported in a process of its own.
ENTRY_POINTS = ["experiments.train", "experiments.evaluate", "experiments.compare", "experiments.backends",
                "experiments.search"]


def _python_files(*tops: str) -> list[Path]:
    files = []
    for top in tops:
        for path in sorted((REPO / top).rglob("*.py")):
            parts = set(path.relative_to(REPO).parts)
            if "tests" in parts or any(p.endswith(".egg-info") for p in parts):
                continue
            files.append(path)
    return files


def test_importing_the_run_package_and_the_entry_points_imports_no_framework():
    for modules in [NEUTRAL_MODULES, *([entry] for entry in ENTRY_POINTS)]:
        code = ("import sys, importlib\n"
                f"for name in {modules!r}:\n    importlib.import_module(name)\n"
                f"print(sorted(m for m in {sorted(FRAMEWORK_NAMES)!r} if m in sys.modules))")
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "[]", (modules, done.stdout)


def _name_comparisons(path: Path) -> list[str]:
    """`x == "torch"`-style comparisons with a framework's name (a module loaded in sys.modules is not one)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        names = [o.value for o in operands if isinstance(o, ast.Constant) and o.value in FRAMEWORK_NAMES]
        about_modules = any("modules" in ast.unparse(o) for o in operands)
        if names and not about_modules:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_code_outside_the_backends_branches_on_a_backend_name():
    offenders = []
    for path in _python_files("mlp_research", "experiments", "benchmarks"):
        # The JAX backend is a backend; benchmarks/book runs the book's own code, one file per framework.
        if "jax_backend" in path.parts or path.parts[-2:-1] == ("book",):
            continue
        offenders += _name_comparisons(path)
    assert offenders == []


def test_files_and_functions_stay_small():
    long_files, long_functions = [], []
    for path in _python_files("mlp_research", "plugins", "experiments", "benchmarks"):
        text = path.read_text()
        if text.count("\n") + 1 > 400:
            long_files.append(str(path.relative_to(REPO)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long_functions.append(f"{path.relative_to(REPO)}:{node.name}")
    assert long_files == [] and long_functions == []


def test_the_training_entry_point_is_flags_and_the_front_door():
    """experiments/train.py stays flax-short: it parses flags and calls the library's front door."""
    text = (REPO / "experiments" / "train.py").read_text()
    calls = {ast.unparse(node.func) for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Call)}
    assert text.count("\n") <= 50
    assert {"mlp_research.train_and_evaluate", "mlp_research.train_group"} <= calls


# ------------------------------------------------------------------ the import graph, read from the source
JAX_FAMILY = ("jax", "jaxlib", "flax", "optax", "orbax")
# The kit is for plugin authors: a backend in another framework is checked without JAX in its way (the driver
# it runs imports JAX's checkpointing only when it saves, through Orbax).
KIT_RULES = [Rule("mlp_research.testing", JAX_FAMILY, "the kit for plugin authors needs no JAX")]
# Imports run one way: entry points -> driver -> backend interface <- backends.
BACKEND_PACKAGES = ("mlp_research.jax_backend", "mlp_research.backends", "mlp_research_torch",
                    "mlp_research_tensorflow", "mlp_research_mxnet")
DRIVER_SIDE = ("mlp_research.run", "mlp_research.exercises", "mlp_research.search", "mlp_research.cli")
LIBRARY_RULES = [
    Rule("mlp_research", ("experiments", "benchmarks", "notebooks", "tests"),
         "library code never reaches into the entry points (an installed package has none of them)"),
    *(Rule(package, DRIVER_SIDE, "a backend never imports the driver's modules") for package in BACKEND_PACKAGES),
    Rule("mlp_research.backends", ("mlp_research.jax_backend",),
         "the backend interface names no backend (the registry finds the JAX one by its entry point)"),
]


def _project_graph() -> dict[str, list[Import]]:
    """The import graph of the library, the entry points, the benchmarks and every plugin package."""
    graph = import_graph(REPO, ["mlp_research", "experiments", "benchmarks"])
    for plugin in sorted((REPO / "plugins").iterdir()):
        packages = [p.name for p in plugin.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
        graph.update(import_graph(plugin, packages))
    return graph


def test_no_import_cycles_lazy_imports_included():
    assert cycles(_project_graph()) == []


def test_no_wrong_way_imports_lazy_imports_included():
    assert list(violations(_project_graph(), [*KIT_RULES, *LIBRARY_RULES])) == []


def test_only_the_cli_module_imports_absl():
    """absl flags are process-global: a library module that defines them breaks a second entry point, so absl
    stays in cli.py (the plugin packages, `mlp_research_*`, included)."""
    graph = _project_graph()
    offenders = [str(edge) for module, edges in graph.items() if module.startswith("mlp_research")
                 and module != "mlp_research.cli" for edge in edges if under(edge.imported, "absl")
                 and edge.kind != "typing"]
    assert offenders == []


def test_the_rules_see_a_wrong_way_import(tmp_path):
    """A backend that imports the driver, and library code that imports an entry point, are both found."""
    _write(tmp_path, {
        "mlp_research/__init__.py": "", "mlp_research/run/__init__.py": "", "mlp_research/run/driver.py": "",
        "mlp_research/jax_backend/__init__.py": "",
        "mlp_research/jax_backend/x.py": "def f():\n    from mlp_research.run import driver\n",
        "mlp_research/y.py": "import experiments.train\n", "experiments/__init__.py": "", "experiments/train.py": "",
    })
    found = [str(v) for v in violations(import_graph(tmp_path, ["mlp_research", "experiments"]), LIBRARY_RULES)]
    assert any("jax_backend/x.py:2" in v for v in found) and any("mlp_research/y.py:1" in v for v in found), found


def test_importing_the_kit_brings_in_no_jax_through_other_modules():
    """The kit's own imports (above) and every module they import at module level, transitively."""
    graph = _project_graph()
    chains = []
    for module in sorted(m for m in graph if m.startswith("mlp_research.testing")):
        reached = reachable(graph, module)
        chains += [path_to(reached, m) for m in reached if m.split(".")[0] in JAX_FAMILY]
    assert chains == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_scanner_finds_lazy_cycles_and_lazy_imports_and_ignores_type_only_ones(tmp_path):
    """The checks above pass only if the scanner sees what they forbid: here, a tree that has each."""
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/kit.py": "from pkg import checks\n",
        "pkg/checks.py": "def cases():\n    from .kit import x\n    import jax.numpy\n",
        "pkg/core.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.kit\n    import jax\n",
        "pkg/lazy.py": "import importlib\ndef f():\n    return importlib.import_module('pkg.core')\n",
    })
    graph = import_graph(tmp_path, ["pkg"])
    assert cycles(graph) == [["pkg.checks", "pkg.kit"]]
    assert [str(e) for e in graph["pkg.checks"]] == ["pkg/checks.py:2: pkg.checks -> pkg.kit (lazy)",
                                                      "pkg/checks.py:3: pkg.checks -> jax.numpy (lazy)"]
    assert {e.kind for e in graph["pkg.core"] if e.imported in ("pkg.kit", "jax")} == {"typing"}
    assert [e.imported for e in graph["pkg.lazy"] if e.kind == "lazy"] == ["pkg.core"]
    rule = Rule("pkg", ("jax",), "no jax")
    assert list(violations(graph, [rule])) == ["pkg/checks.py:3: pkg.checks -> jax.numpy (lazy): no jax"]
    reached = reachable(graph, "pkg.kit")
    assert set(reached) == {"pkg.checks"}  # module-level imports only: the lazy jax import is not followed
    assert path_to(reachable(graph, "pkg.kit", kinds=("module", "lazy")), "jax.numpy") == [
        "pkg/kit.py:1: pkg.kit -> pkg.checks (module)", "pkg/checks.py:3: pkg.checks -> jax.numpy (lazy)"]
