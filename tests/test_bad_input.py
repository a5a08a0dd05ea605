"""Bad input, case by case: each kind of malformed data, config or saved model gets one line
naming the file, the column and the 1-based data row (where they exist) and exit status 2.

The CLI runs in-process (``nnfit.cli.main``) except for a few real subprocesses at the end,
which prove the status and a one-line stderr of ``python -m nnfit``. Imputation (on by default;
``--no-impute`` / ``impute=False`` refuses gaps) is tested here too: training-split medians,
saved with the model, applied at predict time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnfit
from nnfit.cli import main
from nnfit.config import RunConfig, TrainConfig, check_names, make_run_config, read_config_file
from nnfit.data.read import read_table
from nnfit.errors import CheckpointError, ConfigError, DataError, NnfitWarning
from nnfit.files import write_files

FAST = {"quiet": True, "device": "cpu", "epochs": 2, "batch_size": 16}
GOOD = "a,b,c,d,label\n" + "".join(
    f"{i % 7},{(i * 3) % 5},{i / 10},{(i * i) % 11},{'yes' if i % 3 else 'no'}\n" for i in range(30))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("NNFIT_DEBUG", raising=False)


def cli(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def one_error(capsys, *argv) -> str:
    """Run the CLI, assert exit status 2 and exactly one stderr line; return that line."""
    status, err = cli(capsys, *argv)
    lines = err.splitlines()
    assert status == 2 and len(lines) == 1, (status, err)
    assert lines[0].startswith("nnfit: error: ") and "Traceback" not in err
    return lines[0]


def with_row(text: str, row: int, line: str) -> str:
    """GOOD with data row ``row`` (1-based) replaced by ``line``."""
    lines = text.splitlines()
    lines[row] = line
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("trained")
    (d / "good.csv").write_text(GOOD)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        assert main(["train", "good.csv", "--target", "label", "--epochs", "2", "--hidden", "8",
                     "--quiet", "--device", "cpu", "--out", "run"]) == 0
    return d / "run"


# ------------------------------------------------------------------------------ reading
@pytest.mark.parametrize(("text", "named"), [
    (with_row(GOOD, 4, "1,2,inf,4,yes"), "column 'c' has a non-finite value (row 4: inf"),
    (with_row(GOOD, 2, "1,-inf,0.5,4,no"), "column 'b' has a non-finite value (row 2: -inf"),
    (with_row(GOOD, 6, "1,2,1e39,4,no"),  # the file's value, not the inf float32 made of it
     "column 'c' has a value beyond float32 range (row 6: 1e+39; float32 holds"),
    (with_row(GOOD, 5, "1,2,0.5,oops,no"), "column 'd' is not numeric (row 5: 'oops')"),
    (with_row(GOOD, 3, "1,2,0.5,4,yes,extra"), "cannot parse: row 3 has 6 fields, the header has 5"),
    (with_row(GOOD, 7, "1,2,0.5,no"), "cannot parse: row 7 has 4 fields, the header has 5"),
    (with_row(GOOD, 2, '1,2,"0.5,4,no'), "cannot parse: row 2 has"),
    ("\n\n\n", "no header row (the file holds only blank lines)"),
    ("a,,c,d,label\n1,2,3,4,yes\n2,3,4,5,no\n", "column 2 has an empty name"),
    ("a,b,a,d,label\n1,2,3,4,yes\n2,3,4,5,no\n", "duplicate column names: a"),
    (with_row(with_row(GOOD, 2, "1,,0.5,4,no"), 9, "nan,,0.5,4,no"),
     "missing values in columns: a (1), b (2)"),
    (with_row(GOOD, 8, "1,2,0.5,4,"), "target column 'label' is missing on row 8 (1 row in all)"),
    ("a,b,c,d,label\n" + "1,2,3,4,yes\n" * 5, "target column 'label' has a single class ('yes')"),
])
def test_bad_csv_names_file_column_and_row(capsys, tmp_path, text, named):
    (tmp_path / "bad.csv").write_text(text)
    before = (tmp_path / "bad.csv").read_bytes()
    # --numeric and --no-impute: the strict reading these messages are about (by default a
    # text column is categorical and gaps are filled: tests/test_tables.py)
    line = one_error(capsys, "train", "bad.csv", "--target", "label", "--quiet", "--out", "NEW",
                     "--numeric", "a,b,c,d", "--no-impute")
    assert "bad.csv" in line and named in line, line
    assert not (tmp_path / "NEW").exists() and (tmp_path / "bad.csv").read_bytes() == before


def test_text_that_is_not_utf8_is_named_not_a_crash(capsys, tmp_path):
    (tmp_path / "latin.csv").write_bytes(with_row(GOOD, 4, "1,2,0.5,4,y\xe9s").encode("latin-1"))
    line = one_error(capsys, "train", "latin.csv", "--target", "label", "--quiet", "--out", "NEW")
    assert line.endswith("latin.csv: column 'label' is not UTF-8 text (row 4: b'y\\xe9s')"), line
    (tmp_path / "head.csv").write_bytes(b"a,l\xe9bel\n1,x\n2,y\n")
    assert "head.csv: the header is not UTF-8 text" in one_error(
        capsys, "train", "head.csv", "--target", "label", "--quiet", "--out", "NEW")


def test_regression_target_with_inf_names_the_row(capsys, tmp_path):
    rows = "".join(f"{i},{i * 2},{'inf' if i == 5 else i * 3}\n" for i in range(20))
    (tmp_path / "r.csv").write_text("a,b,y\n" + rows)
    line = one_error(capsys, "train", "r.csv", "--target", "y", "--quiet", "--out", "NEW")
    assert line.endswith("r.csv: target column 'y' has a non-finite value (row 6: inf)"), line


def test_parquet_duplicate_names_are_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table([pa.array([1.0, 2.0]), pa.array([3.0, 4.0])], names=["a", "a"]),
                   tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d.parquet: duplicate column names: a$"):
        nnfit.data.read.read_table(tmp_path / "d.parquet")


# ------------------------------------------------------------------------ evaluate / predict
def test_unseen_label_names_file_column_and_first_row(capsys, trained, tmp_path):
    (tmp_path / "u.csv").write_text(with_row(with_row(GOOD, 5, "1,2,0.5,4,maybe"), 9, "1,2,3,4,nah"))
    line = one_error(capsys, "evaluate", trained, "u.csv")
    assert line.endswith("u.csv: target column 'label' has labels unseen at training: 'maybe', 'nah', "
                         "first at row 5 (known: 'no', 'yes')"), line


@pytest.mark.parametrize(("header", "rows", "tail"), [
    ("a,b,c", "1,2,3", "d (columns given: a, b, c)"),
    ("a,b,c,z", "1,2,3,4", "d (columns given: a, b, c, z)"),
])
def test_wrong_features_at_predict_are_named(capsys, trained, tmp_path, header, rows, tail):
    (tmp_path / "p.csv").write_text(f"{header}\n{rows}\n{rows}\n")
    line = one_error(capsys, "predict", trained, "p.csv")
    assert line == f"nnfit: error: p.csv: missing feature columns the model uses: {tail}"


def test_an_extra_column_at_predict_is_ignored_with_one_warning(capsys, trained, tmp_path):
    (tmp_path / "p.csv").write_text("a,b,c,d,e\n1,2,3,4,5\n1,2,3,4,5\n")
    status, err = cli(capsys, "predict", str(trained), "p.csv")
    assert status == 0 and err.splitlines() == [
        "nnfit: warning: p.csv: ignoring columns the model was not trained on: e"], err


def test_columns_in_another_order_are_matched_by_name(capsys, trained, tmp_path):
    """The same columns in another order are not an error: they are matched by name (the
    schema is checked before the forward pass), so the predictions are the same."""
    rows = [line.split(",") for line in GOOD.splitlines()]
    (tmp_path / "swapped.csv").write_text("\n".join(",".join(r[3::-1]) for r in rows) + "\n")
    learner = nnfit.load(trained, device="cpu")
    np.testing.assert_array_equal(learner.predict_proba(str(tmp_path / "swapped.csv")),
                                  learner.predict_proba(str(trained.parent / "good.csv")))


def _rewrite_meta(run, meta) -> None:
    """Edit model.json as a consistent save would (manifest rewritten): only the content differs."""
    write_files(run, "model", {"model.safetensors": (run / "model.safetensors").read_bytes(),
                               "model.json": json.dumps(meta).encode()})


def test_architecture_mismatch_on_load_through_the_cli(capsys, trained, tmp_path):
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(trained, run)
    meta = json.loads((run / "model.json").read_text())
    meta["spec"]["hidden"] = [8, 8, 8]
    _rewrite_meta(run, meta)
    line = one_error(capsys, "predict", run, trained.parent / "good.csv")
    assert line.endswith("model.safetensors: weights do not fit the model "
                         "(missing keys: fc2.weight, fc2.bias, fc3.weight, fc3.bias)"), line
    meta["spec"]["hidden"] = [4]
    _rewrite_meta(run, meta)
    line = one_error(capsys, "evaluate", run, trained.parent / "good.csv")
    assert "shape mismatch: fc1.weight (8, 4) vs model (4, 4); fc1.bias (8,) vs model (4,)" in line, line


def test_a_model_from_a_newer_format_is_refused(capsys, trained, tmp_path):
    import shutil

    run = tmp_path / "newer"
    shutil.copytree(trained, run)
    meta = json.loads((run / "model.json").read_text())
    _rewrite_meta(run, {**meta, "format": 99})
    line = one_error(capsys, "predict", run, trained.parent / "good.csv")
    assert "written by a newer nnfit (format 99); upgrade nnfit" in line
    # every field is checked against the schema, and named (nnfit.io.validate)
    with pytest.raises(CheckpointError, match=r"model.json: preprocess.inputs\[0\].name: missing"):
        _rewrite_meta(run, {**meta, "preprocess": {"style": "single", "inputs": [{"nope": 1}]}})
        nnfit.load(run)


# ------------------------------------------------------------------------------ impute
def test_impute_fills_with_training_medians_saved_with_the_model(capsys, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).round(3)
    holes = [(2, 0), (7, 0), (11, 2), (30, 1)]  # column d has no gap in training
    lines = ["a,b,c,d,label"]
    for i, row in enumerate(x):
        cells = ["" if (i, j) in holes else str(v) for j, v in enumerate(row)]
        lines.append(",".join(cells) + ("," + ("up" if row[0] > 0 else "down")))
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    line = one_error(capsys, "train", "m.csv", "--target", "label", "--no-impute", "--quiet",
                     "--out", "NO")
    assert line.endswith("m.csv: missing values in columns: a (2), b (1), c (1)"), line

    # On by default: trains, with one warning line listing the gaps filled.
    status, err = cli(capsys, "train", "m.csv", "--target", "label", "--val-split", "0",
                      "--epochs", "2", "--quiet", "--out", "R")
    assert status == 0 and err.splitlines() == [
        "nnfit: warning: m.csv: filled missing values (numeric: training median, categorical: "
        "their own index): a (2), b (1), c (1)"], err
    meta = json.loads((tmp_path / "R" / "model.json").read_text())
    assert meta["format"] == 2 and "fill" not in meta["preprocess"]["inputs"][0]
    table = meta["preprocess"]["table"]
    assert table["impute"] is True and [c["name"] for c in table["columns"]] == ["a", "b", "c", "d"]
    known = x.copy()
    for i, j in holes:
        known[i, j] = np.nan
    med = [c["fill"][0] for c in table["columns"]]  # every column's median, d's too
    np.testing.assert_allclose(med, np.nanmedian(known, axis=0), rtol=1e-6)
    assert [c["indicator"] for c in table["columns"]] == [True, True, True, False]
    assert json.loads((tmp_path / "R" / "config.json").read_text())["impute"] is True
    # --impute is still accepted and means the same
    assert cli(capsys, "train", "m.csv", "--target", "label", "--impute", "--val-split", "0",
               "--epochs", "2", "--quiet", "--out", "R2")[0] == 0
    assert json.loads((tmp_path / "R2" / "model.json").read_text())["preprocess"] == meta["preprocess"]

    # predict fills a missing cell with the same median: in d (no gaps in training, so no
    # "was missing" input) the same answer as writing it in; in a (gaps in training) the same
    # values plus its indicator set.
    learner = nnfit.load(tmp_path / "R", device="cpu")
    (tmp_path / "q.csv").write_text(f"a,b,c,d\n,0.5,1.0,0.3\n{med[0]},0.5,1.0,0.3\n"
                                    f"0.1,0.2,0.7,\n0.1,0.2,0.7,{med[3]}\n")
    with pytest.warns(NnfitWarning, match=r"q.csv: filled missing values .*: a \(1\), d \(1\)$"):
        p = learner.predict_proba(str(tmp_path / "q.csv"))
    np.testing.assert_allclose(p[2], p[3], rtol=1e-6)
    with pytest.warns(NnfitWarning, match="filled missing values"):
        raw, _ = learner.preprocessor.table.encode(read_table(tmp_path / "q.csv", allow_missing=True))
    np.testing.assert_array_equal(raw[0, :4], raw[1, :4])
    np.testing.assert_allclose(raw[0, :4], [med[0], 0.5, 1.0, 0.3], rtol=1e-6)
    np.testing.assert_array_equal(raw[:2, 4:], [[1, 0, 0], [0, 0, 0]])  # a:missing, b:..., c:...
    status, err = cli(capsys, "predict", "R", "q.csv", "-o", "out.csv")
    assert status == 0 and len((tmp_path / "out.csv").read_text().splitlines()) == 5
    assert err.endswith("filled missing values (numeric: training median, categorical: their own "
                        "index): a (1), d (1)\n") and err.count("\n") == 1, err
    # A missing target is never imputed.
    (tmp_path / "t.csv").write_text("a,b,c,d,label\n1,2,3,4,up\n1,2,3,4,\n")
    assert one_error(capsys, "evaluate", "R", "t.csv").endswith(
        "t.csv: target column 'label' is missing on row 2 (1 row in all)")


def test_impute_flag_is_documented(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--impute" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:.*filled missing values")  # the line: test_tables.py
def test_impute_through_the_api_and_its_limits(tmp_path):
    x = np.random.default_rng(1).normal(size=(40, 2))
    y = x[:, 0] > 0
    holey = x.copy()
    holey[3, 1] = np.nan
    with pytest.raises(DataError, match=r"^training data: non-finite value at row 4, feature 1$"):
        nnfit.fit("mlp", holey, y, impute=False, **FAST)
    learner = nnfit.fit("mlp", holey, y, val_split=0, **FAST)  # on by default
    assert learner.preprocessor.inputs[0].fill == pytest.approx(np.nanmedian(holey, axis=0).tolist())
    assert np.isfinite(learner.predict_proba(holey)).all()
    learner.save(tmp_path / "m")
    back = nnfit.load(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(back.predict_proba(holey), learner.predict_proba(holey))
    empty = x.copy()
    empty[:, 1] = np.nan
    with pytest.raises(DataError, match="cannot impute column 'x1': it has no values in the training"):
        nnfit.fit("mlp", empty, y, impute=True, **FAST)
    plain = nnfit.fit("mlp", x, y, impute=False, **FAST)
    plain.save(tmp_path / "p")
    assert json.loads((tmp_path / "p" / "model.json").read_text())["format"] == 2
    assert "fill" not in json.loads((tmp_path / "p" / "model.json").read_text())["preprocess"]["inputs"][0]
    with pytest.raises(DataError, match="non-finite value at row 4"):
        plain.predict(holey)
    # by default every feature's median is saved, so a gap at predict time in a feature that had
    # none in training is filled: the same answer as writing the median in; inf is still refused
    gapless = nnfit.fit("mlp", x, y, val_split=0, **FAST)
    fill = gapless.preprocessor.inputs[0].fill
    assert fill == pytest.approx(np.median(x, axis=0).tolist())
    written = holey.copy()
    written[3, 1] = fill[1]
    np.testing.assert_array_equal(gapless.predict_proba(holey), gapless.predict_proba(written))
    holey[3, 1] = np.inf
    with pytest.raises(DataError, match=r"^input: non-finite value at row 4, feature 1$"):
        gapless.predict(holey)


# ------------------------------------------------------------------------------ arrays
def test_array_inputs_are_checked_before_training():
    x = np.random.default_rng(2).normal(size=(20, 3))
    y = (x[:, 0] > 0).astype(int)
    cases = [
        (np.array([[1, "a"]] * 20, dtype=object), y,
         "^training data: features must be numeric, got an array of object$"),
        (np.float64(3.0), y, "^training data: no data rows$"),
        (np.where(np.arange(60).reshape(20, 3) == 7, 1e39, x), y,
         "^training data: value beyond float32 range at row 3, feature 1$"),
        (x, np.where(np.arange(20) == 4, np.nan, y),
         r"^training data target has a missing value \(row 5: nan\)$"),
        (x, np.where(np.arange(20) == 6, np.inf, x[:, 0]),
         r"^training data target has a non-finite value \(row 7: inf\)$"),
        (x, np.array(["a", None] * 10, dtype=object),
         r"^training data target has a missing value \(row 2\)$"),
        (x, y[:5], "20 rows of inputs but 5 targets"),
    ]
    for xs, ys, message in cases:
        with pytest.raises(DataError, match=message):
            nnfit.fit("mlp", xs, ys, **FAST)


# ------------------------------------------------------------------------------ configs
@pytest.mark.parametrize(("values", "message"), [
    ({"lr": "inf"}, "lr: expected float, got 'inf'"),
    ({"lr": 1e400}, "lr: expected float, got inf"),
    ({"lr": 10**400}, "lr: expected float, got 1000"),  # float() overflows
    ({"dropout": float("nan")}, "dropout: expected float, got nan"),
    ({"seed": -1}, r"seed must be in \[0, 2\*\*63\), got -1"),
    ({"threads": 10**9}, "threads must be <= 4096"),
    ({"epochs": [1, 2]}, r"epochs: expected int, got \[1, 2\]"),
    ({"hidden": {"a": 1}}, "hidden: expected int, got {'a': 1}"),
    ({"optimizer": "adamm"}, "unknown optimizer 'adamm'"),
    ({"device": "gpu0"}, "unknown device 'gpu0'"),
    ({"device": "cuda:x"}, "unknown device 'cuda:x'"),
    ({"task": "ranking"}, "unknown task 'ranking'"),
    ({"epochz": 3}, "unknown config key 'epochz'"),
])
def test_bad_config_values(values, message):
    with pytest.raises(ConfigError, match=message):
        check_names(make_run_config(values))


def test_an_override_too_long_for_a_file_name_is_still_an_override():
    from nnfit.cli import split_items

    assert split_items(["data.csv", "lr=0." + "0" * 5000 + "1"])[1] == {"lr": "0." + "0" * 5000 + "1"}


def test_yaml_alias_bomb_is_refused_quickly_in_a_short_line(tmp_path):
    levels = ["a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    (tmp_path / "bomb.yaml").write_text("\n".join(levels) + "\nhidden: *a8\n")
    values = read_config_file(tmp_path / "bomb.yaml")
    with pytest.raises(ConfigError) as e:
        make_run_config({"hidden": values["hidden"]})
    assert len(str(e.value)) < 300 and "\n" not in str(e.value)


def test_plateau_needs_a_reducing_gamma():
    x = np.random.default_rng(3).normal(size=(20, 2))
    with pytest.raises(ConfigError, match="scheduler 'plateau' needs gamma < 1"):
        nnfit.fit("mlp", x, x[:, 0] > 0, scheduler="plateau", gamma=2.0, **FAST)


def test_config_defaults_are_valid():
    check_names(RunConfig())
    assert TrainConfig().impute is True  # gaps are filled unless impute=False / --no-impute


# ------------------------------------------------------------------------ real subprocesses
def _nnfit(*argv, cwd: Path) -> subprocess.CompletedProcess:
    src = str(Path(nnfit.__file__).resolve().parents[1])  # the nnfit this test imported
    env = {k: v for k, v in os.environ.items() if k != "NNFIT_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "nnfit", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_subprocess_bad_input_exits_2_with_one_stderr_line(trained, tmp_path):
    (tmp_path / "ragged.csv").write_text(with_row(GOOD, 3, "1,2,3"))
    (tmp_path / "narrow.csv").write_text("a,b,c,e\n1,2,3,5\n")
    (tmp_path / "bad.yaml").write_text("epochs: [\n")
    cases = [
        (["train", "ragged.csv", "--target", "label", "--out", "NEW"],
         "nnfit: error: ragged.csv: cannot parse: row 3 has 3 fields, the header has 5"),
        (["predict", trained, "narrow.csv"],
         "nnfit: error: narrow.csv: missing feature columns the model uses: d (columns given: a, b, c, e)"),
        (["train", "ragged.csv", "--target", "label", "--config", "bad.yaml"],
         "bad.yaml: invalid config file"),
    ]
    for argv, expected in cases:
        r = _nnfit(*argv, cwd=tmp_path)
        assert r.returncode == 2, (argv, r.returncode, r.stderr)
        assert r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
        assert expected in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "narrow.csv", "ragged.csv"]
