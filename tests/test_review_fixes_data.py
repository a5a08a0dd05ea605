"""Findings of the review of issue 8's hardening, data side (findings 3-8, the nits of 11, 12).

Targets that cannot be saved (dates, decimals), uint64 labels, non-finite model outputs at
evaluate, odd tensors and models in the Python API, a UTF-8 byte-order mark, Ctrl-C while
``nnfit.cli`` imports, message wording, and NaN buffers in checkpoints. Each test failed before
its fix. The CLI runs in-process (``nnfit.cli.main``) except for the signal test.
"""

from __future__ import annotations

import datetime
import decimal
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

import nnfit
from helpers import cli, one_error
from nnfit.callbacks import Callback
from nnfit.data.columns import read_columns
from nnfit.data.read import read_table
from nnfit.errors import ConfigError, DataError, TrainingError
from nnfit.tasks import LabelMap

FAST = ["--epochs", "1", "--hidden", "8", "--quiet", "--device", "cpu"]
QUIET = {"epochs": 1, "quiet": True, "device": "cpu"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("NNFIT_DEBUG", raising=False)


def features(n: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=n), "b": rng.normal(size=n)}


def write_csv(path: Path, columns: dict[str, object], encoding: str = "utf-8") -> Path:
    names = list(columns)
    rows = zip(*(list(v) for v in columns.values()), strict=True)
    path.write_text("\n".join([",".join(names), *(",".join(map(str, r)) for r in rows)]) + "\n",
                    encoding=encoding)
    return path


# ------------------------------------------------ 3: a target JSON cannot hold, and bytes
TARGETS = {
    "date": ([datetime.date(2020, 1, 1 + i % 3) for i in range(40)], None, "date"),
    "timestamp": ([datetime.datetime(2020, 1, 1 + i % 3) for i in range(40)], None, "datetime"),
    "decimal": ([decimal.Decimal(i % 3) for i in range(40)], None, "Decimal"),
    "duration": ([datetime.timedelta(seconds=i % 3) for i in range(40)], pa.duration("s"), "timedelta"),
}


@pytest.mark.parametrize("kind", list(TARGETS))
def test_a_target_of_dates_or_decimals_is_one_line_and_writes_nothing(capsys, tmp_path, kind):
    values, arrow_type, type_name = TARGETS[kind]
    pq.write_table(pa.table({**features(), "t": pa.array(values, arrow_type)}), tmp_path / "d.parquet")
    # was: "internal error: TypeError: Object of type date is not JSON serializable", exit 1,
    # and a half-written run
    line = one_error(capsys, "train", "d.parquet", "--target", "t", *FAST, "--out", "run")
    assert line.startswith(f"nnfit: error: d.parquet: target column 't' must hold labels or numbers, "
                           f"got {type_name} values (row 1: "), line
    assert not (tmp_path / "run").exists()
    with pytest.raises(DataError, match=f"must hold labels or numbers, got {type_name} values"):
        nnfit.fit("mlp", tmp_path / "d.parquet", target="t", **QUIET)


def test_a_binary_parquet_target_holding_text_trains_as_text_labels(tmp_path):
    labels = [b"yes" if i % 2 else b"no" for i in range(40)]
    pq.write_table(pa.table({**features(), "t": pa.array(labels, pa.binary())}), tmp_path / "b.parquet")
    assert read_table(tmp_path / "b.parquet").arrays["t"].tolist()[:2] == ["no", "yes"]
    learner = nnfit.fit("mlp", tmp_path / "b.parquet", target="t", **QUIET)  # was: bytes not JSON
    assert learner.classes == ["no", "yes"] and set(learner.predict(tmp_path / "b.parquet")) <= {"no", "yes"}


# --------------------------------------------------------------------- 7: uint64 labels
def test_integer_labels_beyond_int64_come_back_exact():
    big = 2**63 + 5
    assert LabelMap((1, big)).decode(np.array([1, 0, 1])).tolist() == [big, 1, big]
    assert LabelMap((1, big)).decode(np.array([1])).dtype == np.uint64
    assert LabelMap((-1, big)).decode(np.array([1, 0])).tolist() == [big, -1]
    assert LabelMap((1, 2)).decode(np.array([1])).dtype == np.int64  # unchanged


