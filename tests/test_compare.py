"""`experiments.compare`: finding runs, status, differing fields, the table, warnings, outputs, exit codes."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

from conftest import REPO
from mlp_research.config import Config
from mlp_research.run import compare

TRAIN_FLAGS = ["--dataset=synthetic", "--synthetic_train_size=512", "--synthetic_test_size=128", "--batch_size=64",
               "--max_epochs=2", "--progress=false"]


def flat(**overrides) -> dict:
    return {**Config().as_dict(), **overrides}


def rows(accs, losses=None) -> list[dict]:
    losses = losses or [2.0 / (i + 1) for i in range(len(accs))]
    return [{"epoch": i + 1, "step": 10 * (i + 1), "train_loss": loss, "train_acc": acc - 0.01, "val_loss": loss + 0.1,
             "val_acc": acc, "seconds": 2.0 if i == 0 else 1.0 + i / 10, "examples_per_second": 1000.0}
            for i, (acc, loss) in enumerate(zip(accs, losses))]


def make_run(path, config=None, accs=(0.5, 0.7, 0.6), summary=True, text_after="") -> str:
    """A run directory as the driver leaves it: metrics.jsonl and (when finished) summary.json."""
    os.makedirs(path, exist_ok=True)
    history = rows(accs)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in history)
        f.write(text_after)
    if summary:
        final = {k: history[-1][k] for k in ("epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc")}
        payload = {"config": config or flat(), "final": final, "best_val_acc": max(accs), "backend": "jax",
                   "steady_epoch_seconds": 1.15, "eval_split": "test", "total_seconds": 9.0}
        with open(os.path.join(path, "summary.json"), "w") as f:
            json.dump(payload, f)
    return str(path)


def make_checkpoint(path, step, config) -> None:
    meta = os.path.join(path, "checkpoints", str(step), "meta")
    os.makedirs(meta)
    with open(os.path.join(meta, "metadata"), "w") as f:
        json.dump({"format": 1, "config": config, "position": {"epoch": 2}, "history": []}, f)


def make_group(path, lrs=(0.05, 0.1), member_dirs=None) -> str:
    """A vmap group: group.json, the group's summary.json, and a run directory per member in `member_dirs`."""
    names = [f"lr={lr}" for lr in lrs]
    members = [{"name": n, "config": flat(lr=lr, max_epochs=3)} for n, lr in zip(names, lrs)]
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "group.json"), "w") as f:
        json.dump({"format": 1, "axes": {"lr": list(lrs)}, "members": members}, f)
    for name, member in zip(names, members):
        if member_dirs is None or name in member_dirs:
            make_run(os.path.join(path, name), member["config"])
    return str(path)


def table_rows(text: str) -> list[dict[str, str]]:
    lines = text.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert set(lines[1].replace("|", "")) == {"-"}
    return [dict(zip(header, (c.strip() for c in line.strip("|").split(" | ")))) for line in lines[2:]]


