"""Q8: memory bandwidth by measurement, and the memory bus width.

Command: python -m experiments.report --only=q8 [--smoke]
Streaming copy (numpy in one thread and in one thread per core, JAX) and triad (JAX) over arrays far larger than
the caches, every kernel once per round, interleaved, in 5 rounds. The bus width is read from what the machine
reports (SMBIOS memory devices, through /sys/firmware/dmi or dmidecode); where it reports none, it is derived
from bandwidth = width x transfer rate at stated transfer rates, and one thread against all cores says whether
the measurement saturates the bus or only bounds it from below. Stored per device label in
q8_bandwidth/results.json.
"""

from __future__ import annotations

import os

import jax
from ml_collections import ConfigDict

from mlp_research import stats
from mlp_research.exercises import hardware, membus, timing
from mlp_research.exercises.common import Context, Section, Table, Work, fmt, save_figure
from mlp_research.exercises.common import figure as new_figure
from mlp_research.exercises.plan import Plan

QID = "q8"
TITLE = "Memory bandwidth and bus width"
QUESTION = "Determine the memory bandwidth by measurement, and what it implies about bus width."
PLANNING_GB_PER_S = 20.0  # only for the time estimate
SCALING = 1.15  # all cores moving less than this multiple of one thread's bandwidth: the cores are not the limit


def get_config() -> ConfigDict:
    return ConfigDict(dict(num_floats=64 * 2**20, reps=5, rounds=timing.MIN_ROUNDS,
                           smoke=dict(num_floats=4 * 2**20, reps=2)))


def cases() -> list[tuple[str, str, int]]:
    """(implementation, kernel, threads; 0: the implementation's own)."""
    cores = os.cpu_count() or 1
    return [("numpy", "copy", 1), ("numpy", "copy", cores), ("jax", "copy", 0), ("jax", "triad", 0)]


def name(case: tuple[str, str, int]) -> str:
    impl, kernel, threads = case
    return f"{impl} {kernel}" + (f" ({threads} thread{'s' if threads > 1 else ''})" if threads else "")


def plan(cfg: dict, ctx: Context) -> Plan:
    touches = sum(hardware.Bandwidth.KERNELS[k][0] for _, k, _ in cases())
    seconds = cfg["rounds"] * (cfg["reps"] + 1) * touches * 4 * cfg["num_floats"] / PLANNING_GB_PER_S / 1e9
    return Plan(f"{len(cases())} kernels x {cfg['rounds']} rounds x {cfg['reps'] + 1} passes over "
                f"{4 * cfg['num_floats'] / 2**20:,.0f} MiB arrays", other=Work(seconds=seconds))


def measure(cfg: dict, ctx: Context) -> dict:
    def rounds() -> dict:
        probe = hardware.Bandwidth(cfg["num_floats"], cfg["reps"])
        try:
            values = timing.interleaved(cases(), cfg["rounds"], lambda c, r: probe.gb_per_s(c[0], c[1], c[2] or 1),
                                        ctx.log, QID)
        finally:
            probe.close()
        devices, source = membus.read_devices()
        return {"platform": jax.devices()[0].platform, "gb_per_s": {name(c): v for c, v in values.items()},
                "memory_devices": devices, "memory_source": source,
                "last_level_cache_bytes": membus.last_level_cache_bytes()}

    return hardware.measured(ctx.path(QID + "_bandwidth", "results.json"), hardware.device_label(),
                             {k: cfg[k] for k in ("num_floats", "reps", "rounds")}, rounds, ctx.log,
                             "[q8] bandwidth")


def bus_sentence(mine: dict, best: stats.Rounds) -> str:
    """The bus width: as reported, else implied by the best bandwidth at the assumed rates (a lower bound)."""
    reported = membus.reported_bus(mine["memory_devices"])
    if reported:
        return (f"**Bus width, as the machine reports it** ({mine['memory_source']}): {reported['devices']} memory "
                f"devices of {reported['bits'] // reported['devices']} data bits, {reported['bits']} bits in all "
                f"(assuming one device per channel), at {reported['speed_mts']} MT/s: a peak of "
                f"{reported['peak_gb_per_s']:.0f} GB/s, of which the measurement reaches "
                f"{best.median / reported['peak_gb_per_s']:.0%}.")
    widths = membus.implied_bus_widths(best.median, mine["platform"])
    return ("**Bus width**: the machine does not report its memory (" + mine["memory_source"] + "), so it is "
            "derived: bandwidth = width x transfer rate, and the best median bandwidth needs at least "
            + ", ".join(f"{w['bits']:.0f} bits ({w['channels_64bit']:.1f} 64-bit channels) at {w['memory']}"
                        for w in widths) + ". The transfer rates are assumptions (Intel CPUs with AMX pair with DDR5).")


