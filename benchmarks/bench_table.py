"""The figures and the table of `benchmarks.epoch_time`: rounds combined into medians and paired ratios.

Every ratio is the median of per-round ratios (a case against its reference in
the same round), so a busy spell of a shared machine slows both sides alike:
"vs jax_plain", "vs own plain loop" (a plugin against its framework's plain
loop), "vs float32" (a bfloat16 case against the same case in float32) and "vs
floor" (a case against the hardware floor of its precision, measured in the
same round; "vs per-call floor" against the looser floor that counts one
dispatch per matmul).
"""

from __future__ import annotations

import statistics
from typing import Callable

# A plugin backend's reference: the plain loop of its own framework.
OWN_PLAIN = {"backend_torch": "torch_plain", "backend_tensorflow": "tensorflow_plain",
             "backend_mxnet": "mxnet_plain"}
# A case name ending in this runs its base case with bfloat16 matmuls, and is compared with it.
BF16 = "_bf16"
# The floor's key when each matmul is its own jitted call (`benchmarks/floor.py`): issue 22's way of measuring it.
PER_CALL = "per_call_epoch_seconds"


def precision_of(case: str) -> str:
    return "bfloat16" if case.endswith(BF16) else "float32"


def combine(runs: list[dict]) -> dict:
    """One case's rounds -> its figures: medians over rounds, every round kept."""
    steady = [r["steady_epoch_seconds"] for r in runs]
    middle = runs[steady.index(statistics.median_low(steady))]
    return {**middle, "steady_epoch_seconds": statistics.median(steady), "rounds_steady_epoch_seconds": steady,
            "time_to_result": statistics.median(r["time_to_result"] for r in runs),
            "process_seconds": statistics.median(r["process_seconds"] for r in runs),
            "examples_per_second": statistics.median(r["examples_per_second"] for r in runs),
            "gflops": statistics.median(r["gflops"] for r in runs)}


def _paired(mine: dict[int, dict], other: dict[int, dict]) -> list[float]:
    """Per-round ratios of steady epochs."""
    return [mine[i]["steady_epoch_seconds"] / other[i]["steady_epoch_seconds"] for i in mine if i in other]


def _vs_floor(mine: dict[int, dict], floors: dict[int, dict], precision: str, key: str = "epoch_seconds"
              ) -> list[float]:
    return [mine[i]["steady_epoch_seconds"] / floors[i][precision][key] for i in mine
            if i in floors and key in floors[i][precision]]


def _median(ratios: list[float]) -> float | None:
    return statistics.median(ratios) if ratios else None


def results_of(plan: list[tuple[str, str]], runs: dict, failures: dict, floors: dict[str, dict[int, dict]]
               ) -> list[dict]:
    """Every case's figures over its rounds, with its ratios to its references and to the floor."""
    results = []
    for case, model in plan:
        if (case, model) in failures or not runs[(case, model)]:
            continue
        mine, own = runs[(case, model)], OWN_PLAIN.get(case)
        base = case[: -len(BF16)] if case.endswith(BF16) else None
        ratios = {"vs_jax_plain": _paired(mine, runs.get(("jax_plain", model), {})),
                  "vs_own_plain": _paired(mine, runs.get((own, model), {})) if own else [],
                  "vs_float32": _paired(mine, runs.get((base, model), {})) if base else [],
                  "vs_floor": _vs_floor(mine, floors.get(model, {}), precision_of(case)),
                  "vs_per_call_floor": _vs_floor(mine, floors.get(model, {}), precision_of(case),
                                                 PER_CALL)}
        r = combine(list(mine.values()))
        r.update(case=case, model=model, precision=precision_of(case), own_plain=own,
                 **{k: _median(v) for k, v in ratios.items()}, **{f"rounds_{k}": v for k, v in ratios.items()})
        results.append(r)
    return results


def floor_summary(floors: dict[str, dict[int, dict]], key: str = "epoch_seconds") -> dict[str, dict[str, float]]:
    """Per model and precision, the median floor over rounds (seconds per epoch; `PER_CALL`: the per-call one)."""
    return {model: {p: statistics.median(r[p][key] for r in rounds.values())
                    for p in next(iter(rounds.values())) if all(key in r[p] for r in rounds.values())}
            for model, rounds in floors.items() if rounds}


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


COLUMNS: list[tuple[str, Callable[[dict], str]]] = [
    ("case", lambda r: r["case"]), ("model", lambda r: r["model"]),
    ("steady epoch (s)", lambda r: f"{r['steady_epoch_seconds']:.3f}"),
    ("vs floor", lambda r: _ratio(r["vs_floor"])), ("vs per-call floor", lambda r: _ratio(r.get("vs_per_call_floor"))),
    ("vs float32", lambda r: _ratio(r["vs_float32"])),
    ("vs jax_plain", lambda r: _ratio(r["vs_jax_plain"])), ("vs own plain loop", lambda r: _ratio(r["vs_own_plain"])),
    ("examples/s", lambda r: f"{r['examples_per_second']:,.0f}"), ("GFLOP/s", lambda r: f"{r['gflops']:.0f}"),
    ("compile (s)", lambda r: f"{r['compile_seconds']:.2f}"),
    ("time to result (s)", lambda r: f"{r['time_to_result']:.2f}"),
    ("process (s)", lambda r: f"{r['process_seconds']:.2f}"), ("peak RSS (MiB)", lambda r: f"{r['peak_rss_mib']:.0f}"),
    ("device peak (MiB)", lambda r: f"{r['device_peak_mib']:.0f}"), ("val_acc", lambda r: f"{r['final_val_acc']:.4f}"),
]


def markdown(results: list[dict], floors: dict[str, dict[str, float]], header: list[str],
             failures: dict, per_call: dict[str, dict[str, float]] | None = None) -> str:
    """The table: a header, the floors (in-loop, and per call where given), one row per case and model, then the
    failures."""
    lines = [*header, ""]
    for model, by_precision in floors.items():
        calls = (per_call or {}).get(model, {})
        parts = [f"{p} {s:.3f} s" + (f" (per call {calls[p]:.3f} s)" if p in calls else "")
                 for p, s in by_precision.items()]
        lines.append(f"Floor of an epoch, {model}: " + ", ".join(parts))
    lines += ["", "| " + " | ".join(name for name, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r) for _, cell in COLUMNS) + " |" for r in results]
    lines += [f"\nFailed: {c} / {m}: {e}" for (c, m), e in failures.items()]
    return "\n".join(lines) + "\n"