def png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        data = f.read(24)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def run_compare(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.compare", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_table_has_a_column_per_differing_field_and_the_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "a", flat(lr=0.05, model="mlp_scratch", seed=1))
    make_run(tmp_path / "b", flat(lr=0.1, model="mlp", seed=1), accs=(0.4, 0.8))
    runs = compare.find_runs(["a", str(tmp_path / "b")])
    assert compare.differing_fields(runs) == ["model", "lr"]  # seed is equal: no column
    table = table_rows(compare.markdown_table(runs, compare.differing_fields(runs)))
    assert list(table[0]) == ["run", "status", "model", "lr", "final val_acc", "best val_acc", "final train_loss",
                              "steady epoch time (s)", "backend"]
    assert [r["run"] for r in table] == ["a", "b"]  # relative to the working directory, which is shorter
    assert table[0] == {**table[0], "status": "finished", "model": "mlp_scratch", "lr": "0.05",
                        "final val_acc": "0.6000", "best val_acc": "0.7000", "final train_loss": "0.6667",
                        "steady epoch time (s)": "1.15", "backend": "jax"}
    assert table[1]["lr"] == "0.1" and table[1]["final val_acc"] == "0.8000"
    assert compare.labels(runs, ["model", "lr"]) == ["model=mlp_scratch, lr=0.05", "model=mlp, lr=0.1"]
    assert compare.equal_fields(runs)["seed"] == 1 and "lr" not in compare.equal_fields(runs)


def test_a_field_a_run_predates_counts_as_its_default(tmp_path):
    old = {k: v for k, v in flat(lr=0.2).items() if k != "matmul_precision"}
    runs = [compare.load_run(make_run(tmp_path / "a", old), "a"),
            compare.load_run(make_run(tmp_path / "b", flat(lr=0.2, matmul_precision="default")), "b")]
    assert compare.differing_fields(runs) == []
    runs.append(compare.load_run(make_run(tmp_path / "c", flat(lr=0.2, matmul_precision="float32")), "c"))
    assert compare.differing_fields(runs) == ["matmul_precision"]
    table = table_rows(compare.markdown_table(runs, ["matmul_precision"]))
    assert [r["matmul_precision"] for r in table] == ["default", "default", "float32"]


def test_status_of_runs_in_progress(tmp_path):
    make_run(tmp_path / "training", summary=False, accs=(0.5, 0.6))
    make_checkpoint(tmp_path / "training", 20, flat(max_epochs=5))
    # Finished at epoch 3, then resumed with --max_epochs=6: the old summary is older than the rows.
    resumed = make_run(tmp_path / "resumed", flat(max_epochs=3), accs=(0.5, 0.6, 0.7))
    with open(os.path.join(resumed, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(rows([0.5, 0.6, 0.7, 0.75])[-1]) + "\n")
    make_checkpoint(resumed, 40, flat(max_epochs=6))
    make_run(tmp_path / "bare", summary=False, accs=(0.5,))
    runs = compare.find_runs([str(tmp_path / n) for n in ("training", "resumed", "bare")])
    assert [r.status for r in runs] == ["in progress (epoch 2 of 5)", "in progress (epoch 4 of 6)",
                                        "in progress (epoch 1 of ?)"]
    assert runs[1].final("val_acc") == 0.75 and runs[1].best_val_acc() == 0.75  # the latest row, not the summary
    assert runs[0].steady_epoch_seconds() == 1.1  # without the first epoch
    table = table_rows(compare.markdown_table(runs, compare.differing_fields(runs)))
    assert table[2]["max_epochs"] == "?"


def test_summary_as_new_as_the_rows_is_finished(tmp_path):
    path = make_run(tmp_path / "a", flat(max_epochs=3))
    os.utime(os.path.join(path, "summary.json"), (1, 1))  # older file, same final epoch as the last row
    assert compare.find_runs([path])[0].status == "finished"


def test_group_directory_stands_for_its_members(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    group = make_group(tmp_path / "g", lrs=(0.05, 0.1, 0.2), member_dirs={"lr=0.05"})
    with open(os.path.join(group, "summary.json"), "w") as f:  # lr=0.1 finished but its directory is gone
        json.dump({"group": True, "members": [{"name": "lr=0.1", "final": {"epoch": 3, "val_acc": 0.25},
                                               "best_val_acc": 0.3, "diverged": True}]}, f)
    runs = compare.find_runs(["g", "g/lr=0.05"])  # a member named again is listed once
    assert [r.name for r in runs] == ["g/lr=0.05", "g/lr=0.1", "g/lr=0.2"]
    assert [r.status for r in runs] == ["finished", "finished, diverged", "in progress (epoch 0 of 3)"]
    assert compare.differing_fields(runs) == ["lr"]
    assert runs[1].final("val_acc") == 0.25 and runs[1].best_val_acc() == 0.3


def test_member_named_alone_gets_its_config_from_group_json(tmp_path):
    group = make_group(tmp_path / "g", member_dirs=set())
    make_run(os.path.join(group, "lr=0.1"), summary=False, accs=(0.5,))
    (run,) = compare.find_runs([os.path.join(group, "lr=0.1")])
    assert run.config["lr"] == 0.1 and run.status == "in progress (epoch 1 of 3)"


def test_damaged_files_are_warnings_not_tracebacks(tmp_path, capsys):
    bad_summary = make_run(tmp_path / "bad_summary")
    with open(os.path.join(bad_summary, "summary.json"), "w") as f:
        f.write('{"config": {"lr": 0.1}, "fin')
    bad_line = make_run(tmp_path / "bad_line", summary=False, text_after='{"epoch": 4, "val_acc": 0.9}\n')
    writing = make_run(tmp_path / "writing", summary=False, text_after='{"epoch": 4, "st')  # a row being written
    (tmp_path / "empty").mkdir()
    runs = compare.find_runs([bad_summary, bad_line, writing, str(tmp_path / "empty"), str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"warning: {os.path.join(bad_summary, 'summary.json')}: cannot read it (")
    assert err[1].startswith(f"warning: {os.path.join(bad_line, 'metrics.jsonl')} line 4: not a metrics row (no ")
    assert err[2:] == [f"warning: {compare.display_path(tmp_path / 'empty')} is not a run; skipped",
                       f"warning: {compare.display_path(tmp_path / 'nowhere')} does not exist; skipped"]
    assert [r.status for r in runs] == ["in progress (epoch 3 of ?)"] * 3
    assert [len(r.rows) for r in runs] == [3, 3, 3]


def test_damaged_group_json_falls_back_on_the_group_summary(tmp_path, capsys):
    group = make_group(tmp_path / "g")
    with open(os.path.join(group, "group.json"), "w") as f:
        f.write("not json")
    assert compare.find_runs([group]) == []
    assert capsys.readouterr().err.count("warning: ") == 2  # the damaged file, then "not a run"
    with open(os.path.join(group, "summary.json"), "w") as f:
        json.dump({"group": True, "members": [{"name": "lr=0.05", "config": {"lr": 0.05}, "final": {"epoch": 3}}]}, f)
    (run,) = compare.find_runs([group])
    assert run.name == os.path.join(compare.display_path(group), "lr=0.05")
    assert run.config == flat(lr=0.05, max_epochs=3)  # from the member's own summary, not the axes-only entry


def test_globs_expand_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("run-b", "run-a", "other"):
        make_run(tmp_path / name)
    assert [r.name for r in compare.find_runs(["run-*", "other", "zzz*"])] == ["run-a", "run-b", "other"]
    assert capsys.readouterr().err == "warning: zzz* matches nothing; skipped\n"


def test_out_writes_markdown_and_a_png_of_the_expected_size(tmp_path):
    a = make_run(tmp_path / "a", flat(lr=0.05, model="mlp"))
    b = make_run(tmp_path / "b", flat(lr=0.1, model="mlp"), accs=(0.3, 0.4, 0.5, 0.6))
    runs = compare.find_runs([a, b])
    written = compare.write_outputs(runs, str(tmp_path / "out"))
    assert written == [str(tmp_path / "out" / "compare.md"), str(tmp_path / "out" / "compare.png")]
    text = open(written[0]).read()
    assert compare.markdown_table(runs, ["lr"]) in text
    equal = next(line for line in text.splitlines() if line.startswith("Equal in all runs: "))
    assert "model=mlp" in equal and "seed=0" in equal and "lr=" not in equal
    assert png_size(written[1]) == compare.figure_pixels(["lr=0.05", "lr=0.1"]) == (1100, 412)
    assert sorted(os.listdir(tmp_path / "out")) == ["compare.md", "compare.png"]  # no temporary files left


def test_many_runs_get_distinct_styles_and_a_taller_figure(tmp_path):
    runs = [compare.load_run(make_run(tmp_path / f"r{i}", flat(lr=0.01 * (i + 1))), f"r{i}") for i in range(24)]
    path = str(tmp_path / "many.png")
    assert compare.plot(runs, ["lr"], path)
    texts = compare.labels(runs, ["lr"])
    assert len(set(texts)) == 24 and png_size(path) == compare.figure_pixels(texts)
    assert png_size(path)[1] > compare.PLOT_HEIGHT + 16 * 2


def test_entry_point_prints_the_table_and_exits_2_on_bad_input(tmp_path):
    make_run(tmp_path / "a", flat(lr=0.05))
    make_run(tmp_path / "b", flat(lr=0.1))
    (tmp_path / "empty").mkdir()
    ok = run_compare("a", "b", "empty", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert [r["lr"] for r in table_rows(ok.stdout)] == ["0.05", "0.1"]
    assert ok.stderr == "warning: empty is not a run; skipped\n"
    for args, message in ((["empty"], "error: nothing to compare: no run in empty"),
                          ([], "error: no runs given: python -m experiments.compare W1 W2 ... [--out=DIR]")):
        result = run_compare(*args, cwd=tmp_path)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.splitlines()[-1] == message
    bad_flag = run_compare("a", "--outt=x", cwd=tmp_path)
    assert bad_flag.returncode == 2 and bad_flag.stderr.count("\n") == 1 and "flag 'outt'" in bad_flag.stderr


def test_compares_two_real_runs_end_to_end(tmp_path):
    """Train two tiny runs (a few seconds each, side by side), then compare them through the entry point."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    trainings = [subprocess.Popen([sys.executable, "-m", "experiments.train", *TRAIN_FLAGS, f"--lr={lr}",
                                   f"--workdir={tmp_path / name}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for name, lr in (("slow", 0.01), ("fast", 0.2))]
    for training in trainings:
        output = training.communicate(timeout=300)[0]
        assert training.returncode == 0, output
    result = run_compare("slow", "fast", "--out=report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = table_rows(result.stdout)
    assert [(r["run"], r["status"], r["lr"]) for r in table] == [("slow", "finished", "0.01"),
                                                                 ("fast", "finished", "0.2")]
    assert [k for k in table[0] if k not in ("run", "status")][0] == "lr"  # workdir is no config field
    for row, name in zip(table, ("slow", "fast")):
        summary = json.load(open(tmp_path / name / "summary.json"))
        assert row["final val_acc"] == f"{summary['final']['val_acc']:.4f}"
        assert row["best val_acc"] == f"{summary['best_val_acc']:.4f}" and row["backend"] == "jax"
    assert png_size(tmp_path / "report" / "compare.png") == compare.figure_pixels(["lr=0.01", "lr=0.2"])
