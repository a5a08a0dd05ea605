"""Who the members of a sweep are (``--seeds``, ``--grid``, ``--kfold``, ``--bootstrap``), their
names and groups, and the ``nnfit sweep`` command up to the engine: every bad input is one
line and exit 2 with nothing read or written, and each member's job is exactly what ``nnfit
train`` builds for its standalone twin.

The engine (``nnfit.sweep.run_sweep``) is replaced here by a recorder of the jobs it gets; the
sweep's training is tested with the engine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nnfit.cli import main
from nnfit.errors import ConfigError
from nnfit.sweep.members import (
    MAX_MEMBERS,
    group_key,
    parse_grid,
    parse_seeds,
    plan_members,
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test in its own empty directory (default sweep directories land there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")


def _run(capsys, *argv) -> tuple[int, str, str]:
    """``nnfit ARGV`` in-process: (status, stdout, stderr); argparse's exits included."""
    capsys.readouterr()
    try:
        status = main([str(a) for a in argv])
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 2
    out, err = capsys.readouterr()
    return status, out, err


def _csv(path: Path, n: int = 40) -> Path:
    """A small binary-classification table: features a, b, c and target y."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    lines = ["a,b,c,y"] + [f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{t}" for r, t in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


class Recorder:
    """Stands in for ``nnfit.sweep.run_sweep``: keeps what it got, writes the record as
    ``OUT/sweep.json`` (as the engine does), and returns one row per member."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, jobs, out, *, resume, overwrite, sweep_record, quiet, started=None):
        self.calls.append(dict(jobs=jobs, out=Path(out), resume=resume, overwrite=overwrite,
                               record=sweep_record, quiet=quiet))
        members = [{"name": j.name, "settings": j.settings} for j in jobs]
        (Path(out) / "sweep.json").write_text(json.dumps({"format": 1, "members": members,
                                                          "record": sweep_record}))
        rows = [{"member": j.name, "best_epoch": 1, "val_loss": 0.25 + i / 7} for i, j in enumerate(jobs)]
        return SimpleNamespace(rows=rows, best=jobs[0].name)


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr("nnfit.sweep.run_sweep", rec, raising=False)
    return rec


# ------------------------------------------------------------------------------- parsing
def test_parse_seeds_ranges_lists_and_both():
    assert parse_seeds("0-7") == list(range(8))
    assert parse_seeds("0,3,5") == [0, 3, 5]
    assert parse_seeds("0-3,9") == [0, 1, 2, 3, 9]
    assert parse_seeds(" 4 , 2 ") == [4, 2]
    assert parse_seeds("5-5") == [5]
    assert parse_seeds(f"0-{MAX_MEMBERS - 1}")[-1] == MAX_MEMBERS - 1


@pytest.mark.parametrize("text, says", [
    ("", "no seeds"), (",", "no seeds"), ("-1", "negative"), ("0,-3", "negative"),
    ("3-1", "runs backwards"), ("1,2,1", "seed 1 is given twice"), ("0-3,2", "seed 2 is given twice"),
    ("a", "not a seed"), ("1.5", "not a seed"), ("0-", "not a seed"), ("٣", "not a seed"),
    (f"0-{MAX_MEMBERS}", f"more than {MAX_MEMBERS}"), ("0-1000000000000000", f"more than {MAX_MEMBERS}"),
    ("9" * 5000, "too large"), (str(2**63), "too large"),
])
def test_parse_seeds_refuses(text, says):
    with pytest.raises(ConfigError, match=says) as e:
        parse_seeds(text)
    assert "\n" not in str(e.value) and str(e.value).startswith("--seeds")


