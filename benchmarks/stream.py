"""Streaming data larger than memory (issue 13): a generated Parquet file of 3,000,000 x 32
float32 features (+ a binary target, ~400 MB) and one twice as large, each trained on by
``nnfit train FILE --stream`` in its own process, its peak RSS (the kernel's VmHWM) and wall
time recorded; and the read throughput of the stream alone, in this process: rows/s of an
epoch's batches of 32 float columns, shuffled and in order, with no training.

Goals: >= 2M rows/s read on 2 cores, peak RSS < 600 MB, and the 2x file's peak within 10% of
the 1x file's. For scale, the 1x file is also trained on read whole (``--no-stream``).

    python benchmarks/stream.py --name cpu-issue13-stream   # the full workload (~2 GB of disk in TMPDIR)
    python benchmarks/stream.py --rows 20000 --group-rows 2000   # scaled down (the suite's smoke run)
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
import pyarrow as pa
import pyarrow.parquet as pq
import torch

HERE = Path(__file__).resolve().parent
FEATURES = 32
GROUP_ROWS = 65536  # rows per row group, as nnfit converts a large CSV
# The CLI in a fresh process, its peak RSS as the kernel's VmHWM (ru_maxrss survives exec).
WRAP = ("import sys; from nnfit.cli import main; rc = main(sys.argv[1:]); "
        "hwm = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]; "
        "print('MAXRSS', hwm, file=sys.stderr); sys.exit(rc)")


def write_file(path: Path, rows: int, seed: int = 0, group: int = GROUP_ROWS) -> Path:
    """``rows`` x 32 float32 features and a binary target (a noisy linear rule), written a few
    row groups at a time so the generator never holds the file."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=FEATURES).astype(np.float32)
    schema = pa.schema([(f"f{j}", pa.float32()) for j in range(FEATURES)] + [("y", pa.int64())])
    with pq.ParquetWriter(path, schema, use_dictionary=False) as writer:
        for start in range(0, rows, 4 * group):
            n = min(4 * group, rows - start)
            x = rng.normal(size=(n, FEATURES)).astype(np.float32)
            y = (x @ w + rng.normal(size=n).astype(np.float32) > 0).astype(np.int64)
            writer.write_table(pa.table([*x.T, y], schema=schema), row_group_size=group)
    return path


def read_throughput(path: Path, threads: int, batch: int = 1024) -> dict:
    """Seconds to prepare the stream (the schema's sample, the statistics pass) and rows/s of a
    shuffled epoch of training batches and of an in-order pass (evaluation batches)."""
    from nnfit.config import TrainConfig
    from nnfit.data.stream_fit import prepare_stream

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        data = prepare_stream(path, target="y", config=TrainConfig(quiet=True, device="cpu"))
        prepared = time.perf_counter() - t0
        out = {"threads": threads, "prepare_s": prepared, "train_rows": data.train.length}
        for name, kw, size in (("shuffled", {"shuffle": True, "generator": torch.Generator()}, batch),
                               ("in_order", {}, 4096)):
            t0, rows, batches = time.perf_counter(), 0, 0
            for _, y in data.train.batches(size, **kw):
                rows, batches = rows + len(y), batches + 1
            seconds = time.perf_counter() - t0
            out[name] = {"batch_size": size, "batches": batches, "rows": rows, "seconds": seconds,
                         "rows_per_s": rows / seconds}
    finally:
        torch.set_num_threads(before)
    return out


