"""The one-line contract at its rough edges (issue 8, items 6, 7, 9, 10, 12, 14, 15, 20).

Nested Parquet columns, targets with many classes, Ctrl-C while torch loads, values near
float32's limit, escape sequences in names, quoted CSV headers, the Python API's odd tensors
and frames, and ``predict -o`` naming its own input: each ends in success or one line and
exit status 2 (130 / 143 for a signal), never a traceback, an internal error or a silent NaN.

The CLI runs in-process (``nnfit.cli.main``) except where the process itself is the subject
(signals, the bytes on a real stderr), which run ``python -m nnfit``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import nnfit
from helpers import cli, one_error
from nnfit.cli import main
from nnfit.data import read as ingest
from nnfit.data.columns import read_columns
from nnfit.data.read import read_table
from nnfit.errors import ConfigError, DataError, NnfitError, NnfitWarning, printable

FAST = ["--epochs", "1", "--hidden", "8", "--quiet", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("NNFIT_DEBUG", raising=False)


def nnfit_process(*argv, cwd: Path) -> subprocess.Popen:
    """``python -m nnfit ARGV`` with the nnfit this test imported, started, not waited for."""
    src = str(Path(nnfit.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != "NNFIT_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "nnfit", *map(str, argv)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def write_csv(path: Path, header: list[str], rows, quoting: int = csv.QUOTE_MINIMAL) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n", quoting=quoting)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A regression run on features of ordinary size (std about 1e-3 and 1)."""
    d = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    b = rng.normal(size=40)
    write_csv(d / "small.csv", ["a", "b", "y"], zip(b * 1e-3, b, 2 * b, strict=True))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        assert main(["train", "small.csv", "--target", "y", *FAST, "--out", "run"]) == 0
    return d / "run"


# ------------------------------------------------------------- 6: nested Parquet columns
@pytest.mark.parametrize("kind", ["list", "fixed_size_list", "struct"])
def test_a_nested_parquet_column_is_one_line_naming_file_and_column(capsys, tmp_path, kind):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 20
    values = {"list": pa.array([[1.0, 2.0]] * n),
              "fixed_size_list": pa.array([[1.0, 2.0]] * n, pa.list_(pa.float32(), 2)),
              "struct": pa.array([{"p": 1.0, "q": 2}] * n)}[kind]
    pq.write_table(pa.table({"a": np.arange(n, dtype=np.float64), "v": values, "y": np.arange(n) % 2}),
                   tmp_path / "nested.parquet")
    line = one_error(capsys, "train", "nested.parquet", "--target", "y", *FAST, "--out", "NEW")
    assert line.startswith("nnfit: error: nested.parquet: column 'v' holds a nested value per row ("), line
    assert not (tmp_path / "NEW").exists()
    for reader in (read_table, read_columns):  # the fast reader and the general one alike
        with pytest.raises(DataError, match=r"nested.parquet: column 'v' holds a nested value"):
            reader(tmp_path / "nested.parquet")


