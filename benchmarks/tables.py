"""Real-table accuracy: nnfit's defaults against the usual scikit-learn baselines (issue 9).

Three generated tables with the traits of the first CSVs people train on
(``tests/tabular_data.py``: seeded, no downloads), each written as ``train.csv`` and a
held-out ``test.csv`` drawn from the same generator. nnfit runs exactly as a user types it,
``nnfit train train.csv --target COL --out run`` then ``nnfit evaluate run test.csv --json``
(and ``nnfit predict`` for the per-row errors behind the standard errors); the baselines are
the notebook pipelines of ``tabular_data``:

- house prices (regression, R²): scikit-learn's ``HistGradientBoostingRegressor``, native
  categorical support, defaults. Bar: nnfit within 0.03 of it.
- passengers (binary, accuracy; 891 and 5,000 training rows): one-hot ``LogisticRegression``
  (median-impute + standardise numerics; id, name and ticket dropped) and
  ``HistGradientBoostingClassifier``. Bar: nnfit at or above LogisticRegression.
- categorical signal (binary, accuracy): the Bayes rate, known analytically. Bar: nnfit
  within 0.02 of it.

Each delta comes with the standard error of the paired per-row difference on the test rows
(the test set's noise, not the training draw's); the 891-row passenger table is averaged over
5 draws, and its standard error is over the draws. Results go to
``benchmarks/results/cpu-issue9-tables.json`` and ``.md``.

    python benchmarks/tables.py               # full sizes (a few minutes on 2 cores)
    python benchmarks/tables.py --rows 0.1    # a tenth of the training and test rows
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import tabular_data as td  # noqa: E402  (the generators live with the tests that use them)

N_TEST = 20_000  # test rows per table (before --rows): the standard errors stay near 0.003
# name: generator, training rows (before --rows), what a notebook drops, the baselines, the bar,
# and how many draws (seeds) to average where one training sample is too small to tell
TABLES = {
    "house-prices": dict(make=td.house_prices, n_train=16_512, drop=["id"], baselines=["hgb"],
                         bar=("hgb", -0.03)),
    "passengers-891": dict(make=td.passengers, n_train=891, drop=["PassengerId", "Name", "Ticket"],
                           baselines=["logistic", "hgb"], bar=("logistic", 0.0), draws=5),
    "passengers-5000": dict(make=td.passengers, n_train=5_000, drop=["PassengerId", "Name", "Ticket"],
                            baselines=["logistic", "hgb"], bar=("logistic", 0.0)),
    "categorical-signal": dict(make=td.categorical_signal, n_train=5_000, drop=[], baselines=["bayes"],
                               bar=("bayes", -0.02)),
}
BASELINE_NAMES = {"hgb": "HistGradientBoosting", "logistic": "one-hot LogisticRegression",
                  "bayes": "Bayes rate"}


def nnfit_command() -> list[str]:
    """``nnfit`` as installed next to this interpreter, else ``python -m nnfit``."""
    script = Path(sys.executable).with_name("nnfit")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "nnfit"]


def run_nnfit(args: list[str], cwd: Path) -> tuple[str, float, list[str]]:
    """Run ``nnfit ARGS`` in ``cwd``; return its stdout, wall seconds and stderr lines.

    Raises:
        RuntimeError: nnfit exited non-zero (its last stderr line is the message).
    """
    t0 = time.perf_counter()
    p = subprocess.run(nnfit_command() + args, cwd=cwd, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()
        raise RuntimeError(tail[-1] if tail else f"nnfit {args[0]} exit {p.returncode}")
    return p.stdout, wall, p.stderr.splitlines()


def per_row_score(y: np.ndarray, pred: np.ndarray, regression: bool) -> np.ndarray:
    """What each test row contributes to the score: minus its squared error, or 1 if correct.

    The difference of two models' per-row scores, averaged, is their score difference (in R²
    after dividing by the target's variance), so its standard error is sd / sqrt(n).
    """
    return -((y - pred) ** 2) if regression else (pred == y).astype(float)


def compare(ours: np.ndarray, theirs: np.ndarray, scale: float) -> tuple[float, float]:
    """Mean and standard error of the paired per-row difference ``ours - theirs``, over ``scale``."""
    d = (ours - theirs) / scale
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def bench_draw(spec: dict, n_train: int, n_test: int, seed: int, folder: Path) -> dict:
    """One draw of a table: train nnfit and the baselines on it, score all on its test rows."""
    table = spec["make"](n_train + n_test, seed=seed)
    train, test = table.split(n_train)
    folder.mkdir(parents=True)
    train.write(folder / "train.csv")
    test.write(folder / "test.csv")
    # What a notebook reads: the files, not the generator's frames.
    train_df, test_df = pd.read_csv(folder / "train.csv"), pd.read_csv(folder / "test.csv")
    y = test_df[table.target].to_numpy()
    regression = y.dtype.kind == "f"
    metric = "r2" if regression else "accuracy"
    scale_y = float(y.var()) if regression else 1.0

    _, train_s, log = run_nnfit(["train", "train.csv", "--target", table.target, "--out", "run"], folder)
    out, eval_s, _ = run_nnfit(["evaluate", "run", "test.csv", "--json"], folder)
    pred_csv, _, _ = run_nnfit(["predict", "run", "test.csv"], folder)
    nn_pred = pd.read_csv(io.StringIO(pred_csv)).iloc[:, 0].to_numpy()
    ours = per_row_score(y, nn_pred.astype(y.dtype), regression)
    result = {"seed": seed, "metric": metric, "target": table.target,
              "scores": {"nnfit": json.loads(out)[metric]},
              "wall_s": {"nnfit train": train_s, "nnfit evaluate": eval_s},
              "deltas": {}, "nnfit_log": [line for line in log if not line.startswith("epoch ")]}
    for base in spec["baselines"]:
        if base == "bayes":
            theirs = np.maximum(test.p, 1 - test.p)  # the Bayes classifier's expected correctness
            result["scores"][base] = test.bayes_rate()
        else:
            fit = td.hgb_baseline if base == "hgb" else td.logistic_baseline
            t0 = time.perf_counter()
            model = fit(train_df, table.target, drop=spec["drop"])
            result["wall_s"][base] = time.perf_counter() - t0
            base_pred = model.predict(test_df)
            theirs = per_row_score(y, base_pred, regression)
            result["scores"][base] = (1 - float(((y - base_pred) ** 2).mean()) / scale_y if regression
                                      else float(theirs.mean()))
        delta, se = compare(ours, theirs, scale_y)
        result["deltas"][base] = {"delta": delta, "se": se}
    if table.p is not None and "bayes" not in spec["baselines"]:
        result["scores"]["oracle"] = test.bayes_rate()  # true p, hidden ages included: a ceiling
    return result


def bench_table(name: str, spec: dict, scale: float, work: Path) -> dict:
    """Every draw of one table, and their means.

    With one draw a delta's standard error is the test rows' (paired per row); with several,
    that of the mean over draws (their spread over sqrt(draws)), which also holds the training
    sample's luck: what decides a small table such as 891 passengers.
    """
    n_train = max(300, round(spec["n_train"] * scale))
    n_test = max(2_000, round(N_TEST * scale))
    draws = [bench_draw(spec, n_train, n_test, seed, work / name / f"draw-{seed}")
             for seed in range(spec.get("draws", 1))]
    k = len(draws)
    result = {"rows": {"train": n_train, "test": n_test}, "draws": draws, "metric": draws[0]["metric"],
              "scores": {s: float(np.mean([d["scores"][s] for d in draws])) for s in draws[0]["scores"]},
              "wall_s": {w: float(np.mean([d["wall_s"][w] for d in draws])) for w in draws[0]["wall_s"]},
              "deltas": {}}
    for base in spec["baselines"]:
        deltas = np.array([d["deltas"][base]["delta"] for d in draws])
        se = draws[0]["deltas"][base]["se"] if k == 1 else float(deltas.std(ddof=1) / np.sqrt(k))
        result["deltas"][base] = {"delta": float(deltas.mean()), "se": se}
    against, margin = spec["bar"]
    result["bar"] = {"against": against, "margin": margin,
                     "met": result["scores"]["nnfit"] >= result["scores"][against] + margin}
    return result


def markdown(results: dict, heading: str = "#") -> str:
    """The results as a Markdown section under a ``heading``-level title: a row per table and
    baseline."""
    title = f"{heading} Real tables: nnfit defaults against scikit-learn baselines ({results['machine']})"
    lines = [title, "",
             f"Row scale {results['scale']}; test rows drawn from the same generator as the training "
             "rows. nnfit: `nnfit train train.csv --target COL --out run` with no other flag, then "
             "`nnfit evaluate run test.csv --json`; its wall time includes starting Python and torch. "
             "Baselines: fit time in process. Delta = nnfit - baseline, ± its standard error: of the "
             "paired per-row difference on the test rows, or over draws (training samples) where "
             "the scores are means of several.", "",
             "| table | rows train/test | metric | nnfit | baseline | baseline score | delta ± se "
             "| bar | met | nnfit train s | baseline fit s |",
             "|---|---|---|---:|---|---:|---:|---|---|---:|---:|"]
    for name, r in results["tables"].items():
        if "error" in r:
            lines.append(f"| {name} | | | failed: {r['error']} | | | | | | | |")
            continue
        against, margin = r["bar"]["against"], r["bar"]["margin"]
        for base, d in r["deltas"].items():
            barred = base == against
            bar = f"≥ {BASELINE_NAMES[against]}" + (f" {margin:+.2f}" if margin else "")
            draws = f" (mean of {len(r['draws'])} draws)" if len(r["draws"]) > 1 else ""
            cells = [name, f"{r['rows']['train']:,}/{r['rows']['test']:,}{draws}", r["metric"],
                     f"{r['scores']['nnfit']:.4f}", BASELINE_NAMES[base], f"{r['scores'][base]:.4f}",
                     f"{d['delta']:+.4f} ± {d['se']:.4f}", bar if barred else "",
                     ("yes" if r["bar"]["met"] else "NO") if barred else "",
                     f"{r['wall_s']['nnfit train']:.1f}",
                     f"{r['wall_s'][base]:.1f}" if base in r["wall_s"] else ""]
            lines.append("| " + " | ".join(cells) + " |")
        if "oracle" in r["scores"]:
            lines.append(f"| {name} | | | | true-probability oracle (a ceiling) | "
                         f"{r['scores']['oracle']:.4f} | | | | | |")
    return "\n".join(lines) + "\n"


def run_all(scale: float, tables: list[str]) -> dict:
    """Every table of ``tables`` at ``scale`` times its rows; a failed table records its error."""
    results = {"scale": scale, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                                          f"Python {platform.python_version()}",
               "started": time.strftime("%Y-%m-%d %H:%M:%S"), "tables": {}}
    work = Path(tempfile.mkdtemp(prefix="nnfit-tables-"))
    try:
        for name in tables:
            try:
                results["tables"][name] = bench_table(name, TABLES[name], scale, work)
            except RuntimeError as e:
                results["tables"][name] = {"error": str(e)}
            print(f"{name}: {json.dumps(results['tables'][name].get('scores', results['tables'][name]))}",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=float, default=1.0,
                    help="scale of every table's training and test rows (default 1)")
    ap.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--name", default="cpu-issue9-tables", help="results file stem")
    args = ap.parse_args()
    results = run_all(args.rows, args.tables)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=1))
    (out / f"{args.name}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