def test_uint64_parquet_labels_are_predicted_as_the_same_integers(capsys, tmp_path):
    big = 2**63 + 5
    t = pa.array([big if i % 2 else 1 for i in range(40)], pa.uint64())
    pq.write_table(pa.table({**features(), "t": t}), tmp_path / "u.parquet")
    assert cli(capsys, "train", "u.parquet", "--target", "t", *FAST, "--out", "run")[0] == 0
    status, out, _ = cli(capsys, "predict", "run", "u.parquet")
    lines = out.splitlines()
    # was 9.223372036854776e+18 and 1.0
    assert status == 0 and lines[0] == "t" and set(lines[1:]) <= {str(big), "1"}, lines[:3]
    pred = nnfit.load(tmp_path / "run").predict(tmp_path / "u.parquet")
    assert pred.dtype == np.uint64 and set(pred.tolist()) <= {big, 1}


# ------------------------------------------------------- 4: non-finite outputs at evaluate
@pytest.fixture(scope="module")
def overflowing(tmp_path_factory) -> dict[str, Path]:
    """A regression and a binary model saved twice: as trained, and with a first layer of
    weights 1e30, whose output is finite near the training data and not finite for a row
    of 1e9 (which standardises without trouble)."""
    d = tmp_path_factory.mktemp("overflow")
    cols = features(60)
    out = {}
    for task, y in (("regression", cols["a"] + cols["b"]), ("binary", (cols["a"] > 0).astype(int))):
        write_csv(d / f"{task}.csv", {**cols, "y": y})
        write_csv(d / f"{task}_far.csv", {"a": [0.0, 1e9, 0.5], "b": [0.0, 1e9, 0.5], "y": [1, 0, 1]})
        learner = nnfit.fit({"name": "mlp", "hidden": [8]}, d / f"{task}.csv", target="y", task=task,
                            epochs=2, quiet=True, device="cpu")
        learner.save(d / f"{task}_model")
        first = next(m for m in learner.model.modules() if isinstance(m, nn.Linear))
        with torch.no_grad():
            first.weight.fill_(1e30)
            first.bias.zero_()
        learner.save(d / f"{task}_big")
        out[task] = d
    return out


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_evaluate_refuses_a_non_finite_model_output_naming_the_row(capsys, overflowing, task):
    d = overflowing[task]
    far = d / f"{task}_far.csv"
    for command in (["evaluate", d / f"{task}_big", far, "--json"], ["evaluate", d / f"{task}_big", far],
                    ["predict", d / f"{task}_big", far]):
        line = one_error(capsys, *command)  # evaluate was: {"mse": null, ...} and exit 0
        assert line.startswith(f"nnfit: error: {far}: the model's output for row 2 is not finite ("), line
    learner = nnfit.load(d / f"{task}_big", device="cpu")
    calls = [learner.predict, learner.evaluate, learner.outputs]
    if task == "binary":
        calls.append(learner.predict_proba)
    for call in calls:  # the Python API agrees with the CLI: no silent NaN
        with pytest.raises(DataError, match=r"_far\.csv: the model's output for row 2 is not finite"):
            call(far)
    raw = learner.outputs(far, check_finite=False)
    assert torch.isfinite(raw[[0, 2]]).all() and not torch.isfinite(raw[1]).all()
    assert "loss" in learner.evaluate(d / f"{task}.csv")  # outputs finite there (if huge): no error


def test_evaluate_names_the_data_in_its_confusion_matrix_line(capsys, overflowing):
    d = overflowing["binary"]
    status, out, err = cli(capsys, "evaluate", d / "binary_model", d / "binary.csv")
    assert status == 0, err
    assert "confusion matrix (binary.csv; rows = true, columns = predicted)" in out, out  # was "(value; "


# -------------------------------------------------------- 5: odd tensors and models in fit
X, Y = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32), np.arange(20) % 2 == 0

