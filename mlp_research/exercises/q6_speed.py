"""Q6: training speed of the concise and from-scratch models, per backend, as the network grows.

Every registered backend (the JAX core and the torch / TensorFlow / MXNet
plugins; ones not installed are skipped) trains each shape through the one
driver, so every framework is timed by the same loop; the speed is the
summary's steady epoch time (median of the epochs after the first) and GFLOP/s
use `ModelSpec.train_flops_per_example`. Runs are kept per device label
(`q6_speed/<device>/`), so a run on a GPU adds columns instead of replacing them.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from mlp_research.backends import registry
from mlp_research.errors import UserError
from mlp_research.exercises import hardware
from mlp_research.exercises.common import (
    Context,
    Section,
    Table,
    Work,
    fmt,
    run_setup,
    save_figure,
    slug,
)
from mlp_research.exercises.common import (
    figure as new_figure,
)
from mlp_research.exercises.sweeps import Trial, is_finished, pending_work, read_json, run_sweep
from mlp_research.files import atomic_write

TITLE = "Speed: concise vs scratch, across backends and sizes"
QUESTION = ("Compare the speed of the framework and the from-scratch implementation, and across backends, as the "
            "network grows.")
DIR = "q6_speed"
DEVICE_FILE = "device.json"
Key = tuple[str, str, str, tuple[int, ...]]  # device label, backend, model, hiddens


def _shape(h: tuple[int, ...]) -> str:
    return "-".join(map(str, h))


def _trials(cfg: dict, ctx: Context) -> list[Trial]:
    from mlp_research.backends import registry

    base = ctx.config(**cfg["base"])
    installed = registry.available()
    return [Trial(f"{b}_{m}_{_shape(tuple(h))}", base.replace(backend=b, model=m, num_hiddens=tuple(h)),
                  {"backend": b, "model": m, "hiddens": list(h)})
            for b in cfg["backends"] if b in installed for m in cfg["models"] for h in cfg["hiddens"]]


def plan(cfg: dict, ctx: Context) -> Work:
    return pending_work(_trials(cfg, ctx), ctx.path(DIR, slug(hardware.device_label()), ""))


def measure(cfg: dict, ctx: Context) -> dict[Key, dict]:
    """Summaries of every measured run on every device seen so far, this device's measured or reused now."""
    label = hardware.device_label()
    root = ctx.path(DIR, slug(label), "")
    atomic_write(os.path.join(root, DEVICE_FILE), json.dumps({"label": label}) + "\n")
    trials = _trials(cfg, ctx)
    for b in cfg["backends"]:
        if not any(t.labels["backend"] == b for t in trials):
            ctx.log(f"[q6] backend {b!r} is not installed here; skipped")
    for trial in trials:
        try:  # one run at a time: a plugin that cannot run a config is reported, not fatal
            run_sweep([trial], root, vmap=False, log=ctx.log, tag="q6", clock=ctx.clock)
        except UserError as e:
            ctx.log(f"[q6] {trial.name}: skipped ({e})")
    found: dict[Key, dict] = {}
    for device_file in sorted(glob.glob(os.path.join(ctx.workdir, DIR, "*", DEVICE_FILE))):
        device = (read_json(device_file) or {}).get("label")
        if not device or device == label:
            continue
        for path in sorted(glob.glob(os.path.join(os.path.dirname(device_file), "*", "summary.json"))):
            s = read_json(path)
            if s and isinstance(s.get("config"), dict):
                c = s["config"]
                found[(device, c["backend"], c["model"], tuple(c["num_hiddens"]))] = s
    for t in trials:
        s = is_finished(t, root)
        if s is not None and not s.get("diverged"):
            found[(label, t.labels["backend"], t.labels["model"], tuple(t.labels["hiddens"]))] = s
    return found


def _eps(res: dict[Key, dict], device: str, backend: str, model: str, h: tuple[int, ...]) -> float:
    s = res.get((device, backend, model, h))
    return float(s["examples_per_second"]) if s else float("nan")