# ------------------------------------------------------------ 7: many-class confusion matrix
def test_a_confusion_matrix_over_100_classes_goes_to_its_own_file(capsys, tmp_path):
    from safetensors.torch import load_file

    classes, n = 150, 600  # 4 rows a class: 1 for the test split, 3 split in half for validation
    rng = np.random.default_rng(0)
    write_csv(tmp_path / "many.csv", ["a", "b", "label"],
              ((float(rng.normal()), float(rng.normal()), f"k{i % classes}") for i in range(n)))
    status, out, err = cli(capsys, "train", "many.csv", "--target", "label", *FAST,
                           "--test-split", "0.25", "--val-split", "0.5", "--out", "run")
    assert status == 0, err
    run = tmp_path / "run"
    # The 150 x 150 matrix was 204 KB of indented JSON per file and 68 KB of stdout per split
    # (5,000 classes: 225 MB); now each file is about 1 KB and the whole stdout 1.7 KB.
    assert len(out) < 4000, len(out)
    matrices = load_file(run / "confusion_matrix.safetensors")
    for split, file in (("validation", "metrics.json"), ("test", "test_metrics.json")):
        assert (run / file).stat().st_size < 3000, (file, (run / file).stat().st_size)
        shown = json.loads((run / file).read_text())
        assert "confusion_matrix" not in shown and shown["num_classes"] == classes
        assert shown["confusion_matrix_file"] == "confusion_matrix.safetensors"
        worst = shown["lowest_recall"]
        assert len(worst) == 5 and worst == sorted(worst, key=lambda c: c["recall"])
        assert all(c["class"].startswith("k") for c in worst)
        cm = matrices[split]
        assert cm.shape == (classes, classes) and cm.dtype == torch.int32
        assert f"confusion matrix ({split}): {classes} classes, too many to show" in out
    assert int(matrices["test"].sum()) == len(read_columns(run / "test.csv").arrays["label"])
    # A reader prints the summary, never the matrix, and writes nothing into the run.
    before = sorted(p.name for p in run.iterdir())
    status, out, err = cli(capsys, "evaluate", "run", "many.csv", "--json")
    shown = json.loads(out)
    assert status == 0 and "confusion_matrix" not in shown and len(shown["lowest_recall"]) == 5
    assert len(out) < 3000 and sorted(p.name for p in run.iterdir()) == before


def test_a_confusion_matrix_of_up_to_100_classes_stays_inline():
    from nnfit.confusion import split_confusion

    cm = np.eye(100, dtype=int).tolist()
    shown, matrix = split_confusion({"accuracy": 1.0, "confusion_matrix": cm}, None)
    assert matrix is None and shown["confusion_matrix"] == cm
    cm = np.diag(np.arange(101)).tolist()
    cm[5][6] = 7  # class 5: 5 of 12 right; class 0 has no rows and is not listed
    shown, matrix = split_confusion({"confusion_matrix": cm}, [f"c{i}" for i in range(101)], worst=3)
    assert matrix.tolist() == cm and "confusion_matrix" not in shown
    assert shown["lowest_recall"] == [{"class": "c5", "recall": 5 / 12, "support": 12},
                                      {"class": "c100", "recall": 1.0, "support": 100},
                                      {"class": "c99", "recall": 1.0, "support": 99}]