def test_parse_grid_types_points_and_order():
    grid = parse_grid(["lr=1e-3,3e-3", "hidden=64,64;128", "batchnorm=true,false,none",
                       "batch-size=16,32", "activation=relu,gelu", "weight_decay=0"])
    assert grid == {"lr": [0.001, 0.003], "hidden": [[64, 64], [128]], "batchnorm": [True, False, None],
                    "batch_size": [16, 32], "activation": ["relu", "gelu"], "weight_decay": [0.0]}
    assert list(grid) == ["lr", "hidden", "batchnorm", "batch_size", "activation", "weight_decay"]
    assert all(type(v) is float for v in grid["lr"] + grid["weight_decay"])
    assert all(type(v) is int for v in grid["batch_size"])
    assert parse_grid(["milestones=10,20;30"]) == {"milestones": [[10, 20], [30]]}
    assert parse_grid(["seed=1,2"]) == {"seed": [1, 2]}


@pytest.mark.parametrize("tokens, says", [
    ([], "no settings given"),
    (["lr="], "lr has no values"), (["lr=,"], "lr has no values"), (["hidden=;"], "hidden has no values"),
    (["lr=0.1,"], "empty value"), (["hidden=64;"], "empty value"),
    (["lr=1e-3", "lr=3e-3"], "lr is given twice"), (["lr=1e-3,0.001"], "value '0.001' is given twice"),
    (["hidden=64;64"], "given twice"),
    (["lr"], "is not key=v1,v2"), (["=1,2"], "is not key=v1,v2"),
    (["colour=1,2"], "'colour' is not a setting"),
    (["epochs=5,10"], "epochs cannot vary between members"),
    (["val_split=0.1,0.2"], "val_split cannot vary"), (["target=y,z"], "target cannot vary"),
    (["fold=1/2,2/2"], "--kfold K makes the members"), (["bootstrap=1/2"], "--bootstrap K makes"),
    (["lr=fast"], "lr: expected float"), (["hidden=64,x"], "hidden: expected int"),
    (["batchnorm=maybe"], "batchnorm: expected bool"),
    (["activation=../../x"], "is not a name"), (["model=a b"], "is not a name"),
    ([f"seed={','.join(map(str, range(33)))}", f"lr={','.join(str(i + 1) for i in range(32))}"],
     f"33 x 32 points is more than {MAX_MEMBERS}"),
])
def test_parse_grid_refuses(tokens, says):
    with pytest.raises(ConfigError, match=says.replace("[", r"\[")) as e:
        parse_grid(tokens)
    message = str(e.value)
    assert "\n" not in message and message.startswith("--grid")
    if "cannot vary" in says or "not a setting" in says:  # names the keys that can
        assert "seed, lr, weight_decay, dropout, model, hidden" in message


# ------------------------------------------------------------------------- members, names
def _names(**kw) -> list[str]:
    return [m.name for m in plan_members(**kw)]


def test_member_names_only_what_varies():
    assert _names(seeds=[3, 4]) == ["seed-3", "seed-4"]
    assert _names(kfold=3) == ["fold-1", "fold-2", "fold-3"]
    assert _names(bootstrap=2) == ["bootstrap-1", "bootstrap-2"]
    assert _names(grid=parse_grid(["lr=0.003,0.01", "dropout=0.2"])) == ["lr-0.003", "lr-0.01"]
    assert _names(grid=parse_grid(["lr=0.003", "dropout=0.2,0"])) == ["dropout-0.2", "dropout-0"]
    assert _names(grid=parse_grid(["lr=0.003", "dropout=0.2"])) == ["run"]  # nothing varies
    assert _names(seeds=[7]) == ["run"]
    assert _names(grid=parse_grid(["lr=1e-5,1e6"])) == ["lr-1e-05", "lr-1e+06"]  # %g
    assert _names(grid=parse_grid(["hidden=64,64;128", "batchnorm=true,false"])) == [
        "hidden-64x64_batchnorm-true", "hidden-64x64_batchnorm-false",
        "hidden-128_batchnorm-true", "hidden-128_batchnorm-false"]
    # %g would name both 0.003: the axis is named exactly instead
    assert _names(grid=parse_grid(["lr=0.003,0.0030001"])) == ["lr-0.003", "lr-0.0030001"]


