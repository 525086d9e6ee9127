"""Q8: memory bandwidth by measurement, and the bus width it implies.

Streaming copy and triad over arrays far larger than any cache, with JAX
(default device) and numpy (host). Bandwidth = bus width x transfer rate, so a
measured bandwidth and an assumed transfer rate give the narrowest bus that
could deliver it. Stored per device label in q8_bandwidth/results.json.
"""

from __future__ import annotations

from mlp_research.exercises import hardware
from mlp_research.exercises.common import Context, Section, Table, Work, fmt, save_figure
from mlp_research.exercises.common import figure as new_figure

TITLE = "Memory bandwidth"
QUESTION = "Determine the memory bandwidth by measurement, and what it implies about bus width."
DIR = "q8_bandwidth"


def plan(cfg: dict, ctx: Context) -> Work:
    """A few seconds of streaming: nothing the training-time model can predict."""
    return Work()


def measure(cfg: dict, ctx: Context) -> dict:
    import jax

    label = hardware.device_label()
    path = ctx.path(DIR, "results.json")
    stored = hardware.load(path)
    if label in stored and stored[label].get("num_floats") == cfg["num_floats"]:
        ctx.log(f"[q8] bandwidth on {label}: measured earlier, reusing")
        return stored
    rows = hardware.bandwidth_table(cfg["num_floats"], cfg["reps"])
    for r in rows:
        ctx.log(f"[q8] {r['impl']} {r['kernel']}: {r['gb_per_s']:.1f} GB/s")
    return hardware.store(path, label, {"num_floats": cfg["num_floats"], "rows": rows,
                                        "platform": jax.devices()[0].platform})


def tables(stored: dict) -> list[Table]:
    table_rows, bus_rows = [], []
    for lab in sorted(stored):
        best = max(stored[lab]["rows"], key=lambda r: r["gb_per_s"])
        for r in stored[lab]["rows"]:
            table_rows.append([lab, r["impl"], r["kernel"], f"{r['bytes'] / 2**20:,.0f} MiB", fmt(r["gb_per_s"], 1)])
        for b in hardware.implied_bus_widths(best["gb_per_s"], stored[lab]["platform"]):
            bus_rows.append([lab, fmt(best["gb_per_s"], 1), b["memory"], fmt(b["bits"], 0),
                             fmt(b["channels_64bit"], 1)])
    return [Table(["device", "impl", "kernel", "traffic", "GB/s"], table_rows),
            Table(["device", "best GB/s", "assumed memory", "implied bus bits", "64-bit channels"], bus_rows,
                  "Implied bus width")]


def figure(stored: dict, num_floats: int, ctx: Context) -> list[str]:
    rows = [(lab, r) for lab in sorted(stored) for r in stored[lab]["rows"]]
    fig, (ax,) = new_figure(1, width=7)
    ax.bar(range(len(rows)), [r["gb_per_s"] for _, r in rows])
    ax.set_xticks(range(len(rows)), [f"{r['impl']} {r['kernel']}\n[{lab.split(' (')[0]}]" for lab, r in rows],
                  fontsize=6)
    ax.set(ylabel="GB/s", title=f"Streaming bandwidth ({num_floats * 4 / 2**20:.0f} MiB per array)")
    return [save_figure(fig, ctx, "q8_bandwidth.png")]


def answer(stored: dict) -> str:
    label = hardware.device_label()
    mine = stored[label]
    best = max(mine["rows"], key=lambda r: r["gb_per_s"])
    widths = hardware.implied_bus_widths(best["gb_per_s"], mine["platform"])
    return (
        f"On {label} the best streaming kernel ({best['impl']} {best['kernel']}) moves **{best['gb_per_s']:.1f} "
        f"GB/s**. Bandwidth = bus width x transfer rate, so this needs at least "
        + ", ".join(f"{w['bits']:.0f} bits ({w['channels_64bit']:.1f} 64-bit channels) at {w['memory']}"
                    for w in widths)
        + ". The transfer rates are assumptions (the OS does not expose the DIMMs here); a measured figure is a "
        "lower bound on the bus, since few cores rarely saturate every channel. For comparison, one float32 "
        f"multiply-add per 8 bytes streamed would give only {best['gb_per_s'] / 8:.1f} GFLOP/s, far below the "
        "matmul rates of q7: element-wise layers are bandwidth-bound, matmuls compute-bound.")


def section(cfg: dict, ctx: Context) -> Section:
    stored = measure(cfg, ctx)
    label = hardware.device_label()
    best = max(stored[label]["rows"], key=lambda r: r["gb_per_s"])
    headline = {"device": label, "best_gb_per_s": best["gb_per_s"], "kernel": f"{best['impl']} {best['kernel']}"}
    return Section("q8", TITLE, QUESTION, tables(stored), figure(stored, cfg["num_floats"], ctx), answer(stored),
                   f"median of {cfg['reps']} passes over arrays of {cfg['num_floats']:,} float32",
                   "; ".join(sorted(stored)), headline)
