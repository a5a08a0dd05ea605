"""Side-by-side training benchmarks: nnfit against hand-written loops and peer frameworks.

Every run is a fresh process (``contenders.py``), so imports, caches and peak memory never
leak between contenders. Contenders are interleaved (A B C ... A B C ...) for ``--reps``
rounds and reported as medians, with each contender's speed relative to nnfit. Results go to
``benchmarks/results/<device>.json`` and ``.md``.

    python benchmarks/bench.py                 # full CPU suite (several minutes)
    python benchmarks/bench.py --device cuda   # the same on a GPU
    python benchmarks/bench.py --smoke         # tiny sizes: checks that every contender runs
    python benchmarks/bench.py --skip training cli ingest --table-rows 0.5  # real tables only
    python benchmarks/bench.py --skip training cli tables --reps 5 --name cpu-issue9-ingest  # CSV reading
    python benchmarks/bench.py --skip cli ingest tables --workloads cnn-32px lstm-T50 lstm-T10-50
    python benchmarks/bench.py --skip training cli ingest tables  # PNG folders vs torchvision (images.py)
    python benchmarks/bench.py --skip training cli ingest tables --image-workloads digits-16px-b32

Peer frameworks come from the ``bench`` extra (``make bench`` installs it); a peer that is not
installed is skipped, and the results list it under ``skipped`` with the reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PEERS = ["nnfit", "step_ceiling", "minimal_loop", "dataloader_loop", "lightning", "skorch", "keras",
         "torchvision"]
# Contenders that need a package beyond nnfit's own dependencies: the module each imports.
PEER_MODULES = {"lightning": "lightning", "skorch": "skorch", "keras": "keras", "torchvision": "torchvision"}
# torchvision is a peer of the image-folder suite only (ImageFolder + DataLoader, images.py).
IMAGE_PEERS = ("torchvision",)
WORKLOADS = {
    "mlp-b32": dict(rows=100_000, features=32, classes=10, batch=32, epochs=2),
    "mlp-b128": dict(rows=100_000, features=32, classes=10, batch=128, epochs=2),
    "mlp-b1024": dict(rows=100_000, features=32, classes=10, batch=1024, epochs=2),
    "wide-200x500k": dict(rows=500_000, features=200, classes=10, batch=256, epochs=1),
    "cnn-32px": dict(model="cnn", rows=20_000, size=32, channels=[32, 64], classes=10, batch=128, epochs=1),
    # sequences of one length, then lengths uniform in 10..50: nnfit batches them by length, the
    # minimal loop pads every batch to 50
    "lstm-T50": dict(model="lstm", rows=100_000, steps=50, min_len=50, features=16, hidden=64,
                     classes=10, batch=128, epochs=2),
    "lstm-T10-50": dict(model="lstm", rows=100_000, steps=50, min_len=10, features=16, hidden=64,
                        classes=10, batch=128, epochs=2),
}
# The workloads of nnfit's own CNN and LSTM: the minimal loop is their one reference.
MODEL_CONTENDERS = ("nnfit", "minimal_loop")
SMOKE = dict(rows=2_000, features=8, classes=3, batch=64, epochs=1)
# One thread (``threads``): steps this tiny only spin a second one, which on a busy machine
# made each of these runs seconds longer.
SMOKE_MODELS = {
    "smoke-cnn": dict(model="cnn", rows=400, size=8, channels=[4, 8], classes=3, batch=64, epochs=1,
                      threads=1),
    "smoke-lstm": dict(model="lstm", rows=400, steps=12, min_len=3, features=4, hidden=8, classes=3,
                       batch=64, epochs=1, threads=1),
}


# The 1-minute load average seen before each run: on a 2-core machine other work above ~1.5
# disturbs the timings (a 2-thread step stalls on a busy core), and the results say how busy it was.
LOADS: list[float] = []


def run(cmd: list[str], timeout: float = 900) -> tuple[dict | None, float, str]:
    """Run a command; return its RESULT json (if any), wall seconds and an error tail."""
    LOADS.append(os.getloadavg()[0])
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - t0
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:]), wall, ""
    tail = (p.stderr or p.stdout).strip().splitlines()
    return None, wall, tail[-1] if tail else f"exit {p.returncode}"


def contender(name: str, spec: dict) -> list[str]:
    return [sys.executable, str(HERE / "contenders.py"), name, json.dumps(spec)]


def median_row(runs: list[dict]) -> dict:
    ok = [r for r in runs if r.get("seconds")]
    if not ok:
        return {"error": next((r.get("error") for r in runs if r.get("error")), "no result")}
    return {k: statistics.median(r[k] for r in ok) for k in ok[0] if isinstance(ok[0][k], (int, float))}


def paired_ratios(ours: list[dict], theirs: list[dict]) -> list[float]:
    """nnfit's samples/s over a contender's, repetition by repetition: each pair ran back to
    back, so a load that comes and goes disturbs both of a pair, not one side of a median."""
    return [a["samples_per_s"] / b["samples_per_s"] for a, b in zip(ours, theirs, strict=False)
            if a.get("samples_per_s") and b.get("samples_per_s")]


def not_installed(contenders: list[str]) -> dict[str, str]:
    """The contenders whose framework this interpreter cannot import, with the reason."""
    return {c: "not installed" for c in contenders
            if c in PEER_MODULES and importlib.util.find_spec(PEER_MODULES[c]) is None}


def training_suite(args: argparse.Namespace) -> dict:
    out = {}
    workloads = ({"smoke": SMOKE, **SMOKE_MODELS} if args.smoke
                 else {k: WORKLOADS[k] for k in args.workloads})
    for wname, w in workloads.items():
        spec = {**w, "device": args.device}
        contenders = [c for c in args.contenders if c not in IMAGE_PEERS
                      and ("model" not in w or c in MODEL_CONTENDERS)]
        if "model" in w and len(contenders) < 2:  # a CNN/LSTM row is a comparison or nothing
            continue
        runs: dict[str, list[dict]] = {c: [] for c in contenders}
        for rep in range(args.reps):
            for c in contenders:  # interleaved: A B C ... then again
                res, wall, err = run(contender(c, spec))
                runs[c].append(res or {"error": err})
                shown = (f"{res['samples_per_s']:,.0f} samples/s acc {res['val_acc']:.4f}" if res
                         else f"FAILED {err}")
                print(f"{wname} rep {rep + 1} {c}: {shown}", flush=True)
        med = {c: median_row(r) for c, r in runs.items()}
        base = med.get("nnfit", {}).get("samples_per_s")
        for c, m in med.items():
            if base and m.get("samples_per_s"):
                m["nnfit_speedup"] = base / m["samples_per_s"]
            paired = paired_ratios(runs.get("nnfit", []), runs[c])
            if paired:
                m["nnfit_speedup_paired"] = statistics.median(paired)
        out[wname] = {"spec": spec, "median": med, "runs": runs}
    return out


def cli_suite(args: argparse.Namespace, tmp: Path) -> dict:
    """nnfit's CLI end to end on a CSV against the API's training time and torch's import."""
    w = dict(SMOKE if args.smoke else dict(rows=100_000, features=32, classes=10, batch=128))
    w["epochs"] = 1 if args.smoke else 5
    sys.path.insert(0, str(HERE))
    from contenders import make_data

    xtr, ytr, _, _ = make_data(w["rows"], w["features"], w["classes"])
    csv = tmp / "train.csv"
    header = ",".join([f"f{i}" for i in range(w["features"])] + ["y"])
    np.savetxt(csv, np.column_stack([xtr, ytr]), delimiter=",", header=header, comments="",
               fmt=["%.6g"] * w["features"] + ["%d"])
    spec = {**w, "device": args.device, "no_warm_up": True}
    cli = [sys.executable, "-m", "nnfit", "train", str(csv), "--target", "y", "--epochs", str(w["epochs"]),
           "--batch-size", str(w["batch"]), "--val-split", "0", "--patience", "0", "--hidden", "128,128",
           "--quiet", "--overwrite", "--device", args.device, "--out", str(tmp / "run")]
    # plots (issue 11): a wine-sized run with and without them, interleaved; <= 1 s apart
    wine = [sys.executable, "-m", "nnfit", "train", "--dataset", "wine", "--quiet", "--overwrite",
            "--device", args.device, "--out", str(tmp / "wine")]
    rows: dict[str, list[float]] = {"cli_s": [], "cli_no_plots_s": [], "api_fit_s": [], "import_torch_s": [],
                                    "wine_s": [], "wine_no_plots_s": []}
    for _ in range(args.reps):
        res, _, err = run(contender("nnfit", spec))
        rows["api_fit_s"].append(res["seconds"] if res else float("nan"))
        _, wall, _ = run([sys.executable, "-c", "import torch"])
        rows["import_torch_s"].append(wall)
        for key, command in (("cli_s", cli), ("cli_no_plots_s", [*cli, "--no-plots"]),
                             ("wine_s", wine), ("wine_no_plots_s", [*wine, "--no-plots"])):
            _, wall, err = run(command)
            rows[key].append(wall)
    med = {k: statistics.median(v) for k, v in rows.items()}
    med["budget_s"] = 0.5 + 1.05 * med["api_fit_s"] + med["import_torch_s"]
    med["within_budget"] = med["cli_s"] <= med["budget_s"]
    med["plots_s"] = med["wine_s"] - med["wine_no_plots_s"]
    med["plots_within_budget"] = med["plots_s"] <= 1.0
    return {"spec": w, "median": med, "runs": rows}