def answer(mine: dict) -> tuple[str, str, str]:
    gb = mine["gb_per_s"]
    cores = os.cpu_count() or 1
    med = {k: stats.rounds(v) for k, v in gb.items()}
    best_name = max(med, key=lambda k: med[k].median)
    best = med[best_name]
    scaling, real = timing.compare(gb[name(("numpy", "copy", cores))], gb[name(("numpy", "copy", 1))])
    if real and scaling.median >= SCALING:
        limit = (f"{cores} threads move {scaling.median:.2f}x what one does, so the cores' outstanding misses, not "
                 "the bus, limit the measurement: the bus is at least as wide as derived, and likely wider")
    elif scaling.median < SCALING:
        limit = ("more threads do not move more, so the cores are not what limits the measurement: it is close to "
                 "what the memory path of this machine delivers")
    else:
        limit = "the data cannot tell whether more threads move more, so the measurement only bounds the bus from below"
    triad = med.get(name(("jax", "triad", 0)))
    flops = (f" A streaming kernel does little arithmetic: the triad's one multiply-add (2 FLOPs) per 12 bytes caps it "
             f"at {triad.median * 2 / 12:.1f} GFLOP/s here, far below the matmul rates of Q7: element-wise layers are "
             "bandwidth-bound, matmuls compute-bound." if triad else "")
    cache = mine.get("last_level_cache_bytes")
    cache_text = (f" Each array is {4 * mine['num_floats'] / 2**20:,.0f} MiB; the CPU reports a largest cache of "
                  f"{cache / 2**20:,.0f} MiB (a virtual machine may report its host's)." if cache else "")
    text = (f"The best kernel, {best_name}, moves **{best.text()} GB/s** (median and range over {best.n} rounds). "
            f"One thread against {cores}: {timing.ratio_text(scaling, real)}; {limit}. "
            + bus_sentence(mine, best) + flops + cache_text)
    reported = membus.reported_bus(mine["memory_devices"])
    implied = membus.implied_bus_widths(best.median, mine["platform"])
    summary = f"{best.median:.1f} GB/s; bus " + (f"{reported['bits']} bits (reported)" if reported else
                                                 f">= {implied[1]['bits']:.0f} bits at {implied[1]['memory']} "
                                                 "(derived, a lower bound)")
    evidence = f"{best_name} {best.text()} GB/s; 1 vs {cores} threads {timing.ratio_text(scaling, real)}"
    return text, summary, evidence


def figure(stored: dict, ctx: Context) -> list[str]:
    rows = [(d, k, stats.rounds(v)) for d in sorted(stored) for k, v in stored[d]["gb_per_s"].items()]
    fig, (ax,) = new_figure(1, width=7)
    ax.bar(range(len(rows)), [r.median for _, _, r in rows], yerr=[[r.median - r.low for _, _, r in rows],
                                                                  [r.high - r.median for _, _, r in rows]], capsize=3)
    ax.set_xticks(range(len(rows)), [f"{k}\n[{d.split(',')[0]}]" for d, k, _ in rows], fontsize=6)
    ax.set(ylabel="GB/s (median, range over rounds)", title="Streaming bandwidth")
    return [save_figure(fig, ctx, "q8_bandwidth.png")]


def traffic(case_name: str, num_floats: int) -> int:
    """Bytes one pass of a kernel moves ('numpy copy (2 threads)' -> copy's)."""
    return hardware.Bandwidth.KERNELS[case_name.split(" ")[1]][0] * 4 * num_floats


def section(cfg: dict, ctx: Context) -> Section:
    stored = measure(cfg, ctx)
    device = hardware.device_label()
    mine = stored[device]
    rows = [[d.split(",")[0], k, f"{traffic(k, stored[d]['num_floats']) / 2**20:,.0f} MiB", stats.rounds(v).text()]
            for d in sorted(stored) for k, v in stored[d]["gb_per_s"].items()]
    best = max(stats.rounds(v).median for v in mine["gb_per_s"].values())
    bus = [[w["memory"], fmt(w["bits"], 0), fmt(w["channels_64bit"], 1)]
           for w in membus.implied_bus_widths(best, mine["platform"])]
    tables = [Table(["device", "kernel", "traffic per pass", "GB/s"], rows, "median (min-max) over interleaved rounds"),
              Table(["assumed memory", "implied bus bits", "64-bit channels"], bus,
                    f"The narrowest bus that delivers the best median ({best:.1f} GB/s) at each transfer rate")]
    text, summary, evidence = answer(mine)
    headline = {"device": device, "rounds": mine["rounds"],
                "gb_per_s": {k: stats.rounds(v).as_dict() for k, v in mine["gb_per_s"].items()},
                "memory_reported": membus.reported_bus(mine["memory_devices"]), "memory_source": mine["memory_source"],
                "implied_bus_bits": {w["memory"]: w["bits"] for w in membus.implied_bus_widths(best, mine["platform"])}}
    return Section(QID, TITLE, QUESTION, tables, figure(stored, ctx), text,
                   f"{mine['rounds']} interleaved rounds, each the median of {mine['reps']} passes after a warm-up, "
                   f"over arrays of {mine['num_floats']:,} float32; bytes counted as STREAM does (no write-allocate)",
                   "; ".join(sorted(stored)), headline, summary=summary, evidence=evidence, precision="float32")
