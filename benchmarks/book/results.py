"""The book comparison as one dict, built from the stored result files (no training): `load()`.

    from benchmarks.book.results import load
    book = load()   # book["jax"]["mlp_scratch"]["book"]["mean"], book["factors"]["data_order"], ...

Structure (what issue 21's report needs under `book`):
- `<framework>.<model>.book`: the book's code; `runs/mean/std/ci95/n` of correct / 10,000 after the last epoch
  (the project's statistic), `data_order` its loader's, `curves` per epoch, and `board` the same for the book's
  own printed number (the mean over the 40 test batches of each batch's accuracy).
- `<framework>.<model>.project`: the project's default (JAX, `experiments.train`), 10 seeds; correct / 10,000.
  The same project runs stand beside both frameworks' book runs.
- `factors.<name>.<model>`: baseline and variant summaries, `effect` (variant - baseline, Welch t interval),
  `effect_paired` (same seeds), the runs. Every accuracy here is correct / 10,000 unless a factor says otherwise.
"""

from __future__ import annotations

import json
import os

from benchmarks.book import conditions, stats

HERE = os.path.dirname(__file__)
RESULTS = os.path.join(HERE, "results")
FRAMEWORKS, MODELS = ("jax", "torch"), ("mlp_scratch", "mlp")