def ingest_suite(args: argparse.Namespace, tmp: Path) -> dict:
    """CSV reading, nnfit against pandas, in interleaved fresh processes: a rows x 30 numeric
    CSV to a float32 training tensor (pandas.read_csv + torch.tensor), and mixed CSVs (20
    numeric and 5 text columns, some cells missing) to columns (pandas.read_csv alone): one
    whose text is categorical, one whose fifth text column is a distinct id per row."""
    rows = 5_000 if args.smoke else args.ingest_rows
    rng = np.random.default_rng(0)
    numeric = tmp / "ingest.csv"
    np.savetxt(numeric, rng.standard_normal((rows, 30)), delimiter=",", fmt="%.6g",
               header=",".join(f"c{i}" for i in range(30)), comments="")
    mixed = {"categorical": tmp / "mixed.csv", "with an id column": tmp / "mixed_ids.csv"}
    for label, path in mixed.items():
        mixed_csv(path, rows, ids=label != "categorical")
    jobs = {"nnfit_ingest": ("nnfit_ingest", numeric), "pandas_ingest": ("pandas_ingest", numeric)}
    for label, path in mixed.items():
        jobs[f"nnfit {label}"] = ("nnfit_mixed_ingest", path)
        jobs[f"pandas {label}"] = ("pandas_mixed_ingest", path)
    runs: dict[str, list[dict]] = {j: [] for j in jobs}
    for _ in range(args.reps):
        for j, (c, path) in jobs.items():
            res, _, err = run(contender(c, {"path": str(path)}))
            runs[j].append(res or {"error": err})
    med = {j: median_row(r) for j, r in runs.items()}
    pairs = [("nnfit_ingest", "pandas_ingest")] + [(f"nnfit {m}", f"pandas {m}") for m in mixed]
    for ours, theirs in pairs:
        a, b = med[ours].get("seconds"), med[theirs].get("seconds")
        if a and b:
            med[ours]["speedup_vs_pandas"] = b / a
    return {"rows": rows, "cols": 30, "median": {c: med[c] for c in pairs[0]}, "runs": runs,
            "mixed": {"rows": rows, "median": {j: med[j] for pair in pairs[1:] for j in pair}}}


