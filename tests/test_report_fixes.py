"""The report's fixes after review and attack (issue 11): settings of a data-file run, the worst
examples, wide plots, files that are not the run's own, oversized images, garbled epochs and
fields, stale plots, and the resume record of a resume that never trained.

One small CSV run with plots (class labels that are HTML) is trained once per module; each
test that changes files works on a copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

import nnfit
from helpers import one_error
from nnfit.config import effective_settings
from nnfit.errors import NnfitError, NnfitWarning
from nnfit.report import write_report

LABELS = ["<b>yes</b>", "no&no"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished `nnfit train DATA.csv --report` run with its plots (worst.csv included)."""
    d = tmp_path_factory.mktemp("fixes")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    labels = np.where(x[:, 0] + 0.5 * rng.normal(size=120) > 0, LABELS[0], LABELS[1])
    lines = ["a,b,c,y"] + [f"{a:.4f},{b:.4f},{c:.4f},{lab}" for (a, b, c), lab in zip(x, labels, strict=True)]
    (d / "data.csv").write_text("\n".join(lines) + "\n")
    status = nnfit.cli.main(["train", str(d / "data.csv"), "--target", "y", "--epochs", "3",
                             "--quiet", "--report", "--out", str(d / "RUN")])
    assert status == 0
    return d / "RUN"


@pytest.fixture
def copy(run, tmp_path) -> Path:
    shutil.copytree(run, tmp_path / "RUN", symlinks=True)
    return tmp_path / "RUN"


def _section(page: str, slug: str) -> str:
    return re.search(rf'<section id="{slug}">(.*?)</section>', page, re.S).group(1)