def test_members_order_seed_fold_then_grid_axes_as_given():
    members = plan_members(seeds=[0, 1], kfold=2, grid=parse_grid(["weight_decay=0,0.01", "lr=0.1,0.2"]))
    assert len(members) == 16
    assert members[0].name == "seed-0_fold-1_weight_decay-0_lr-0.1"
    assert members[1].name == "seed-0_fold-1_weight_decay-0_lr-0.2"  # the last axis fastest
    assert members[-1].name == "seed-1_fold-2_weight_decay-0.01_lr-0.2"
    assert members[-1].settings == {"seed": 1, "fold": "2/2", "weight_decay": 0.01, "lr": 0.2}
    assert list(members[-1].settings) == ["seed", "fold", "weight_decay", "lr"]
    boot = plan_members(seeds=[5], bootstrap=3)
    assert [(m.name, m.settings) for m in boot] == [
        (f"bootstrap-{b}", {"seed": 5, "bootstrap": f"{b}/3"}) for b in (1, 2, 3)]
    assert len({m.name for m in members}) == 16


def test_every_member_name_is_a_safe_directory_name():
    grid = parse_grid(["lr=1e-5,0.3", "hidden=8,16;4", "batchnorm=true,none", "activation=leaky_relu,gelu",
                       "optimizer=adamw,sgd", "momentum=0,0.9"])
    for m in plan_members(seeds=[0, 10**18], grid=grid):
        assert m.name == os.path.basename(m.name) and m.name not in (".", "..")
        assert m.name.isascii() and all(c.isalnum() or c in "_.+-" for c in m.name)


@pytest.mark.parametrize("kw, says", [
    ({}, "nothing to sweep: give --seeds"),
    ({"kfold": 1}, "k-fold needs at least 2 folds"), ({"kfold": -2}, "k-fold needs at least 2 folds"),
    ({"bootstrap": 1}, "needs at least 2 samples"), ({"bootstrap": -1}, "needs at least 2 samples"),
    ({"kfold": 3, "bootstrap": 3}, "--kfold and --bootstrap: choose one"),
    ({"seeds": [1, 2], "grid": {"seed": [3, 4]}}, "seeds given both by --seeds and in --grid"),
    ({"seeds": list(range(600)), "kfold": 2}, f"1200 members is more than {MAX_MEMBERS}"),
    ({"grid": {"hidden": [[512] * 60, [8]]}}, "longer than 200 characters"),
])
def test_plan_members_refuses(kw, says):
    with pytest.raises(ConfigError, match=says) as e:
        plan_members(**kw)
    assert "\n" not in str(e.value)


def test_group_key_is_every_setting_that_cannot_vary_within_a_group():
    a = plan_members(seeds=[0, 1], kfold=2, grid=parse_grid(["lr=0.1,0.2", "weight_decay=0,1e-2",
                                                               "dropout=0,0.5"]))
    assert {group_key(m.settings) for m in a} == {()}  # one vectorized group of 32
    b = plan_members(seeds=[0, 1], grid=parse_grid(["hidden=64,64;128", "lr=0.1,0.2", "optimizer=adam,sgd"]))
    keys = {group_key(m.settings) for m in b}
    assert keys == {(("hidden", h), ("optimizer", o)) for h in ((64, 64), (128,)) for o in ("adam", "sgd")}
    hash(next(iter(keys)))


