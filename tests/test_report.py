"""The one-file HTML report: ``nnfit report RUN``, ``nnfit train --report``, ``fit(report=True)``.

One small CSV run (column names and class labels that are HTML) is trained once per module;
each test copies it when it changes files. The browser test is tests/test_report_browser.py.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nnfit
from helpers import cli, one_error
from nnfit.io.layout import RUN_LAYOUT, clear_run
from nnfit.io.lock import hold_run_dir
from nnfit.report import MAX_BYTES, write_report

ODD_COLUMN = 'a<b>&"c'
ODD_LABELS = ["<script>x</script>", "b&b"]


def _write_csv(path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    labels = np.where(x[:, 0] + x[:, 1] > 0, ODD_LABELS[0], ODD_LABELS[1])
    lines = [f'"{ODD_COLUMN.replace(chr(34), chr(34) * 2)}",b,c,y']
    lines += [f"{a:.4f},{b:.4f},{c:.4f},{lab}" for (a, b, c), lab in zip(x, labels, strict=True)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished `nnfit train --report` run with a test split."""
    d = tmp_path_factory.mktemp("report")
    _write_csv(d / "data.csv")
    status = nnfit.cli.main(["train", str(d / "data.csv"), "--target", "y", "--epochs", "4",
                             "--test-split", "0.25", "--no-plots", "--quiet", "--report",
                             "--out", str(d / "RUN")])
    assert status == 0
    return d / "RUN"


@pytest.fixture
def copy(run, tmp_path) -> Path:
    shutil.copytree(run, tmp_path / "RUN")
    return tmp_path / "RUN"


def _png(width: int, height: int, noise: bool = False) -> bytes:
    if noise:
        pixels = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
    else:
        image = Image.new("RGB", (width, height), (40, 90, 200))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def assert_self_contained(page: str) -> None:
    for outside in ("http://", "https://", 'src="/', "src='/", "<link", "<script", "url("):
        assert outside not in page, outside
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page))


def test_train_report_is_self_contained_escaped_and_holds_the_runs_numbers(run) -> None:
    page = (run / "report.html").read_text()
    assert_self_contained(page)
    assert len(page.encode()) <= MAX_BYTES
    test = json.loads((run / "test_metrics.json").read_text())
    assert f'data-split="test" data-metric="accuracy">{test["accuracy"]:.4f}<' in page
    config = json.loads((run / "config.json").read_text())
    for section in ("Settings", "Data schema", "Model", "Early stopping", "Timings",
                    "Resumes and checkpoints", "Environment", "Final metrics"):
        assert f"<h2>{section}</h2>" in page
    assert f"patience = {config['patience']}" in page and "samples/s" in page
    assert f"torch</td><td>{__import__('torch').__version__}" in page
    # user strings are escaped everywhere: the column name, class labels, paths
    assert ODD_COLUMN not in page and ODD_LABELS[0] not in page and "b&b" not in page
    assert "a&lt;b&gt;&amp;&quot;c" in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "Linear" in page and "Total params" in page


def test_report_embeds_the_plots_in_order_downscaled_to_fit_and_fast(copy, capsys) -> None:
    plots = copy / "plots"
    plots.mkdir()
    (plots / "zz_custom.png").write_bytes(_png(50, 40))
    (plots / "confusion.png").write_bytes(_png(60, 40))
    (plots / "loss.png").write_bytes(_png(1200, 1200, noise=True))  # ~4 MB: must shrink
    t0 = time.perf_counter()
    out = write_report(copy)
    elapsed = time.perf_counter() - t0
    page = out.read_text()
    assert elapsed <= 1.0, elapsed
    assert_self_contained(page)
    assert len(page.encode()) <= MAX_BYTES
    assert re.findall(r'alt="([^"]+)"', page) == ["loss.png", "confusion.png", "zz_custom.png"]
    assert page.count('src="data:image/png;base64,') == 3
    # and the CLI says where it wrote, exit 0
    status, stdout, _ = cli(capsys, "report", copy)
    assert status == 0 and stdout.strip() == f"report written to {copy / 'report.html'}"


def test_bad_input_is_one_line_and_exit_2(copy, tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert "not an nnfit run directory" in one_error(capsys, "report", tmp_path / "empty")
    assert "not an nnfit run directory" in one_error(capsys, "report", tmp_path / "missing")
    model = json.loads((copy / "model.json").read_text())
    (copy / "model.json").write_text(json.dumps({**model, "nnfit_version": "0.99.0"}))
    line = one_error(capsys, "report", copy)
    assert "model.json: written by nnfit 0.99.0, newer than this nnfit" in line
    (copy / "model.json").write_text(json.dumps(model))
    (copy / "history.csv").write_text("epoch,train_loss\n1,abc\n")
    assert one_error(capsys, "report", copy).endswith("history.csv: not a history file "
                                                      "(one row of numbers per epoch)")
    (copy / "history.csv").unlink()
    assert one_error(capsys, "report", copy).endswith("history.csv: not found")
    (copy / "model.json").write_text("{garbled")
    assert one_error(capsys, "report", copy).endswith("model.json: not valid JSON")
    (copy / "model.json").unlink()
    assert "model.json: not found (the run has not finished" in one_error(capsys, "report", copy)


def test_a_garbled_plot_is_refused_and_the_old_report_stays(copy, capsys) -> None:
    before = (copy / "report.html").read_bytes()
    (copy / "plots").mkdir()
    (copy / "plots" / "loss.png").write_bytes(b"not a png")
    assert one_error(capsys, "report", copy).endswith("loss.png: not a PNG image")
    assert (copy / "report.html").read_bytes() == before
    assert not [p for p in copy.iterdir() if p.name.startswith(".")]  # no temporary left


def test_report_refuses_while_a_training_holds_the_lock(copy, capsys) -> None:
    held, release = threading.Event(), threading.Event()

    def trainer() -> None:
        with hold_run_dir(copy):
            held.set()
            release.wait(60)

    t = threading.Thread(target=trainer)
    t.start()
    try:
        assert held.wait(60)
        assert one_error(capsys, "report", copy).endswith("is in use by another thread of this "
                                                          f"process (pid {__import__('os').getpid()})")
    finally:
        release.set()
        t.join(60)


def test_fit_report_true_records_and_shows_the_resume_history(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (x[:, 0] > 0).astype(int)
    run = tmp_path / "RUN"
    nnfit.fit("mlp", x, y, epochs=2, quiet=True, patience=0, plots=False, run_dir=run)
    assert not (run / "report.html").exists() and not (run / "resumes.json").exists()
    nnfit.fit("mlp", x, y, epochs=3, quiet=True, patience=0, plots=False, run_dir=run, resume=run,
              report=True)
    resumes = json.loads((run / "resumes.json").read_text())
    assert [(r["epoch"], r["step"], r["batch"]) for r in resumes] == [(2, 4, 0)]
    page = (run / "report.html").read_text()
    assert "<p>Resumed 1 time.</p>" in page and '<span id="stopped-at">3</span>' in page
    assert_self_contained(page)


def test_the_report_and_resume_record_are_run_files_that_overwrite_clears(copy) -> None:
    assert "report.html" in RUN_LAYOUT and "resumes.json" in RUN_LAYOUT
    (copy / "resumes.json").write_text("[]")
    removed = clear_run(copy)
    assert {"report.html", "resumes.json"} <= set(removed)
