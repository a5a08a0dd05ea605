"""Many models at once (issue 12): one stacked sweep against the same members run one after
another, in one invocation, same data and epochs.

In process (``nnfit.sweep`` against ``nnfit.fit`` per member, both writing their run
directories without plots, 2 CPU threads):

* the benchmark MLP 32-128-128-10, batch 128: 8 sequential runs vs one K=8 seed sweep (goal >= 2.5x);
* a 32-32-32-10 MLP, batch 128: 32 sequential runs vs one K=32 seed sweep (goal >= 6x);

whole processes: 8 ``nnfit train`` processes vs one ``nnfit sweep --seeds 0-7`` (goal >= 4x),
with each process's peak RSS. Results go to ``benchmarks/results/sweep.json`` and ``.md``.

    python benchmarks/sweep.py --name cpu-issue12-sweep   # the full workload
    python benchmarks/sweep.py --rows 4000     # scaled down (the test suite's smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import nnfit

HERE = Path(__file__).resolve().parent
# Peak RSS as the kernel's VmHWM: getrusage's ru_maxrss survives exec, so a child forked from
# this process (grown by the in-process runs) would report this process's peak instead.
WRAP = ("import sys; from nnfit.cli import main; rc = main(sys.argv[1:]); "
        "hwm = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]; "
        "print('MAXRSS', hwm, file=sys.stderr); sys.exit(rc)")


def data(rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 32)).astype(np.float32)
    w = rng.normal(size=(32, 10)).astype(np.float32)
    return x, (x @ w + rng.normal(size=(rows, 10))).argmax(1)


def in_process(hidden: list[int], k: int, x: np.ndarray, y: np.ndarray, epochs: int, tmp: Path,
               device: str = "cpu") -> dict:
    """Seconds of ``k`` sequential fits and of one K=k sweep of the same members."""
    common = dict(epochs=epochs, batch_size=128, patience=0, quiet=True, device=device, plots=False)
    spec = {"name": "mlp", "hidden": hidden}
    t0 = time.perf_counter()
    for s in range(k):
        nnfit.fit(spec, x, y, run_dir=tmp / f"seq-{len(hidden)}-{hidden[0]}-{s}", seed=s, **common)
    sequential = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = nnfit.sweep(spec, x, y, out=tmp / f"sweep-{hidden[0]}-{k}", seeds=f"0-{k - 1}", **common)
    swept = time.perf_counter() - t0
    assert all(result.stacked)
    return {"model": f"32-{'-'.join(map(str, hidden))}-10", "members": k, "device": device,
            "sequential_s": sequential, "sweep_s": swept, "speedup": sequential / swept}


def processes(x: np.ndarray, y: np.ndarray, epochs: int, tmp: Path, k: int = 8) -> dict:
    """Wall time and peak RSS of ``k`` ``nnfit train`` processes and one ``nnfit sweep``."""
    csv = tmp / "data.csv"
    header = ",".join([f"f{i}" for i in range(x.shape[1])] + ["label"])
    np.savetxt(csv, np.column_stack([x, y]), delimiter=",", header=header, comments="", fmt="%.6g")
    flags = ["--target", "label", "--hidden", "128,128", "--epochs", str(epochs), "--batch-size", "128",
             "--patience", "0", "--no-plots", "--quiet", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}

    def run(args: list[str]) -> int:
        p = subprocess.run([sys.executable, "-c", WRAP, *args], env=env, capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(p.stderr[-2000:])
        return int(p.stderr.rsplit("MAXRSS", 1)[1].split()[0])

    t0 = time.perf_counter()
    rss_train = max(run(["train", str(csv), *flags, "--seed", str(s), "--out", str(tmp / f"p{s}")])
                    for s in range(k))
    trains = time.perf_counter() - t0
    t0 = time.perf_counter()
    rss_sweep = run(["sweep", str(csv), *flags, "--seeds", f"0-{k - 1}", "--out", str(tmp / "psweep")])
    swept = time.perf_counter() - t0
    return {"members": k, "train_processes_s": trains, "sweep_process_s": swept, "speedup": trains / swept,
            "peak_rss_train_mb": rss_train / 1024, "peak_rss_sweep_mb": rss_sweep / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)  # bench.py's MLP workload: 100k x 32
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--name", default="sweep", help="the results' file name (NAME.json, NAME.md)")
    ap.add_argument("--no-processes", action="store_true", help="skip the whole-process comparison")
    args = ap.parse_args()
    torch.set_num_threads(2)
    x, y = data(args.rows)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # warm-up: the first optimizer of a process imports torch._dynamo (~1 s), charged to neither side
        nnfit.fit({"name": "mlp", "hidden": [8]}, x[:256], y[:256], epochs=1, quiet=True, device="cpu")
        rows.append(in_process([128, 128], 8, x, y, args.epochs, tmp))
        rows.append(in_process([32, 32], 32, x, y, args.epochs, tmp))
        if torch.cuda.is_available():  # a lent GPU: 64 sequential CUDA runs vs one K=64 sweep
            rows.append(in_process([128, 128], 64, x, y, args.epochs, tmp, device="cuda"))
        proc = None if args.no_processes else processes(x, y, args.epochs, tmp)
    report = {"rows": args.rows, "epochs": args.epochs, "batch_size": 128, "in_process": rows,
              "processes": proc, "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    title = f"# Sweeps vs sequential runs ({args.rows} rows x 32, {args.epochs} epochs, batch 128, 2 threads)"
    lines = [title, "",
             "| workload | sequential s | sweep s | speedup |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['members']} x {r['model']} (in process, {r['device']}) | "
                     f"{r['sequential_s']:.2f} | "
                     f"{r['sweep_s']:.2f} | {r['speedup']:.2f}x |")
    if proc:
        lines.append(f"| 8 x 32-128-128-10, `nnfit train` processes vs `nnfit sweep` | "
                     f"{proc['train_processes_s']:.2f} | {proc['sweep_process_s']:.2f} | "
                     f"{proc['speedup']:.2f}x |")
        lines += ["", f"Peak RSS: one `nnfit train` {proc['peak_rss_train_mb']:.0f} MB, "
                      f"`nnfit sweep` of 8 {proc['peak_rss_sweep_mb']:.0f} MB."]
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