# ---------------------------------------------------------------------- the command: refusals
@pytest.mark.parametrize("argv, says", [
    (["--grid"], "expected at least one argument"),
    (["--grid", "lr="], "--grid: lr has no values"),
    (["--grid", "lr=,"], "--grid: lr has no values"),
    (["--grid", "lr=0.1,0.1"], "given twice"),
    (["--grid", "lr=0.1", "lr=0.2"], "lr is given twice"),
    (["--grid", "epochs=1,2"], "epochs cannot vary between members"),
    (["--grid", "colour=red,blue"], "'colour' is not a setting"),
    (["--grid", "dropout=0,1.5"], "dropout must be in [0, 1), got 1.5"),
    (["--grid", "activation=relu,nope"], "nope"),
    (["--grid", "optimizer=adam,nope"], "nope"),
    (["--kfold", "1"], "k-fold needs at least 2 folds"),
    (["--kfold", "0"], "k-fold needs at least 2 folds"),
    (["--kfold", "-3"], "k-fold needs at least 2 folds"),
    (["--kfold", "x"], "invalid int value"),
    (["--bootstrap", "1"], "needs at least 2 samples"),
    (["--kfold", "3", "--bootstrap", "3"], "choose one"),
    ([], "nothing to sweep"),
    (["--seeds", "x"], "--seeds: 'x' is not a seed"),
    (["--seeds", "-1"], "negative"),
    (["--seeds", "0-5000"], "more than 1024"),
    (["--seeds", "0-3", "--grid", "seed=5,6"], "given both"),
    (["--seeds", "0-1", "--lr", "-1"], "lr must be > 0"),
    (["--seeds", "0-1", "colour=red"], "unknown config key 'colour'"),
    (["--seeds", "0-1", "--model", "cnn2"], "cnn2"),
    (["--seeds", "0-1", "--force-resume"], "unrecognized arguments: --force-resume"),
    (["--seeds", "0-1", "--config", "missing.yaml"], "config file not found"),
])
def test_bad_input_is_one_line_before_any_data_is_read(capsys, tmp_path, argv, says):
    # DATA does not exist: a refusal that names the sweep proves the data was never read
    status, out, err = _run(capsys, "sweep", "missing.csv", "--target", "y", *argv)
    lines = err.splitlines()
    assert status == 2 and len(lines) == 1, err
    assert lines[0].startswith("nnfit: error: ") and says in lines[0], lines[0]
    assert "missing.csv" not in lines[0] and out == ""
    assert list(tmp_path.iterdir()) == []  # nothing written: no sweeps/, no OUT


def test_out_not_empty_is_refused_before_the_data_is_read(capsys, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    status, _, err = _run(capsys, "sweep", "missing.csv", "--target", "y", "--seeds", "0-1", "--out", "busy")
    assert status == 2 and err.count("\n") == 1
    assert "busy exists and is not empty: choose another --out or pass --overwrite" in err
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]


def test_data_errors_leave_no_sweep_directory(capsys, tmp_path, recorder):
    status, _, err = _run(capsys, "sweep", "missing.csv", "--target", "y", "--seeds", "0-1")
    assert status == 2 and err.count("\n") == 1 and "missing.csv" in err
    assert list(tmp_path.iterdir()) == [] and recorder.calls == []


def _doc(**record) -> str:
    """A sweep.json as nnfit.sweep.runner writes it, around ``record``."""
    fields = {"version": 1, "base": {}, "seeds": "0-1", "grid": None, "kfold": 0, "bootstrap": 0}
    return json.dumps({"format": 1, "members": [], "record": {**fields, **record}})


@pytest.mark.parametrize("body, says", [
    (None, "not a sweep directory (no sweep.json)"),
    ("{", "sweep.json: not valid JSON"),
    ("[]", "not a sweep record (a JSON object with a field 'record')"),
    ('{"format": 1}', "not a sweep record (a JSON object with a field 'record')"),
    ('{"format": 1, "record": null}', "a sweep of the Python API (nnfit.sweep)"),
    ('{"format": 1, "record": 3}', "field 'record' is not a JSON object"),
    ('{"record": {"version": 1}}', "no field 'record.base'"),
    (_doc(version=2), "'record.version'"),
    (_doc(base=[]), "'record.base'"),
    (_doc(seeds=5), "'record.seeds'"),
    (_doc(grid=[1]), "'record.grid'"),
    (_doc(kfold=True), "'record.kfold'"),
    (_doc(seeds=None), "nothing to sweep"),
    (_doc(seeds=None, kfold=1), "at least 2 folds"),
    (_doc(grid=["epochs=1,2"]), "epochs cannot vary"),
    (_doc(base={"lr": "fast"}), "lr: expected float"),
    (_doc(base={"colour": 1}), "unknown config key 'colour'"),
    (_doc(base={"items": 1}), "unknown config key 'items'"),
])
def test_resume_refuses_a_crafted_record_in_one_line(capsys, tmp_path, recorder, body, says):
    out = tmp_path / "sw"
    out.mkdir()
    if body is not None:
        (out / "sweep.json").write_text(body)
    status, stdout, err = _run(capsys, "sweep", "--resume", out)
    lines = err.splitlines()
    assert status == 2 and len(lines) == 1 and says in lines[0], err
    if any(w in says for w in ("nothing", "cannot vary", "expected", "unknown", "folds")):
        assert str(out / "sweep.json") in lines[0]  # the mistake names the file
    assert recorder.calls == [] and stdout == ""