# --------------------------------------------------------------- 9: signals while loading
def test_import_nnfit_loads_no_torch_and_lists_every_public_name():
    code = ("import nnfit, sys; assert 'torch' not in sys.modules, 'torch loaded'; "
            "nnfit.fit; assert 'torch' in sys.modules; nnfit.metrics.ClassificationMetrics")
    src = str(Path(nnfit.__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": src})
    assert set(nnfit.__all__) == set(nnfit._SOURCES) | {"__version__"}
    assert all(getattr(nnfit, name) is not None for name in nnfit.__all__)


def wait_for_own_handlers(pid: int, timeout: float = 30.0) -> None:
    """Wait until ``nnfit.cli.run`` has installed its handlers (it catches SIGTERM then), a few
    ms after the start on an idle machine, so the delays below are counted from there on a
    busy one too. Before that the interpreter itself is starting: no Python code of nnfit's
    runs yet, and no program can handle a signal there."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():  # not Linux: count from the start
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        caught = next((line.split()[1] for line in status.read_text().splitlines()
                       if line.startswith("SigCgt:")), "0")
        if int(caught, 16) >> (signal.SIGTERM - 1) & 1:
            return
        time.sleep(0.002)
    raise AssertionError("nnfit never installed its signal handlers")


@pytest.mark.parametrize(("sig", "delays", "status"), [
    (signal.SIGINT, (0.05, 0.2, 0.5, 1.0), 130),
    (signal.SIGTERM, (0.05, 0.5), 143),
])
def test_a_signal_while_torch_loads_is_one_line_and_128_plus_signum(tmp_path, sig, delays, status):
    for delay in delays:
        p = nnfit_process("train", "--dataset", "digits", "--epochs", "500", "--quiet", "--device", "cpu",
                          "--out", f"run{delay}", cwd=tmp_path)
        wait_for_own_handlers(p.pid)
        time.sleep(delay)
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
        text = err.decode(errors="replace")
        assert p.returncode == status and len(text.splitlines()) == 1, (delay, p.returncode, text)
        assert text.startswith("nnfit: ") and "Traceback" not in text, (delay, text)
        if delay <= 0.2:  # surely while torch loads; later, training may have begun ("stopped by")
            assert text == ("nnfit: interrupted\n" if sig == signal.SIGINT else "nnfit: terminated\n")


# ---------------------------------------------------------- 10: values near float32's limit
def test_values_near_float32_limit_train_without_overflow(capsys, tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    a = rng.choice([3.3e38, -3.3e38, 3.0e38], size=n)  # a - mean overflows float32
    b = rng.normal(size=n)
    write_csv(tmp_path / "big.csv", ["a", "b", "y"], zip(a, b, 2 * b + 1, strict=True))
    status, _, err = cli(capsys, "train", "big.csv", "--target", "y", *FAST, "--out", "run")
    assert status == 0, err  # was: "non-finite loss ... the last checkpoint is untouched", exit 1
    learner = nnfit.load(tmp_path / "run", device="cpu")
    x = learner.preprocessor.transform_table(read_table(tmp_path / "big.csv", exclude="y"))[0]
    s = learner.preprocessor.inputs[0]
    want = (a - s.mean[0]) / s.std[0]
    assert torch.isfinite(x).all() and np.allclose(x[:, 0].numpy(), want, rtol=1e-6)
    assert np.isfinite(learner.predict(tmp_path / "big.csv")).all()


def test_a_value_that_standardises_beyond_float32_is_refused_at_predict(capsys, small_run, tmp_path):
    write_csv(tmp_path / "p.csv", ["a", "b"], [[0.0, 1.0], [3e38, 1.0]])
    line = one_error(capsys, "predict", small_run, "p.csv")
    assert line.startswith("nnfit: error: p.csv: column 'a' has a value too far from the training "
                           "data (row 2: 3e+38; training mean "), line
    assert line.endswith("standardised it is beyond float32 range"), line


def test_a_non_finite_model_output_is_never_a_prediction(capsys, tmp_path):
    x, y = np.random.default_rng(0).normal(size=(30, 2)), np.arange(30.0)
    learner = nnfit.fit({"name": "mlp", "hidden": [4]}, x, y, epochs=1, quiet=True, device="cpu")
    with torch.no_grad():
        next(learner.model.parameters()).fill_(float("nan"))
    learner.save(tmp_path / "nan_model")
    write_csv(tmp_path / "p.csv", ["x0", "x1"], x[:3].tolist())
    status, out, err = cli(capsys, "predict", "nan_model", "p.csv")
    assert status == 2 and len(err.splitlines()) == 1 and "nan" not in out, (status, out, err)


def test_an_infinite_float_target_is_one_line(capsys, tmp_path):
    # Found by tests/test_fuzz_input.py: inferring the task took inf % 1, whose RuntimeWarning
    # became a second stderr line (an internal error under -W error) before the real message.
    (tmp_path / "inf.csv").write_text("f0,label\n0,inf\n1,2\n")
    line = one_error(capsys, "train", "inf.csv", "--target", "label", *FAST, "--out", "NEW")
    assert line == "nnfit: error: inf.csv: target column 'label' has a non-finite value (row 1: inf)"


# ------------------------------------------------------------ 12: names made printable
def test_escape_sequences_in_a_header_never_reach_the_terminal(small_run, tmp_path):
    (tmp_path / "esc.csv").write_bytes(b"a,b\x1b[31m,\x1b]0;x\x07c\xe2\x80\xae\n1,2,3\n")
    p = nnfit_process("predict", small_run, "esc.csv", cwd=tmp_path)
    out, err = p.communicate(timeout=120)
    line = err.decode()
    assert p.returncode == 2 and len(line.splitlines()) == 1 and not out, (p.returncode, line)
    assert "\x1b" not in line and "\x07" not in line and "\u202e" not in line
    assert ("esc.csv: missing feature columns the model uses: b "
            "(columns given: a, b\\x1b[31m, \\x1b]0;x\\x07c\\u202e)") in line, line
    # the same names as extra columns: ignored, in one printable warning line
    (tmp_path / "extra.csv").write_bytes(b"a,b,b\x1b[31m,\x1b]0;x\x07c\xe2\x80\xae\n1,2,3,4\n")
    p = nnfit_process("predict", small_run, "extra.csv", cwd=tmp_path)
    out, err = p.communicate(timeout=120)
    line = err.decode()
    assert p.returncode == 0 and len(line.splitlines()) == 1 and out, (p.returncode, line)
    assert "\x1b" not in line and "\x07" not in line and "\u202e" not in line
    assert line == ("nnfit: warning: extra.csv: ignoring columns the model was not trained on: "
                    "b\\x1b[31m, \\x1b]0;x\\x07c\\u202e\n"), line


def test_every_message_and_warning_is_printable(capsys, tmp_path):
    with pytest.raises(DataError) as e:
        raise DataError("a\x1b[2Jb\nc\rd\te\u2028")
    assert str(e.value) == "a\\x1b[2Jb\\nc\\rd\\te\\u2028"
    with pytest.warns(NnfitWarning, match=r"^skipping \\x1b\[0m$"):
        nnfit.errors.warn("skipping \x1b[0m")
    assert printable("naïve 名前 ok") == "naïve 名前 ok"
    status, _, err = cli(capsys, "predict", "\x1b[2Jrun", "x.csv")
    assert status == 2 and "\x1b" not in err and "\\x1b[2Jrun" in err
    with pytest.raises(SystemExit):
        main(["predict", "r", "x.csv", "--bogus", "\x1b[2J"])
    err = capsys.readouterr().err
    assert "\x1b" not in err and err.startswith("nnfit: error: unrecognized arguments: --bogus \\x1b[2J")


# --------------------------------------------------------------- 14: quoted CSV headers
@pytest.mark.parametrize("quoting", [csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])
def test_a_quoted_header_stays_on_the_fast_reader(tmp_path, quoting):
    rng = np.random.default_rng(0)
    rows = [[*map(float, rng.normal(size=5)), f"c{i % 3}"] for i in range(5000)]
    header = [f"f{j}" for j in range(5)] + ["y"]
    plain = read_table(write_csv(tmp_path / "plain.csv", header, rows), exclude="y")
    quoted = read_table(write_csv(tmp_path / "quoted.csv", header, rows, quoting), exclude="y")
    assert quoted.block is not None, "fell back to the general reader"
    assert quoted.block_names == plain.block_names == header[:5]
    assert np.array_equal(quoted.block, plain.block)
    assert quoted.arrays["y"].tolist() == plain.arrays["y"].tolist()


def test_a_quoted_newline_across_a_chunk_boundary_is_read_right(tmp_path, monkeypatch):
    # The value's second line looks like a row of its own: a 64-byte piece ending inside it
    # used to be parsed as two rows (77 rows instead of 60), without any error.
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 64)
    rows = [[i, f"t{i}", f"x{i}\n{i},w," + "v" * 40 if i % 3 == 0 else f"n{i}"] for i in range(60)]
    p = write_csv(tmp_path / "nl.csv", ["a", "b", "note"], rows)
    fast, general = read_table(p), read_columns(p)
    assert len(fast) == len(general) == 60 and fast.names == general.names
    for name in general.names:
        assert fast.arrays[name].tolist() == general.arrays[name].tolist(), name


def test_a_lone_carriage_return_in_the_header_is_read_like_the_general_reader(tmp_path):
    # pyarrow ends a line at a lone "\r"; Python's csv module, which names the fast path's
    # columns, raised on it ("internal error" from the CLI).
    (tmp_path / "cr.csv").write_bytes(b"\rf0,label\n0,yes\n1,no\n")
    fast, general = read_table(tmp_path / "cr.csv"), read_columns(tmp_path / "cr.csv")
    assert fast.names == general.names == ["f0", "label"]
    assert fast.arrays["label"].tolist() == general.arrays["label"].tolist() == ["yes", "no"]


# ------------------------------------------------------------ 15: the Python API's edges
FIT = {"epochs": 1, "quiet": True, "device": "cpu"}


def test_integer_tensors_are_numbers_for_built_in_models():
    torch.manual_seed(0)
    x, y = torch.randint(0, 10, (40, 3)), np.arange(40) % 2
    learner = nnfit.fit({"name": "mlp", "hidden": [4]}, x, y, **FIT)
    s = learner.preprocessor.inputs[0]
    assert s.dtype == "float32" and s.mean is not None  # standardised like any numeric feature
    assert np.array_equal(learner.predict(x), learner.predict(x.numpy().astype(np.float32)))
    resmlp = nnfit.fit({"name": "resmlp", "hidden": [4]}, x.bool(), y, **FIT)
    assert resmlp.predict(x.bool()).shape == (40,)


@pytest.mark.parametrize(("model", "x", "error", "message"), [
    ({"name": "mlp"}, np.zeros((40, 3, 2)), DataError,
     r"^model 'mlp' takes \(rows, features\) input, got per-sample shape \(3, 2\): flatten it"),
    ({"name": "resmlp", "in_features": 6}, torch.zeros(40, 3, 2), DataError, r"per-sample shape \(3, 2\)"),
    ({"name": "mlp", "in_features": 5}, np.zeros((40, 3)), ConfigError,
     r"^model spec: in_features is 5 but the data has 3 features per row$"),
    ({"name": "mlp"}, (np.zeros((40, 3)), np.zeros((40, 2))), DataError, r"^model 'mlp' takes one input"),
    ({"name": "mlp"}, torch.zeros(40, 3, device="meta"), DataError,
     r"^training data: tensors on the meta device hold no data$"),
])
def test_inputs_a_built_in_model_cannot_take_are_one_line(model, x, error, message):
    with pytest.raises(error, match=message):
        nnfit.fit(model, x, np.arange(40) % 2, **FIT)


def test_a_meta_device_target_is_refused():
    with pytest.raises(DataError, match=r"^training data target: tensors on the meta device hold no data$"):
        nnfit.fit({"name": "mlp"}, np.zeros((40, 3)), torch.zeros(40, device="meta"), **FIT)


def test_a_multiindex_target_is_found_by_its_tuple(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(40, 2)), columns=pd.MultiIndex.from_tuples([("f", "a"), ("f", "b")]))
    df[("t", "y")] = np.arange(40) % 2
    learner = nnfit.fit({"name": "mlp", "hidden": [4]}, df, target=("t", "y"), **FIT)
    assert learner.target_name == "('t', 'y')"
    assert "accuracy" in learner.evaluate(df, target=("t", "y"))
    learner.save(tmp_path / "m")
    assert np.array_equal(nnfit.load(tmp_path / "m").predict(df), learner.predict(df))
    frame = pd.DataFrame({0: rng.normal(size=40), 1: np.arange(40) % 2})  # integer labels too
    assert nnfit.fit({"name": "mlp", "hidden": [4]}, frame, target=1, **FIT).target_name == "1"
    with pytest.raises(NnfitError, match=r"column \"\('t', 'z'\)\" not found \(columns: \('f', 'a'\)"):
        nnfit.fit({"name": "mlp"}, df, target=("t", "z"), **FIT)


# ------------------------------------------------------- 20: predict -o naming its input
def test_predict_refuses_to_replace_its_input_without_overwrite(capsys, small_run, tmp_path):
    write_csv(tmp_path / "in.csv", ["a", "b"], [[0.001, 1.0], [0.0, -1.0]])
    before = (tmp_path / "in.csv").read_bytes()
    (tmp_path / "link.csv").symlink_to(tmp_path / "in.csv")
    for output in ("in.csv", "./in.csv", str(tmp_path / "in.csv"), "link.csv"):
        line = one_error(capsys, "predict", small_run, "in.csv", "-o", output)
        assert line == (f"nnfit: error: -o {output} is the input DATA file: choose another output, "
                        "or pass --overwrite to replace the input with the predictions"), line
        assert (tmp_path / "in.csv").read_bytes() == before
    status, _, err = cli(capsys, "predict", small_run, "in.csv", "-o", "in.csv", "--overwrite")
    assert status == 0, err
    assert (tmp_path / "in.csv").read_text().splitlines()[0] == "y"
