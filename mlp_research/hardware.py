"""The host's CPU: its model and the vector and matrix extensions that decide which kernels are fast.

Whether `--matmul_precision=bfloat16` pays on a CPU depends on its matrix
engine: Intel's AMX-BF16 (Sapphire Rapids and later) and AVX512-BF16 multiply
bfloat16 several times faster than float32; a CPU without them converts and
gains nothing. Summaries, benchmarks and the exercise report name them, so a
number is never read without the hardware that produced it. Framework-free.
"""

from __future__ import annotations

import functools
import os
import platform

# /proc/cpuinfo flag -> the name Intel's and AMD's documents use.
EXTENSIONS = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512",
    "avx512_bf16": "AVX512-BF16",
    "avx512_fp16": "AVX512-FP16",
    "avx512_vnni": "AVX512-VNNI",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
    "amx_fp16": "AMX-FP16",
}


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor's entries of a /proc/cpuinfo text."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if entries:
                break
            continue
        key, _, value = line.partition(":")
        entries.setdefault(key.strip(), value.strip())
    return entries


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpuinfo(f.read())
    except OSError:  # not Linux: the model from `platform`, no extensions known
        return {}


def cpu_model() -> str:
    """'Intel(R) Xeon(R) Platinum 8480+' (from /proc/cpuinfo where there is one)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_family_model() -> str:
    """'6/143': family and model numbers, which name the generation where a virtual machine hides the name."""
    info = _cpuinfo()
    return f"{info['cpu family']}/{info['model']}" if "cpu family" in info and "model" in info else ""


def cpu_extensions(info: dict[str, str] | None = None) -> list[str]:
    """The vector and matrix extensions of `EXTENSIONS` this CPU reports, e.g. ['AVX2', 'AVX-512', 'AMX-BF16']."""
    info = _cpuinfo() if info is None else info
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return [name for flag, name in EXTENSIONS.items() if flag in flags]


def has_fast_bfloat16() -> bool:
    """A bfloat16 matrix or dot-product unit (AMX-BF16 or AVX512-BF16): where bfloat16 matmuls pay on a CPU."""
    return bool({"AMX-BF16", "AVX512-BF16"} & set(cpu_extensions()))


def describe() -> dict:
    """For summary.json and benchmark tables: model, core count, extensions, and the bfloat16 verdict."""
    return {"cpu_model": cpu_model(), "cpu_family_model": cpu_family_model(), "cpu_count": os.cpu_count(),
            "extensions": cpu_extensions(), "fast_bfloat16": has_fast_bfloat16(), "machine": platform.machine()}


def label() -> str:
    """One line: 'Intel(R) Xeon(R) Processor, 2 cores, AVX-512 AMX-BF16 ...'."""
    info = describe()
    extensions = " ".join(info["extensions"]) or "no AVX2/AVX-512/AMX"
    return f"{info['cpu_model']}, {info['cpu_count']} cores, {extensions}"
