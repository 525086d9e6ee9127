"""The ten exercises: each runner trains or measures, then turns the numbers into a report `Section`.

Runners take the experiment file's settings (a plain dict, see
`experiments/exercises/`) and a `Context`; every answer sentence is computed
from the measured numbers, so a different machine or data set can reach a
different conclusion without a code change.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.errors import UserError
from mlp_research.exercises import hardware
from mlp_research.exercises.common import (
    Context,
    Section,
    Table,
    figure,
    fmt,
    run_setup,
    save_figure,
)
from mlp_research.exercises.sweeps import Trial, run_sweep
from mlp_research.exercises.vmap_sweep import cached_splits

Runner = Callable[[dict, Context], Section]


def _acc(s: dict, key: str = "val_acc") -> float:
    value = s["final"].get(key, float("nan"))
    return float("nan") if s.get("diverged") else float(value)


def _best(summaries: list[dict], key: str = "val_acc") -> int:
    scores = [(-1.0 if np.isnan(_acc(s, key)) else _acc(s, key)) for s in summaries]
    return int(np.argmax(scores))


def _hw() -> str:
    return hardware.device_label()


def _forward_hidden(params: dict, images: np.ndarray, activation: str) -> tuple[np.ndarray, np.ndarray]:
    """Numpy forward pass of a one-hidden-layer net: (hidden activations, logits)."""
    from mlp_research.jax_backend.models import ACTIVATIONS

    x = images.reshape(len(images), -1)
    pre = x @ params["W1"] + params["b1"]
    hidden = np.asarray(ACTIVATIONS[activation](pre))
    return hidden, hidden @ params["W2"] + params["b2"]


# ------------------------------------------------------------------ Q1 width
def q1_width(cfg: dict, ctx: Context) -> Section:
    base = ctx.config(**cfg["base"])
    trials = [Trial(f"width_{w}", base.replace(num_hiddens=(w,)), {"width": w}) for w in cfg["widths"]]
    res = run_sweep(trials, ctx.path("q1_width", ""), train_subset=cfg["train_subset"], log=ctx.log, tag="q1")
    widths = [t.labels["width"] for t in trials]
    rows = [[w, s["num_params"], fmt(s["final"]["train_acc"]), fmt(_acc(s)), fmt(_acc(s, "test_acc")),
             fmt(s["final"]["train_acc"] - _acc(s)), fmt(s["steady_epoch_seconds"], 2)] for w, s in zip(widths, res)]
    fig, (ax,) = figure()
    ax.plot(widths, [s["final"]["train_acc"] for s in res], "o-", label="train")
    ax.plot(widths, [_acc(s) for s in res], "s-", label="validation")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="num_hiddens", ylabel="accuracy", title="Accuracy vs hidden width")
    ax.legend()
    ax.grid(alpha=0.3)
    fig_path = save_figure(fig, ctx, "q1_width.png")
    b = _best(res)
    best_acc = _acc(res[b])
    near = min(w for w, s in zip(widths, res) if _acc(s) >= best_acc - 0.005)
    gaps = [s["final"]["train_acc"] - _acc(s) for s in res]
    answer = (
        f"The best width on the validation split is **{widths[b]}** (val_acc {best_acc:.4f}, test_acc "
        f"{_acc(res[b], 'test_acc'):.4f}). The narrowest width within 0.5 points of it is {near} "
        f"({res[widths.index(near)]['num_params'] / max(res[b]['num_params'], 1):.2f}x the best's parameters): "
        f"past that, more units buy little accuracy for much more compute. The smallest width ({widths[0]}) reaches {_acc(res[0]):.4f}. "
        f"The train-validation gap goes from {gaps[0]:+.4f} at width {widths[0]} to {gaps[-1]:+.4f} at width "
        f"{widths[-1]}, and an epoch costs {res[-1]['steady_epoch_seconds'] / res[0]['steady_epoch_seconds']:.1f}x "
        f"longer at the widest than at the narrowest.")
    return Section("q1", "Hidden width", "Change num_hiddens and plot how it affects accuracy. Which value is best?",
                   [Table(["num_hiddens", "params", "train_acc", "val_acc", "test_acc", "train-val gap",
                           "epoch s"], rows)], [fig_path], answer,
                   run_setup(cfg, base, subset=cfg["train_subset"]), _hw())


# ------------------------------------------------------------------ Q2 depth
def q2_depth(cfg: dict, ctx: Context) -> Section:
    base = ctx.config(**cfg["base"])
    trials = [Trial("hiddens_" + "-".join(map(str, h)), base.replace(num_hiddens=tuple(h)), {"hiddens": list(h)})
              for h in cfg["hiddens"]]
    res = run_sweep(trials, ctx.path("q2_depth", ""), train_subset=cfg["train_subset"], log=ctx.log, tag="q2")
    rows = [[str(t.labels["hiddens"]), len(t.labels["hiddens"]), s["num_params"], fmt(s["final"]["train_loss"]),
             fmt(s["final"]["train_acc"]), fmt(_acc(s)), fmt(_acc(s, "test_acc"))] for t, s in zip(trials, res)]
    fig, axes = figure(2)
    for t, s in zip(trials, res):
        ep = [r["epoch"] for r in s["history"]]
        axes[0].plot(ep, [r["train_loss"] for r in s["history"]], label=str(t.labels["hiddens"]))
        axes[1].plot(ep, [r["val_acc"] for r in s["history"]], label=str(t.labels["hiddens"]))
    axes[0].set(xlabel="epoch", ylabel="train loss", title="Training loss")
    axes[1].set(xlabel="epoch", ylabel="val accuracy", title="Validation accuracy")
    axes[1].legend(fontsize=7)
    fig_path = save_figure(fig, ctx, "q2_depth.png")
    b = _best(res)
    one = [i for i, t in enumerate(trials) if len(t.labels["hiddens"]) == 1]
    ref = one[0] if one else 0
    deeper = [i for i in range(len(trials)) if len(trials[i].labels["hiddens"]) > 1]
    better = [i for i in deeper if _acc(res[i]) > _acc(res[ref])]
    answer = (
        f"With everything else fixed, the best layout is **{trials[b].labels['hiddens']}** (val_acc "
        f"{_acc(res[b]):.4f}, test_acc {_acc(res[b], 'test_acc'):.4f}) against {_acc(res[ref]):.4f} for the "
        f"one-hidden-layer baseline {trials[ref].labels['hiddens']}. {len(better)} of {len(deeper)} deeper "
        f"layouts beat the baseline on validation accuracy; the largest change from adding layers is "
        f"{max((_acc(res[i]) - _acc(res[ref]) for i in deeper), default=0.0, key=abs):+.4f}. Deeper nets fit the "
        f"training set {'better' if min((res[i]['final']['train_loss'] for i in deeper), default=1e9) < res[ref]['final']['train_loss'] else 'no better'} "
        f"(lowest train loss {min(s['final']['train_loss'] for s in res):.4f} vs "
        f"{res[ref]['final']['train_loss']:.4f}).")
    return Section("q2", "More hidden layers", "Add a hidden layer (and more). How does it change the results?",
                   [Table(["hiddens", "layers", "params", "train_loss", "train_acc", "val_acc", "test_acc"], rows)],
                   [fig_path], answer, run_setup(cfg, base, subset=cfg["train_subset"]), _hw())


# ------------------------------------------------------------ Q3 one neuron
def bottleneck_analysis(config: Config, summary: dict, splits: Splits) -> dict:
    """What a narrow hidden layer does to the network's outputs on the evaluation split."""
    hidden, logits = _forward_hidden(summary["params"], splits.eval.images, config.model.activation)
    preds = logits.argmax(-1)
    centred = logits - logits.mean(0)
    sv = np.linalg.svd(centred, compute_uv=False)
    rank = int(np.sum(sv > sv[0] * 1e-2)) if sv[0] > 1e-6 else 0
    dead_units = int(np.sum(np.all(hidden <= 0, axis=0)))
    return {
        "distinct_predictions": int(len(np.unique(preds))),
        "logit_rank": rank,
        "dead_units": dead_units,
        "zero_hidden_fraction": float(np.mean(np.all(hidden <= 0, axis=1))),
    }