def mixed_csv(path: Path, rows: int, ids: bool = False, seed: int = 0) -> None:
    """A CSV as tables come: 20 numeric columns (every fourth of integers), 5 text columns of
    3, 12, 100, 5,000 and 50,000 levels (with ``ids``, the last is a distinct id per row
    instead), and 0.5% of the cells missing in two numeric and two text columns. Written by
    pyarrow, which quotes the text."""
    import pyarrow as pa
    from pyarrow import csv as pa_csv

    rng = np.random.default_rng(seed)
    gaps = {"n1", "n5", "city", "word"}

    def column(name: str, values: np.ndarray) -> pa.Array:
        mask = rng.random(rows) < 0.005 if name in gaps else None
        return pa.array(values, mask=mask)

    cols = {f"n{i}": column(f"n{i}", rng.integers(0, 1000, rows) if i % 4 == 0
                            else rng.standard_normal(rows).round(4)) for i in range(20)}
    for name, levels in (("color", 3), ("month", 12), ("city", 100), ("code", 5_000), ("word", 50_000)):
        names = np.array([f"{name}{i}" for i in range(levels)])
        cols[name] = column(name, names[rng.integers(0, levels, rows)])
    if ids:
        cols["word"] = column("word", np.char.add("id", rng.permutation(rows).astype(str)))
    pa_csv.write_csv(pa.table(cols), path, pa_csv.WriteOptions(quoting_style="needed"))


