"""Q6: training speed of the concise (framework layers) and from-scratch models, per backend, as the net grows.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q6 [--smoke]
Every registered backend (the JAX core and the torch / TensorFlow / MXNet plugins; ones not installed are skipped)
trains each (model, shape) through the one driver, so every framework is timed by the same loop: a short run whose
first epoch (compilation, warm-up) is not timed. Every case runs once per round, cases interleaved, in 5 rounds; a
case is its median examples/s with the range, and a ratio between cases is computed per round and called a
difference only when every round agrees. Results are stored per device label, so a GPU run adds columns.
"""

from __future__ import annotations

import math
import os

import numpy as np
from ml_collections import ConfigDict

from mlp_research import stats
from mlp_research.backends import registry
from mlp_research.errors import UserError
from mlp_research.exercises import hardware, timing
from mlp_research.exercises.common import Context, Section, Table, save_figure, slug
from mlp_research.exercises.common import figure as new_figure
from mlp_research.exercises.plan import Plan
from mlp_research.exercises.sweeps import Trial, run_sweep

QID = "q6"
TITLE = "Speed: concise vs scratch, across backends and sizes"
QUESTION = ("Compare the speed of the framework and the from-scratch implementation, and across backends, as the "
            "network grows.")
Case = tuple[str, str, tuple[int, ...]]  # backend, model, hidden layers
# Start-up of one short run, over the four backends (only for the time estimate): the published report at 9a9a310
# ran 40 such runs in 100 s, about 35 s of it in epochs.
RUN_SECONDS = 1.6


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(lr=0.1, batch_size=256, max_epochs=2, val_fraction=0.02, train_subset=2048,
                  matmul_precision="default"),  # each backend's own: the plugins know no other float32 setting
        backends=["jax", "torch", "tensorflow", "mxnet"],
        models=["mlp_scratch", "mlp"],
        hiddens=[[256], [2048]],
        rounds=timing.MIN_ROUNDS,
        smoke=dict(hiddens=[[64], [64, 64]], backends=["jax", "torch"], base=dict(train_subset=512)),
    ))


def key(case: Case) -> str:
    return f"{case[0]} {case[1]} {'-'.join(map(str, case[2]))}"


def _cases(cfg: dict) -> list[Case]:
    installed = registry.available()
    return [(b, m, tuple(int(w) for w in h)) for b in cfg["backends"] if b in installed for m in cfg["models"]
            for h in cfg["hiddens"]]


def _trial(cfg: dict, ctx: Context, case: Case) -> Trial:
    b, m, h = case
    return Trial(key(case).replace(" ", "_"), ctx.config(**cfg["base"]).replace(backend=b, model=m, num_hiddens=h))


def _root(ctx: Context, r: int) -> str:
    return os.path.join(ctx.workdir, QID + "_speed", slug(hardware.device_label()), f"round_{r}", "")


def plan(cfg: dict, ctx: Context) -> Plan:
    cases = _cases(cfg)
    return Plan(f"{len(cases)} cases (backend x model x shape) x {cfg['rounds']} rounds x {cfg['base']['max_epochs']} "
                "epochs", [(_root(ctx, r), [_trial(cfg, ctx, c) for c in cases]) for r in range(cfg["rounds"])],
                vmap=False, run_seconds=RUN_SECONDS)


def measure(cfg: dict, ctx: Context) -> dict:
    """Every device's stored rounds (examples/s per case), this device's measured now (finished runs reused)."""
    for b in cfg["backends"]:
        if b not in registry.available():
            ctx.log(f"[q6] backend {b!r} is not installed here; skipped")

    def one(case: Case, r: int) -> float:
        try:  # one run at a time: a plugin that cannot run a config is reported, not fatal
            s = run_sweep([_trial(cfg, ctx, case)], _root(ctx, r), vmap=False, log=ctx.log, tag="q6", clock=ctx.clock)
        except UserError as e:
            ctx.log(f"[q6] {key(case)}: skipped ({e})")
            return math.nan
        return math.nan if s[0].get("diverged") else float(s[0]["examples_per_second"])

    cases = _cases(cfg)
    values = timing.interleaved(cases, cfg["rounds"], one, ctx.log, QID)
    flops = {key(c): _trial(cfg, ctx, c).config.train_flops_per_example() for c in cases}
    return hardware.store(ctx.path(QID + "_speed", "results.json"), hardware.device_label(),
                          {"rounds": cfg["rounds"], "examples_per_second": {key(c): values[c] for c in cases},
                           "train_flops_per_example": flops})