def _read(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def curves(runs: list[dict], key: str) -> dict:
    """Per-epoch test accuracy: every run's curve and the mean over runs."""
    per_run = [[row[key] for row in r["epochs"]] for r in runs]
    epochs = len(per_run[0]) if per_run else 0
    mean = [sum(c[e] for c in per_run) / len(per_run) for e in range(epochs)]
    return {"epoch": list(range(1, epochs + 1)), "mean": mean, "runs": per_run, "metric": key}


# The order each framework's book loader draws its batches in (d2l 1.0.3's FashionMNIST.get_dataloader).
BOOK_DATA_ORDER = {"jax": "batches", "torch": "examples"}


def book_cell(data: dict, framework: str) -> dict:
    """The book's runs of one framework and model, in the project's statistic (correct / 10,000 after the last
    epoch) so the two sides compare like with like; `board` is the book's own printed number beside it."""
    cell = stats.summarize([r["final_test_acc_example_weighted"] for r in data["runs"]])
    cell["seeds"] = [r["seed"] for r in data["runs"]]
    cell["statistic"] = "correct / 10,000 at the end of the last epoch"
    cell["data_order"] = BOOK_DATA_ORDER[framework]
    cell["board"] = stats.summarize([r["final_test_acc"] for r in data["runs"]])
    cell["board"]["statistic"] = "mean over the 40 test batches of the batch accuracy (the book's ProgressBoard)"
    cell["curves"] = curves(data["runs"], "val_acc_example_weighted")
    cell["board"]["curves"] = curves(data["runs"], "val_acc_batch_mean")
    cell.update(command=data["command"], environment=data["environment"],
                wall_seconds=[r["wall_seconds"] for r in data["runs"]])
    return cell


def project_cell(data: dict) -> dict:
    """The project's default runs of one model."""
    cell = stats.summarize([r["final_test_acc"] for r in data["runs"]])
    cell["seeds"] = [r["seed"] for r in data["runs"]]
    cell["statistic"] = "correct / 10,000 at the end of the last epoch"
    cell["curves"] = curves(data["runs"], "val_acc")
    cell.update(command=data["command"], environment=data["environment"])
    return cell


def condition(model: str, **changes) -> dict | None:
    """A stored factor condition (see conditions.py), or None if it has not been run."""
    return conditions.load(model, **changes)


def compare(base: list[float], variant: list[float], paired: bool = True) -> dict:
    """Summaries of both sides and the variant's effect (Welch; paired too when the seeds match)."""
    out = {"baseline": stats.summarize(base), "variant": stats.summarize(variant),
           "effect": stats.difference(base, variant)}
    if paired and len(base) == len(variant):
        out["effect_paired"] = stats.difference(base, variant, paired=True)
    return out


def _final(data: dict, key: str = "final_test_acc_example_weighted") -> list[float]:
    return [r[key] for r in data["runs"]]


def factor_entries() -> dict:
    """Each factor tried, per model: its description, measured effect with interval, and the runs."""
    out: dict = {}
    for name, (description, models, variant) in conditions.FACTORS.items():
        entry: dict = {"description": description, "variant": variant}
        for model in models:
            base, var = condition(model), condition(model, **variant)
            if base and var:
                entry[model] = compare(_final(base), _final(var))
        out[name] = entry
    averaging: dict = {"description": "the book's mean of 40 batch accuracies (last batch: 16 examples) minus "
                                      "correct / 10,000, on the same runs (paired)"}
    for model in MODELS:
        base = condition(model)
        if base:
            averaging[f"harness.{model}"] = compare(_final(base), _final(base, "final_test_acc_batch_mean"))
        for fw in FRAMEWORKS:
            book = _read(os.path.join(RESULTS, f"book_{fw}_{model}.json"))
            if book:
                averaging[f"book_{fw}.{model}"] = compare(_final(book), _final(book, "final_test_acc"))
    out["accuracy_averaging"] = averaging
    out["last_update_before_evaluation"] = _probe()
    out["book_code_variants"] = _book_variants()
    out.update(_identical_by_construction())
    return out


BOOK_VARIANTS = {"torch": ("drop_last", "the book's PyTorch code with drop_last=True in its training DataLoader "
                                         "(no epoch ends on the 96-example update)"),
                 "jax": ("shuffle_examples", "the book's JAX code with its loader shuffling examples before "
                                             "batching (as the project and the book's PyTorch loader do)")}


def _book_variants() -> dict:
    """The book's own code with one loader change (run.py --variant) against the book's code as it is."""
    out: dict = {}
    for fw, (variant, description) in BOOK_VARIANTS.items():
        entry: dict = {"description": description, "framework": fw, "variant": variant}
        for model in MODELS:
            book = _read(os.path.join(RESULTS, f"book_{fw}_{model}.json"))
            var = _read(os.path.join(RESULTS, f"book_{fw}_{model}__{variant}.json"))
            if book and var:
                entry[model] = compare(_final(book), _final(var), paired=False)
                entry[model]["book_statistic"] = compare(_final(book, "final_test_acc"), _final(var, "final_test_acc"),
                                                         paired=False)
        out[f"{fw}_{variant}"] = entry
    return out


def _probe() -> dict:
    """Test accuracy just after each epoch's last update (the short batch of 96) minus just before it, same runs."""
    entry: dict = {"description": "the project's runs evaluated twice per epoch: after the epoch's last update "
                                  "(a 96-example batch at lr 0.1, as always in the project's order) minus just "
                                  "before it (paired, same runs; the after values equal the baseline's exactly)"}
    for model in MODELS:
        data = condition(model, probe=True)
        if not data:
            continue
        before = [[e["val_acc_before_last_update"] for e in r["epochs"]] for r in data["runs"]]
        after = [[e["val_acc_example_weighted"] for e in r["epochs"]] for r in data["runs"]]
        c = compare([b[-1] for b in before], [a[-1] for a in after])
        c["per_epoch_effect"] = [stats.difference([b[e] for b in before], [a[e] for a in after], paired=True)
                                 for e in range(len(before[0]))]
        c["all_epochs_pooled"] = stats.difference([x for b in before for x in b], [x for a in after for x in a],
                                                  paired=True)
        entry[model] = c
    return entry


def residuals() -> dict:
    """The book's runs against the harness with the book's choices (data order, init): what is left unexplained."""
    pairs = {"jax.mlp_scratch": ("jax", "mlp_scratch", {"order": "fixed_batches"}),
             "jax.mlp": ("jax", "mlp", {"order": "fixed_batches"}),
             "torch.mlp_scratch": ("torch", "mlp_scratch", {}),
             "torch.mlp": ("torch", "mlp", {"init": "torch_default"})}
    out = {"description": "book (correct / 10,000) minus the project's code with the book's data order and init "
                          "(Welch); an interval around 0 means those choices explain the book's number"}
    for key, (fw, model, changes) in pairs.items():
        book, harness = _read(os.path.join(RESULTS, f"book_{fw}_{model}.json")), condition(model, **changes)
        if book and harness:
            out[key] = {"harness_setting": changes or "project defaults",
                        **compare(_final(harness), _final(book), paired=False)}
    return out


def _identical_by_construction() -> dict:
    """Differences looked for and not found: the inputs or the arithmetic are the same, so nothing to measure."""
    note = "identical in both code bases (effect 0 by construction, not measured by training)"
    return {
        "pixel_scaling": {"effect": 0.0, "note": note + ": the book's JAX input (tf uint8 / 255, then "
                          "resize_with_pad to 28x28) and PyTorch's ToTensor (float32 / 255) equal the project's "
                          "PIXEL_VALUES table bit for bit on the test images (tests/test_book.py checks the table)"},
        "short_batch_loss": {"effect": 0.0, "note": note + ": both take the mean over the 96 real examples"},
        "evaluation_point": {"effect": 0.0, "note": note + ": both evaluate the test split after the last update "
                             "of each epoch, with the same parameters"},
    }


def fidelity() -> dict:
    """The factor harness's baseline against the project's own runs: it must reproduce them for its factors to count."""
    out = {}
    for model in MODELS:
        # The harness's baseline shuffles examples: the project's runs from before --data_order=batches.
        base, proj = condition(model), _read(os.path.join(RESULTS, f"project_{model}__examples.json"))
        if base and proj:
            out[model] = compare([r["final_test_acc"] for r in proj["runs"]], _final(base))
    return out


def portable(value: object, root: str = os.path.dirname(os.path.dirname(os.path.abspath(HERE)))) -> object:
    """`value` with this machine's absolute paths under the repository's parent written relative to the
    repository (`/work/shared/data` -> `../shared/data`): the report publishes what `load` returns."""
    parent = os.path.dirname(root) + os.sep
    if isinstance(value, str):
        return value.replace(root + os.sep, "").replace(parent, ".." + os.sep)
    if isinstance(value, dict):
        return {k: portable(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, root) for v in value]
    return value


def load() -> dict:
    """`book`: the comparison cells, the factors and the harness check, from the stored files."""
    book: dict = {}
    for fw in FRAMEWORKS:
        for model in MODELS:
            b = _read(os.path.join(RESULTS, f"book_{fw}_{model}.json"))
            p = _read(os.path.join(RESULTS, f"project_{model}.json"))
            examples = _read(os.path.join(RESULTS, f"project_{model}__examples.json"))
            cell = {}
            if b:
                cell["book"] = book_cell(b, fw)
            if p:
                cell["project"] = project_cell(p)  # today's default, --data_order=batches
            if examples:
                cell["project_examples"] = project_cell(examples)  # the default before it, --data_order=examples
            book.setdefault(fw, {})[model] = cell
    book["factors"] = factor_entries()
    book["harness_fidelity"] = fidelity()
    book["residuals"] = residuals()
    return portable(book)


def _fmt(s: dict) -> str:
    return f"{s['mean']:.4f} | {s['std']:.4f} | [{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}] | {s['n']}"


def table(book: dict) -> str:
    """The comparison and the factors as markdown (what `python -m benchmarks.book.results` prints)."""
    lines = ["| cell | mean | std | ci95 | n |", "|---|---|---|---|---|"]
    for fw in FRAMEWORKS:
        for model in MODELS:
            cell = book[fw][model]
            if "book" in cell:
                lines.append(f"| book {fw} {model} (correct/10,000) | {_fmt(cell['book'])} |")
                lines.append(f"| book {fw} {model} (book's batch mean) | {_fmt(cell['book']['board'])} |")
    for model in MODELS:
        cell = book["jax"][model]
        if "project" in cell:
            lines.append(f"| project {model}, --data_order=batches (default) | {_fmt(cell['project'])} |")
        if "project_examples" in cell:
            lines.append(f"| project {model}, --data_order=examples | {_fmt(cell['project_examples'])} |")
    # The factor and check rows as the report renders them (one place for both).
    from mlp_research.exercises.book import check_rows, factor_rows

    lines += ["", "| factor | model | what changes | baseline (n) | variant (n) | effect [95%] | paired [95%] |",
              "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in factor_rows(book["factors"])]
    lines += ["", "| check | baseline (n) | variant (n) | difference [95%] |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in check_rows(book)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the tables; with --json PATH also write `load()`'s dict there (experiments.report --book reads it)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="", help="write the report's `book` dict to this file")
    args = parser.parse_args(argv)
    book = load()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(book, f, indent=1)
    print(table(book))


if __name__ == "__main__":
    main()
