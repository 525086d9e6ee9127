"""The import graph of a source tree, read from the source (AST), so imports inside functions count too.

The architecture tests check it; an import test that only looks at `sys.modules` after importing a
module misses every import a function makes when it runs. Each edge says where it is written and
what kind it is: at module level, inside a function (`lazy`), or under `if TYPE_CHECKING:`
(`typing`, never executed). Constant `importlib.import_module("...")` calls count as lazy imports.
Implicit imports of parent packages (importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py`)
are not edges: they cannot deadlock an import and would make every package `__init__` that re-exports
a submodule look like a cycle.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

KINDS = ("module", "lazy", "typing")


@dataclasses.dataclass(frozen=True)
class Import:
    """One import statement: `importer` imports `imported` (an absolute module name)."""

    importer: str
    imported: str
    path: str  # the importer's file, relative to the scanned root
    line: int
    kind: str  # one of KINDS

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} -> {self.imported} ({self.kind})"


@dataclasses.dataclass(frozen=True)
class Rule:
    """Modules under `importer` must not import modules under any of `forbidden` (prefixes, dotted)."""

    importer: str
    forbidden: tuple[str, ...]
    why: str
    kinds: tuple[str, ...] = ("module", "lazy")  # which kinds of import the rule covers


def under(module: str, prefix: str) -> bool:
    """`module` is `prefix` or one of its submodules (`a.b` is under `a`, `ab` is not)."""
    return module == prefix or module.startswith(prefix + ".")


def module_name(path: Path, root: Path) -> str:
    """`root/a/b/c.py` -> `a.b.c`; `root/a/b/__init__.py` -> `a.b`."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Collector(ast.NodeVisitor):
    """Every import of one module with its kind; relative imports resolved against the module's package."""

    def __init__(self, module: str, is_package: bool, known: frozenset[str]):
        self.package = module if is_package else module.rpartition(".")[0]
        self.known, self.found = known, []
        self.kinds = ["module"]

    def _nested(self, node: ast.AST, kind: str) -> None:
        self.kinds.append(kind if self.kinds[-1] != "typing" else "typing")
        self.generic_visit(node)
        self.kinds.pop()

    def visit_FunctionDef(self, node: ast.AST) -> None:
        self._nested(node, "lazy")

    visit_AsyncFunctionDef = visit_Lambda = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            return self.generic_visit(node)
        self.kinds.append("typing")
        for child in node.body:
            self.visit(child)
        self.kinds.pop()
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, node.lineno, self.kinds[-1]))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")[: len(self.package.split(".")) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:  # `from a import b` imports the module a.b when there is one
            target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in self.known else base
            self.found.append((target, node.lineno, self.kinds[-1]))

    def visit_Call(self, node: ast.Call) -> None:
        name = ast.unparse(node.func)
        if name in ("importlib.import_module", "import_module") and node.args and isinstance(
                node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            kind = "typing" if self.kinds[-1] == "typing" else "lazy"
            self.found.append((node.args[0].value, node.lineno, kind))
        self.generic_visit(node)


def source_files(root: Path, packages: Sequence[str], exclude: Iterable[str] = ("tests",)) -> list[Path]:
    """The `.py` files of `packages` under `root`, leaving out any path with a part in `exclude`."""
    skip = set(exclude)
    return [path for package in packages for path in sorted((root / package).rglob("*.py"))
            if not skip & set(path.relative_to(root).parts)]


def import_graph(root: Path, packages: Sequence[str]) -> dict[str, list[Import]]:
    """module -> its imports, for every module of `packages` (directories under `root`)."""
    files = {module_name(path, root): path for path in source_files(root, packages)}
    known = frozenset(files)
    graph = {}
    for module, path in files.items():
        collector = _Collector(module, path.name == "__init__.py", known)
        collector.visit(ast.parse(path.read_text(), str(path)))
        relative = str(path.relative_to(root))
        graph[module] = [Import(module, target, relative, line, kind) for target, line, kind in collector.found]
    return graph


def _internal_edges(graph: Mapping[str, list[Import]], kinds: Sequence[str]) -> dict[str, set[str]]:
    return {module: {edge.imported for edge in edges if edge.kind in kinds and edge.imported in graph}
            for module, edges in graph.items()}


def cycles(graph: Mapping[str, list[Import]], kinds: Sequence[str] = ("module", "lazy")) -> list[list[str]]:
    """The import cycles among the graph's own modules: each strongly connected component of two or more
    modules (or a module importing itself), sorted (Tarjan's algorithm, iterative)."""
    edges = _internal_edges(graph, kinds)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    found.append(sorted(component))
    return sorted(found)


def violations(graph: Mapping[str, list[Import]], rules: Iterable[Rule]) -> Iterator[str]:
    """Each import that breaks a rule, with where it is written and why the rule exists."""
    for rule in rules:
        for module, edges in sorted(graph.items()):
            if not under(module, rule.importer):
                continue
            for edge in edges:
                if edge.kind in rule.kinds and any(under(edge.imported, f) for f in rule.forbidden):
                    yield f"{edge}: {rule.why}"


def reachable(graph: Mapping[str, list[Import]], start: str, kinds: Sequence[str] = ("module",)) -> dict[str, Import]:
    """Every module importing `start` brings in through imports of `kinds`: module -> the edge that first
    reaches it (the graph's own modules are followed; outside modules are ends)."""
    seen: dict[str, Import] = {}
    todo = [start]
    while todo:
        for edge in graph.get(todo.pop(), []):
            if edge.kind in kinds and edge.imported not in seen and edge.imported != start:
                seen[edge.imported] = edge
                todo.append(edge.imported)
    return seen


def path_to(reached: Mapping[str, Import], target: str) -> list[str]:
    """The chain of imports `reachable` followed to `target`, first edge first."""
    chain = []
    while target in reached:
        edge = reached[target]
        chain.append(str(edge))
        target = edge.importer
    return chain[::-1]