def q3_single_neuron(cfg: dict, ctx: Context) -> Section:
    base = ctx.config(**cfg["base"])
    trials = [Trial(f"width_{w}_seed_{s}", base.replace(num_hiddens=(w,), seed=s), {"width": w, "seed": s})
              for w in cfg["widths"] for s in cfg["seeds"]]
    res = run_sweep(trials, ctx.path("q3_single_neuron", ""), train_subset=cfg["train_subset"],
                    analyse=bottleneck_analysis, log=ctx.log, tag="q3")
    rows = []
    by_width: dict[int, list[dict]] = {}
    for t, s in zip(trials, res):
        a = s["analysis"]
        by_width.setdefault(t.labels["width"], []).append(s)
        rows.append([t.labels["width"], t.labels["seed"], fmt(s["final"]["train_loss"]), fmt(_acc(s)),
                     a["distinct_predictions"], a["logit_rank"], a["dead_units"], fmt(a["zero_hidden_fraction"], 3)])
    widths = sorted(by_width)
    fig, axes = figure(2)
    means = [np.mean([_acc(s) for s in by_width[w]]) for w in widths]
    axes[0].plot(widths, means, "o-")
    for w in widths:
        axes[0].scatter([w] * len(by_width[w]), [_acc(s) for s in by_width[w]], color="gray", s=12)
    axes[0].set_xscale("log", base=2)
    axes[0].set(xlabel="num_hiddens", ylabel="val accuracy", title="Narrow hidden layers (dots: seeds)")
    axes[1].bar([str(w) for w in widths],
                [np.mean([s["analysis"]["distinct_predictions"] for s in by_width[w]]) for w in widths])
    axes[1].set(xlabel="num_hiddens", ylabel="classes ever predicted (of 10)", title="Predicted classes")
    fig_path = save_figure(fig, ctx, "q3_single_neuron.png")
    one = by_width[widths[0]]
    wide = by_width[widths[-1]]
    answer = (
        f"With {widths[0]} hidden unit(s) validation accuracy is {np.mean([_acc(s) for s in one]):.4f} on average "
        f"over {len(one)} seeds (range {min(_acc(s) for s in one):.4f}-{max(_acc(s) for s in one):.4f}), against "
        f"{np.mean([_acc(s) for s in wide]):.4f} with {widths[-1]}. The reason is a bottleneck: every logit is "
        f"an affine function of one number, so the centred logits have rank "
        f"{max(s['analysis']['logit_rank'] for s in one)} (10 classes need up to 9 directions) and the net "
        f"predicts only {np.mean([s['analysis']['distinct_predictions'] for s in one]):.1f} of the 10 classes on "
        f"average: as the single feature grows, the argmax can only walk along one line through the classes. "
        f"ReLU makes it worse: on {np.mean([s['analysis']['zero_hidden_fraction'] for s in one]):.0%} of the "
        f"validation images the unit outputs 0, so those images all get the same prediction and no gradient, and "
        f"{sum(s['analysis']['dead_units'] for s in one)} of {len(one)} seeds ended with the unit dead on every image.")
    return Section("q3", "A hidden layer with a single neuron", "Why is a hidden layer with a single neuron a bad "
                   "idea? Show what goes wrong.",
                   [Table(["width", "seed", "train_loss", "val_acc", "classes predicted", "logit rank",
                           "dead units", "images with all-zero hidden"], rows)],
                   [fig_path], answer, run_setup(cfg, base, subset=cfg["train_subset"]), _hw())