def images_suite(args: argparse.Namespace, tmp: Path) -> dict:
    """PNG class-folder trees trained on by nnfit and by torchvision's ImageFolder + DataLoader
    (``images.py``): per-epoch seconds, the loader's share and held-out accuracy per workload,
    interleaved fresh processes. Each workload's folder is written once (batch sizes share it)."""
    sys.path.insert(0, str(HERE))
    import images

    workloads = images.SMOKE if args.smoke else {k: images.WORKLOADS[k] for k in args.image_workloads}
    data = images.SMOKE_DATA if args.smoke else images.DATA
    folders: dict[str, dict] = {}
    out = {}
    for wname, w in workloads.items():
        if w["data"] not in folders:
            folders[w["data"]] = images.make_folder(tmp / "images" / w["data"], **data[w["data"]])
        spec = {**data[w["data"]], **w, **folders[w["data"]], "device": args.device}
        out[wname] = _image_workload(args, wname, spec)
    return out


def _image_workload(args: argparse.Namespace, wname: str, spec: dict) -> dict:
    """One image workload: every contender ``--reps`` times, interleaved; medians and ratios."""
    # the peer's rows run with each of its DataLoader settings: torchvision_w0, torchvision_w2
    import images

    contenders = [c for c in images.CONTENDERS if c.split("_w")[0] in args.contenders]
    runs: dict[str, list[dict]] = {c: [] for c in contenders}
    for rep in range(args.reps):
        for c in contenders:
            res, _, err = run([sys.executable, str(HERE / "images.py"), c, json.dumps(spec)])
            runs[c].append(res or {"error": err})
            shown = (f"first epoch {res['first_epoch_s']:.2f} s, then {res['steady_epoch_s']:.2f} s, "
                     f"held-out acc {res['test_acc']:.4f}" if res else f"FAILED {err}")
            print(f"{wname} rep {rep + 1} {c}: {shown}", flush=True)
    med = {c: median_row(r) for c, r in runs.items()}
    ours = med.get("nnfit", {})
    for m in med.values():
        for which in ("first", "steady", "best"):
            if ours.get(f"{which}_epoch_s") and m.get(f"{which}_epoch_s"):
                m[f"nnfit_speedup_{which}"] = m[f"{which}_epoch_s"] / ours[f"{which}_epoch_s"]
        if m.get("loader_only_s") is not None and m.get("best_epoch_s"):
            m["loader_share"] = min(1.0, m["loader_only_s"] / m["best_epoch_s"])
    shim = any(r.get("op_schemas_defined") for c in contenders if c != "nnfit" for r in runs[c])
    return {"spec": {k: v for k, v in spec.items() if k not in ("train", "test")}, "median": med,
            "runs": runs, "torchvision_op_schemas_defined": shim}


def tables_suite(args: argparse.Namespace, tmp: Path) -> dict:
    """Accuracy on generated real tables against scikit-learn's baselines: ``tables.py`` in a
    fresh process, its rows scaled by ``--table-rows`` (2% with ``--smoke``)."""
    scale = 0.02 if args.smoke else args.table_rows
    p = subprocess.run([sys.executable, str(HERE / "tables.py"), "--rows", str(scale), "--out", str(tmp),
                        "--name", "tables"], capture_output=True, text=True, timeout=3600, cwd=HERE)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()
        return {"error": tail[-1] if tail else f"exit {p.returncode}"}
    return json.loads((tmp / "tables.json").read_text())


def _rows(medians: dict, cells: Callable[[dict], list[str]]) -> list[str]:
    """One Markdown table row per contender; a failed contender shows its error."""
    out = []
    for name, m in medians.items():
        body = [f"failed: {m['error']}", "", "", ""] if "error" in m else cells(m)
        out.append("| " + " | ".join([name, *body]) + " |")
    return out


