"""What a compiled program does with its matmuls, read from XLA's optimised HLO text.

Speed on a CPU depends on which kernel XLA picks for each dot, and that choice is
invisible from Python: a transposed operand or an operand type the library does
not take sends a dot to a slower path without a word. Tests and benchmarks read
the compiled program instead (`compiled.as_text()`) and check each dot's operand
types, layouts, contracting dimensions and whether a library fusion runs it.
"""

from __future__ import annotations

import dataclasses
import math
import re

_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) \((.*)\) -> .* \{$")
_HEADER_PARAM = re.compile(r"([\w.\-]+): (\w+)\[([\d,]*)\]")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\w+)\[([\d,]*)\](?:\{([\d,]*)\})? (\S+?)\((.*)$")
_OPERAND = re.compile(r"%([\w.\-]+)")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_FUSION_KIND = re.compile(r'"kind":"(__\w+)"')


@dataclasses.dataclass(frozen=True)
class Value:
    dtype: str
    shape: tuple[int, ...]
    layout: tuple[int, ...] | None  # minor-to-major, None where the text gives none (fusion parameters)

    @property
    def row_major(self) -> bool:
        return self.layout is None or self.layout == tuple(reversed(range(len(self.shape))))


@dataclasses.dataclass(frozen=True)
class Dot:
    """One dot of a compiled program, with its operands and the library fusion (if any) that runs it."""

    lhs: Value
    rhs: Value
    out: Value
    lhs_contracting: tuple[int, ...]
    rhs_contracting: tuple[int, ...]
    library: str | None  # e.g. "__ynn_fusion"; None for XLA's own or Eigen's dot

    @property
    def m_k_n(self) -> tuple[int, int, int]:
        k = math.prod(self.lhs.shape[axis] for axis in self.lhs_contracting)
        m = max(1, math.prod(self.lhs.shape) // k)
        n = max(1, math.prod(self.rhs.shape) // k)
        return m, k, n

    @property
    def standard_form(self) -> bool:
        """`a @ b` with both operands row-major: the form CPU matmul libraries take at full speed."""
        return (self.lhs_contracting == (len(self.lhs.shape) - 1,) and self.rhs_contracting == (0,)
                and self.lhs.row_major and self.rhs.row_major)

    def describe(self) -> str:
        m, k, n = self.m_k_n
        return (f"{self.lhs.dtype}[{m}x{k}] @ {self.rhs.dtype}[{k}x{n}] -> {self.out.dtype}, contracting "
                f"{self.lhs_contracting}/{self.rhs_contracting}, {self.library or 'no library'}")


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(",") if d)


def _contracting(line: str, side: str) -> tuple[int, ...]:
    found = re.search(side + r"_contracting_dims=\{([\d,]*)\}", line)
    return _dims(found.group(1)) if found else ()


def find_dots(hlo_text: str) -> list[Dot]:
    """Every dot of an optimised HLO module (`jax.jit(f).lower(...).compile().as_text()`)."""
    computations: dict[str, dict[str, Value]] = {}
    dot_lines: list[tuple[str, str, list[str]]] = []
    library_of: dict[str, str] = {}  # fused computation -> library fusion kind
    current = ""
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = header.group(1)
            computations[current] = {name: Value(dtype, _dims(dims), None)
                                     for name, dtype, dims in _HEADER_PARAM.findall(header.group(2))}
            continue
        inst = _INSTRUCTION.match(line)
        if not inst:
            continue
        name, dtype, dims, layout, op, rest = inst.groups()
        computations.setdefault(current, {})[name] = Value(dtype, _dims(dims), _dims(layout) if layout else None)
        if op == "dot":
            dot_lines.append((current, line, _OPERAND.findall(rest.split(")")[0])))
        elif op == "fusion" and _CALLS.search(rest) and _FUSION_KIND.search(rest):
            library_of[_CALLS.search(rest).group(1)] = _FUSION_KIND.search(rest).group(1)
    dots = []
    for computation, line, (lhs, rhs, *_) in dot_lines:
        values = computations[computation]
        out = _INSTRUCTION.match(line)
        dots.append(Dot(values[lhs], values[rhs], Value(out.group(2), _dims(out.group(3)), None),
                        _contracting(line, "lhs"), _contracting(line, "rhs"), library_of.get(computation)))
    return dots


def large_dots(hlo_text: str, min_dim: int = 64) -> list[Dot]:
    """The dots whose every dimension (m, k, n) is at least `min_dim`: the ones an epoch's time depends on."""
    return [d for d in find_dots(hlo_text) if min(d.m_k_n) >= min_dim]
