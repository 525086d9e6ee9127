"""The report's parts that need no training: comparisons and their verdicts, the trial pool's names, plans,
interleaved timings, the alignment rule, the memory-bus readers, the book section, anchors and links."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from conftest import tiny_config
from experiments.exercises import q7_matmul
from mlp_research.errors import ConfigError
from mlp_research.exercises import book, compare, membus, report, settings, timing
from mlp_research.exercises.common import Context, Section, Table, Work
from mlp_research.exercises.plan import Plan, Rates, estimate_rows
from mlp_research.exercises.sweeps import Trial


def test_verdicts_separate_below_equivalent_and_cannot_tell():
    rng = np.random.default_rng(1)
    best = 0.85 + rng.normal(0, 0.01, 6)  # seed effects shared by every setting
    below = best - 0.02 + rng.normal(0, 0.001, 6)
    same = best + rng.normal(0, 0.0005, 6)
    noisy = best + rng.normal(0, 0.02, 6)
    results = compare.versus(best, ["below", "same", "noisy"], [below, same, noisy])
    assert [r.verdict for r in results] == ["below", "equivalent", "cannot tell"]
    assert all(r.p_holm >= r.p for r in results)
    text = compare.verdict_sentence("best", results, "setting")
    assert "below it: below (" in text and "within ±0.005 (TOST): same" in text and "cannot tell" in text
    b, against = compare.against_best(["a", "b"], [[0.8, 0.81, 0.79], [0.9, 0.91, 0.9]])
    assert b == 1 and against[0].label == "a" and against[0].difference.mean < 0


def test_trend_counts_every_seed_and_fits_a_slope_per_seed():
    per_setting = [[0.80, 0.81, 0.79], [0.82, 0.83, 0.81], [0.84, 0.85, 0.83]]  # +0.02 per step in every seed
    result = compare.trend([1, 2, 3], per_setting)
    assert result.rank.n == 9 and result.rank.rho > 0.8 and result.significant
    assert result.slope.mean == pytest.approx(0.02) and result.slope.n == 3
    assert "rises" in compare.trend_sentence(result, "x", "step")
    flat = compare.trend([1, 2, 3], [[0.8, 0.9, 0.85], [0.9, 0.8, 0.85], [0.85, 0.85, 0.8]])
    assert not flat.significant and "No trend in x" in compare.trend_sentence(flat, "x", "step")
    # Seeds far apart but each rising: pooled ranks barely see it, the per-seed slope does.
    paired = compare.trend([1, 2, 3], [[0.70, 0.90], [0.71, 0.91], [0.72, 0.92]])
    assert paired.significant and paired.rank.p > 0.05


def test_statistic_is_the_mean_of_the_last_epochs():
    history = [{"val_acc": v} for v in (0.5, 0.6, 0.7, 0.8)]
    assert settings.window_mean({"history": history}, 4) == pytest.approx(0.7)
    assert settings.window_mean({"history": history}, 3) == pytest.approx(0.6)
    assert settings.window_mean({"history": history}, 1) == pytest.approx(0.5)  # shorter runs: every epoch
    assert math.isnan(settings.window_mean({"history": history, "diverged": True}, 4))
    assert math.isnan(settings.window_mean({"history": history}, 5))


def test_pool_names_are_one_per_config_whatever_the_question():
    a, b = tiny_config(lr=0.1), tiny_config(lr=0.1, progress=True, compilation_cache_dir="/x")
    assert settings.pool_name(a) == settings.pool_name(b), "result-neutral fields do not make another trial"
    assert settings.pool_name(a) != settings.pool_name(tiny_config(lr=0.2))
    assert settings.pool_name(a.replace(seed=3)).endswith("_seed3")
    assert [t.name for t in settings.seeded(a, [0, 1])] == [settings.pool_name(a.replace(seed=s)) for s in (0, 1)]


def test_plans_count_shared_trials_once_and_model_seconds():
    trials = [Trial(f"t{s}", tiny_config(seed=s, max_epochs=4)) for s in range(3)]
    first, second = Plan("3 seeds", [("root", trials)]), Plan("again", [("root", trials[:2])], other=Work(seconds=5))
    rows = estimate_rows([("qa", first), ("qb", second)], Rates(run_seconds=2, step_seconds=0.0, gflops=1e9))
    assert rows[0][2] == 12 and rows[0][5] == 1, "three seeds, one vmapped group"
    assert rows[1][2] == 0 and rows[1][6] == 5, "the second plan's trials are the first's"
    assert rows[-1][0] == "total" and rows[-1][2] == 12
    steps = trials[0].config.num_train_examples() // 64 + 1
    assert first.work().steps == 3 * 4 * steps and Plan("x", [("r", trials)], vmap=False).work().runs == 3


def test_interleaved_rounds_alternate_cases_and_ratios_need_every_round():
    order: list = []
    values = timing.interleaved(["a", "b"], 3, lambda case, r: order.append((case, r)) or r + 1.0,
                                log=lambda line: None)
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert values == {"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}
    ratio, real = timing.compare([1.1, 1.2, 1.05], [1.0, 1.0, 1.0])
    assert real and ratio.median == pytest.approx(1.1) and "same direction" in timing.ratio_text(ratio, real)
    ratio, real = timing.compare([1.1, 0.9, 1.05], [1.0, 1.0, 1.0])
    assert not real and "noise" in timing.ratio_text(ratio, real)


def _matmul(gflops: dict[int, list[float]]) -> dict:
    return {"sizes": sorted(gflops), "impls": ["jax"], "gflops": {f"jax {n}": v for n, v in gflops.items()}}


def test_alignment_rule_is_read_from_the_measurements():
    fast, slow = [100.0, 101.0, 99.0], [80.0, 82.0, 81.0]
    rows = q7_matmul.neighbours(_matmul({1024: fast, 1025: slow, 1026: slow, 1028: fast, 1032: fast}))
    assert q7_matmul.alignment_rule(rows) == 4 and "multiple of 4 floats" in q7_matmul.explanation(rows)
    rows = q7_matmul.neighbours(_matmul({1024: fast, 1025: slow, 1026: fast, 1028: slow, 1032: fast}))
    assert q7_matmul.alignment_rule(rows) is None and "no explanation" in q7_matmul.explanation(rows)
    noisy = q7_matmul.neighbours(_matmul({1024: fast, 1025: [80.0, 120.0, 90.0]}))
    assert q7_matmul.alignment_rule(noisy) is None and "no pattern" in q7_matmul.explanation(noisy)


def _type17(data_width: int, size: int, speed: int, configured: int) -> bytes:
    raw = bytearray(0x28)
    raw[0], raw[1] = 17, 0x28
    struct.pack_into("<HHH", raw, 0x08, data_width + 8, data_width, size)
    struct.pack_into("<H", raw, 0x15, speed)
    struct.pack_into("<H", raw, 0x20, configured)
    return bytes(raw)


DMIDECODE = """Handle 0x1100, DMI type 17, 92 bytes
Memory Device
\tTotal Width: 72 bits
\tData Width: 64 bits
\tSize: 32 GB
\tSpeed: 4800 MT/s
\tConfigured Memory Speed: 4400 MT/s