def _png(width: int, height: int, noise: bool = False) -> bytes:
    """A grey PNG of ``width`` x ``height`` made by hand (a blank one row by row, so no image
    of that size is ever in memory; ``noise``: random pixels, which do not compress)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z = zlib.compressobj(9)
    if noise:
        pixels = np.random.default_rng(0).integers(0, 256, (height, width + 1), dtype=np.uint8)
        pixels[:, 0] = 0  # each row's filter: none
        data = z.compress(pixels.tobytes()) + z.flush()
    else:
        data = b"".join(z.compress(b"\0" * (width + 1)) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


# ----------------------------------------------------------------- review #5, #6, #7
def test_a_data_file_run_shows_its_file_not_the_bundled_dataset_default(run) -> None:
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "breast_cancer" and config["data"].endswith("data.csv")  # as recorded
    settings = _section((run / "report.html").read_text(), "settings")
    assert "data = " in settings and "data.csv" in settings and "dataset = " not in settings
    assert "dataset" not in effective_settings(config)
    bundled = {**config, "data": None, "dataset": "wine"}
    assert effective_settings(bundled) == bundled  # a bundled dataset's run names it


def test_the_worst_examples_table_and_image_are_in_the_report(copy) -> None:
    worst = (copy / "plots" / "worst.csv").read_text().splitlines()
    page = (copy / "report.html").read_text()
    section = _section(page, "worst-examples")
    assert "<h2>Worst examples</h2>" in page and "<th>row</th>" in section
    first = worst[1].split(",")
    assert re.search(r"<tr><td[^>]*>(\d+)</td>", section).group(1) == first[0]  # worst first
    assert section.count("<tr>") == min(10, len(worst) - 1) + 1  # the top rows and the header
    assert "&lt;b&gt;yes&lt;/b&gt;" in section and "no&amp;no" in section and "<b>yes" not in page
    # worst.png (image data) is shown here, beside its table, not among the other plots
    (copy / "plots" / "worst.png").write_bytes(_png(920, 750))
    page = write_report(copy).read_text()
    assert 'alt="worst.png"' in _section(page, "worst-examples")
    assert 'alt="worst.png"' not in _section(page, "plots")


def test_a_wide_plot_gets_a_row_of_its_own(run) -> None:
    page = (run / "report.html").read_text()
    figures = dict(re.findall(r'<figure([^>]*)><img alt="([^"]+)"', page)[i][::-1]
                   for i in range(page.count("<figure")))
    assert figures["confusion.png"] == ' class="wide"'  # 920 px: two panels, counts legible
    assert figures["loss.png"] == "" and figures["roc.png"] == ""
    assert "figure.wide{flex-basis:100%}" in page
    assert re.search(r'alt="confusion.png" width="920" height="\d+"', page)


# -------------------------------------------------------------------- attack #4, #9
def test_a_fifo_among_the_plots_is_refused_at_once(copy, capsys) -> None:
    fifo = copy / "plots" / "f.png"
    os.mkfifo(fifo)
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(one_error(capsys, "report", copy)), daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():  # hung reading the FIFO: a writer that closes at once lets it go
        with open(fifo, "wb"):
            pass
        t.join(30)
        pytest.fail("nnfit report hung on a FIFO in plots/")
    assert result and result[0].endswith("plots/f.png: not a regular file")


def test_a_fifo_as_the_manifest_of_a_run_without_checkpoints_is_no_run(tmp_path, capsys) -> None:
    """holds_run used to open manifest.json whatever it was: a FIFO there blocked forever."""
    from nnfit.io.layout import holds_run

    d = tmp_path / "r"
    d.mkdir()
    os.mkfifo(d / "manifest.json")
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(holds_run(d)), daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():
        with open(d / "manifest.json", "wb"):
            pass
        t.join(30)
        pytest.fail("holds_run hung on a FIFO named manifest.json")
    assert result == [False]
    assert "not an nnfit run directory" in one_error(capsys, "report", d)


@pytest.mark.parametrize("where", ["plots/zz.png", "history.csv", "plots"])
def test_a_link_leading_out_of_the_run_is_refused(copy, tmp_path, capsys, where) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.png"
    secret.write_bytes((copy / "plots" / "loss.png").read_bytes())
    target = {"plots/zz.png": secret, "history.csv": outside / "h.csv", "plots": outside}[where]
    if where == "history.csv":
        target.write_text((copy / "history.csv").read_text())
    if where == "plots":
        shutil.rmtree(copy / "plots")
    else:
        (copy / where).unlink(missing_ok=True)
    (copy / where).symlink_to(target)
    line = one_error(capsys, "report", copy)
    assert line.endswith(f"{where}: links outside the run (to {target}); the report reads only "
                         "the run's own files")


def test_a_link_inside_the_run_and_a_dangling_one(copy, capsys) -> None:
    (copy / "plots" / "again.png").symlink_to(copy / "plots" / "loss.png")  # the run's own file
    assert 'alt="again.png"' in write_report(copy).read_text()
    (copy / "plots" / "gone.png").symlink_to(copy / "nowhere.png")
    assert one_error(capsys, "report", copy).endswith("plots/gone.png: a link to nothing, not a file "
                                                      "of the run")


# --------------------------------------------------------------------------- attack #5
def test_a_decompression_bomb_is_one_line_before_anything_is_decoded(copy, capsys) -> None:
    (copy / "plots" / "bomb.png").write_bytes(_png(9000, 9000))  # 81 Mpx in ~80 KB
    assert one_error(capsys, "report", copy).endswith(
        "plots/bomb.png: 9000x9000 pixels, too large for a plot (at most 40,000,000 pixels)")


def test_a_png_pil_cannot_decode_is_one_line(copy, capsys) -> None:
    body = bytearray(_png(800, 400, noise=True))  # 320 KB: over the budget, so PIL opens it
    body[200:260] = b"\xff" * 60  # a corrupt stream inside IDAT
    (copy / "plots" / "loss.png").write_bytes(bytes(body))
    assert one_error(capsys, "report", copy).endswith("plots/loss.png: not a readable PNG image")


# --------------------------------------------------------------------------- attack #6
@pytest.mark.parametrize("epoch", ["nan", "inf", "-1", "1.5", ""])
def test_a_history_epoch_that_is_not_a_number_of_epochs_is_one_line(copy, capsys, epoch) -> None:
    lines = (copy / "history.csv").read_text().splitlines()
    lines[-1] = epoch + lines[-1][lines[-1].index(","):]
    (copy / "history.csv").write_text("\n".join(lines) + "\n")
    line = one_error(capsys, "report", copy)
    assert line.endswith(f"history.csv: line {len(lines)}: epoch {epoch!r} is not an epoch number "
                         "(a whole number from 1)")


# --------------------------------------------------------------------------- attack #7
@pytest.mark.parametrize(("change", "field"), [
    (lambda m: m.update(task="x"), "task: expected an object, got a string"),
    (lambda m: m.update(task=[1]), "task: expected an object, got a list"),
    (lambda m: m["preprocess"]["table"]["columns"].__setitem__(0, 1),
     "preprocess.table.columns[0]: expected an object, got an integer"),
    (lambda m: m["preprocess"]["table"]["columns"].__setitem__(0, {
        "name": "a", "role": "categorical", "levels": 5, "missing": False, "unknown": 0.0}),
     "preprocess.table.columns[0].levels: expected a list"),
])
def test_a_wrong_typed_model_json_field_is_one_line_naming_it(copy, capsys, change, field) -> None:
    model = json.loads((copy / "model.json").read_text())
    change(model)
    (copy / "model.json").write_text(json.dumps(model))
    line = one_error(capsys, "report", copy)
    assert f"model.json: {field}" in line, line


def test_a_wrong_typed_config_json_field_is_one_line_naming_it(copy, capsys) -> None:
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "patience": [1]}))
    assert "config.json: patience: expected an integer" in one_error(capsys, "report", copy)


# -------------------------------------------------------------------------- attack #10
def test_plots_older_than_the_last_resume_are_not_shown_as_current(copy) -> None:
    resumed = time.time()
    at = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(resumed))
    (copy / "resumes.json").write_text(json.dumps([{"at": at, "epoch": 3, "step": 9, "batch": 0,
                                                    "nnfit_version": nnfit.__version__}]))
    for p in (copy / "plots").iterdir():  # drawn an hour before that resume, which drew none
        os.utime(p, (resumed - 3600, resumed - 3600))
    (copy / "plots" / "mine.png").write_bytes(_png(40, 30))  # a user's own file: always shown
    page = write_report(copy).read_text()
    assert re.findall(r'alt="([^"]+)"', page) == ["mine.png"]
    note = re.search(r'id="stale-plots">([^<]*)<', page).group(1)
    assert "loss.png" in note and "worst.csv" in note and "before the run's last resume" in note
    assert "<th>row</th>" not in page  # nor the stale worst.csv's rows
    for p in (copy / "plots").iterdir():  # a copy of the run (newer files) shows them all again
        os.utime(p, (resumed + 5, resumed + 5))
    assert 'alt="loss.png"' in write_report(copy).read_text()


def test_a_resume_that_fails_before_training_records_no_resume(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (x[:, 0] > 0).astype(int)
    run = tmp_path / "RUN"
    nnfit.fit("mlp", x, y, epochs=1, quiet=True, patience=0, plots=False, run_dir=run)
    (run / "metrics.jsonl").mkdir()  # the jsonl sink cannot open its file: fails at once
    # the sinks' note on a changed --log set is not what this test is about
    with pytest.raises((NnfitError, OSError)), warnings.catch_warnings():
        warnings.simplefilter("ignore", NnfitWarning)
        nnfit.fit("mlp", x, y, epochs=2, quiet=True, patience=0, plots=False, run_dir=run,
                  resume=run, log=("jsonl",))
    assert not (run / "resumes.json").exists()
    (run / "metrics.jsonl").rmdir()
    nnfit.fit("mlp", x, y, epochs=2, quiet=True, patience=0, plots=False, run_dir=run, resume=run)
    assert [r["epoch"] for r in json.loads((run / "resumes.json").read_text())] == [1]


def test_the_writer_records_a_resume_at_its_first_epoch_end_not_at_start(tmp_path) -> None:
    from nnfit.run import RunWriter

    writer = RunWriter(tmp_path / "RUN", learner=None, config={"epochs": 2},
                       resumed={"epoch": 1, "step": 2, "batch": 0})
    writer.start()  # what a metric sink does before the first epoch
    assert (tmp_path / "RUN" / "config.json").exists()
    assert not (tmp_path / "RUN" / "resumes.json").exists()