def _workload(s: dict) -> str:
    """A training workload's data and model, in words."""
    if s.get("model") == "cnn":
        return f"{s['rows']:,} random 3x{s['size']}x{s['size']} images, CNN channels {s['channels']}"
    if s.get("model") == "lstm":
        lengths = (f"T={s['steps']}" if s["min_len"] == s["steps"]
                   else f"lengths {s['min_len']}..{s['steps']} (uniform)")
        return (f"{s['rows']:,} sequences, {lengths}, {s['features']} features, LSTM hidden "
                f"{s['hidden']}")
    return f"{s['rows']:,} rows x {s['features']} features"


def _ceiling_note(med: dict) -> list[str]:
    """nnfit's ratios to the step-only ceiling and the minimal loop, and what the ceiling is;
    nothing for a workload without a ceiling row."""
    ceiling = med.get("step_ceiling", {})
    if "nnfit_speedup" not in ceiling:
        return []
    ratios = {c: med[c] for c in ("step_ceiling", "minimal_loop") if "nnfit_speedup" in med.get(c, {})}
    names = {"step_ceiling": "the step-only ceiling", "minimal_loop": "the minimal loop"}
    said = " and ".join(f"{m['nnfit_speedup']:.2f}x {names[c]}" for c, m in ratios.items())
    paired = ", ".join(f"{m['nnfit_speedup_paired']:.2f}x" for m in ratios.values()
                       if "nnfit_speedup_paired" in m)
    return [f"nnfit: {said} (ratio of the medians" + (f"; median of the per-repetition ratios: {paired}"
            if paired else "") + "). `step_ceiling`: nnfit's own training step (the same model, fused "
            f"Adam stepped as nnfit steps it, {ceiling.get('threads', 0):.0f} CPU thread(s), as nnfit "
            "picks) on one fixed batch: no data order, gathering, preparation or checks. Its accuracy "
            "is that of a model fitted to one batch.", ""]


def _images_markdown(results: dict) -> list[str]:
    """The image-folder section: a summary row per workload (steady epochs, ratios, the
    loader's share, accuracy), then each workload's table with its first epochs."""
    lines = ["## Image folders: nnfit against torchvision ImageFolder + DataLoader", "",
             "Same CNN (`nnfit train FOLDER`'s defaults: channels 32,64, batch norm, Adam lr 3e-3), "
             "seed, batch and epochs, no augmentation; the held-out folder is scored after training. "
             "Steady epoch: the median of the epochs after the first; best: the fastest of them (what "
             "a busy machine disturbs least). First epoch: nnfit's includes reading and decoding every "
             "image once; torchvision decodes every image in every epoch. `speedup` = the peer's epoch "
             "time / nnfit's. `loader share`: one pass of the contender's batches without the model / "
             "its best epoch. Medians over the runs. Held-out accuracy is one seed's: the digits rows "
             "stop while the CNN is still learning, and on the 16x16 digits it varies with the shuffle "
             "order by about 0.1 (nnfit over four seeds: 0.65 to 0.81; a minimal loop on the same orders "
             "scored the same per seed): a gap within that is the order, not the loader.", ""]
    if any(r.get("torchvision_op_schemas_defined") for r in results.values()):
        lines += ["torchvision's C extension (a CUDA build) does not load next to this CPU torch: the "
                  "peer defined the schemas of `torchvision::nms`/`qnms` so its Python side imports; "
                  "the timed path never calls them.", ""]
    lines += ["| workload | steady epoch (s) nnfit / w0 / w2 | nnfit speedup vs w0 / w2 | best epoch (s) "
              "nnfit / w0 / w2 | speedup on best vs w0 / w2 | loader share nnfit / w0 / w2 | held-out "
              "accuracy nnfit / w0 / w2 |", "|---|---:|---:|---:|---:|---:|---:|"]
    names = ("nnfit", "torchvision_w0", "torchvision_w2")

    def cells(meds: list[dict], key: str, fmt: str) -> str:
        return " / ".join(fmt.format(m[key]) if key in m else "-" for m in meds)

    for wname, res in results.items():
        meds = [res["median"].get(c, {}) for c in names]
        lines.append(f"| {wname} | {cells(meds, 'steady_epoch_s', '{:.2f}')} | "
                     f"{cells(meds[1:], 'nnfit_speedup_steady', '{:.2f}x')} | "
                     f"{cells(meds, 'best_epoch_s', '{:.2f}')} | "
                     f"{cells(meds[1:], 'nnfit_speedup_best', '{:.2f}x')} | "
                     f"{cells(meds, 'loader_share', '{:.0%}')} | {cells(meds, 'test_acc', '{:.3f}')} |")
    for wname, res in results.items():
        lines += _image_workload_markdown(wname, res)
    return lines


