"""Q7: matmul speed at aligned and misaligned sizes (1024-1032, 2048/2049, 4096/4097), CPU against GPU.

Command: python -m experiments.report --only=q7 [--smoke]
GFLOP/s of float32 square matmuls (2n^3 FLOPs: a multiply-add is 2) with JAX (default device) and numpy (host),
every (implementation, size) once per round, interleaved, in 5 rounds; within a round the median of a few calls
after a warm-up. Each misaligned size is compared with the aligned one below it by the per-round ratio, and the
alignment pattern is explained only by a rule the measurements support. Stored per device label in
q7_matmul/results.json, so a GPU run adds its columns beside the CPU's.
"""

from __future__ import annotations

import numpy as np
from ml_collections import ConfigDict

from mlp_research import stats
from mlp_research.exercises import hardware, timing
from mlp_research.exercises.common import Context, Section, Table, Work, save_figure
from mlp_research.exercises.common import figure as new_figure
from mlp_research.exercises.plan import Plan

QID = "q7"
TITLE = "Matmul speed at aligned and misaligned sizes"
QUESTION = ("Measure matmul speed for 1024, 1025, 1026, 1028, 1032 (and 2048/2049, 4096/4097). How does it "
            "change between CPU and GPU?")
ALIGNED = 64  # sizes that are multiples of this are the references their larger neighbours are compared with
PLANNING_GFLOPS = 200.0  # only for the time estimate: this CPU's float32 matmul rate


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        sizes=[1024, 1025, 1026, 1028, 1032, 2048, 2049, 4096, 4097], reps=2, rounds=timing.MIN_ROUNDS,
        impls=["jax", "numpy"],
        smoke=dict(sizes=[256, 257, 258, 260, 264], reps=2),
    ))


def plan(cfg: dict, ctx: Context) -> Plan:
    calls = cfg["rounds"] * len(cfg["impls"]) * (cfg["reps"] + 1)
    seconds = calls * sum(hardware.matmul_flops(n) for n in cfg["sizes"]) / PLANNING_GFLOPS / 1e9
    return Plan(f"{len(cfg['sizes'])} sizes x {len(cfg['impls'])} implementations x {cfg['rounds']} rounds x "
                f"{cfg['reps'] + 1} calls", other=Work(seconds=seconds))


def measure(cfg: dict, ctx: Context) -> dict:
    """Every device's stored rounds; this device measured now unless stored with the same sizes, reps and rounds."""
    def rounds() -> dict:
        cases = [(impl, int(n)) for n in cfg["sizes"] for impl in cfg["impls"]]
        values = timing.interleaved(cases, cfg["rounds"],
                                    lambda c, r: hardware.matmul_gflops(c[0], c[1], cfg["reps"]), ctx.log, QID)
        return {"gflops": {f"{i} {n}": v for (i, n), v in values.items()}}

    return hardware.measured(ctx.path(QID + "_matmul", "results.json"), hardware.device_label(),
                             {k: cfg[k] for k in ("sizes", "reps", "rounds", "impls")}, rounds, ctx.log, "[q7] matmul")


def neighbours(measured: dict) -> list[tuple[str, int, int, stats.Rounds, bool]]:
    """(impl, aligned size, misaligned neighbour, per-round speed ratio neighbour/aligned, consistent)."""
    sizes = sorted(int(n) for n in measured["sizes"])
    out = []
    for impl in measured["impls"]:
        for n in (n for n in sizes if n % ALIGNED == 0):
            for m in (m for m in sizes if n < m < n + ALIGNED):
                ratio, real = timing.compare(measured["gflops"][f"{impl} {m}"], measured["gflops"][f"{impl} {n}"])
                out.append((impl, n, m, ratio, real))
    return out


def alignment_rule(rows: list[tuple[str, int, int, stats.Rounds, bool]]) -> int | None:
    """The power of two k for which, in every implementation, the misaligned sizes that are slower in every round
    are exactly those not a multiple of k; None when no k fits (or nothing is slower)."""
    slow = {(impl, m) for impl, _, m, r, real in rows if real and r.median < 1}
    if not slow:
        return None
    for k in (2, 4, 8, 16, 32, 64):
        if all(((impl, m) in slow) == (m % k != 0) for impl, _, m, _, _ in rows):
            return k
    return None