# -------------------------------------------------------- Q4 learning rate
def q4_learning_rate(cfg: dict, ctx: Context) -> Section:
    budgets = sorted(cfg["epoch_budgets"])
    base = ctx.config(**cfg["base"]).replace(max_epochs=max(budgets))
    if base.schedule != "constant":
        raise ValueError("q4 reads shorter budgets off the longest run, which is exact only with a constant schedule")
    trials = [Trial(f"lr_{lr:g}", base.replace(lr=lr), {"lr": lr}) for lr in cfg["lrs"]]
    res = run_sweep(trials, ctx.path("q4_learning_rate", "grid", ""), train_subset=cfg["train_subset"],
                    log=ctx.log, tag="q4")
    lrs = [t.labels["lr"] for t in trials]

    def at(s: dict, e: int) -> float:
        return float("nan") if s["diverged"] else s["history"][e - 1]["val_acc"]

    grid = np.array([[at(s, e) for e in budgets] for s in res])
    rows = [[fmt(lr, 4)] + [fmt(v) for v in grid[i]] for i, lr in enumerate(lrs)]
    best_per_budget = []
    for j, e in enumerate(budgets):
        col = np.where(np.isnan(grid[:, j]), -1, grid[:, j])
        best_per_budget.append((e, lrs[int(np.argmax(col))], float(col.max())))

    # vmap vs sequential: the same configs for a few epochs, one program vs one program each.
    speed_epochs = cfg["speed_epochs"]
    sb = base.replace(max_epochs=speed_epochs)
    seq_trials = [Trial(f"lr_{lr:g}", sb.replace(lr=lr), {"lr": lr}) for lr in cfg["speed_lrs"]]
    seq = run_sweep(seq_trials, ctx.path("q4_learning_rate", "sequential", ""), vmap=False,
                    train_subset=cfg["train_subset"], log=ctx.log, tag="q4 sequential")
    vm = run_sweep(seq_trials, ctx.path("q4_learning_rate", "vmapped", ""), vmap=True,
                   train_subset=cfg["train_subset"], log=ctx.log, tag="q4 vmapped")
    k = len(seq_trials)
    seq_epoch = sum(s["steady_epoch_seconds"] for s in seq)
    vm_epoch = vm[0]["steady_epoch_seconds"]
    seq_total = sum(s["total_seconds"] for s in seq)
    vm_total = vm[0]["total_seconds"]
    diff = max(abs(a["final"]["val_acc"] - b["final"]["val_acc"]) for a, b in zip(seq, vm))
    speed_rows = [
        ["sequential (one program per config)", k, fmt(seq_epoch, 3), fmt(k * seq[0]["num_train"] / seq_epoch, 0),
         fmt(sum(s["compile_seconds"] for s in seq), 2), fmt(seq_total, 2)],
        ["vmapped (one program for all)", k, fmt(vm_epoch, 3), fmt(k * vm[0]["num_train"] / vm_epoch, 0),
         fmt(vm[0]["compile_seconds"], 2), fmt(vm_total, 2)],
    ]
    record = {"speedup_epoch": seq_epoch / vm_epoch, "speedup_total": seq_total / vm_total, "members": k}
    hardware.store(ctx.path("q4_learning_rate", "vmap_speed.json"), _hw(), record)
    gflops = 3 * sb.model.flops_per_example() * seq[0]["num_train"] / (seq_epoch / k) / 1e9
    if record["speedup_epoch"] >= 1.2:
        vmap_text = (f"Batching pays here: one config alone reaches only {gflops:.1f} GFLOP/s, leaving the device "
                     f"idle between small matmuls, and the stacked members fill it.")
    else:
        vmap_text = (f"On this device batching does not pay: one config alone already reaches {gflops:.1f} GFLOP/s "
                     f"on {os.cpu_count()} cores, so stacking members only makes each matmul bigger, not faster; "
                     f"vmap's gain comes on accelerators, where one small model leaves most of the chip idle, "
                     f"and from sharing one compilation.")

    fig, axes = figure(2)
    im = axes[0].imshow(np.nan_to_num(grid, nan=0.0), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    axes[0].set_xticks(range(len(budgets)), [str(e) for e in budgets])
    axes[0].set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    for i in range(len(lrs)):
        for j in range(len(budgets)):
            axes[0].text(j, i, "div" if np.isnan(grid[i, j]) else f"{grid[i, j]:.3f}", ha="center", va="center",
                         fontsize=7, color="w")
    axes[0].set(xlabel="epochs", ylabel="learning rate", title="val accuracy")
    fig.colorbar(im, ax=axes[0])
    for lr, s in zip(lrs, res):
        if not s["diverged"]:
            axes[1].plot([r["epoch"] for r in s["history"]], [r["val_acc"] for r in s["history"]], label=f"{lr:g}")
    axes[1].set(xlabel="epoch", ylabel="val accuracy", title="Curves per learning rate")
    axes[1].legend(fontsize=7)
    fig_path = save_figure(fig, ctx, "q4_learning_rate.png")
    diverged = [lr for lr, s in zip(lrs, res) if s["diverged"]]
    moves = [b[1] for b in best_per_budget]
    if len(set(moves)) == 1:
        trend = ("does not change across the budgets tried: within this range the same step size is best for "
                 "short and long training")
    elif moves[-1] < moves[0]:
        trend = ("falls as the budget grows: short budgets reward large steps that make progress fast, while "
                 "with more epochs smaller steps catch up and settle lower in the loss")
    else:
        trend = ("rises as the budget grows: small rates are too slow to finish in short budgets and larger "
                 "ones keep improving with more epochs")
    answer = (
        "Best learning rate per epoch budget: " + "; ".join(
            f"{e} epochs: **{lr:g}** ({acc:.4f})" for e, lr, acc in best_per_budget) +
        f". The best rate {trend}. "
        + (f"Rates {', '.join(f'{lr:g}' for lr in diverged)} diverged (non-finite loss). " if diverged else "")
        + f"The worst non-diverged cell is {np.nanmin(grid):.4f}, so the learning rate alone moves accuracy by "
        f"{np.nanmax(grid) - np.nanmin(grid):.4f}. With a constant rate the first e epochs of a longer run are "
        f"exactly the e-epoch run (same batches, same updates), so each rate is trained once and read at every "
        f"budget. **vmap**: training the {k} rates in one compiled program gives "
        f"{record['speedup_epoch']:.2f}x the throughput of running them one after another and "
        f"{record['speedup_total']:.2f}x end to end including compilation; the two agree to {diff:.1e} in "
        f"final validation accuracy. " + vmap_text)
    return Section("q4", "Learning rate x epochs", "How does the learning rate change results? Which is best, and "
                   "how does that depend on the number of epochs?",
                   [Table(["lr \\ epochs"] + [str(e) for e in budgets], rows, "Validation accuracy (div: diverged)"),
                    Table(["mode", "configs", "epoch s (all configs)", "examples/s", "compile s", "total s"],
                          speed_rows, f"vmap vs sequential, {speed_epochs} epochs, lrs {cfg['speed_lrs']}")],
                   [fig_path], answer, run_setup(cfg, base, subset=cfg["train_subset"]), _hw())


# ----------------------------------------------------------- Q5 joint search
def q5_joint_search(cfg: dict, ctx: Context) -> Section:
    from mlp_research.exercises import search

    base = ctx.config(**cfg["base"])
    splits = cached_splits(base, cfg["train_subset"])
    space = cfg["space"]
    record = search.run_search(base, space, splits, ctx.path("q5_joint_search", ""), cfg["n_trials"],
                               seed=cfg["seed"], log=ctx.log, storage=cfg.get("storage", ""),
                               timeout_s=cfg.get("timeout_s") or None)
    trials = record["trials"]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    used = sum(t["epochs_trained"] for t in trials)
    full = sum(t["max_epochs"] for t in trials)
    seconds = sum(t["seconds"] for t in trials)
    top = sorted(complete, key=lambda t: -(t["value"] or 0))[:8]
    rows = [[t["number"], fmt(t["value"]), t["epochs_trained"],
             ", ".join(f"{k}={fmt(v, 4) if isinstance(v, float) else v}" for k, v in sorted(t["params"].items()))]
            for t in top]
    by_opt: dict[str, list[tuple[float, float]]] = {}
    for t in complete:
        by_opt.setdefault(t["params"]["optimizer"], []).append((t["value"] or 0.0, t["params"]["lr"]))
    opt_best = {o: max(v) for o, v in by_opt.items()}
    fig, axes = figure(2)
    for t in trials:
        style = "-" if t["state"] == "COMPLETE" else ":"
        axes[0].plot(range(1, len(t["curve"]) + 1), t["curve"], style, alpha=0.7)
    axes[0].set(xlabel="epoch", ylabel="val accuracy", title="Trials (dotted: pruned)")
    order = sorted(trials, key=lambda t: t["number"])
    vals = [t["curve"][-1] if t["curve"] else 0.0 for t in order]
    axes[1].plot([t["number"] for t in order], vals, "o", alpha=0.5, label="trial")
    axes[1].plot([t["number"] for t in order], np.maximum.accumulate(
        [t["value"] if t["state"] == "COMPLETE" and t["value"] is not None else 0.0 for t in order]), "-",
        label="best complete")
    axes[1].set(xlabel="trial", ylabel="val accuracy", title="Search progress", ylim=(max(0.0, min(vals + [1]) - 0.02), None))
    axes[1].legend()
    fig_path = save_figure(fig, ctx, "q5_joint_search.png")
    spread = (max(t["value"] for t in complete) - min(t["value"] for t in complete)) if complete else 0.0
    grid_n = search.grid_size(space)
    top_vals = sorted((t["value"] for t in complete), reverse=True)[:3]
    top3 = top_vals[0] - top_vals[-1] if top_vals else 0.0
    mean_epoch_s = seconds / max(used, 1)
    best_cfg = record["best_config"]
    answer = (
        f"Best configuration (chosen on validation accuracy): val_acc **{record['best_val_acc']:.4f}**, and on the "
        f"test split, evaluated once for this configuration only, test_acc **{record['test_acc']:.4f}** "
        f"({best_cfg['optimizer']} lr={best_cfg['lr']:.3g}, hiddens {best_cfg['num_hiddens']}, "
        f"{best_cfg['activation']}, batch {best_cfg['batch_size']}, {best_cfg['max_epochs']} epochs). "
        + ("That passes 0.90. " if record["test_acc"] >= 0.90 else
           f"That is {0.90 - record['test_acc']:.4f} short of 0.90 within this CPU budget. ")
        + f"**Efficiency**: {len(trials)} trials finished, {len(pruned)} of them stopped early by Hyperband; they "
        f"trained {used} epochs where running every sampled configuration to its end would take {full} "
        f"({used / max(full, 1):.0%}), and TPE concentrates later samples where earlier ones scored well instead "
        f"of covering the space uniformly. **Why joint search is hard**: even a coarse grid over this space has "
        f"{grid_n:,} configurations, about {grid_n * mean_epoch_s * np.mean(space['epochs']) / 3600:,.0f} hours "
        f"on this machine at the measured {mean_epoch_s:.1f} s per epoch; the parameters interact (the best rate "
        f"found per optimiser: " + ", ".join(f"{o} {v[1]:.2g} (val_acc {v[0]:.4f})" for o, v in sorted(opt_best.items()))
        + (", so a good rate for one is a poor rate for the other" if len(opt_best) > 1 else "")
        + f"); the number of widths depends on the depth (a conditional space); each evaluation is a noisy, "
        f"minutes-long training run; and the complete trials span {spread:.4f} in val_acc while the top three "
        f"differ by only {top3:.4f}, so the last gains are hard to tell from noise.")
    return Section("q5", "Joint hyperparameter search", "Optimise all hyperparameters jointly. What is the best "
                   "result? Why is joint search hard? Use an efficient strategy.",
                   [Table(["trial", "val_acc", "epochs", "parameters"], rows, "Best complete trials"),
                    Table(["best val_acc", "test_acc (once)", "trials", "pruned", "epochs trained",
                           "epochs without pruning", "search s"],
                          [[fmt(record["best_val_acc"]), fmt(record["test_acc"]), len(trials), len(pruned), used, full,
                            fmt(seconds, 0)]])],
                   [fig_path], answer,
                   f"Optuna TPE sampler (multivariate, seed {cfg['seed']}) + Hyperband pruner (min 1 epoch, "
                   f"reduction 3), {cfg['n_trials']} trials; space: {space}; base: "
                   + run_setup(cfg, base, subset=cfg["train_subset"]), _hw())


# --------------------------------------------------------------- Q6 speed
def time_backend(name: str, config: Config, splits: Splits) -> dict:
    """Steady-state training speed of one config through a registered backend's `Trainer`.

    Every backend (the JAX core and the torch / TensorFlow / MXNet plugins) is driven the
    same way as `train_and_evaluate` drives it: one epoch = its chunks, then a sync for the
    sums; the median epoch after the first (which may compile or warm up) is the speed.
    """
    from mlp_research.backends import registry as backends

    backend = backends.load(name)
    config = config.replace(backend=name)
    backend.check(config)
    t0 = time.perf_counter()
    trainer = backend.trainer(config, splits)
    setup = time.perf_counter() - t0
    seconds = []
    for epoch in range(config.max_epochs):
        t = time.perf_counter()
        trainer.start_epoch(epoch)
        for chunk in range(trainer.layout.chunks_per_epoch):
            trainer.train_chunk(chunk)
        trainer.epoch_sums()
        seconds.append(time.perf_counter() - t)
    steady = float(np.median(seconds[1:] if len(seconds) > 1 else seconds))
    return {"steady_epoch_seconds": steady, "examples_per_second": trainer.layout.num_train / steady,
            "compile_seconds": float(getattr(trainer, "compile_seconds", 0.0)), "setup_seconds": setup}


def speed_backends() -> list[str]:
    """Backends registered in this environment (no framework is imported to list them)."""
    from mlp_research.backends import registry as backends

    return list(backends.available())


def q6_speed(cfg: dict, ctx: Context) -> Section:
    base = ctx.config(**cfg["base"])
    label = _hw()
    splits = cached_splits(base, cfg["train_subset"])
    shapes = [tuple(h) for h in cfg["hiddens"]]
    path = ctx.path("q6_speed", "results.json")
    stored = hardware.load(path)
    mine = stored.get(label, {})
    installed = speed_backends()
    measured_backends = []
    for backend in cfg["backends"]:
        if backend not in installed:
            ctx.log(f"[q6] backend {backend!r} is not installed here; skipped")
            continue
        measured_backends.append(backend)
        for model in cfg["models"]:
            for h in shapes:
                key = f"{backend}|{model}|{'-'.join(map(str, h))}"
                if key in mine:
                    ctx.log(f"[q6] {key}: measured earlier on {label}, reusing")
                    continue
                config = base.replace(model=model, num_hiddens=h)
                try:
                    r = time_backend(backend, config, splits)
                except UserError as e:  # a plugin that cannot run this config is reported, not fatal
                    ctx.log(f"[q6] {key}: skipped ({e})")
                    continue
                r.update(params=config.model.num_params(), gflops=3 * config.model.flops_per_example()
                         * r["examples_per_second"] / 1e9)
                mine[key] = r
                stored = hardware.store(path, label, mine)
                ctx.log(f"[q6] {key}: {r['examples_per_second']:,.0f} examples/s, {r['gflops']:.1f} GFLOP/s")
    stored = hardware.load(path)
    labels = sorted(stored)
    columns = sorted({k.rsplit("|", 1)[0] for lab in labels for k in stored[lab]})
    headers = ["hiddens", "params"] + [f"{c.replace('|', ' ')} ex/s" + (f" [{lab}]" if len(labels) > 1 else "")
                                       for lab in labels for c in columns]
    rows = []
    for h in shapes:
        hs = "-".join(map(str, h))
        row = [str(list(h)), base.replace(num_hiddens=h).model.num_params()]
        for lab in labels:
            for c in columns:
                r = stored[lab].get(f"{c}|{hs}")
                row.append(fmt(r["examples_per_second"], 0) if r else "-")
        rows.append(row)
    fig, axes = figure(2)
    for lab in labels:
        for c in columns:
            pts = [(stored[lab][f"{c}|{'-'.join(map(str, h))}"]["params"],
                    stored[lab][f"{c}|{'-'.join(map(str, h))}"]["examples_per_second"], h)
                   for h in shapes if f"{c}|{'-'.join(map(str, h))}" in stored[lab]]
            if not pts:
                continue
            one = [p for p in pts if len(p[2]) == 1]
            deep_width = max(shapes, key=len)[0]  # the depth series: stacks of this width, 1 layer included
            many = [p for p in pts if set(p[2]) == {deep_width}]
            name = f"{c.replace('|', ' ')} ({lab.split(':')[0]})"
            axes[0].plot([p[0] for p in one], [p[1] for p in one], "o-", label=name)
            axes[1].plot([len(p[2]) for p in many], [p[1] for p in many], "o-", label=name)
    axes[0].set(xscale="log", yscale="log", xlabel="parameters (one hidden layer, growing width)",
                ylabel="training examples/s", title="Width")
    axes[1].set(yscale="log", xlabel=f"hidden layers of width {max(shapes, key=len)[0]}",
                ylabel="training examples/s", title="Depth")
    axes[0].legend(fontsize=7)
    fig_path = save_figure(fig, ctx, "q6_speed.png")
    def eps(backend: str, model: str, h: tuple) -> float:
        r = mine.get(f"{backend}|{model}|{'-'.join(map(str, h))}")
        return r["examples_per_second"] if r else float("nan")

    def gm(values: list[float]) -> float:
        values = [v for v in values if v == v and v > 0]
        return float(np.exp(np.mean(np.log(values)))) if values else float("nan")

    concise_vs_scratch = {b: gm([eps(b, "mlp", h) / eps(b, "mlp_scratch", h) for h in shapes])
                          for b in measured_backends}
    reference = "jax" if "jax" in measured_backends else (measured_backends or ["jax"])[0]
    vs_ref = {b: gm([eps(b, m, h) / eps(reference, m, h) for m in cfg["models"] for h in shapes])
              for b in measured_backends}
    narrow, widest = shapes[0], max((h for h in shapes if len(h) == 1), key=lambda h: h[0])

    def fastest(h: tuple) -> str:
        scores = {b: eps(b, "mlp", h) for b in measured_backends}
        scores = {b: v for b, v in scores.items() if v == v}
        return max(scores, key=scores.get) if scores else "-"

    gf = {h: mine.get(f"{reference}|mlp|{'-'.join(map(str, h))}", {}).get("gflops", float("nan")) for h in shapes}
    answer = (
        f"On {label}. **Concise vs scratch** (examples/s ratio, geometric mean over the shapes): "
        + ", ".join(f"{b} {r:.2f}x" for b, r in concise_vs_scratch.items())
        + ". " + ("Within every backend the two styles run within 15% of each other: they describe the same matmuls. "
                  if all(abs(r - 1) < 0.15 for r in concise_vs_scratch.values() if r == r) else
                  "Where the ratio is far from 1, the framework's layer code compiles or dispatches differently "
                  "from the hand-written parameters. ")
        + f"**Across backends** (relative to {reference}, geometric mean over models and shapes): "
        + ", ".join(f"{b} {r:.2f}x" for b, r in vs_ref.items())
        + f"; fastest for the concise model at {list(narrow)}: {fastest(narrow)}, at {list(widest)}: "
        f"{fastest(widest)}. Small networks measure per-step overhead (dispatch, framework bookkeeping), large ones "
        f"the matmul library, so rankings can flip as the network grows. **Growth**: {reference} goes from "
        f"{gf[narrow]:.1f} GFLOP/s at {list(narrow)} to {gf[widest]:.1f} GFLOP/s at {list(widest)}. Devices "
        f"measured: {'; '.join(labels)}; a GPU run adds its own columns.")
    return Section("q6", "Speed: concise vs scratch, across backends and sizes", "Compare the speed of the "
                   "framework and the from-scratch implementation, and across backends, as the network grows.",
                   [Table(headers, rows, "Training examples per second (steady epochs)"
                          + (f" on {labels[0]}" if len(labels) == 1 else ""))], [fig_path], answer,
                   run_setup(cfg, base, epochs=base.max_epochs, subset=cfg["train_subset"]), label)


# -------------------------------------------------------------- Q7 matmul
def q7_matmul(cfg: dict, ctx: Context) -> Section:
    label = _hw()
    path = ctx.path("q7_matmul", "results.json")
    stored = hardware.load(path)
    if label in stored and stored[label]["sizes"] == cfg["sizes"] and stored[label]["reps"] == cfg["reps"]:
        ctx.log(f"[q7] matmul on {label}: measured earlier, reusing")
    else:
        rows = []
        for n in cfg["sizes"]:
            part = hardware.matmul_table([n], cfg["reps"], numpy_too=cfg["numpy"])
            rows += part
            ctx.log("[q7] " + ", ".join(f"{r['impl']} {n}: {r['gflops']:.1f} GFLOP/s" for r in part))
        stored = hardware.store(path, label, {"sizes": cfg["sizes"], "reps": cfg["reps"], "rows": rows})
    labels = sorted(stored)
    cols = [(lab, impl) for lab in labels for impl in sorted({r["impl"] for r in stored[lab]["rows"]})]
    sizes = sorted({r["size"] for lab in labels for r in stored[lab]["rows"]})

    def g(lab: str, impl: str, n: int) -> float:
        return next((r["gflops"] for r in stored[lab]["rows"] if r["impl"] == impl and r["size"] == n), float("nan"))

    rows = [[n, "aligned" if n % 64 == 0 else f"+{n % 64}"] + [fmt(g(lab, impl, n), 1) for lab, impl in cols]
            for n in sizes]
    fig, (ax,) = figure(1, width=7)
    w = 0.8 / max(len(cols), 1)
    for i, (lab, impl) in enumerate(cols):
        ax.bar(np.arange(len(sizes)) + i * w, [g(lab, impl, n) for n in sizes], w, label=f"{impl} [{lab}]")
    ax.set_xticks(np.arange(len(sizes)) + w * (len(cols) - 1) / 2, [str(n) for n in sizes], rotation=45)
    ax.set(ylabel="GFLOP/s", title="float32 square matmul")
    ax.legend(fontsize=7)
    fig_path = save_figure(fig, ctx, "q7_matmul.png")
    parts: list[str] = []
    losses: list[float] = []
    for lab, impl in cols:
        for n in sizes:
            if n % 1024 == 0:
                mis = [m for m in sizes if n < m < n + 64]
                if mis:
                    worst = min(mis, key=lambda m: g(lab, impl, m))
                    parts.append(f"{impl} on {lab.split(' (')[0]}: {n} -> {worst} changes speed by "
                                 f"{g(lab, impl, worst) / g(lab, impl, n) - 1:+.0%}")
                    losses.append(1 - g(lab, impl, worst) / g(lab, impl, n))
    devices = {lab.split(":")[0] for lab in labels}
    cross = ("Both a CPU and a GPU have been measured: compare the columns; GPUs pay more for misalignment because "
             "their tiles are larger (multiples of 8-128 elements for tensor cores)." if len(devices) > 1 else
             "Only the CPU has been measured so far; a run of `--only=q7` on a GPU adds its columns here.")
    penalised = [p for p, loss in zip(parts, losses) if loss > 0.05]
    answer = (
        "Relative to the aligned size, the slowest misaligned neighbour: " + "; ".join(parts) + ". "
        + (f"{len(penalised)} of {len(parts)} comparisons lose more than 5%: sizes that are a multiple of the "
           "vector width and cache-block size let the kernel use full tiles, while one extra row or column adds a "
           "ragged edge handled by slower code and breaks the alignment of every row. "
           if penalised else "No comparison loses more than 5%: these kernels pad or block well enough that "
           "misalignment costs little here. ")
        + ("Where an aligned size is itself slower than its neighbours, the timing is noisy (a shared machine); "
           "rerun `--only=q7` on an idle one to confirm. " if any(loss < -0.05 for loss in losses) else "")
        + cross)
    return Section("q7", "Matmul speed at aligned and misaligned sizes", "Measure matmul speed for 1024, 1025, "
                   "1026, 1028, 1032 (and 2048/2049, 4096/4097). How does it change between CPU and GPU?",
                   [Table(["size", "alignment"] + [f"{impl} GFLOP/s [{lab}]" for lab, impl in cols], rows)],
                   [fig_path], answer, f"float32, median of {cfg['reps']} timed calls after one warm-up, "
                   "JAX jit on the default device and numpy on the host", "; ".join(labels))


# ----------------------------------------------------------- Q8 bandwidth
def q8_bandwidth(cfg: dict, ctx: Context) -> Section:
    import jax

    label = _hw()
    path = ctx.path("q8_bandwidth", "results.json")
    stored = hardware.load(path)
    if label in stored and stored[label]["num_floats"] == cfg["num_floats"]:
        ctx.log(f"[q8] bandwidth on {label}: measured earlier, reusing")
    else:
        rows = hardware.bandwidth_table(cfg["num_floats"], cfg["reps"])
        for r in rows:
            ctx.log(f"[q8] {r['impl']} {r['kernel']}: {r['gb_per_s']:.1f} GB/s")
        stored = hardware.store(path, label, {"num_floats": cfg["num_floats"], "rows": rows,
                                              "platform": jax.devices()[0].platform})
    table_rows = []
    bus_rows = []
    for lab in sorted(stored):
        best = max(stored[lab]["rows"], key=lambda r: r["gb_per_s"])
        for r in stored[lab]["rows"]:
            table_rows.append([lab, r["impl"], r["kernel"], f"{r['bytes'] / 2**20:,.0f} MiB", fmt(r["gb_per_s"], 1)])
        for b in hardware.implied_bus_widths(best["gb_per_s"], stored[lab]["platform"]):
            bus_rows.append([lab, fmt(best["gb_per_s"], 1), b["memory"], fmt(b["bits"], 0), fmt(b["channels_64bit"], 1)])
    fig, (ax,) = figure(1, width=7)
    names = [f"{r[1]} {r[2]}\n[{r[0].split(' (')[0]}]" for r in table_rows]
    ax.bar(range(len(table_rows)), [float(r[4].replace(",", "")) for r in table_rows])
    ax.set_xticks(range(len(table_rows)), names, fontsize=7)
    ax.set(ylabel="GB/s", title=f"Streaming bandwidth ({cfg['num_floats'] * 4 / 2**20:.0f} MiB per array)")
    fig_path = save_figure(fig, ctx, "q8_bandwidth.png")
    mine = stored[label]
    best = max(mine["rows"], key=lambda r: r["gb_per_s"])
    widths = hardware.implied_bus_widths(best["gb_per_s"], mine["platform"])
    answer = (
        f"On {label} the best streaming kernel ({best['impl']} {best['kernel']}) moves **{best['gb_per_s']:.1f} "
        f"GB/s**. Bandwidth = bus width x transfer rate, so this needs at least "
        + ", ".join(f"{w['bits']:.0f} bits ({w['channels_64bit']:.1f} 64-bit channels) at {w['memory']}"
                    for w in widths)
        + ". The transfer rates are assumptions (the OS does not expose the DIMMs here); a measured figure is a "
        "lower bound on the bus, since few cores rarely saturate every channel. For comparison, one float32 "
        f"multiply-add per 8 bytes streamed would give only {best['gb_per_s'] / 8:.1f} GFLOP/s, far below the "
        f"matmul rates of q7: element-wise layers are bandwidth-bound, matmuls compute-bound.")
    return Section("q8", "Memory bandwidth", "Determine the memory bandwidth by measurement, and what it implies "
                   "about bus width.",
                   [Table(["device", "impl", "kernel", "traffic", "GB/s"], table_rows),
                    Table(["device", "best GB/s", "assumed memory", "implied bus bits", "64-bit channels"], bus_rows,
                          "Implied bus width")],
                   [fig_path], answer, f"median of {cfg['reps']} passes over arrays of {cfg['num_floats']:,} float32",
                   "; ".join(sorted(stored)))


# ----------------------------------------------------------- Q9 activation
def q9_activation(cfg: dict, ctx: Context) -> Section:
    base = ctx.config(**cfg["base"])
    trials = [Trial(f"act_{a}", base.replace(activation=a), {"activation": a}) for a in cfg["activations"]]
    res = run_sweep(trials, ctx.path("q9_activation", ""), train_subset=cfg["train_subset"], log=ctx.log, tag="q9")
    acts = [t.labels["activation"] for t in trials]
    rows = [[a, fmt(s["final"]["train_loss"]), fmt(_acc(s)), fmt(_acc(s, "test_acc")), fmt(s["steady_epoch_seconds"], 2)]
            for a, s in zip(acts, res)]
    fig, (ax,) = figure(1, width=6.5)
    for a, s in zip(acts, res):
        ax.plot([r["epoch"] for r in s["history"]], [r["val_acc"] for r in s["history"]], label=a)
    ax.set(xlabel="epoch", ylabel="val accuracy", title="Activation functions")
    ax.legend(fontsize=7)
    fig_path = save_figure(fig, ctx, "q9_activation.png")
    order = sorted(range(len(acts)), key=lambda i: -np.nan_to_num(_acc(res[i]), nan=-1))
    b, w = order[0], order[-1]
    answer = (
        f"Best: **{acts[b]}** (val_acc {_acc(res[b]):.4f}, test_acc {_acc(res[b], 'test_acc'):.4f}); ranking "
        + " > ".join(f"{acts[i]} {_acc(res[i]):.4f}" for i in order)
        + f". The spread from best to worst ({acts[w]}) is {_acc(res[b]) - _acc(res[w]):.4f}. The top "
        f"{sum(1 for i in order if _acc(res[i]) >= _acc(res[b]) - 0.005)} are within half a point of the best, "
        f"so at this budget the choice among them matters little."
        + (" Sigmoid comes last: its gradient is at most 0.25 and vanishes when it saturates, so with the same "
           "learning rate and epochs it learns more slowly." if "sigmoid" in acts and acts[w] == "sigmoid" else ""))
    return Section("q9", "Activation functions", "Try activation functions. Which works best?",
                   [Table(["activation", "train_loss", "val_acc", "test_acc", "epoch s"], rows)], [fig_path], answer,
                   run_setup(cfg, base, subset=cfg["train_subset"]), _hw())


# --------------------------------------------------------------- Q10 init
def symmetry_analysis(config: Config, summary: dict, splits: Splits) -> dict:
    """How different the hidden units are: identical units (symmetry) compute the same feature."""
    w1 = summary["params"]["W1"]
    hidden, _ = _forward_hidden(summary["params"], splits.eval.images[:512], config.model.activation)
    return {
        "unit_spread": float(np.mean(np.std(w1, axis=1))),
        "distinct_units": int(len(np.unique(np.round(w1.T, 6), axis=0))),
        "active_units": int(np.sum(np.any(hidden > 0, axis=0))),
    }


def q10_init(cfg: dict, ctx: Context) -> Section:
    base = ctx.config(**cfg["base"])
    trials = []
    for name in cfg["inits"]:
        if name.startswith("normal_"):
            sigma = float(name.split("_", 1)[1])
            trials.append(Trial(f"init_{name}", base.replace(init="normal", sigma=sigma), {"init": f"normal({sigma:g})"}))
        else:
            trials.append(Trial(f"init_{name}", base.replace(init=name), {"init": name}))
    res = run_sweep(trials, ctx.path("q10_init", ""), train_subset=cfg["train_subset"], analyse=symmetry_analysis,
                    log=ctx.log, tag="q10")
    names = [t.labels["init"] for t in trials]
    width = base.model.num_hiddens[0]
    rows = [[n, fmt(s["final"]["train_loss"]), fmt(_acc(s)), fmt(_acc(s, "test_acc")),
             "yes" if s["diverged"] else "no", s["analysis"]["distinct_units"], s["analysis"]["active_units"],
             fmt(s["analysis"]["unit_spread"], 5)] for n, s in zip(names, res)]
    fig, (ax,) = figure(1, width=6.5)
    for n, s in zip(names, res):
        ax.plot([r["epoch"] for r in s["history"]], [r["val_acc"] for r in s["history"]], label=n)
    ax.set(xlabel="epoch", ylabel="val accuracy", title="Weight initialisations (one vmapped program)")
    ax.legend(fontsize=7)
    fig_path = save_figure(fig, ctx, "q10_init.png")
    order = sorted(range(len(names)), key=lambda i: -np.nan_to_num(_acc(res[i]), nan=-1))
    b = order[0]
    zero = [i for i, t in enumerate(trials) if t.config.model.init == "zeros"]
    diverged = [names[i] for i, s in enumerate(res) if s["diverged"]]
    zero_text = ""
    if zero:
        z = res[zero[0]]
        zero_text = (f" Zeros show the symmetry problem: after training the {width} hidden units are "
                     f"{z['analysis']['distinct_units']} distinct unit(s) ({z['analysis']['active_units']} ever "
                     f"active), because identical units get identical gradients (and with ReLU at 0, none), so the "
                     f"net reaches only {_acc(z):.4f} val_acc.")
    answer = (
        f"It matters. Best: **{names[b]}** (val_acc {_acc(res[b]):.4f}); ranking "
        + " > ".join(f"{names[i]} {np.nan_to_num(_acc(res[i]), nan=0):.4f}" for i in order) + "."
        + (f" {', '.join(diverged)} diverged: weights that large make the logits explode." if diverged else "")
        + zero_text + " The scaled schemes (xavier, he, lecun) keep each layer's output variance near its input's, "
        "which is why they train well without tuning sigma.")
    return Section("q10", "Weight initialisation", "Compare weight initialisations. Does it matter?",
                   [Table(["init", "train_loss", "val_acc", "test_acc", "diverged", "distinct hidden units",
                           "active units", "mean std across units"], rows)], [fig_path], answer,
                   run_setup(cfg, base, subset=cfg["train_subset"]) + "; all inits trained together in one vmapped "
                   "program", _hw())


RUNNERS: dict[str, Runner] = {
    "q1": q1_width, "q2": q2_depth, "q3": q3_single_neuron, "q4": q4_learning_rate, "q5": q5_joint_search,
    "q6": q6_speed, "q7": q7_matmul, "q8": q8_bandwidth, "q9": q9_activation, "q10": q10_init,
}