def train(path: Path, out: Path, stream: bool = True) -> dict:
    """``nnfit train`` on ``path`` in a fresh process: wall seconds and peak RSS."""
    flags = ["--target", "y", "--epochs", "1", "--batch-size", "1024", "--hidden", "64",
             "--quiet", "--device", "cpu", "--out", str(out), "--stream" if stream else "--no-stream"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", WRAP, "train", str(path), *flags], env=env,
                       capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    metrics = json.loads((out / "metrics.json").read_text())
    return {"rows": pq.read_metadata(path).num_rows, "file_mb": path.stat().st_size / 2**20, "stream": stream,
            "seconds": seconds, "peak_rss_mb": int(p.stderr.rsplit("MAXRSS", 1)[1].split()[0]) / 1024,
            "val_accuracy": metrics["accuracy"]}


def markdown(report: dict) -> str:
    rows, runs, reads = report["rows"], report["train"], report["read"]
    lines = [f"# Streaming a Parquet file larger than memory ({rows:,} x {FEATURES} float32 and 2x that)", "",
             f"{report['cores']} CPU cores ({report['cpu']}), torch {report['torch']}, pyarrow "
             f"{report['pyarrow']}; row groups of {report['group_rows']:,} rows; 1-minute load average "
             f"{report['load_1min'][0]:.2f} before, {report['load_1min'][1]:.2f} after.", "",
             "## Read throughput of the stream alone (no training)", "",
             "Training rows (80%: validation holds out whole row groups), read, converted, standardised "
             "and batched; shuffled through the 65,536-row buffer in batches of 1,024, and in order in "
             "evaluation batches of 4,096.", "",
             "| torch threads | prepare s | shuffled rows/s | in-order rows/s | batches (shuffled) |",
             "|---|---:|---:|---:|---:|"]
    for r in reads:
        lines.append(f"| {r['threads']} | {r['prepare_s']:.2f} | {r['shuffled']['rows_per_s']:,.0f} | "
                     f"{r['in_order']['rows_per_s']:,.0f} | {r['shuffled']['batches']:,} |")
    lines += ["", "`prepare` is the schema's sample (262,144 rows) and one streaming pass over every row "
              "group (standardisation statistics, classes, gaps).", "",
              "## `nnfit train FILE --stream --target y --epochs 1 --batch-size 1024 --hidden 64`", "",
              "| file | MB | read | wall s | peak RSS MB | val accuracy |", "|---|---:|---|---:|---:|---:|"]
    for r in runs:
        read = "streamed" if r["stream"] else "whole"
        lines.append(f"| {r['rows']:,} rows | {r['file_mb']:.0f} | {read} | {r['seconds']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['val_accuracy']:.4f} |")
    streamed = [r for r in runs if r["stream"]]
    if len(streamed) == 2:
        a, b = streamed
        lines += ["", f"The 2x file's peak is {b['peak_rss_mb'] / a['peak_rss_mb']:.3f}x the 1x file's "
                      f"({b['peak_rss_mb'] - a['peak_rss_mb']:+.0f} MB); its wall time "
                      f"{b['seconds'] / a['seconds']:.2f}x."]
    best = max(r["shuffled"]["rows_per_s"] for r in reads)
    peak = max(r["peak_rss_mb"] for r in streamed)
    lines += [f"Goals: read >= 2M rows/s ({best / 1e6:.2f}M), peak < 600 MB ({peak:.0f} MB), 2x file within "
              "10% of the 1x file's peak."]
    return "\n".join(lines) + "\n"


def load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--group-rows", type=int, default=GROUP_ROWS, help="rows per row group")
    ap.add_argument("--name", default="stream", help="the results' file name (NAME.json, NAME.md)")
    ap.add_argument("--no-whole", action="store_true", help="skip the --no-stream run for scale")
    args = ap.parse_args()
    before = load()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        one = write_file(tmp / "x1.parquet", args.rows, seed=0, group=args.group_rows)
        two = write_file(tmp / "x2.parquet", 2 * args.rows, seed=1, group=args.group_rows)
        reads = [read_throughput(one, threads) for threads in (1, 2)]
        runs = [train(one, tmp / "r1"), train(two, tmp / "r2")]
        if not args.no_whole:
            runs.append(train(one, tmp / "r1-whole", stream=False))
    report = {"rows": args.rows, "features": FEATURES, "group_rows": args.group_rows, "read": reads,
              "train": runs, "load_1min": [before, load()], "torch": torch.__version__,
              "pyarrow": pa.__version__, "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