def per_round(mine: dict, case: Case) -> list[float]:
    """A case's examples/s by round; empty where it was never measured (a plugin that refused the config)."""
    values = mine["examples_per_second"].get(key(case), [])
    return values if any(v == v for v in values) else []


def ratio_rounds(mine: dict, pairs: list[tuple[Case, Case]]) -> list[float]:
    """Per round: the geometric mean over `pairs` of examples/s(a) / examples/s(b)."""
    per_pair = [timing.ratios(per_round(mine, a), per_round(mine, b)) for a, b in pairs]
    n = min((len(p) for p in per_pair), default=0)
    return [timing.geometric_mean([p[r] for p in per_pair]) for r in range(n)]


def comparisons(cfg: dict, mine: dict) -> dict[str, tuple[stats.Rounds, bool]]:
    """Concise vs scratch within each backend, and each backend against the JAX core, as per-round ratios."""
    cases = [c for c in _cases(cfg) if per_round(mine, c)]
    backends = list(dict.fromkeys(c[0] for c in cases))
    shapes = list(dict.fromkeys(c[2] for c in cases))
    out = {}
    for b in backends:
        r = ratio_rounds(mine, [((b, "mlp", h), (b, "mlp_scratch", h)) for h in shapes])
        out[f"{b}: concise / scratch"] = (stats.rounds(r), stats.consistent(r))
    core = registry.CORE.name
    for b in [b for b in backends if b != core]:
        r = ratio_rounds(mine, [((b, m, h), (core, m, h)) for m in cfg["models"] for h in shapes])
        out[f"{b} / {core}"] = (stats.rounds(r), stats.consistent(r))
    return out


def figure(cfg: dict, mine: dict, ctx: Context) -> list[str]:
    fig, axes = new_figure(2)
    cases = [c for c in _cases(cfg) if per_round(mine, c)]
    for b, m in dict.fromkeys((c[0], c[1]) for c in cases):
        shapes = [c[2] for c in cases if c[:2] == (b, m)]
        med = [stats.rounds(per_round(mine, (b, m, h))) for h in shapes]
        x = np.arange(len(shapes))
        axes[0].errorbar(x, [r.median for r in med], yerr=np.nan_to_num([[r.median - r.low for r in med],
                                                                         [r.high - r.median for r in med]]),
                         fmt="o-", capsize=3, label=f"{b} {m}")
        axes[0].set_xticks(x, [str(list(h)) for h in shapes], fontsize=7)
    axes[0].set(yscale="log", xlabel="hidden layers", ylabel="training examples/s (median, range)", title="Speed")
    axes[0].legend(fontsize=6)
    comp = comparisons(cfg, mine)
    names = list(comp)
    axes[1].barh(names, [comp[n][0].median for n in names], xerr=np.nan_to_num(
        [[comp[n][0].median - comp[n][0].low for n in names], [comp[n][0].high - comp[n][0].median for n in names]]))
    axes[1].axvline(1.0, color="k", lw=0.8)
    axes[1].set(xlabel="ratio (median, range over rounds)", title="Per-round ratios")
    axes[1].tick_params(axis="y", labelsize=7)
    return [save_figure(fig, ctx, "q6_speed.png")]