def explanation(rows: list) -> str:
    k = alignment_rule(rows)
    slow = sorted({f"{impl} {m}" for impl, _, m, r, real in rows if real and r.median < 1})
    if not slow:
        return "No misaligned size is slower than its aligned neighbour in every round: there is no pattern to explain."
    if k is None:
        return (f"Slower in every round: {', '.join(slow)}; no alignment rule (multiple of 2 ... 64 elements) "
                "separates them from the sizes that are not slower, so the measurements offer no explanation.")
    return (f"Slower in every round: {', '.join(slow)}, exactly the sizes that are not a multiple of {k} floats "
            f"({4 * k} bytes): the kernels slow down when a row is not aligned to {4 * k} bytes, and sizes aligned to "
            f"it run at full speed whether or not they are a multiple of {ALIGNED}.")


def figure(stored: dict, ctx: Context) -> list[str]:
    fig, (ax,) = new_figure(1, width=7)
    columns = [(d, k) for d in sorted(stored) for k in stored[d]["gflops"]]
    impls = sorted({(d, k.split(" ")[0]) for d, k in columns})
    sizes = sorted({int(k.split(" ")[1]) for _, k in columns})
    w = 0.8 / max(len(impls), 1)
    for i, (d, impl) in enumerate(impls):
        med = [stats.rounds(stored[d]["gflops"].get(f"{impl} {n}", [])) for n in sizes]
        ax.bar(np.arange(len(sizes)) + i * w, [r.median for r in med], w, label=f"{impl} [{d.split(',')[0]}]",
               yerr=np.nan_to_num([[r.median - r.low for r in med], [r.high - r.median for r in med]]), capsize=2)
    ax.set_xticks(np.arange(len(sizes)) + w * (len(impls) - 1) / 2, [str(n) for n in sizes], rotation=45)
    ax.set(ylabel="GFLOP/s (median, range over rounds)", title="float32 square matmul")
    ax.legend(fontsize=6)
    return [save_figure(fig, ctx, "q7_matmul.png")]


def answer(stored: dict, device: str) -> tuple[str, str, str]:
    rows = neighbours(stored[device])
    parts = [f"{impl} {n} -> {m}: {timing.ratio_text(r, real)}" for impl, n, m, r, real in rows]
    kinds = {d.split(":")[0] for d in stored}
    cross = ("Both a CPU and a GPU have been measured: compare their columns." if len(kinds) > 1 else
             "Only one kind of device has been measured so far; a run of `--only=q7` on a GPU adds its columns.")
    text = ("Speed of each misaligned size relative to the aligned one below it (per-round ratio, median and range): "
            + "; ".join(parts) + ". " + explanation(rows) + " " + cross)
    real = [(impl, m, r) for impl, _, m, r, c in rows if c]
    summary = f"{len(real)} of {len(rows)} misaligned sizes differ in every round; " + (
        f"rule: multiple of {alignment_rule(rows)} floats" if alignment_rule(rows) else "no alignment rule fits")
    worst = min(rows, key=lambda row: row[3].median)
    evidence = f"largest loss {worst[0]} {worst[1]} -> {worst[2]}: {timing.ratio_text(worst[3], worst[4])}"
    return text, summary, evidence


def section(cfg: dict, ctx: Context) -> Section:
    stored = measure(cfg, ctx)
    device = hardware.device_label()
    columns = [(d, k) for d in sorted(stored) for k in stored[d]["gflops"]]
    impls = list(dict.fromkeys((d, k.split(" ")[0]) for d, k in columns))
    sizes = sorted({int(k.split(" ")[1]) for _, k in columns})
    rows = [[n, "aligned" if n % ALIGNED == 0 else f"+{n % ALIGNED}"]
            + [stats.rounds(stored[d]["gflops"].get(f"{impl} {n}", [])).text() for d, impl in impls] for n in sizes]
    table = Table(["size", "alignment"] + [f"{impl} GFLOP/s [{d.split(',')[0]}]" for d, impl in impls], rows,
                  "median (min-max) over interleaved rounds")
    text, summary, evidence = answer(stored, device)
    mine = stored[device]
    headline = {"device": device, "rounds": mine["rounds"],
                "gflops": {k: stats.rounds(v).as_dict() for k, v in mine["gflops"].items()},
                "alignment_rule_floats": alignment_rule(neighbours(mine))}
    return Section(QID, TITLE, QUESTION, [table], figure(stored, ctx), text,
                   f"float32, 2n^3 FLOPs per matmul; {mine['rounds']} interleaved rounds, each the median of "
                   f"{mine['reps']} calls after a warm-up; JAX jit on the default device and numpy on the host",
                   "; ".join(sorted(stored)), headline, summary=summary, evidence=evidence, precision="float32")
