"""Fixes to the plots and ``nnfit runs compare`` after the issue-11 review and attack: layout
(nothing cut off, counts readable, titles apart), worst.csv for regression in the user's units,
no stale plots after a ``--no-plots`` resume, the plotting time budget, and runs compare's
``--out`` and damaged histories refused in one line."""

from __future__ import annotations

import csv
import gc
import time
from pathlib import Path

import numpy as np
import pytest

import nnfit
from helpers import cli, one_error
from nnfit.plots import PLOTS_DIR, canvas, classification, examples, history, write_plots


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, kept for their layout to be measured."""
    kept = []

    def keep(fig, path):
        kept.append(fig)
        return real(fig, path)

    real = canvas.save
    for module in (history, classification, examples):
        monkeypatch.setattr(module, "save", keep)
    return kept


def _extents(fig, artists):
    """Window extents (pixels) of the visible, non-empty texts among ``artists``."""
    renderer = fig.canvas.get_renderer()
    return [(a, a.get_window_extent(renderer)) for a in artists if a.get_visible() and a.get_text()]


def _inside(fig):
    """The axes of ``fig`` (their indices) whose drawn texts reach past its edges."""
    fig.canvas.draw()
    renderer, box = fig.canvas.get_renderer(), fig.bbox
    out = [(i, ax.get_tightbbox(renderer)) for i, ax in enumerate(fig.axes)]
    return [i for i, e in out if e.x0 < box.x0 - 0.5 or e.y0 < box.y0 - 0.5 or e.x1 > box.x1 + 0.5
            or e.y1 > box.y1 + 0.5]


def test_loss_png_keeps_the_learning_rate_label_inside(tmp_path, figures):
    records = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "lr": 0.00123 * 0.97 ** e}
               for e in range(1, 101)]
    history.draw_loss(records, tmp_path / "loss.png")
    (fig,) = figures
    assert fig.axes[1].yaxis.label.get_text() == "learning rate"
    assert _inside(fig) == []


@pytest.mark.parametrize("n", [3, 14, 20])
def test_confusion_counts_are_written_and_fit_their_cells(tmp_path, figures, n):
    rng = np.random.default_rng(0)
    true = np.repeat(np.arange(n), 40)
    pred = np.where(rng.random(len(true)) < 0.6, true, rng.integers(0, n, len(true)))
    classification.draw_confusion(true, pred, [f"class {i}" for i in range(n)], tmp_path / "c.png")
    (fig,) = figures
    counts = fig.axes[0]
    fig.canvas.draw()
    cells = _extents(fig, counts.texts)
    assert len(cells) == n * n  # every count written
    cell = counts.get_window_extent().width / n
    assert all(e.width < cell and e.height < cell for _, e in cells)  # no number runs into the next
    assert min(t.get_fontsize() for t, _ in cells) >= 6  # points: readable
    assert _inside(fig) == []


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 - 0.5 and b.x0 < a.x1 - 0.5 and a.y0 < b.y1 - 0.5 and b.y0 < a.y1 - 0.5


def test_worst_png_titles_do_not_overlap_the_images(tmp_path, figures):
    rng = np.random.default_rng(3)
    y = np.arange(100) % 4
    x = (rng.integers(0, 60, size=(100, 1, 8, 8)) + 50 * y[:, None, None, None]).astype(np.uint8)
    nnfit.fit({"name": "cnn", "channels": [4]}, x, y, epochs=1, quiet=True, run_dir=tmp_path / "i", seed=0)
    (fig,) = [f for f in figures if len(f.axes) == 16]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    titles = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    images = [ax.get_window_extent(renderer) for ax in fig.axes]
    for i, t in enumerate(titles):
        assert not any(_overlaps(t, im) for im in images), i
        assert not any(_overlaps(t, o) for j, o in enumerate(titles) if j != i), i
    assert _inside(fig) == []


def test_regression_worst_csv_is_in_the_users_units(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 2))
    y = 1000 + 300 * x[:, 0] + rng.normal(size=80) * 30 + 0.123456789012  # far from scaled units
    data = tmp_path / "d.csv"
    texts = [repr(float(v)) for v in y]
    with open(data, "w") as f:
        f.write("a,b,price\n" + "".join(f"{x[i, 0]},{x[i, 1]},{texts[i]}\n" for i in range(80)))
    nnfit.fit({"name": "mlp", "hidden": [4]}, str(data), target="price", epochs=2, quiet=True,
              run_dir=tmp_path / "r", seed=0)
    with open(tmp_path / "r" / PLOTS_DIR / "worst.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["row", "true", "predicted", "squared_error"]
    for r in rows:
        assert r["true"] == texts[int(r["row"])]  # exactly the user's value, 0-based data row
        expected = (float(r["true"]) - float(r["predicted"])) ** 2  # the user's units, not scaled
        assert float(r["squared_error"]) == pytest.approx(expected, rel=1e-9)
    errors = [float(r["squared_error"]) for r in rows]
    assert errors == sorted(errors, reverse=True) and errors[0] > 100
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "0-based" in readme[readme.index("worst.csv"):][:600]  # the numbering is documented


def test_a_no_plots_resume_leaves_no_older_plots(tmp_path, capsys):
    x, y = np.random.default_rng(2).normal(size=(40, 3)), np.arange(40) % 2
    run = tmp_path / "r"
    nnfit.fit({"name": "mlp", "hidden": [4]}, x, y, epochs=1, quiet=True, run_dir=run)
    (run / PLOTS_DIR / "mine.txt").write_text("a user's note")
    assert (run / PLOTS_DIR / "loss.png").is_file()
    nnfit.fit({"name": "mlp", "hidden": [4]}, x, y, epochs=2, run_dir=run, resume=run, plots=False)
    assert sorted(p.name for p in (run / PLOTS_DIR).iterdir()) == ["mine.txt"]  # only the user's
    assert "plots" in capsys.readouterr().err  # said why they went
    (run / PLOTS_DIR / "mine.txt").unlink()
    nnfit.fit({"name": "mlp", "hidden": [4]}, x, y, epochs=3, quiet=True, run_dir=run, resume=run,
              plots=False)
    assert not (run / PLOTS_DIR).exists()


def test_plotting_a_wine_sized_run_stays_within_its_budget(tmp_path, monkeypatch):
    """100 epochs of a 3-class history: every history plot, in process, well under 1 s of
    CPU (matplotlib already imported: the CLI pays its import once, about 0.25 s, on top); and
    the collector's full passes do not walk the pre-existing heap (a trained process holds
    some 400k objects: one pass took 0.2 s) while drawing: it is frozen."""
    records = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "accuracy": 1 - 1 / (e + 1),
                "lr": 0.001} for e in range(1, 101)]
    (tmp_path / "warm").mkdir()
    write_plots(tmp_path / "warm", records, "val_loss")  # matplotlib imported, fonts loaded
    start = time.process_time()
    for _ in range(3):
        write_plots(tmp_path, records, "accuracy")
    assert (time.process_time() - start) / 3 < 0.5
    frozen = []
    real = history.draw_loss
    monkeypatch.setattr(history, "draw_loss", lambda *a: (frozen.append(gc.get_freeze_count()), real(*a)))
    before = gc.get_freeze_count()
    write_plots(tmp_path, records, "accuracy")
    assert frozen and frozen[0] > 1000 and gc.get_freeze_count() == before  # and handed back


# ------------------------------------------------------------------------------ runs compare
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    x, y = np.random.default_rng(0).normal(size=(60, 3)), np.arange(60) % 2
    for name in ("a", "b"):
        nnfit.fit({"name": "mlp", "hidden": [4]}, x, y, epochs=2, quiet=True, run_dir=d / name)
    return d


def test_compare_out_never_writes_into_a_run_or_over_a_file(runs, capsys, tmp_path):
    before = (runs / "a" / PLOTS_DIR / "loss.png").read_bytes()
    line = one_error(capsys, "runs", "compare", runs / "a", runs / "b", "--out",
                     runs / "a" / PLOTS_DIR / "loss.png")
    assert "inside the run" in line and (runs / "a" / PLOTS_DIR / "loss.png").read_bytes() == before
    assert "inside the run" in one_error(capsys, "runs", "compare", runs / "a", runs / "b", "--out",
                                         runs / "b" / "new.png")
    assert not (runs / "b" / "new.png").exists()
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"a user's picture")
    assert "--overwrite" in one_error(capsys, "runs", "compare", runs / "a", "--out", mine)
    assert mine.read_bytes() == b"a user's picture"
    status, _, _ = cli(capsys, "runs", "compare", runs / "a", "--out", mine, "--overwrite")
    assert status == 0 and mine.read_bytes().startswith(b"\x89PNG")
    assert "inside the run" in one_error(capsys, "runs", "compare", runs / "a", "--out",
                                         runs / "a" / "x.png", "--overwrite")


@pytest.mark.parametrize("epoch", ["nan", "inf", "-inf", "1e400", "2.5", "x"])
def test_compare_refuses_a_history_with_a_bad_epoch(runs, capsys, tmp_path, epoch):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(runs / "a", bad)
    lines = (bad / "history.csv").read_text().splitlines()
    lines[-1] = epoch + lines[-1][lines[-1].index(","):]
    (bad / "history.csv").write_text("\n".join(lines) + "\n")
    line = one_error(capsys, "runs", "compare", runs / "a", bad)
    assert "history.csv" in line and "epoch" in line
    assert history.series([{"epoch": epoch, "val_loss": 0.5}], "val_loss") == ([1], [0.5])  # plots: no crash


def test_regression_panels_name_the_target_and_keep_few_ticks(tmp_path) -> None:
    """Second review: values near 1000 ran their tick labels together, and the title said
    "target" for a column named price."""
    from nnfit.plots import _target_name
    from nnfit.plots.canvas import new_figure
    from nnfit.plots.regression import _few_ticks, _name

    (tmp_path / "config.json").write_text('{"target": "price"}')
    assert _target_name(tmp_path) == "price"
    assert _target_name(tmp_path / "missing") is None
    assert _name(np.zeros((3, 1)), 0, "price") == "price"
    assert _name(np.zeros((3, 2)), 1, "price") == "target 2"
    fig, (ax,) = new_figure()
    ax.scatter(np.linspace(1002.5, 1020.0, 50), np.linspace(1002.5, 1020.0, 50))
    _few_ticks(ax)
    fig.canvas.draw()
    assert len(ax.get_xticks()) <= 7 and len(ax.get_yticks()) <= 7


def test_worst_rows_of_sequences_and_series_are_named_by_id_and_time(tmp_path) -> None:
    """Second review: sequences and forecasts were named only by their position in the
    validation data (val_row), which the user cannot trace back."""
    import csv as _csv

    import nnfit

    rng = np.random.default_rng(0)
    rows, labels = [], {}
    for sid in range(60):
        label = "A" if sid % 2 else "B"
        labels[str(1000 + sid)] = label
        for t in range(int(rng.integers(3, 7))):
            rows.append(f"{1000 + sid},{t},{rng.normal() + (sid % 2):.4f},{label}")
    seq = tmp_path / "seq.csv"
    seq.write_text("user,ts,v,label\n" + "\n".join(rng.permutation(rows)) + "\n")
    nnfit.fit("lstm", str(seq), target="label", sequence_id="user", time="ts", run_dir=tmp_path / "s",
              epochs=2, quiet=True, seed=0)
    got = list(_csv.DictReader((tmp_path / "s" / "plots" / "worst.csv").read_text().splitlines()))
    assert got and list(got[0])[:2] == ["val_row", "user"]
    assert all(r["true"] == labels[r["user"]] for r in got)

    days = np.arange("2021-01-01", "2021-04-01", dtype="datetime64[D]")
    y = np.sin(np.arange(len(days)) / 5) * 3 + 10
    ts = tmp_path / "ts.csv"
    ts.write_text("date,y\n" + "".join(f"{d},{float(v)!r}\n" for d, v in zip(days, y, strict=True)))
    nnfit.fit("lstm", str(ts), target="y", time="date", window=7, run_dir=tmp_path / "t", epochs=2,
              quiet=True, seed=0)
    by_day = {str(d): float(v) for d, v in zip(days, y, strict=True)}
    got = list(_csv.DictReader((tmp_path / "t" / "plots" / "worst.csv").read_text().splitlines()))
    assert got and list(got[0])[:2] == ["val_row", "date"]
    assert all(float(r["true"]) == pytest.approx(by_day[r["date"]]) for r in got)


def test_a_regression_loss_axis_says_its_units(tmp_path) -> None:
    """Second review: a regression trained on standardised targets plotted val_loss 0.043 where
    its metrics said mse 0.80, and nothing on the plot said why."""
    from nnfit.plots import _loss_label

    reg, cls = [{"epoch": 1, "val_loss": 0.1, "val_mse": 2.0}], [{"epoch": 1, "val_accuracy": 0.9}]
    (tmp_path / "config.json").write_text('{"scale_target": true}')
    assert _loss_label(tmp_path, reg) == "loss (standardised target)"
    assert _loss_label(tmp_path, cls) == "loss"
    (tmp_path / "config.json").write_text('{"scale_target": false}')
    assert _loss_label(tmp_path, reg) == "loss"