def _image_workload_markdown(wname: str, res: dict) -> list[str]:
    """One image workload's table: first and steady epochs, loader pass, accuracy."""
    s = res["spec"]
    colour = "greyscale digit" if s.get("kind") == "digits" else "RGB stripe"
    lines = ["", f"### {wname}: {s['classes']} classes x {s['per_class']} {colour} PNGs of "
             f"{s['size']}x{s['size']} (held out: {s['test_per_class']} per class), CNN channels "
             f"{s['channels']}, batch {s['batch']}, lr {s['lr']:g}, {s['epochs']} epochs", ""]
    if s.get("kind") != "digits":
        lines += [f"Compute-bound on a CPU: the CNN's own forward and backward on {s['size']}x{s['size']} "
                  "RGB images take most of every epoch, so the loader, the part nnfit saves, is a "
                  "small share of it.", ""]
    lines += ["| contender | first epoch (s) | decode + setup (s) | steady / best epoch (s) | nnfit speedup "
              "first / steady / best | loader only (s) | loader share | held-out accuracy |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += _rows(res["median"], lambda m: [
        f"{m['first_epoch_s']:.2f}",
        f"{m['decode_and_setup_s']:.2f}" if "decode_and_setup_s" in m else "",
        f"{m['steady_epoch_s']:.2f} / {m['best_epoch_s']:.2f}",
        f"{m.get('nnfit_speedup_first', 1):.2f}x / {m.get('nnfit_speedup_steady', 1):.2f}x / "
        f"{m.get('nnfit_speedup_best', 1):.2f}x",
        f"{m['loader_only_s']:.2f}" if "loader_only_s" in m else "",
        f"{m['loader_share']:.0%}" if "loader_share" in m else "", f"{m['test_acc']:.4f}"])
    return lines


