"""What does ``--log tensorboard`` cost the CPU training loop? (issue 11: within 3%)

The training section's CPU loop (``mlp-b32`` of bench.py: 100,000 x 32 features, 10 classes,
batch 32, 2 epochs, so 6,250 steps and 125 logged step losses at the default ``log_every`` 50)
trained into a run directory with and without TensorBoard logging, interleaved (A B A B ...)
in one process after a warm-up, ``--reps`` times; the medians and their ratio go to
``benchmarks/results/log-sinks.json`` and ``.md``. Both write the same run directory (history,
checkpoints, final model): the difference is the sink alone.

    python benchmarks/log_sinks.py                       # the full workload, 5 reps
    python benchmarks/log_sinks.py --rows 20000 --reps 7 # scaled down
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import nnfit

HERE = Path(__file__).resolve().parent


def timed_fit(x: np.ndarray, y: np.ndarray, run: Path, log: tuple[str, ...], epochs: int) -> float:
    """Seconds of one fit into ``run`` with the sinks ``log`` (default interval)."""
    torch.manual_seed(0)
    t0 = time.perf_counter()
    nnfit.fit({"name": "mlp", "hidden": [64, 64]}, x, y, run_dir=run, epochs=epochs, batch_size=32,
              val_split=0, patience=0, quiet=True, device="cpu", plots=False, log=log)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    g = np.random.default_rng(0)
    x = g.normal(size=(args.rows, 32)).astype("float32")
    y = (x[:, :10].argmax(1)).astype("int64")
    rows: dict[str, list[float]] = {"none": [], "tensorboard": []}
    with tempfile.TemporaryDirectory() as d:
        timed_fit(x[:2000], y[:2000], Path(d) / "warm", ("tensorboard",), 1)  # imports, first-call costs
        for rep in range(args.reps):
            for name, log in (("none", ()), ("tensorboard", ("tensorboard",))):
                rows[name].append(timed_fit(x, y, Path(d) / f"{name}-{rep}", log, args.epochs))
            last = {k: v[-1] for k, v in rows.items()}
            print(f"rep {rep + 1}: none {last['none']:.2f} s, tensorboard {last['tensorboard']:.2f} s",
                  flush=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    steps = args.epochs * -(-args.rows // 32)
    machine = f"{platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}"
    result = {"rows": args.rows, "epochs": args.epochs, "steps": steps, "reps": args.reps,
              "median_s": med, "ratio": med["tensorboard"] / med["none"], "runs": rows,
              "machine": machine,
              "threads": torch.get_num_threads(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    md = "\n".join([
        f"# --log tensorboard on the CPU loop ({args.rows:,} x 32, batch 32, {args.epochs} epochs, "
        f"{steps:,} steps, log_every 50)", "",
        f"Medians of {args.reps} interleaved runs in one process ({result['machine']}).", "",
        "| no logging (s) | --log tensorboard (s) | ratio | within 3% |", "|---:|---:|---:|---|",
        f"| {med['none']:.3f} | {med['tensorboard']:.3f} | {result['ratio']:.3f} | "
        f"{result['ratio'] <= 1.03} |", ""])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "log-sinks.json").write_text(json.dumps(result, indent=1))
    (out / "log-sinks.md").write_text(md)
    print(md)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