def answer(cfg: dict, mine: dict) -> tuple[str, str, str]:
    comp = comparisons(cfg, mine)
    concise = {n: v for n, v in comp.items() if "concise" in n}
    backends = {n: v for n, v in comp.items() if "concise" not in n}
    real = [n for n, (_, c) in comp.items() if c]
    core = registry.CORE.name
    shapes = [tuple(int(w) for w in h) for h in cfg["hiddens"]]
    growth = [stats.rounds(per_round(mine, (core, "mlp", h))) for h in shapes]
    flops = mine["train_flops_per_example"]
    gflops = [g.median * flops.get(key((core, "mlp", h)), math.nan) / 1e9 for g, h in zip(growth, shapes)]
    text = ("**Concise vs scratch** (examples/s ratio per round, geometric mean over shapes): "
            + "; ".join(f"{n.split(':')[0]} {timing.ratio_text(*v)}" for n, v in concise.items()) + ". "
            + "**Across backends** (against " + core + ", over models and shapes): "
            + "; ".join(f"{n.split(' /')[0]} {timing.ratio_text(*v)}" for n, v in backends.items()) + ". "
            + f"**Growth**: {core}'s concise model runs at " + ", ".join(
                f"{g:.0f} GFLOP/s at {list(h)}" for g, h in zip(gflops, shapes)) + " (medians): small networks "
            "measure per-step overhead, large ones the matmul library. Every backend is timed by the same driver "
            "loop (evaluation included, the first epoch not timed).")
    summary = (f"{len(real)} of {len(comp)} ratios hold in every round: " + (", ".join(real) if real else "none")
               + "; the rest are noise")
    evidence = "; ".join(f"{n} {v[0].median:.2f}x ({v[0].low:.2f}-{v[0].high:.2f})" for n, v in concise.items())
    return text, summary, evidence


def speed_table(device: str, measured: dict) -> Table:
    """Examples/s of every stored case of one device: median (min-max) over its rounds."""
    parsed = [(k.split(" ")[0], k.split(" ")[1], k.split(" ")[2]) for k in measured["examples_per_second"]]
    columns = list(dict.fromkeys((b, m) for b, m, _ in parsed))
    shapes = list(dict.fromkeys(h for _, _, h in parsed))
    eps = measured["examples_per_second"]
    rows = [[f"[{h.replace('-', ', ')}]"] + [stats.rounds(eps.get(f"{b} {m} {h}", [])).text(0) for b, m in columns]
            for h in shapes]
    return Table(["hiddens"] + [f"{b} {m}" for b, m in columns], rows,
                 f"Training examples/s on {device.split(',')[0]}: median (min-max) over {measured['rounds']} "
                 "interleaved rounds")


def section(cfg: dict, ctx: Context) -> Section:
    stored = measure(cfg, ctx)
    device = hardware.device_label()
    mine = stored[device]
    cases = [c for c in _cases(cfg) if per_round(mine, c)]
    shapes = list(dict.fromkeys(c[2] for c in cases))
    others = [d for d in stored if d != device]
    tables = [speed_table(d, stored[d]) for d in [device, *others]]
    headline = {"device": device, "rounds": mine["rounds"],
                "examples_per_second": {k: stats.rounds(v).as_dict() for k, v in mine["examples_per_second"].items()},
                "ratios": {n: {**r.as_dict(), "consistent": c} for n, (r, c) in comparisons(cfg, mine).items()},
                "other_devices": others}
    text, summary, evidence = answer(cfg, mine)
    base = ctx.config(**cfg["base"])
    setup = (f"backends {', '.join(dict.fromkeys(c[0] for c in cases))}; models {', '.join(cfg['models'])}; hidden "
             f"layers {', '.join(str(list(h)) for h in shapes)}; each run {base.num_train_examples():,} training "
             f"examples, {base.max_epochs} epochs (the first not timed), batch {base.batch_size}, evaluation of "
             f"the validation split included; {mine['rounds']} interleaved rounds"
             + (f"; stored measurements of {', '.join(others)} in {os.path.join(QID + '_speed', 'results.json')}"
                if others else ""))
    return Section(QID, TITLE, QUESTION, tables, figure(cfg, mine, ctx), text, setup, device, headline,
                   summary=summary, evidence=evidence, precision=f"{base.matmul_precision} (each backend's own)")