def markdown(results: dict) -> str:
    lines = [f"# nnfit benchmarks ({results['device']}, {results['machine']})", "",
             f"Medians of {results['reps']} interleaved runs, each in a fresh process. "
             "`nnfit speedup` = nnfit's samples/s divided by the contender's.", ""]
    if results.get("skipped"):
        lines += ["Skipped: " + ", ".join(f"{c} ({why})" for c, why in results["skipped"].items())
                  + "; `make bench` installs the peers (the `bench` extra).", ""]
    if "load_1min" in results:
        load = results["load_1min"]
        lines += [f"1-minute load average before the runs: {load['start']:.2f} at the start, up to "
                  f"{load['max']:.2f}, {load['end']:.2f} at the end"
                  + (" (a busy machine: timings disturbed)." if load["max"] > 1.5 else "."), ""]
    for wname, wres in results["training"].items():
        s = wres["spec"]
        padded = s.get("model") == "lstm"
        lines += [f"## {wname}: {_workload(s)}, batch {s['batch']}, {s['epochs']} epoch(s)", "",
                  "| contender | samples/s | nnfit speedup | val accuracy | peak RSS MB |"
                  + (" padding share |" if padded else ""),
                  "|---|---:|---:|---:|---:|" + ("---:|" if padded else "")]
        lines += _rows(wres["median"], lambda m: [
            f"{m['samples_per_s']:,.0f}", f"{m.get('nnfit_speedup', 1):.2f}x",
            f"{m['val_acc']:.4f}", f"{m['peak_rss_mb']:.0f}"]
            + ([f"{m['padding_share']:.1%}"] if "padding_share" in m else []))
        lines += ["", *_ceiling_note(wres["median"])]
    if "images" in results:
        lines += [*_images_markdown(results["images"]), ""]
    if "cli" in results:
        m = results["cli"]["median"]
        lines += ["## CLI end to end (CSV read, 5 epochs, run directory written)", "",
                  "| nnfit train (s) | API fit() in a fresh process (s) | `import torch` (s) | "
                  "budget 0.5 + 1.05 x API + import (s) | within |", "|---:|---:|---:|---:|---|",
                  f"| {m['cli_s']:.2f} | {m['api_fit_s']:.2f} | {m['import_torch_s']:.2f} | "
                  f"{m['budget_s']:.2f} | {m['within_budget']} |", "",
                  "| --no-plots (s) | wine (s) | wine --no-plots (s) | plots cost (s, budget 1) | within |",
                  "|---:|---:|---:|---:|---|",
                  f"| {m['cli_no_plots_s']:.2f} | {m['wine_s']:.2f} | {m['wine_no_plots_s']:.2f} | "
                  f"{m['plots_s']:.2f} | {m['plots_within_budget']} |", ""]
    if "ingest" in results:
        ing = results["ingest"]
        lines += [f"## CSV ingest: {ing['rows']:,} x {ing['cols']} floats to a float32 tensor", "",
                  "| reader | seconds | peak extra RSS MB | x final tensor | speedup vs pandas |",
                  "|---|---:|---:|---:|---:|"]
        lines += _rows(ing["median"], lambda m: [
            f"{m['seconds']:.2f}", f"{m['extra_rss_mb']:.0f}", f"{m['extra_rss_mb'] / m['tensor_mb']:.2f}",
            f"{m.get('speedup_vs_pandas', 1):.2f}x"])
    if "ingest" in results and "mixed" in results["ingest"]:
        mix = results["ingest"]["mixed"]
        lines += ["", f"## Mixed CSV ingest: {mix['rows']:,} rows, 20 numeric + 5 text columns, some cells "
                  "missing, to columns (nnfit: float32 block, text as codes and strings; pandas: a "
                  "DataFrame)", "",
                  "| reader | seconds | peak extra RSS MB | time / pandas |", "|---|---:|---:|---:|"]
        lines += _rows(mix["median"], lambda m: [
            f"{m['seconds']:.2f}", f"{m['extra_rss_mb']:.0f}", f"{1 / m.get('speedup_vs_pandas', 1):.2f}"])
    if "tables" in results:
        sys.path.insert(0, str(HERE))  # benchmarks/, also when this file is loaded by path
        from tables import markdown as tables_markdown

        lines += ["", f"## Real tables: failed: {results['tables']['error']}" if "error" in results["tables"]
                  else tables_markdown(results["tables"], heading="##")]
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.path.insert(0, str(HERE))
    from images import WORKLOADS as IMAGE_WORKLOADS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", "--repeats", type=int, default=3,
                    help="interleaved repetitions of every contender; medians are reported (default 3)")
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--contenders", nargs="+", default=PEERS, choices=PEERS)
    ap.add_argument("--image-workloads", nargs="+", default=list(IMAGE_WORKLOADS),
                    choices=list(IMAGE_WORKLOADS),
                    help="the image-folder suite's workloads (images.py WORKLOADS; default all)")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["training", "cli", "ingest", "tables", "images"])
    ap.add_argument("--table-rows", type=float, default=1.0,
                    help="scale of the real-table suite's rows (tables.py --rows; default 1)")
    ap.add_argument("--ingest-rows", type=int, default=1_000_000,
                    help="rows of the ingest suite's CSVs (default 1,000,000; fewer for a quick check)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one rep: does everything run")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--name", default=None, help="results file stem (default: the device)")
    args = ap.parse_args()
    if args.smoke:
        args.reps = 1
    skipped = not_installed(args.contenders)
    args.contenders = [c for c in args.contenders if c not in skipped]
    if skipped:
        print("skipping " + ", ".join(f"{c} ({why})" for c, why in skipped.items()), flush=True)
    results: dict = {"device": args.device, "reps": args.reps, "smoke": args.smoke,
                     "machine": (f"{platform.machine()}, {os.cpu_count()} CPUs, "
                                 f"Python {platform.python_version()}"),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S"), "skipped": skipped}
    with tempfile.TemporaryDirectory() as d:
        if "training" not in args.skip:
            results["training"] = training_suite(args)
        if "cli" not in args.skip:
            results["cli"] = cli_suite(args, Path(d))
        if "ingest" not in args.skip:
            results["ingest"] = ingest_suite(args, Path(d))
        if "tables" not in args.skip:
            results["tables"] = tables_suite(args, Path(d))
        if "images" not in args.skip and {"nnfit", *IMAGE_PEERS} & set(args.contenders):
            results["images"] = images_suite(args, Path(d))
    results.setdefault("training", {})
    if LOADS:
        results["load_1min"] = {"start": LOADS[0], "max": max(LOADS), "end": os.getloadavg()[0]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or (("smoke-" if args.smoke else "") + args.device)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str))
    (out / f"{stem}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