def _quietly(make):
    """``make()`` with torch's warnings that sparse CSR and nested tensors are beta/prototype
    features silenced (warnings are errors in this suite)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make()


ODD = {
    "3-D X, MLP instance": (lambda: nnfit.MLP(4, [8], 1), lambda: torch.rand(20, 2, 2),
                            DataError, r"model 'mlp' takes \(rows, features\) input, got per-sample shape "
                                       r"\(2, 2\)"),
    "3-D X, ResidualMLP instance": (lambda: nnfit.ResidualMLP(4, [8], 1), lambda: torch.rand(20, 1, 4),
                                    DataError, r"model 'resmlp' takes \(rows, features\) input"),
    "wrong width, MLP instance": (lambda: nnfit.MLP(5, [8], 1), lambda: X,
                                  DataError, "model 'mlp' takes 5 features per row, the data has 4"),
    "meta-device model": (lambda: nnfit.MLP(4, [8], 1).to("meta"), lambda: X,
                          ConfigError, r"model: '\S+' is on the meta device and holds no data"),
    "sparse X": (lambda: nnfit.MLP(4, [8], 1), lambda: torch.from_numpy(X).to_sparse(),
                 DataError, r"a sparse tensor \(torch.sparse_coo\) is not supported"),
    "sparse CSR X": (lambda: "mlp", lambda: _quietly(lambda: torch.from_numpy(X).to_sparse_csr()),
                     DataError, r"a sparse tensor \(torch.sparse_csr\) is not supported"),
    "complex X": (lambda: nnfit.MLP(4, [8], 1), lambda: torch.rand(20, 4, dtype=torch.complex64),
                  DataError, r"complex values \(torch.complex64\) are not supported"),
}


@pytest.mark.parametrize("case", list(ODD))
def test_odd_models_and_tensors_are_one_line_errors(case):
    model, x, error, message = ODD[case]
    with pytest.raises(error, match=message) as e:
        nnfit.fit(model(), x(), Y, **QUIET)
    assert "\n" not in str(e.value)


def test_a_nested_tensor_is_a_one_line_error():
    nested = _quietly(lambda: torch.nested.nested_tensor([torch.rand(4) for _ in range(20)]))
    with pytest.raises(DataError, match="a nested tensor .* is not supported"):
        nnfit.fit(nnfit.MLP(4, [8], 1), nested, Y, **QUIET)


def test_odd_target_tensors_are_one_line_errors():
    with pytest.raises(DataError, match="training data target: a sparse tensor"):
        nnfit.fit("mlp", X, torch.from_numpy(Y.astype(np.float32)).to_sparse(), **QUIET)
    with pytest.raises(DataError, match=r"training data target: complex values \(torch.complex64\)"):
        nnfit.fit("mlp", X, torch.ones(20, dtype=torch.complex64), **QUIET)


def test_an_mlp_instance_takes_integer_features_as_numbers():
    ints = torch.randint(0, 5, (20, 4))  # was: "mat1 and mat2 must have the same dtype"
    learner = nnfit.fit(nnfit.MLP(4, [8], 1), ints, Y, **QUIET)
    assert learner.preprocessor.inputs[0].dtype == "float32" and learner.predict(ints).shape == (20,)


# ---------------------------------------------------------------- 6: a UTF-8 byte-order mark
@pytest.mark.parametrize("header", ["alpha,b,y", '"alpha","b","y"'])
def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path, header):
    cols = features()
    body = "".join(f"{a},{b},{int(a > 0)}\n" for a, b in zip(cols["a"], cols["b"], strict=True))
    (tmp_path / "bom.csv").write_text(header + "\n" + body, encoding="utf-8-sig")  # Excel's "CSV UTF-8"
    fast = read_table(tmp_path / "bom.csv", exclude="alpha")
    assert fast.names == ["alpha", "b", "y"] and fast.block is not None  # was "\ufeffalpha"
    assert read_columns(tmp_path / "bom.csv").names == ["alpha", "b", "y"]
    learner = nnfit.fit("mlp", tmp_path / "bom.csv", target="alpha", task="regression", **QUIET)
    assert learner.target_name == "alpha"


# ----------------------------------------------- 8: Ctrl-C while nnfit.cli does its imports
# Sends SIGINT to its own process at the moment nnfit.cli starts importing nnfit.errors (where
# the review's traceback ended), then runs the entry point as the console script or as
# `python -m nnfit` does.
HOOK = '''
import os, runpy, signal, sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "nnfit.errors":
            os.kill(os.getpid(), signal.SIGINT)
        return None

how, script = sys.argv[1], sys.argv[2]
sys.argv = [script, "--version"]
sys.meta_path.insert(0, CtrlC())
if how == "script":
    runpy.run_path(script, run_name="__main__")
else:
    runpy.run_module("nnfit", run_name="__main__", alter_sys=True)
'''
# What pip writes as the `nnfit` console script.
CONSOLE_SCRIPT = '''import re
import sys
from nnfit.cli import run
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(run())
'''


@pytest.mark.parametrize("how", ["script", "module"])
def test_ctrl_c_while_the_cli_imports_is_one_line_and_130(tmp_path, how):
    (tmp_path / "hook.py").write_text(HOOK)
    (tmp_path / "nnfit").write_text(CONSOLE_SCRIPT)
    src = str(Path(nnfit.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != "NNFIT_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "hook.py", how, str(tmp_path / "nnfit")], cwd=tmp_path, env=env,
                          capture_output=True, timeout=120)
    # was: a traceback ending in KeyboardInterrupt inside nnfit/errors.py, death by SIGINT
    assert (done.returncode, done.stderr, done.stdout) == (130, b"nnfit: interrupted\n", b""), done


def test_importing_the_cli_in_a_program_leaves_its_signal_handlers_alone():
    code = "import signal, nnfit.cli; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout == "True\n", done


# --------------------------------------------------------------------------- 11: wording
def test_a_number_beyond_float32_is_named_by_its_value_in_the_file(capsys, tmp_path):
    cols = {"a": [0.1 * i for i in range(150)], "b": [i % 3 for i in range(150)],
            "y": [i % 2 for i in range(150)]}
    cols["a"][101] = "-5e38"
    write_csv(tmp_path / "big.csv", cols)
    line = one_error(capsys, "train", "big.csv", "--target", "y", *FAST, "--out", "run")
    assert line == ("nnfit: error: big.csv: column 'a' has a value beyond float32 range (row 102: -5e+38; "
                    "float32 holds at most 3.4e38 in size)"), line  # was "(row 102: -inf; ..."
    cols["a"][101] = "-inf"
    write_csv(tmp_path / "inf.csv", cols)
    line = one_error(capsys, "train", "inf.csv", "--target", "y", *FAST, "--out", "run")
    assert line == "nnfit: error: inf.csv: column 'a' has a non-finite value (row 102: -inf)", line
    pq.write_table(pa.table({"a": [1.0, 2.0, 7e38], "y": [0, 1, 0]}), tmp_path / "big.parquet")
    with pytest.raises(DataError, match=r"^\S+big.parquet: column 'a' has a value beyond float32 range "
                                        r"\(row 3: 7e\+38; "):
        read_table(tmp_path / "big.parquet", exclude="y")


def test_a_dictionary_encoded_text_column_is_named_as_text(capsys, tmp_path):
    text = pa.array(["y" if i % 2 else "x" for i in range(40)]).dictionary_encode()
    table = pa.table({"a": features()["a"], "b": text, "t": np.arange(40) % 2})
    pq.write_table(table, tmp_path / "d.parquet")
    line = one_error(capsys, "train", "d.parquet", "--target", "t", *FAST, "--out", "run",
                     "--numeric", "b")  # the strict reading; by default b is categorical
    assert line.endswith("d.parquet: column 'b' is not numeric (row 1: 'x')"), line  # was np.str_('x')
    status, _, err = cli(capsys, "train", "d.parquet", "--target", "t", *FAST, "--out", "run")
    assert status == 0, err
    table = json.loads((tmp_path / "run" / "model.json").read_text())["preprocess"]["table"]
    assert table["columns"][1] == {"name": "b", "role": "categorical", "levels": ["x", "y"],
                                   "missing": False, "unknown": 0.0}  # levels as text


# ------------------------------------------------------------------ 12: NaN buffers
class _PoisonRunningVar(Callback):
    def on_epoch_end(self, trainer, logs):
        trainer.model[1].running_var.fill_(float("nan"))


def test_a_nan_buffer_is_never_checkpointed(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    with pytest.raises(TrainingError, match=r"^model/1\.running_var holds NaN at step \d+: not checkpointed"):
        nnfit.fit(model, X, Y, epochs=2, quiet=True, device="cpu", run_dir=tmp_path / "r",
                  callbacks=[_PoisonRunningVar()])
    assert not list((tmp_path / "r").rglob("*.safetensors"))