def test_resume_of_a_missing_or_huge_record(capsys, tmp_path):
    status, _, err = _run(capsys, "sweep", "--resume", tmp_path / "nowhere")
    assert status == 2 and "no such sweep directory" in err and err.count("\n") == 1
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "sweep.json").write_text(" " * (65 << 20))
    status, _, err = _run(capsys, "sweep", "--resume", tmp_path / "big")
    assert status == 2 and "larger than a sweep record can be" in err and err.count("\n") == 1


# ----------------------------------------------------------------- the command: the jobs
def _standalone(monkeypatch, capsys, *argv) -> dict:
    """What ``nnfit train ARGV`` hands to ``fit``: spec, data, config and record."""
    got = {}

    def fake_fit(spec, x, **kw):
        got.update(kw, spec=spec, x=x)
        raise KeyboardInterrupt  # stop here: nothing more of the run is needed

    monkeypatch.setattr("nnfit.cli.train.fit", fake_fit)
    _run(capsys, "train", *argv)
    return got


def test_seeds_by_grid_jobs_equal_their_standalone_runs(capsys, tmp_path, monkeypatch, recorder):
    data = _csv(tmp_path / "table.csv")
    status, out, err = _run(capsys, "sweep", "table.csv", "--target", "y", "--epochs", "3",
                            "--test-split", "0.25", "--seeds", "0-2", "--grid", "dropout=0,0.2",
                            "--quiet", "hidden=16,8")
    assert status == 0, err
    (call,) = recorder.calls
    jobs = call["jobs"]
    assert [j.name for j in jobs] == [f"seed-{s}_dropout-{d}" for s in range(3) for d in ("0", "0.2")]
    assert call["out"] == Path("sweeps/table-1") and call["resume"] is False and call["quiet"] is True
    assert call["overwrite"] is False
    record = call["record"]
    assert record["seeds"] == "0-2" and record["grid"] == ["dropout=0,0.2"]
    assert record["base"]["data"] == str(data.resolve()) and record["base"]["hidden"] == "16,8"
    for job in jobs:
        seed, dropout = job.settings["seed"], job.settings["dropout"]
        assert job.config.seed == seed and job.config.epochs == 3 and job.model["dropout"] == dropout
        assert job.model["hidden"] == [16, 8] and job.record["dropout"] == dropout
        twin = _standalone(monkeypatch, capsys, "table.csv", "--target", "y", "--epochs", "3",
                           "--test-split", "0.25", "--quiet", "hidden=16,8", f"seed={seed}",
                           f"dropout={dropout}")
        assert job.config == twin["config"] and job.model == twin["spec"]
        assert job.record == twin["run_config"]
        assert job.fit_kwargs["target"] == twin["target"] == "y" and job.fit_kwargs["task"] == twin["task"]
        assert np.array_equal(job.fit_kwargs["x"].rows, twin["x"].rows)  # its own test split
        assert len(job.fit_kwargs["x"]) == 30
    assert not np.array_equal(jobs[0].fit_kwargs["x"].rows, jobs[2].fit_kwargs["x"].rows)
    assert jobs[0].fit_kwargs["x"] is jobs[1].fit_kwargs["x"]  # one copy per seed
    assert "sweep written to sweeps/table-1 (best member: seed-0_dropout-0)" in out
    assert "seed-2_dropout-0.2" in out and "0.9643" in out  # the table: 0.25 + 5/7


