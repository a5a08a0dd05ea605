"""The ``nnfit`` command end to end: help, the run directory, evaluate/predict/inspect/ls,
config files and overrides, resume, and one-line errors with exit status 2.

Most runs call ``nnfit.cli.main`` in-process (fast); a few real subprocesses prove the exit
status and a clean stderr of the installed entry point. Every run works inside ``tmp_path``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)

import nnfit
from nnfit.cli import main
from nnfit.files import verify_bundle
from nnfit.run import committed, read_latest

CLASSES = ("cat", "dog", "emu")
FEATURES = ("a", "b", "c", "d")


@dataclass
class Result:
    status: int
    out: str
    err: str


def _invoke(argv: list) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:  # argparse: --help, --version and usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test runs in its own empty directory with a wide, plain terminal."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("NNFIT_DEBUG", raising=False)


@pytest.fixture
def nnfit_cli(capsys):
    """``nnfit_cli("train", ...)`` -> Result(status, stdout, stderr), run in-process."""

    def run(*argv) -> Result:
        capsys.readouterr()
        status = _invoke(list(argv))
        out, err = capsys.readouterr()
        return Result(status, out, err)

    return run


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _class_rows(n: int = 150, seed: int = 0) -> list[list]:
    """Three separable clusters with string labels, rows in random label order."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(CLASSES, size=n)
    rows = []
    for lab in labels:
        centre = 2.0 * CLASSES.index(lab)
        rows.append([round(float(v), 4) for v in rng.normal(centre, 0.6, size=len(FEATURES))]
                    + [str(lab)])
    return rows


def _reg_rows(n: int = 120, seed: int = 1) -> list[list]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = 3.0 * x[:, 0] - 2.0 * x[:, 1] + 0.5 * x[:, 2] + 10.0 + rng.normal(0, 0.1, n)
    return [[round(float(v), 4) for v in (*xi, yi)] for xi, yi in zip(x, y, strict=True)]


def _make_cls_csv(directory: Path) -> Path:
    return _write_csv(directory / "cls.csv", [*FEATURES, "label"], _class_rows())


def _train_in(directory: Path, *argv) -> None:
    """Train in-process with ``directory`` as the working directory (for shared runs)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(directory)
        mp.setenv("COLUMNS", "200")
        assert _invoke(["train", *argv]) == 0


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run dir, CSV) of a 3-epoch classifier trained on a CSV with a string target."""
    d = tmp_path_factory.mktemp("cls")
    data = _make_cls_csv(d)
    _train_in(d, data, "--target", "label", "--epochs", "3", "--lr", "0.01", "--quiet",
              "--out", d / "run")
    return d / "run", data


