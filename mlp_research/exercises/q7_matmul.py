"""Q7: matmul speed at aligned and misaligned sizes, and how that differs between devices.

Float32 square matmuls with JAX (default device) and numpy (host), median of a
few timed calls after a warm-up. Results are stored per device label in
q7_matmul/results.json, so a run on a GPU adds its columns beside the CPU's.
"""

from __future__ import annotations

import numpy as np

from mlp_research.exercises import hardware
from mlp_research.exercises.common import Context, Section, Table, Work, fmt, save_figure
from mlp_research.exercises.common import figure as new_figure

TITLE = "Matmul speed at aligned and misaligned sizes"
QUESTION = ("Measure matmul speed for 1024, 1025, 1026, 1028, 1032 (and 2048/2049, 4096/4097). How does it "
            "change between CPU and GPU?")
DIR = "q7_matmul"


def plan(cfg: dict, ctx: Context) -> Work:
    """Nothing the training-time model can predict (matmul rates are this question's measurement)."""
    return Work()


def measure(cfg: dict, ctx: Context) -> dict:
    """Every device label's rows (this device measured now unless stored with the same sizes and reps)."""
    label = hardware.device_label()
    path = ctx.path(DIR, "results.json")
    stored = hardware.load(path)
    if label in stored and stored[label].get("sizes") == cfg["sizes"] and stored[label].get("reps") == cfg["reps"]:
        ctx.log(f"[q7] matmul on {label}: measured earlier, reusing")
        return stored
    rows = []
    for n in cfg["sizes"]:
        part = hardware.matmul_table([n], cfg["reps"], numpy_too=cfg["numpy"])
        rows += part
        ctx.log("[q7] " + ", ".join(f"{r['impl']} {n}: {r['gflops']:.1f} GFLOP/s" for r in part))
    return hardware.store(path, label, {"sizes": cfg["sizes"], "reps": cfg["reps"], "rows": rows})


def _columns(stored: dict) -> list[tuple[str, str]]:
    return [(lab, impl) for lab in sorted(stored) for impl in sorted({r["impl"] for r in stored[lab]["rows"]})]


def _sizes(stored: dict) -> list[int]:
    return sorted({r["size"] for lab in stored for r in stored[lab]["rows"]})


def _g(stored: dict, lab: str, impl: str, n: int) -> float:
    return next((r["gflops"] for r in stored[lab]["rows"] if r["impl"] == impl and r["size"] == n), float("nan"))


def figure(stored: dict, ctx: Context) -> list[str]:
    cols, sizes = _columns(stored), _sizes(stored)
    fig, (ax,) = new_figure(1, width=7)
    w = 0.8 / max(len(cols), 1)
    for i, (lab, impl) in enumerate(cols):
        ax.bar(np.arange(len(sizes)) + i * w, [_g(stored, lab, impl, n) for n in sizes], w, label=f"{impl} [{lab}]")
    ax.set_xticks(np.arange(len(sizes)) + w * (len(cols) - 1) / 2, [str(n) for n in sizes], rotation=45)
    ax.set(ylabel="GFLOP/s", title="float32 square matmul")
    ax.legend(fontsize=6)
    return [save_figure(fig, ctx, "q7_matmul.png")]


def comparisons(stored: dict) -> list[tuple[str, float]]:
    """(sentence, relative loss) for each aligned size against its slowest misaligned neighbour."""
    out = []
    sizes = _sizes(stored)
    for lab, impl in _columns(stored):
        for n in sizes:
            neighbours = [m for m in sizes if n < m < n + 64]
            if n % 64 or not neighbours:
                continue
            worst = min(neighbours, key=lambda m: _g(stored, lab, impl, m))
            ratio = _g(stored, lab, impl, worst) / _g(stored, lab, impl, n)
            out.append((f"{impl} on {lab.split(' (')[0]}: {n} -> {worst} changes speed by {ratio - 1:+.0%}", 1 - ratio))
    return out


def answer(stored: dict) -> str:
    parts = comparisons(stored)
    penalised = [p for p, loss in parts if loss > 0.05]
    devices = {lab.split(":")[0] for lab in stored}
    cross = ("Both a CPU and a GPU have been measured: compare the columns; GPUs pay more for misalignment because "
             "their tiles are larger (multiples of 8-128 elements for tensor cores)." if len(devices) > 1 else
             "Only one kind of device has been measured so far; a run of `--only=q7` on a GPU adds its columns here.")
    return (
        "Relative to the aligned size, the slowest misaligned neighbour: " + "; ".join(p for p, _ in parts) + ". "
        + (f"{len(penalised)} of {len(parts)} comparisons lose more than 5%: sizes that are a multiple of the vector "
           "width and cache-block size let the kernel use full tiles, while one extra row or column adds a ragged "
           "edge handled by slower code and breaks the alignment of every row. "
           if penalised else "No comparison loses more than 5%: these kernels pad or block well enough that "
           "misalignment costs little here. ")
        + ("Where an aligned size is itself slower than its neighbours, the timing is noisy (a shared machine); rerun "
           "`--only=q7` on an idle one to confirm. " if any(loss < -0.05 for _, loss in parts) else "")
        + cross)


def section(cfg: dict, ctx: Context) -> Section:
    stored = measure(cfg, ctx)
    cols = _columns(stored)
    rows = [[n, "aligned" if n % 64 == 0 else f"+{n % 64}"] + [fmt(_g(stored, lab, impl, n), 1) for lab, impl in cols]
            for n in _sizes(stored)]
    label = hardware.device_label()
    headline = {"device": label, "gflops": {f"{r['impl']} {r['size']}": r["gflops"] for r in stored[label]["rows"]}}
    return Section("q7", TITLE, QUESTION,
                   [Table(["size", "alignment"] + [f"{impl} GFLOP/s [{lab}]" for lab, impl in cols], rows)],
                   figure(stored, ctx), answer(stored),
                   f"float32, median of {cfg['reps']} timed calls after one warm-up, JAX jit on the default device "
                   "and numpy on the host", "; ".join(sorted(stored)), headline)