Handle 0x1101, DMI type 17, 92 bytes
Memory Device
\tData Width: Unknown
\tSize: No Module Installed
"""


def test_memory_bus_is_read_from_smbios_records_and_dmidecode():
    assert membus.parse_type17(_type17(64, 32768, 4800, 4400)) == {"data_width_bits": 64, "total_width_bits": 72,
                                                                   "speed_mts": 4400}
    assert membus.parse_type17(_type17(64, 0, 4800, 4400)) is None, "an empty slot"
    devices = membus.parse_dmidecode(DMIDECODE)
    assert devices == [{"data_width_bits": 64, "speed_mts": 4400}]
    bus = membus.reported_bus(devices * 8)
    assert bus["bits"] == 512 and bus["peak_gb_per_s"] == pytest.approx(8 * 8 * 4400e6 / 1e9)
    implied = membus.implied_bus_widths(38.4, "cpu")
    assert next(w for w in implied if w["memory"] == "DDR5-4800")["bits"] == pytest.approx(64)


def _side(runs: list[float], **extra) -> dict:
    return {"runs": runs, "mean": float(np.mean(runs)), "std": float(np.std(runs, ddof=1)), **extra}


def _factor(base: list[float], variant: list[float], effect: float, ci: list[float]) -> dict:
    return {"baseline": {"mean": float(np.mean(base)), "n": len(base)},
            "variant": {"mean": float(np.mean(variant)), "n": len(variant)},
            "effect": {"effect": effect, "ci95": ci, "test": "Welch t"}}


CURVE = {"epoch": [1, 2], "mean": [0.80, 0.86]}
# What benchmarks/book/results.py writes, cut down: the JAX book order matches the project's default, the torch
# book order (reshuffled examples) does not, and the project in that order lands inside the torch interval.
BOOK = {
    "jax": {"mlp": {"book": _side([0.86, 0.87, 0.865, 0.868, 0.862], ci95=[0.860, 0.870], data_order="batches",
                                  curves=CURVE),
                    "project": _side([0.85, 0.86, 0.855], ci95=[0.843, 0.867], curves=CURVE)}},
    "torch": {"mlp": {"book": _side([0.85, 0.852, 0.848, 0.850], ci95=[0.847, 0.853], data_order="examples",
                                    curves=CURVE),
                      "project": _side([0.86, 0.862, 0.864], ci95=[0.858, 0.866]),
                      "project_examples": _side([0.849, 0.851, 0.850], ci95=[0.848, 0.852])}},
    "factors": {"data_order": {"description": "fixed batches against reshuffled examples", "variant": {},
                               "mlp": _factor([0.85] * 3, [0.86] * 3, 0.0108, [0.0063, 0.0153])},
                "book_code_variants": {"torch_drop_last": {"description": "drop_last in the book's torch loader",
                                                           "mlp": _factor([0.85] * 3, [0.86] * 3, 0.0100,
                                                                          [0.0033, 0.0166])}},
                "pixel_scaling": {"effect": 0.0, "note": "identical by construction"}},
    "harness_fidelity": {"mlp": _factor([0.85] * 3, [0.85] * 3, 0.0003, [-0.0113, 0.0119])},
    "residuals": {"description": "book minus harness", "jax.mlp": _factor([0.86] * 3, [0.86] * 3, 0.0021,
                                                                          [-0.0006, 0.0049])},
}


def test_book_section_renders_the_stored_comparison(tmp_path):
    path = tmp_path / "book.json"
    path.write_text(json.dumps(BOOK))
    ctx = Context(workdir=str(tmp_path), dataset="synthetic", log=lambda line: None)
    section = book.section(book.load(str(path)), str(path), ctx)
    text = report.render_section(section)
    assert "| jax | mlp | the book's code | 5 | 0.8650 |" in text
    assert "| torch | mlp | project, --data_order=examples | 3 | 0.8500 |" in text
    assert "| data_order | mlp | fixed batches against reshuffled examples | 0.8500 (3) | 0.8600 (3) | " \
           "+0.0108 [+0.0063, +0.0153] (Welch t) |" in text
    assert "| book_code_variants: torch_drop_last | mlp | drop_last in the book's torch loader |" in text
    assert "| pixel_scaling | both | identical by construction | - | - | +0.0000 (by construction) |" in text
    assert "| book jax.mlp vs the harness with the book's choices |" in text
    assert "jax mlp: the project's default 0.8550 is inside the book's 95% interval [0.8600" not in section.answer
    assert "jax mlp: the project's default 0.8550 is outside the book's 95% interval [0.8600, 0.8700]" in section.answer
    assert ("torch mlp: the project's default 0.8620 is outside the book's 95% interval [0.8470, 0.8530] (book "
            "0.8500, difference +0.0120 [") in section.answer
    assert ("Welch; a difference); in the book's torch loader's order (--data_order=examples) the project "
            "gives 0.8500, inside it (the data order's measured effect: +0.0108 [+0.0063, +0.0153]") in section.answer
    close, noisy = _side([0.860, 0.861, 0.862, 0.861]), _side([0.85, 0.87, 0.86])
    text, same = book._difference(close, _side([0.8605, 0.8615, 0.8610, 0.8612]))
    assert text.endswith("equivalent within ±0.005 (TOST)") and same
    text, same = book._difference(noisy, close)
    assert text.endswith("the data cannot tell: equivalence within ±0.005 is not shown by 3 and 4 runs") and not same
    assert section.summary.startswith("the project's default is inside the book's 95% interval in 0 of 2 (shown "
                                      "equivalent within ±0.005 in 0); 1 more")
    assert section.figures == ["figures/book_curves.png"] and (tmp_path / "figures" / "book_curves.png").exists()
    assert section.headline["jax"]["mlp"]["book"]["mean"] == pytest.approx(0.865)
    (tmp_path / "bad.json").write_text(json.dumps({"jax": {"mlp": {"book": {}}}}))
    with pytest.raises(ConfigError, match="no <framework>"):
        book.load(str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError, match="not a file"):
        book.find(str(tmp_path / "missing.json"))


def test_summary_table_links_each_section_and_links_are_checked(tmp_path):
    s = Section("q1", "Hidden width", "q?", [Table(["a"], [[1]])], ["figures/q1.png"], "The answer. More.", "setup",
                "hw", summary="wider is better", evidence="rho 0.9")
    table = report.summary_table([s], {"q2": "ValueError: x"}, ["q1", "q2"])
    assert table.rows[0][:3] == ["[Q1](#q1-hidden-width)", "wider is better", "rho 0.9"]
    assert table.rows[1][:2] == ["Q2", "failed"]
    assert report.anchor("Q6. Speed: concise vs scratch, across") == "q6-speed-concise-vs-scratch-across"
    text = report.markdown_table(table) + "\n\n" + report.render_section(s)
    assert report.broken_links(text, str(tmp_path)) == ["figures/q1.png"]
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "q1.png").write_bytes(b"png")
    assert report.broken_links(text + "\n[x](#nowhere) [web](https://example.org)", str(tmp_path)) == ["#nowhere"]
    legacy = Section("q5", "Search", "q?", [], [], "Chosen: trial 3. More.", "setup", "hw")
    assert report.one_line(legacy) == "Chosen: trial 3."