def test_kfold_and_grouped_settings_reach_each_member(capsys, tmp_path, monkeypatch, recorder):
    _csv(tmp_path / "t.csv")
    status, _, err = _run(capsys, "sweep", "t.csv", "--target", "y", "--kfold", "3", "--grid",
                          "model=mlp,resmlp", "hidden=8;16,16", "--out", "sw")
    assert status == 0, err
    jobs = recorder.calls[0]["jobs"]
    assert len(jobs) == 12 and jobs[0].name == "fold-1_model-mlp_hidden-8"
    assert jobs[-1].name == "fold-3_model-resmlp_hidden-16x16"
    assert recorder.calls[0]["out"] == Path("sw")
    twin = _standalone(monkeypatch, capsys, "t.csv", "--target", "y", "fold=3/3", "model=resmlp",
                       "hidden=16,16")
    assert jobs[-1].config == twin["config"] and jobs[-1].config.fold == "3/3"
    assert jobs[-1].model == twin["spec"] and jobs[-1].record == twin["run_config"]
    assert len({group_key(j.settings) for j in jobs}) == 4


def test_bundled_dataset_members_hold_out_their_own_test_split(capsys, monkeypatch, recorder):
    status, _, err = _run(capsys, "sweep", "--dataset", "iris", "--seeds", "4,9", "--epochs", "1")
    assert status == 0, err
    jobs = recorder.calls[0]["jobs"]
    assert recorder.calls[0]["out"] == Path("sweeps/iris-1") and jobs[1].name == "seed-9"
    twin = _standalone(monkeypatch, capsys, "--dataset", "iris", "--seed", "9", "--epochs", "1")
    assert np.array_equal(jobs[1].fit_kwargs["x"].rows, twin["x"].rows)
    assert jobs[1].record == twin["run_config"] and jobs[1].config == twin["config"]


def test_resume_rebuilds_the_same_jobs_from_sweep_json_alone(capsys, tmp_path, recorder):
    _csv(tmp_path / "t.csv")
    (tmp_path / "sub").mkdir()
    assert _run(capsys, "sweep", "t.csv", "--target", "y", "--seeds", "1,5", "--grid",
                "lr=0.01,0.1", "--out", "sw", "--epochs", "4")[0] == 0
    first = recorder.calls[0]
    os.chdir(tmp_path / "sub")  # from another directory: the data path is absolute
    try:
        status, out, err = _run(capsys, "sweep", "--resume", tmp_path / "sw", "threads=1")
        refused = _run(capsys, "sweep", "--resume", tmp_path / "sw", "--epochs", "6")
    finally:
        os.chdir(tmp_path)
    assert status == 0, err
    # a sweep resumes as planned: its epochs and patience are its own
    assert refused[0] == 2 and "'epochs' cannot change in a resumed sweep" in refused[2]
    again = recorder.calls[1]
    assert again["resume"] is True and again["out"] == tmp_path / "sw"
    assert [j.name for j in again["jobs"]] == [j.name for j in first["jobs"]]
    for a, b in zip(first["jobs"], again["jobs"], strict=True):
        assert b.config.epochs == 4 and b.config.threads == 1
        assert b.record | {"threads": 0} == a.record
        assert b.model == a.model and b.settings == a.settings
        assert np.array_equal(a.fit_kwargs["x"].rows, b.fit_kwargs["x"].rows)
    assert again["record"]["base"]["threads"] == "1"  # as given, read as any key=value
    assert f"sweep written to {tmp_path / 'sw'}" in out


@pytest.mark.parametrize("extra, says", [
    (["--lr", "0.5"], "'lr' cannot change in a resumed sweep"),
    (["hidden=4"], "'hidden' cannot change"),
    (["--seeds", "0-3"], "'--seeds' cannot be given with it"),
    (["--grid", "lr=1,2"], "'--grid' cannot be given with it"),
    (["--kfold", "2"], "'--kfold' cannot be given with it"),
    (["other.csv"], "'other.csv' cannot be given with it"),
    (["--out", "x"], "'--out' cannot be given"),
    (["--overwrite"], "'--overwrite' cannot be given"),
])
def test_resume_refuses_settings_that_would_change_the_members(capsys, tmp_path, recorder, extra, says):
    _csv(tmp_path / "t.csv")
    assert _run(capsys, "sweep", "t.csv", "--target", "y", "--seeds", "1,5", "--out", "sw")[0] == 0
    status, _, err = _run(capsys, "sweep", "--resume", "sw", *extra)
    assert status == 2 and err.count("\n") == 1 and says in err, err
    assert len(recorder.calls) == 1


