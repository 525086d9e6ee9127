"""The shape of the house: imports run one way, the run package is framework-neutral, files and functions stay small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

FRAMEWORK_NAMES = {"jax", "torch", "tensorflow", "mxnet"}
NEUTRAL_MODULES = [
    "mlp_research.config", "mlp_research.spec", "mlp_research.batching", "mlp_research.schedules",
    "mlp_research.optimizers", "mlp_research.files", "mlp_research.errors", "mlp_research.cli",
    "mlp_research.data", "mlp_research.backends.base", "mlp_research.backends.registry",
    *(f"mlp_research.run.{p.stem}" for p in sorted((REPO / "mlp_research" / "run").glob("*.py"))),
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
        if "jax_backend" in path.parts:
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
