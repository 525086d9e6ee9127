"""Kit cases about the model itself: initial parameter statistics and logits from given parameters."""

from __future__ import annotations

import math

import numpy as np

from mlp_research.spec import ACTIVATIONS, INITS, MODELS
from mlp_research.testing import reference
from mlp_research.testing.core import Case, Kit, Outcome, expect, failed, passed, random_canonical, skipped

# Widths large enough for tight statistics (313,600 first-layer weights) yet quick to build.
INIT_WIDTHS = (400, 64)
STD_TOLERANCE = 0.08  # relative; a wrong scale (e.g. fan_out for fan_in) is off by far more


def _init_case(model: str, init: str) -> Case:
    def run(kit: Kit) -> Outcome:
        if init == "default" and model == "mlp":
            return skipped("the concise model's default is its framework's own initialiser (not specified)")
        config = kit.config(model=model, num_hiddens=INIT_WIDTHS, init=init, sigma=0.05, seed=3)
        params = kit.trainer(config).get_params()
        expected = reference.init_statistics(config.spec)
        worst = 0.0
        for name, (mean, std, bound) in expected.items():
            value = np.asarray(params[name], np.float64)
            if std == 0.0:
                if np.any(value != 0):
                    return failed(f"{name} should start at exactly 0 ({init}), max |value| {np.abs(value).max():.3g}")
                continue
            ratio = value.std() / std
            worst = max(worst, abs(ratio - 1))
            if abs(ratio - 1) > STD_TOLERANCE:
                return failed(f"{name}: std {value.std():.5g}, the spec's {init} gives {std:.5g} (x{ratio:.3f})",
                              f"std ratio {ratio:.3f}")
            if abs(value.mean() - mean) > 5 * std / math.sqrt(value.size) + 1e-7:
                return failed(f"{name}: mean {value.mean():.3g}, expected {mean}")
            if math.isfinite(bound) and np.abs(value).max() > bound * (1 + 1e-5):
                return failed(f"{name}: |value| up to {np.abs(value).max():.5g}, the spec bounds it by {bound:.5g}")
        return passed(f"std within {worst:.1%} of the spec")

    return Case(f"init[{model},{init}]", run)


def _logits_case(model: str, activation: str, depth: int) -> Case:
    def run(kit: Kit) -> Outcome:
        widths = (48, 32)[:depth]
        config = kit.config(model=model, num_hiddens=widths, activation=activation, synthetic_train_size=64)
        trainer = kit.trainer(config)
        params = random_canonical(config, seed=depth)
        trainer.set_params(params)
        got = trainer.get_params()
        if max(np.abs(got[k] - params[k]).max() for k in params) > 0:
            return failed("get_params() does not return what set_params() loaded (canonical layout?)")
        images = kit.splits(config).test.images
        labels = kit.splits(config).test.labels
        want = reference.forward(config.spec, params, images)
        logits = trainer.logits(images)
        if logits is not None:
            diff = float(np.abs(np.asarray(logits, np.float64) - want).max())
            return expect(diff < 1e-4, f"max |logit diff| {diff:.1e}", f"logits differ from the spec by {diff:.3g}")
        ours, ref = trainer.evaluate(images, labels), reference.evaluate(config.spec, params, images, labels)
        diff = abs(float(ours.loss_sum) - ref.loss_sum) / max(abs(ref.loss_sum), 1.0)
        ok = diff < 1e-5 and int(ours.correct) == ref.correct and int(ours.count) == ref.count
        return expect(ok, f"loss rel diff {diff:.1e} (no logits(): via evaluate)",
                      f"evaluate() gives loss {float(ours.loss_sum):.6g}, correct {int(ours.correct)}; the spec "
                      f"gives {ref.loss_sum:.6g}, {ref.correct}")

    return Case(f"logits[{model},{activation},{depth} layer{'s' if depth > 1 else ''}]", run)


CASES = (
    *(_init_case(model, init) for model in MODELS for init in INITS),
    *(_logits_case(model, activation, 2) for model in MODELS for activation in ACTIVATIONS),
    *(_logits_case(model, "relu", 1) for model in MODELS),
)