def test_sweep_help_names_its_flags(capsys):
    status, out, _ = _run(capsys, "sweep", "--help")
    assert status == 0
    for flag in ("--seeds", "--grid", "--kfold", "--bootstrap", "--out", "--resume", "--overwrite",
                 "--target", "--lr", "sweeps/NAME-N"):
        assert flag in out
    assert "--force-resume" not in out


def test_a_sweep_that_fails_to_start_leaves_no_directory(capsys, tmp_path, monkeypatch):
    from nnfit.errors import DataError

    def refuse(jobs, out, **kw):  # as the engine refuses data (a class with fewer rows than folds)
        raise DataError("t.csv: class 1 has 2 rows, fewer than 3 folds")

    monkeypatch.setattr("nnfit.sweep.run_sweep", refuse, raising=False)
    _csv(tmp_path / "t.csv")
    status, _, err = _run(capsys, "sweep", "t.csv", "--target", "y", "--kfold", "3")
    assert status == 2 and err == "nnfit: error: t.csv: class 1 has 2 rows, fewer than 3 folds\n"
    status, _, err = _run(capsys, "sweep", "t.csv", "--target", "y", "--kfold", "3", "--out", "a/b")
    assert status == 2 and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_the_table_keeps_whole_columns_in_a_narrow_terminal(capsys, tmp_path, monkeypatch):
    rows = [{"member": f"seed-{s}", "seed": s, "best_epoch": 3, "val_loss": 0.123456, "val_accuracy": 0.5,
             "stop_reason": ""} for s in range(3)]
    result = SimpleNamespace(rows=rows, best=None)
    monkeypatch.setattr("nnfit.sweep.run_sweep", lambda jobs, out, **kw: result, raising=False)
    _csv(tmp_path / "t.csv")
    monkeypatch.setenv("COLUMNS", "44")
    status, out, err = _run(capsys, "sweep", "t.csv", "--target", "y", "--seeds", "0-2")
    assert status == 0, err
    assert "more columns in results.csv" in out and "…" not in out
    assert "seed-2" in out and "0.1235" in out and "val_accuracy" not in out
    assert "│ seed " not in out and "stop_reason" not in out  # the name says the seed; text left out
    assert "sweep written to sweeps/t-1\n" in out  # no best member: nothing said about one


def test_a_real_sweep_member_equals_its_nnfit_train_twin_and_resumes(capsys, tmp_path):
    """Through the engine: member seed-1_dropout-0.2's weights are its standalone run's."""
    from safetensors.torch import load_file

    _csv(tmp_path / "t.csv", n=60)
    common = ["t.csv", "--target", "y", "--epochs", "3", "--quiet", "hidden=8", "--test-split", "0.2"]
    status, out, err = _run(capsys, "sweep", *common, "--seeds", "0-1", "--out", "sw",
                            "--grid", "dropout=0,0.2")
    assert status == 0, err
    assert "sweep written to sw (best member: seed-" in out
    status, _, err = _run(capsys, "train", *common, "seed=1", "dropout=0.2", "--out", "twin", "--no-plots")
    assert status == 0, err
    member = load_file(tmp_path / "sw" / "members" / "seed-1_dropout-0.2" / "model.safetensors")
    twin = load_file(tmp_path / "twin" / "model.safetensors")
    assert member.keys() == twin.keys()
    for k in twin:
        assert (member[k] - twin[k]).abs().max() <= 1e-5, k
    status, out, err = _run(capsys, "sweep", "--resume", "sw", "--quiet")
    assert status == 0 and "sweep written to sw" in out, err
