"""The benchmark suite runs end to end at tiny sizes and writes well-formed results.

Only that each contender runs and the JSON has its fields: no timing is asserted here. The
peer frameworks are optional (``make bench`` installs them): those installed run, the others
are listed as skipped.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"

pytestmark = pytest.mark.slow


def test_bench_smoke(tmp_path):
    p = subprocess.run([sys.executable, str(BENCH), "--smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    results = json.loads((tmp_path / "smoke-cpu.json").read_text())
    med = results["training"]["smoke"]["median"]
    peers = {"lightning", "skorch", "keras"}
    missing = {p for p in peers if importlib.util.find_spec(p) is None}
    assert set(med) == {"nnfit", "minimal_loop", "dataloader_loop"} | (peers - missing)
    assert results["skipped"] == {p: "not installed" for p in missing}
    for name in missing:
        assert f"{name} (not installed)" in p.stdout
    for name, row in med.items():
        assert "error" not in row, (name, row)
        assert row["samples_per_s"] > 0 and 0.0 <= row["val_acc"] <= 1.0 and row["peak_rss_mb"] > 0
    cli = results["cli"]["median"]
    assert cli["cli_s"] > 0 and cli["api_fit_s"] > 0 and cli["import_torch_s"] > 0
    ingest = results["ingest"]["median"]
    assert ingest["nnfit_ingest"]["tensor_mb"] == pytest.approx(ingest["pandas_ingest"]["tensor_mb"])
    assert "| nnfit |" in (tmp_path / "smoke-cpu.md").read_text()