@pytest.fixture(scope="module")
def reg_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run dir, CSV) of a 3-epoch regressor."""
    d = tmp_path_factory.mktemp("reg")
    data = _write_csv(d / "reg.csv", ["x1", "x2", "x3", "y"], _reg_rows())
    _train_in(d, data, "--target", "y", "--epochs", "3", "--lr", "0.01", "--quiet",
              "--out", d / "run")
    return d / "run", data


# ------------------------------------------------------------------------------------- help
TRAIN_FLAGS = ("--task", "--model", "--hidden", "--activation", "--dropout", "--batchnorm",
               "--optimizer", "--lr", "--momentum", "--weight-decay", "--scheduler", "--epochs",
               "--batch-size", "--val-split", "--patience", "--seed", "--out", "--resume",
               "--config", "--quiet", "--device", "--target", "--dataset", "--overwrite")


@pytest.mark.parametrize(("argv", "mentions"), [
    ([], ("train", "evaluate", "predict", "inspect", "ls")),
    (["train"], TRAIN_FLAGS),
    (["evaluate"], ("RUN", "DATA", "--target", "--json", "--device")),
    (["predict"], ("RUN", "DATA", "--output", "--proba", "--device")),
    (["inspect"], ("RUN", "--json")),
    (["ls"], ("usage: nnfit ls",)),
])
def test_help_exits_0_and_names_every_flag(nnfit_cli, argv, mentions):
    r = nnfit_cli(*argv, "--help")
    assert r.status == 0 and r.err == ""
    for flag in mentions:
        assert flag in r.out, flag


def test_version(nnfit_cli):
    r = nnfit_cli("--version")
    assert r.status == 0 and r.out.strip() == f"nnfit {nnfit.__version__}"


# ---------------------------------------------------------------------------- train layout
def test_train_bundled_dataset_writes_complete_run(nnfit_cli, tmp_path):
    r = nnfit_cli("train", "--dataset", "iris", "--epochs", "3", "--quiet", "--out", "RUN")
    assert r.status == 0, r.err
    assert r.err == ""
    run = tmp_path / "RUN"
    for name in ("config.json", "model.safetensors", "model.json", "manifest.json", "history.csv",
                 "metrics.json", "test.csv", "test_metrics.json"):
        assert (run / name).is_file(), name
    # The end-of-epoch checkpoints, all verified by their manifests; two kept plus the best.
    names = committed(run)
    assert 2 <= len(names) <= 3 and names[-1].endswith("-epoch-00003"), names
    for name in names:
        verify_bundle(run / "checkpoints" / name, "checkpoint")

    cfg = json.loads((run / "config.json").read_text())
    assert cfg["dataset"] == "iris" and cfg["epochs"] == 3 and cfg["quiet"] is True

    header, rows = _read_csv(run / "history.csv")
    assert {"epoch", "train_loss", "val_loss", "val_accuracy"} <= set(header)
    assert [int(row[header.index("epoch")]) for row in rows] == [1, 2, 3]

    val = json.loads((run / "metrics.json").read_text())
    assert {"accuracy", "precision", "recall", "f1", "confusion_matrix", "roc_auc"} <= set(val)
    assert np.asarray(val["confusion_matrix"]).shape == (3, 3)
    # The validation split is 20% of the 120 training rows; the confusion matrix counts them.
    assert np.asarray(val["confusion_matrix"]).sum() == 24
    # The last history row and metrics.json describe the same (restored best) model.
    last = dict(zip(header, rows[-1], strict=True))
    assert float(last["val_accuracy"]) == pytest.approx(val["accuracy"])

    test_header, test_rows = _read_csv(run / "test.csv")
    assert test_header[-1] == "species" and len(test_rows) == 30
    assert sorted({row[-1] for row in test_rows}) == ["setosa", "versicolor", "virginica"]
    test = json.loads((run / "test_metrics.json").read_text())
    assert np.asarray(test["confusion_matrix"]).sum() == 30

    # stdout holds the metrics table with a validation and a test column.
    for word in ("metrics", "validation", "test", "accuracy", "roc_auc", "run written to"):
        assert word in r.out, word
    assert f"{test['accuracy']:.4f}" in r.out

    # Scoring test.csv again through `evaluate` reproduces test_metrics.json.
    e = nnfit_cli("evaluate", run, run / "test.csv", "--json")
    assert e.status == 0, e.err
    again = json.loads(e.out)
    assert again["accuracy"] == pytest.approx(test["accuracy"])
    assert again["confusion_matrix"] == test["confusion_matrix"]


def test_train_without_out_numbers_run_dirs_in_cwd(nnfit_cli, tmp_path):
    for _ in range(2):
        assert nnfit_cli("train", "--dataset", "iris", "--epochs", "1", "--quiet").status == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["iris-1", "iris-2"]


# ------------------------------------------------------------------------ evaluate / predict
def test_evaluate_json_matches_sklearn_on_predictions(nnfit_cli, cls_run, tmp_path):
    run, data = cls_run
    r = nnfit_cli("evaluate", run, data, "--json")
    assert r.status == 0, r.err
    metrics = json.loads(r.out)  # exactly one JSON object on stdout
    for key in ("accuracy", "precision", "recall", "f1", "confusion_matrix", "roc_auc"):
        assert key in metrics, key
    for avg in ("macro", "micro", "weighted"):
        for m in ("precision", "recall", "f1"):
            assert f"{m}_{avg}" in metrics

    p = nnfit_cli("predict", run, data, "-o", tmp_path / "pred.csv")
    assert p.status == 0, p.err
    _, pred_rows = _read_csv(tmp_path / "pred.csv")
    _, data_rows = _read_csv(data)
    y_true = [row[-1] for row in data_rows]
    y_pred = [row[0] for row in pred_rows]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert metrics["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro"), abs=1e-9)
    assert np.asarray(metrics["confusion_matrix"]).sum() == len(data_rows)
    assert metrics["accuracy"] > 0.5  # three separable clusters: training did something


def test_evaluate_prints_table(nnfit_cli, cls_run):
    run, data = cls_run
    r = nnfit_cli("evaluate", run, data)
    assert r.status == 0, r.err
    assert "accuracy" in r.out and "confusion matrix" in r.out


def test_predict_proba_rows_in_input_order(nnfit_cli, cls_run, tmp_path):
    run, data = cls_run
    r = nnfit_cli("predict", run, data, "-o", "out.csv", "--proba")
    assert r.status == 0, r.err
    assert r.out == ""
    header, rows = _read_csv(tmp_path / "out.csv")
    _, data_rows = _read_csv(data)
    assert header == ["label", *(f"proba_{c}" for c in CLASSES)]
    assert len(rows) == len(data_rows)
    labels = [row[0] for row in rows]
    proba = np.array([[float(v) for v in row[1:]] for row in rows])
    assert set(labels) <= set(CLASSES)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert [CLASSES[i] for i in proba.argmax(axis=1)] == labels

    # The same rows reversed (target column dropped) give the same answers reversed.
    rev = _write_csv(tmp_path / "rev.csv", list(FEATURES), [row[:4] for row in data_rows[::-1]])
    r = nnfit_cli("predict", run, rev, "--proba")  # no -o: CSV on stdout
    assert r.status == 0, r.err
    lines = list(csv.reader(r.out.splitlines()))
    assert lines[0] == header
    assert [row[0] for row in lines[1:]] == labels[::-1]
    rev_proba = np.array([[float(v) for v in row[1:]] for row in lines[1:]])
    np.testing.assert_allclose(rev_proba, proba[::-1], rtol=1e-6)

    # ...and match the Python API on the loaded run.
    learner = nnfit.load(run, device="cpu")
    assert learner.predict(str(rev)).tolist() == labels[::-1]


def test_regression_evaluate_and_predict(nnfit_cli, reg_run, tmp_path):
    run, data = reg_run
    r = nnfit_cli("evaluate", run, data, "--json")
    assert r.status == 0, r.err
    metrics = json.loads(r.out)
    assert {"mse", "rmse", "mae", "r2"} <= set(metrics)

    p = nnfit_cli("predict", run, data, "-o", "pred.csv")
    assert p.status == 0, p.err
    header, rows = _read_csv(tmp_path / "pred.csv")
    assert header == ["y"]
    _, data_rows = _read_csv(data)
    y = np.array([float(row[-1]) for row in data_rows])
    pred = np.array([float(row[0]) for row in rows])
    assert len(pred) == len(y)
    assert metrics["mse"] == pytest.approx(mean_squared_error(y, pred), rel=1e-4)
    assert metrics["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred)), rel=1e-4)
    assert metrics["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-4)
    assert metrics["r2"] == pytest.approx(r2_score(y, pred), rel=1e-4, abs=1e-6)
    # Predictions are in the target's units (mean 10), not the standardised training scale.
    assert abs(pred.mean() - y.mean()) < 0.5 * y.std()

    bad = nnfit_cli("predict", run, data, "--proba")
    assert bad.status == 2 and bad.err.startswith("nnfit: error:") and "--proba" in bad.err


# ---------------------------------------------------------------------------- inspect / ls
def test_inspect_table_and_json(nnfit_cli, cls_run):
    run, _ = cls_run
    total = sum(p.numel() for p in nnfit.load(run, device="cpu").model.parameters())
    assert total == 4 * 64 + 64 + 64 * 64 + 64 + 64 * 3 + 3

    r = nnfit_cli("inspect", run)
    assert r.status == 0, r.err
    for word in ("Layer", "Type", "Output shape", "Params", "Linear", f"Total params: {total}"):
        assert word in r.out, word
    assert "classes: ['cat', 'dog', 'emu']" in r.out

    j = nnfit_cli("inspect", run, "--json")
    assert j.status == 0, j.err
    d = json.loads(j.out)
    assert d["total_params"] == total
    assert sum(layer["params"] for layer in d["layers"]) == total
    assert d["parameter_shapes"]["fc1.weight"] == [64, 4]


def test_ls_lists_every_registry(nnfit_cli):
    r = nnfit_cli("ls")
    assert r.status == 0, r.err
    for name in ("mlp", "resmlp", "sgd", "adam", "adamw", "rmsprop", "step", "cosine", "onecycle",
                 "plateau", "breast_cancer", "wine", "iris", "digits", "diabetes"):
        assert name in r.out, name


# ---------------------------------------------------------------------- config and overrides
def _hidden_shapes(run: Path) -> list[int]:
    model = nnfit.load(run, device="cpu").model
    return [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)][:-1]


def _epochs_run(run: Path) -> int:
    return len(_read_csv(run / "history.csv")[1])


@pytest.mark.parametrize(("name", "text"), [
    ("run.yaml", "epochs: 2\nhidden: [16, 8]\nlr: 0.01\n"),
    ("run.toml", "epochs = 2\nhidden = [16, 8]\nlr = 0.01\n"),
])
def test_config_file_and_overrides(nnfit_cli, tmp_path, name, text):
    data = _make_cls_csv(tmp_path)
    (tmp_path / name).write_text(text)

    r = nnfit_cli("train", data, "--target", "label", "--config", name, "--quiet", "--out", "A")
    assert r.status == 0, r.err
    cfg = json.loads((tmp_path / "A" / "config.json").read_text())
    assert (cfg["epochs"], cfg["hidden"], cfg["lr"]) == (2, [16, 8], 0.01)
    assert _epochs_run(tmp_path / "A") == 2
    assert _hidden_shapes(tmp_path / "A") == [16, 8]

    # A flag beats the file; key=value (even after DATA and flags) beats the file too.
    r = nnfit_cli("train", data, "--target", "label", "--config", name, "--epochs", "1",
                  "batch_size=16", "--quiet", "--out", "B")
    assert r.status == 0, r.err
    cfg = json.loads((tmp_path / "B" / "config.json").read_text())
    assert (cfg["epochs"], cfg["batch_size"], cfg["hidden"]) == (1, 16, [16, 8])
    assert _epochs_run(tmp_path / "B") == 1


def test_precedence_file_then_key_value_then_flag(nnfit_cli, tmp_path):
    data = _make_cls_csv(tmp_path)
    (tmp_path / "run.yaml").write_text("epochs: 3\nhidden: [8]\n")
    r = nnfit_cli("train", "epochs=2", "hidden=12,6", data, "--target", "label",
                  "--config", "run.yaml", "--quiet", "--out", "A")
    assert r.status == 0, r.err
    assert _epochs_run(tmp_path / "A") == 2 and _hidden_shapes(tmp_path / "A") == [12, 6]
    r = nnfit_cli("train", "epochs=2", data, "--target", "label", "--config", "run.yaml",
                  "--epochs", "1", "--quiet", "--out", "B")
    assert r.status == 0, r.err
    assert _epochs_run(tmp_path / "B") == 1


@pytest.mark.parametrize(("text", "argv", "named"), [
    ("epochz: 2\n", [], "'epochz'"),
    ("epochs: two\n", [], "epochs"),
    ("hidden: [16, big]\n", [], "hidden"),
    ("", ["colour=red"], "'colour'"),
    ("", ["batch_size=many"], "batch_size"),
    ("epochs: [\n", [], "run.yaml"),
])
def test_bad_config_exits_2_naming_the_key(nnfit_cli, tmp_path, text, argv, named):
    data = _make_cls_csv(tmp_path)
    (tmp_path / "run.yaml").write_text(text)
    r = nnfit_cli("train", data, "--target", "label", "--config", "run.yaml", *argv,
                  "--quiet", "--out", "NEW")
    _assert_one_line_error(r, named)
    assert not (tmp_path / "NEW").exists()


# ---------------------------------------------------------------------------------- resume
def test_resume_continues_to_the_same_weights_as_an_uninterrupted_run(nnfit_cli, tmp_path):
    data = _make_cls_csv(tmp_path)
    common = [data.name, "--target", "label", "--patience", "0", "--seed", "3", "--quiet"]
    assert nnfit_cli("train", *common, "--epochs", "2", "--out", "R").status == 0
    assert _epochs_run(tmp_path / "R") == 2
    r = nnfit_cli("train", "--resume", "R", "--epochs", "4")
    assert r.status == 0, r.err
    assert nnfit_cli("train", *common, "--epochs", "4", "--out", "FRESH").status == 0

    header, rows = _read_csv(tmp_path / "R" / "history.csv")
    assert [int(row[0]) for row in rows] == [1, 2, 3, 4]
    fresh_header, fresh_rows = _read_csv(tmp_path / "FRESH" / "history.csv")
    col = header.index("val_loss")
    assert [row[col] for row in rows] == [row[fresh_header.index("val_loss")] for row in fresh_rows]
    assert json.loads((tmp_path / "R" / "config.json").read_text())["epochs"] == 4
    name = "model.safetensors"
    assert (tmp_path / "R" / name).read_bytes() == (tmp_path / "FRESH" / name).read_bytes()
    # The last checkpoints hold the same model, optimizer and RNG tensors (their JSON headers
    # differ only in epoch timings).
    resumed, _ = read_latest(tmp_path / "R")
    fresh, _ = read_latest(tmp_path / "FRESH")
    assert resumed.keys() == fresh.keys()
    assert all(torch.equal(resumed[k], fresh[k]) for k in fresh)


# ------------------------------------------------------------------------------ bad input
def _assert_one_line_error(r: Result, *named: str) -> None:
    assert r.status == 2, (r.status, r.err)
    lines = r.err.splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("nnfit: error: "), r.err
    assert "Traceback" not in r.err
    for word in named:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def bad_files(tmp_path) -> Path:
    """A directory of malformed CSVs next to a good one (cls.csv)."""
    good = _class_rows(60)
    header = [*FEATURES, "label"]
    _write_csv(tmp_path / "cls.csv", header, good)
    (tmp_path / "empty.csv").write_text("")
    _write_csv(tmp_path / "header_only.csv", header, [])
    text_b = [row[:1] + (["x"] if i == 2 else row[1:2]) + row[2:] for i, row in enumerate(good)]
    _write_csv(tmp_path / "text_feature.csv", header, text_b)
    _write_csv(tmp_path / "one_class.csv", header, [row[:4] + ["cat"] for row in good])
    return tmp_path


@pytest.mark.parametrize(("argv", "named"), [
    (["missing.csv", "--target", "label"], ("missing.csv", "not found")),
    (["cls.csv"], ("--target",)),
    (["cls.csv", "--target", "colour"], ("'colour'", "not found")),
    # --numeric: the strict reading (by default a text column is a feature, or dropped as id-like)
    (["text_feature.csv", "--target", "label", "--numeric", "b"], ("'b'", "not numeric", "row 3", "'x'")),
    (["empty.csv", "--target", "label"], ("empty.csv", "empty")),
    (["header_only.csv", "--target", "label"], ("header_only.csv", "no data rows")),
    (["one_class.csv", "--target", "label"], ("single class", "'cat'")),
    (["cls.csv", "--target", "label", "--optimizer", "foo"], ("optimizer", "'foo'")),
    (["cls.csv", "--target", "label", "--scheduler", "foo"], ("scheduler", "'foo'")),
    (["cls.csv", "--target", "label", "--model", "foo"], ("model", "'foo'")),
    (["cls.csv", "--target", "label", "--activation", "foo"], ("activation", "'foo'")),
    (["cls.csv", "--target", "label", "--task", "foo"], ("--task", "'foo'")),
    (["cls.csv", "--target", "label", "--device", "foo"], ("device", "'foo'")),
    (["cls.csv", "--target", "label", "--epochs", "-1"], ("epochs", "-1")),
    (["cls.csv", "--target", "label", "--epochs", "two"], ("--epochs", "'two'")),
    (["--dataset", "foo"], ("dataset", "'foo'")),
    (["--resume", "NORUN"], ("NORUN",)),
    (["cls.csv", "--target", "label", "--bogus", "1"], ("unrecognized", "--bogus")),
    (["cls.csv", "other.csv", "--target", "label"], ("more than one DATA", "other.csv")),
])
def test_bad_train_input_is_one_line_and_writes_nothing(nnfit_cli, bad_files, argv, named):
    before = sorted(p.name for p in bad_files.iterdir())
    r = nnfit_cli("train", *argv, "--quiet", "--out", "NEW")
    _assert_one_line_error(r, *named)
    assert r.out == ""
    assert not (bad_files / "NEW").exists()
    assert sorted(p.name for p in bad_files.iterdir()) == before


def _edited_copy(data: Path, path: Path, edit) -> Path:
    header, rows = _read_csv(data)
    new_header, new_rows = edit(header, rows)
    return _write_csv(path, new_header, new_rows)


def test_unseen_label_in_evaluate(nnfit_cli, cls_run, tmp_path):
    run, data = cls_run
    bad = _edited_copy(data, tmp_path / "unseen.csv",
                       lambda h, rows: (h, [r[:4] + ["yak" if i == 5 else r[4]]
                                            for i, r in enumerate(rows)]))
    _assert_one_line_error(nnfit_cli("evaluate", run, bad, "--json"), "unseen", "'yak'")


def test_wrong_feature_count_in_predict_leaves_output_untouched(nnfit_cli, cls_run, tmp_path):
    run, data = cls_run
    narrow = _edited_copy(data, tmp_path / "narrow.csv",
                          lambda h, rows: ([*h[:3], "e"], [r[:3] + ["1.0"] for r in rows]))
    out = tmp_path / "out.csv"
    out.write_bytes(b"keep me\n")
    r = nnfit_cli("predict", run, narrow, "-o", out)
    _assert_one_line_error(r, "narrow.csv: missing feature columns the model uses: d "
                              "(columns given: a, b, c, e)")
    assert out.read_bytes() == b"keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["narrow.csv", "out.csv"]
    # an extra column is not an error: ignored with one warning line, the same predictions
    extra = _edited_copy(data, tmp_path / "extra.csv",
                         lambda h, rows: ([*h[:4], "e"], [r[:4] + ["1.0"] for r in rows]))
    r = nnfit_cli("predict", run, extra, "-o", out)
    assert r.status == 0 and r.err.splitlines() == [
        f"nnfit: warning: {extra}: ignoring columns the model was not trained on: e"], r.err
    assert nnfit_cli("predict", run, data, "-o", tmp_path / "want.csv").status == 0
    assert out.read_bytes() == (tmp_path / "want.csv").read_bytes()


def test_evaluate_without_target_column(nnfit_cli, cls_run, tmp_path):
    run, data = cls_run
    nolabel = _edited_copy(data, tmp_path / "x.csv", lambda h, rows: (h[:4], [r[:4] for r in rows]))
    _assert_one_line_error(nnfit_cli("evaluate", run, nolabel), "'label'", "not found")


@pytest.mark.parametrize("argv", [
    ["evaluate", "NORUN", "data.csv"],
    ["predict", "NORUN", "data.csv"],
    ["inspect", "NORUN"],
])
def test_missing_run_dir(nnfit_cli, argv):
    _assert_one_line_error(nnfit_cli(*argv), "NORUN")


def test_missing_data_file_for_evaluate_and_predict(nnfit_cli, cls_run):
    run, _ = cls_run
    for cmd in ("evaluate", "predict"):
        _assert_one_line_error(nnfit_cli(cmd, run, "nothing.csv"), "nothing.csv", "not found")


def test_existing_out_dir_is_refused_and_untouched(nnfit_cli, tmp_path):
    data = _make_cls_csv(tmp_path)
    out = tmp_path / "OLD"
    (out / "sub").mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"\x00old weights\xff")
    (out / "sub" / "notes.txt").write_bytes(b"mine")
    r = nnfit_cli("train", data, "--target", "label", "--epochs", "1", "--quiet", "--out", out)
    _assert_one_line_error(r, "OLD", "--overwrite")
    assert (out / "model.safetensors").read_bytes() == b"\x00old weights\xff"
    assert (out / "sub" / "notes.txt").read_bytes() == b"mine"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "model.safetensors", "sub", "sub/notes.txt"]

    # --overwrite replaces only an nnfit run: OLD holds none (no manifest, no checkpoint).
    r = nnfit_cli("train", data, "--target", "label", "--epochs", "1", "--quiet", "--out", out, "--overwrite")
    _assert_one_line_error(r, "OLD", "holds no nnfit run")
    assert (out / "model.safetensors").read_bytes() == b"\x00old weights\xff"

    # An empty directory is fine, and --overwrite allows one holding a run.
    (tmp_path / "EMPTY").mkdir()
    assert nnfit_cli("train", data, "--target", "label", "--epochs", "1", "--quiet",
                     "--out", "EMPTY").status == 0
    old = (tmp_path / "EMPTY" / "model.safetensors").read_bytes()
    (tmp_path / "EMPTY" / "notes.txt").write_bytes(b"mine")
    assert nnfit_cli("train", data, "--target", "label", "--epochs", "1", "--quiet", "--hidden", "8",
                     "--out", "EMPTY", "--overwrite").status == 0
    assert (tmp_path / "EMPTY" / "model.safetensors").read_bytes() != old
    assert (tmp_path / "EMPTY" / "notes.txt").read_bytes() == b"mine"


# ------------------------------------------------------------------------ real subprocesses
def _nnfit(*argv, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnfit", *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**_clean_env(), "COLUMNS": "200"})


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "NNFIT_DEBUG"}


def test_subprocess_exit_status_and_clean_stderr(cls_run, tmp_path):
    run, data = cls_run
    ok = _nnfit("evaluate", run, data, "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == ""
    assert "accuracy" in json.loads(ok.stdout)

    missing = _nnfit("train", "missing.csv", "--target", "label", "--quiet", "--out", "NEW",
                     cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert missing.stderr.splitlines() == ["nnfit: error: missing.csv: file not found"]
    assert not (tmp_path / "NEW").exists()

    assert list(tmp_path.iterdir()) == []