def _gm(values: list[float]) -> float:
    values = [v for v in values if v == v and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")


def figure(res: dict[Key, dict], shapes: list[tuple[int, ...]], ctx: Context) -> list[str]:
    fig, axes = new_figure(2)
    deep_width = max(shapes, key=len)[0]
    for device, backend, model in sorted({k[:3] for k in res}):
        pts = [(res[(device, backend, model, h)]["num_params"], _eps(res, device, backend, model, h), h)
               for h in shapes if (device, backend, model, h) in res]
        name = f"{backend} {model} ({device.split(':')[0]})"
        one = [p for p in pts if len(p[2]) == 1]
        many = [p for p in pts if set(p[2]) == {deep_width}]
        axes[0].plot([p[0] for p in one], [p[1] for p in one], "o-", label=name)
        axes[1].plot([len(p[2]) for p in many], [p[1] for p in many], "o-", label=name)
    axes[0].set(xscale="log", yscale="log", xlabel="parameters (one hidden layer, growing width)",
                ylabel="training examples/s", title="Width")
    axes[1].set(yscale="log", xlabel=f"hidden layers of width {deep_width}", ylabel="training examples/s",
                title="Depth")
    axes[0].legend(fontsize=6)
    return [save_figure(fig, ctx, "q6_speed.png")]


def answer(res: dict[Key, dict], shapes: list[tuple[int, ...]], models: list[str]) -> str:
    label = hardware.device_label()
    backends = sorted({k[1] for k in res if k[0] == label})
    concise = {b: _gm([_eps(res, label, b, "mlp", h) / _eps(res, label, b, "mlp_scratch", h) for h in shapes])
               for b in backends}
    core = registry.CORE.name  # the reference every other backend is compared with
    reference = core if core in backends else (backends or [core])[0]
    vs_ref = {b: _gm([_eps(res, label, b, m, h) / _eps(res, label, reference, m, h) for m in models for h in shapes])
              for b in backends}
    narrow = shapes[0]
    widest = max((h for h in shapes if len(h) == 1), key=lambda h: h[0])

    def fastest(h: tuple[int, ...]) -> str:
        scores = {b: _eps(res, label, b, "mlp", h) for b in backends}
        scores = {b: v for b, v in scores.items() if v == v}
        return max(scores, key=scores.get) if scores else "-"

    gf = {h: res.get((label, reference, "mlp", h), {}).get("achieved_gflops", float("nan")) for h in shapes}
    close = all(abs(r - 1) < 0.15 for r in concise.values() if r == r)
    return (
        f"On {label}. **Concise vs scratch** (examples/s ratio, geometric mean over the shapes): "
        + ", ".join(f"{b} {r:.2f}x" for b, r in concise.items()) + ". "
        + ("Within every backend the two styles run within 15% of each other: they describe the same matmuls. "
           if close else "Where the ratio is far from 1, the framework's layer code compiles or dispatches "
           "differently from the hand-written parameters. ")
        + f"**Across backends** (relative to {reference}, geometric mean over models and shapes): "
        + ", ".join(f"{b} {r:.2f}x" for b, r in vs_ref.items())
        + f"; fastest for the concise model at {list(narrow)}: {fastest(narrow)}, at {list(widest)}: "
        f"{fastest(widest)}. Small networks measure per-step overhead (dispatch, framework bookkeeping), large ones "
        f"the matmul library, so rankings can flip as the network grows. **Growth**: {reference} goes from "
        f"{gf[narrow]:.1f} GFLOP/s at {list(narrow)} to {gf[widest]:.1f} GFLOP/s at {list(widest)}. Every backend "
        "was timed by the same driver loop (steady epoch = median after the first, evaluation included).")


def section(cfg: dict, ctx: Context) -> Section:
    res = measure(cfg, ctx)
    shapes = [tuple(int(w) for w in h) for h in cfg["hiddens"]]
    base = ctx.config(**cfg["base"])
    columns = sorted({k[:3] for k in res})
    devices = sorted({c[0] for c in columns})
    headers = ["hiddens", "params"] + [f"{b} {m} ex/s" + (f" [{d}]" if len(devices) > 1 else "") for d, b, m in columns]
    rows = [[str(list(h)), base.replace(num_hiddens=h).model.num_params()]
            + [fmt(_eps(res, d, b, m, h), 0) if (d, b, m, h) in res else "-" for d, b, m in columns] for h in shapes]
    gflops = [[str(list(h))] + [fmt(res[(d, b, m, h)]["achieved_gflops"], 1) if (d, b, m, h) in res else "-"
                                for d, b, m in columns] for h in shapes]
    tables = [Table(headers, rows, "Training examples per second (steady epochs, through the driver)"),
              Table(["hiddens"] + [h.replace(" ex/s", " GFLOP/s") for h in headers[2:]], gflops,
                    "Achieved GFLOP/s (ModelSpec.train_flops_per_example)")]
    label = hardware.device_label()
    mine = {k: v for k, v in res.items() if k[0] == label}
    core = registry.CORE.name
    ref = {k: v for k, v in mine.items() if k[1] == core and k[2] == "mlp"}
    headline = {"device": label, "backends": sorted({k[1] for k in mine}),
                f"{core}_mlp_examples_per_second": {_shape(k[3]): v["examples_per_second"] for k, v in ref.items()}}
    return Section("q6", TITLE, QUESTION, tables, figure(res, shapes, ctx), answer(res, shapes, list(cfg["models"])),
                   f"backends {', '.join(sorted({k[1] for k in mine}))}; models {', '.join(cfg['models'])}; hidden "
                   f"layers {', '.join(str(list(h)) for h in shapes)}; each run: " + run_setup(base).split("; ", 1)[0]
                   + f"; {base.optimizer} lr={base.lr:g}, batch {base.batch_size}, {base.max_epochs} epochs (the "
                   "first, which compiles or warms up, is not timed)", "; ".join(devices), headline)
