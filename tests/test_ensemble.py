"""A sweep's ensemble (``nnfit.sweep.ensemble``): the mean of its members' answers, each member
through its own preprocessing; written as one checked directory that ``nnfit.load``, ``nnfit
predict``, ``nnfit evaluate`` and ``nnfit inspect`` take; crafted or damaged files refused in
one line.

Three small members per task are trained once per module (3 epochs, tiny tables).
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error
from torch import nn

import nnfit
from helpers import cli, one_error
from nnfit.errors import CheckpointError, ConfigError, NnfitWarning
from nnfit.files import MANIFEST, manifest_bytes
from nnfit.io.schema import fields_of
from nnfit.io.validate import ENSEMBLE, MAX_MEMBERS
from nnfit.sweep.ensemble import Ensemble, is_ensemble_dir, write_ensemble

QUICK = dict(epochs=3, quiet=True, device="cpu", batch_size=16, lr=0.01)
SPEC = {"name": "mlp", "hidden": [8]}
NAMES = ["seed-0", "seed-1", "seed-2"]


def _table(task: str, n: int = 150, seed: int = 0) -> pd.DataFrame:
    """Numeric columns and a text column; a string, 0/1 or float target."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    df = pd.DataFrame({"a": a.round(4), "b": b.round(4), "colour": colour})
    if task == "multiclass":
        df["label"] = np.array(["cat", "dog", "emu"])[(a > 0).astype(int) + (b > 0.5)]
    elif task == "binary":
        df["label"] = (a + (colour == "red") > 0.3).astype(int)
    else:
        df["label"] = (30 * a - 20 * b + 100 * (colour == "blue") + 500).round(3)
    return df


@pytest.fixture(scope="module")
def trainings(tmp_path_factory):
    """``trainings(task)`` -> (task, CSV, members, ensemble dir): three seeds on one table,
    each member holding out its own validation rows (so its standardisation and target
    scaling are its own); trained once per module."""
    done: dict[str, tuple] = {}

    def get(task: str) -> tuple:
        if task not in done:
            d = tmp_path_factory.mktemp(task)
            data = d / "data.csv"
            _table(task).to_csv(data, index=False)
            members = [nnfit.fit(SPEC, data, target="label", seed=s, **QUICK) for s in range(3)]
            done[task] = task, data, members, write_ensemble(d / "ensemble", members, NAMES)
        return done[task]

    return get


@pytest.fixture(params=["multiclass", "binary", "regression"])
def trained(request, trainings):
    return trainings(request.param)


def _frame(data: Path) -> pd.DataFrame:
    return pd.read_csv(data)


# ------------------------------------------------------------------------------ the numbers
def test_members_differ_in_what_they_fitted(trained):
    """The premise: each member's preprocessing is its own, so the ensemble must run each."""
    task, _, members, _ = trained
    stats = [json.dumps(m.preprocessor.to_dict()["inputs"][0]["mean"]) for m in members]
    assert len(set(stats)) == 3
    if task == "regression":
        assert len({tuple(m.task.mean) for m in members}) == 3


def test_loaded_ensemble_is_the_mean_of_its_members(trained):
    task, data, members, path = trained
    ens = nnfit.load(path)
    assert isinstance(ens, Ensemble) and ens.names == NAMES and is_ensemble_dir(path)
    x = _frame(data)
    # a file is read once for all members, as a frame is given: the same answers
    np.testing.assert_allclose(ens.outputs(data).numpy(), ens.outputs(x).numpy(), rtol=1e-12)
    if task == "regression":
        want = np.mean([m.predict(x) for m in members], axis=0)
        np.testing.assert_allclose(ens.predict(x), want, rtol=1e-9, atol=1e-9)
        assert ens.classes is None
        with pytest.raises(ConfigError, match="classification"):
            ens.predict_proba(x)
        return
    proba = ens.predict_proba(x)
    want = np.mean([m.predict_proba(x) for m in members], axis=0)
    np.testing.assert_allclose(proba, want, atol=1e-6)
    assert ens.classes == members[0].classes
    assert ens.predict(x).tolist() == [ens.classes[i] for i in proba.argmax(axis=1)]
    # the raw outputs are in member 0's space: its task decodes them into the same answers
    out = ens.outputs(x)
    assert out.shape == members[0].outputs(x).shape
    np.testing.assert_allclose(ens.task.proba(out).numpy(), want, atol=1e-6)


def test_evaluate_scores_the_ensembles_answers(trained):
    task, data, members, path = trained
    ens = nnfit.load(path)
    df = _frame(data)
    metrics = ens.evaluate(df, target="label")
    from_file, rest = ens.evaluate(data), dict(metrics)  # the file, with its target by default
    assert from_file.pop("confusion_matrix", None) == rest.pop("confusion_matrix", None)
    assert from_file == pytest.approx(rest, rel=1e-12)
    y = df["label"].to_numpy()
    if task == "regression":
        pred = ens.predict(df)
        # targets are encoded in float32 before the metrics see them: 1e-7 of rounding
        assert metrics["mse"] == pytest.approx(mean_squared_error(y, pred), rel=1e-6)
        # the loss is member 0's (on its standardised target) of the combined outputs
        std = members[0].task.std[0]
        assert metrics["loss"] == pytest.approx(mean_squared_error(y, pred) / std**2, rel=1e-5)
        return
    proba = ens.predict_proba(df)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y.astype(str), ens.predict(df).astype(str)),
                                                abs=1e-12)
    # classification's loss: the negative log-likelihood of the mean probabilities
    assert metrics["loss"] == pytest.approx(log_loss(y, proba, labels=ens.classes), rel=1e-5)
    assert np.asarray(metrics["confusion_matrix"]).sum() == len(df)


def test_members_keep_their_own_preprocessing(tmp_path):
    """Members fitted on different rows (other statistics and text levels): each reads the raw
    data through its own fitting, and the ensemble is still the mean of their answers."""
    df = _table("multiclass", n=200)
    parts = [df.iloc[:120], df.iloc[80:]]
    parts[1] = parts[1][parts[1]["colour"] != "green"]  # member 1 never saw "green"
    members = [nnfit.fit(SPEC, p, target="label", seed=0, **QUICK) for p in parts]
    ens = Ensemble(members, ["head", "tail"])
    # member 1 reads "green" as unknown and says so, as it would alone
    with pytest.warns(NnfitWarning, match="colour"):
        want = np.mean([m.predict_proba(df) for m in members], axis=0)
    with pytest.warns(NnfitWarning, match="colour"):
        np.testing.assert_allclose(ens.predict_proba(df), want, atol=1e-6)


def test_user_modules_load_with_a_template(tmp_path):
    """Members of the user's own module are saved without a spec: load takes the module."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype(np.float32), np.arange(64) % 2
    members = []
    for s in range(2):
        torch.manual_seed(s)
        members.append(nnfit.fit(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1)), x, y,
                                 epochs=2, quiet=True, device="cpu"))
    path = write_ensemble(tmp_path / "ens", members, ["a", "b"])
    with pytest.raises(CheckpointError, match="user-defined module"):
        nnfit.load(path)
    ens = nnfit.load(path, model=nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1)))
    want = np.mean([m.predict_proba(x) for m in members], axis=0)
    np.testing.assert_allclose(ens.predict_proba(x), want, atol=1e-6)


# ---------------------------------------------------------------------------------- the CLI
def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_cli_predict_evaluate_inspect(trained, capsys, tmp_path):
    task, data, _, path = trained
    ens = nnfit.load(path)
    df = _frame(data)
    proba_flag = ["--proba"] if task != "regression" else []
    argv = ["predict", path, data, "-o", tmp_path / "pred.csv", *proba_flag]
    status, _, err = cli(capsys, *argv)
    assert status == 0, err
    header, rows = _read_csv(tmp_path / "pred.csv")
    assert header[0] == "label" and len(rows) == len(df)
    if task == "regression":
        np.testing.assert_allclose([float(r[0]) for r in rows], ens.predict(df), rtol=1e-9)
    else:
        assert header[1:] == [f"proba_{c}" for c in ens.classes]
        proba = np.array([[float(v) for v in r[1:]] for r in rows])
        np.testing.assert_allclose(proba, ens.predict_proba(df), atol=1e-9)
        assert [r[0] for r in rows] == [str(v) for v in ens.predict(df)]

    status, out, err = cli(capsys, "evaluate", path, data, "--json")
    assert status == 0, err
    metrics, want = json.loads(out), ens.evaluate(df, target="label")
    key = "mse" if task == "regression" else "accuracy"
    assert metrics[key] == pytest.approx(want[key], rel=1e-9)

    status, out, err = cli(capsys, "inspect", path)  # one line per member, then the task
    assert status == 0 and err == "", err
    assert all(name in out for name in NAMES) and "ensemble of 3 members" in out
    status, out, err = cli(capsys, "inspect", path, "--json")
    assert status == 0, err
    assert [m["name"] for m in json.loads(out)["members"]] == NAMES


# ------------------------------------------------------------------------- refused at write
def test_differing_class_lists_are_refused_at_write(tmp_path):
    df = _table("multiclass")
    other = df.assign(label=df["label"].replace("emu", "gnu"))  # three classes, not the same three
    members = [nnfit.fit(SPEC, df, target="label", seed=0, **QUICK),
               nnfit.fit(SPEC, other, target="label", seed=1, **QUICK)]
    with pytest.raises(ConfigError, match=r"member 'seed-1' has classes \['cat', 'dog', 'gnu'\] where "
                                          r"member 'seed-0' has \['cat', 'dog', 'emu'\]") as e:
        write_ensemble(tmp_path / "ens", members, ["seed-0", "seed-1"])
    assert "\n" not in str(e.value)
    assert not (tmp_path / "ens").exists()


@pytest.mark.parametrize("names, match", [
    (["a"], "1 names for 2"), (["a", "a"], "taken by members"), (["a", ""], "name must be"),
])
def test_bad_names_are_refused(trainings, names, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        write_ensemble(tmp_path / "ens", trainings("binary")[2][:2], names)


def test_custom_loss_members_are_refused():
    x, y = np.random.default_rng(0).normal(size=(32, 3)), np.zeros((32, 1))
    m = nnfit.fit(SPEC, x, y, loss=lambda o, t: ((o - t) ** 2).mean(), epochs=1, quiet=True, device="cpu")
    with pytest.raises(ConfigError, match="custom loss"):
        Ensemble([m], ["a"])


# ------------------------------------------------------------------------- refused at load
def _rewrite(path: Path, meta: dict | None = None, tensors: dict | None = None,
             raw: bytes | None = None) -> None:
    """Replace an ensemble's model.json and/or weights, with a manifest that matches them."""
    from nnfit.checkpoint import tensors_to_bytes

    files = {"model.safetensors": (path / "model.safetensors").read_bytes(),
             "model.json": (path / "model.json").read_bytes()}
    if meta is not None:
        files["model.json"] = json.dumps(meta).encode()
    if raw is not None:
        files["model.json"] = raw
    if tensors is not None:
        files["model.safetensors"] = tensors_to_bytes(tensors)
    for name, data in files.items():
        (path / name).write_bytes(data)
    (path / MANIFEST).write_bytes(manifest_bytes("ensemble", files))


@pytest.fixture
def crafted(trainings, tmp_path):
    """A copy of the multiclass ensemble, its model.json and weights, to tamper with."""
    import shutil

    from safetensors.torch import load

    path = tmp_path / "ens"
    shutil.copytree(trainings("multiclass")[3], path)
    tensors = load((path / "model.safetensors").read_bytes())
    return path, json.loads((path / "model.json").read_text()), tensors


def _member(i: int, key: str) -> str:
    return f"members.{i}.{key}"


CRAFTS = {
    "wrong type": (lambda m, t: m["members"][1]["task"].update(classes="cat"), None,
                   "members[1].task.classes"),
    "member count": (lambda m, t: m.update(members=[{}] * (MAX_MEMBERS + 1)), None, "members: a list of"),
    "no members": (lambda m, t: m.update(members=[]), None, "members"),
    "other classes": (lambda m, t: m["members"][2]["task"].update(classes=["cat", "dog", "gnu"]), None,
                      "member 'seed-2' has classes"),
    "same name": (lambda m, t: m["members"][2].update(name="seed-0"), None, "taken by members[0]"),
    "combine": (lambda m, t: m.update(combine="median"), None, "combine"),
    "newer": (lambda m, t: m.update(format=99), None, "newer nnfit"),
    "member spec": (lambda m, t: m["members"][1]["spec"].update(hidden=[9]), None, "weights do not fit"),
    "missing weights": (None, lambda t: [t.pop(k) for k in list(t) if k.startswith("members.2.")],
                        "missing keys: members.2."),
    "extra tensor": (None, lambda t: t.update({"members.3.x": torch.zeros(2)}),
                     "unexpected keys: members.3.x"),
    "NaN": (None, lambda t: t[_member(1, "fc1.weight")].view(-1).__setitem__(0, math.nan),
            "members.1.fc1.weight holds NaN"),
}


@pytest.mark.parametrize("name", sorted(CRAFTS))
def test_crafted_files_are_refused_in_one_line(crafted, name, capsys):
    path, meta, tensors = crafted
    meta_fn, tensors_fn, match = CRAFTS[name]
    if meta_fn is not None:
        meta_fn(meta, tensors)
    if tensors_fn is not None:
        tensors_fn(tensors)
    _rewrite(path, meta, tensors)
    with pytest.raises(CheckpointError, match=re.escape(match)) as e:
        nnfit.load(path)
    assert "\n" not in str(e.value)
    for cmd in ("predict", "evaluate"):
        assert "nnfit: error: " in one_error(capsys, cmd, path, path / "model.json")
    one_error(capsys, "inspect", path)


def test_damaged_and_non_json_files_are_refused(crafted, capsys):
    path, meta, _ = crafted
    weights = bytearray((path / "model.safetensors").read_bytes())
    weights[-3] ^= 1
    (path / "model.safetensors").write_bytes(bytes(weights))
    assert "model.safetensors: damaged" in one_error(capsys, "predict", path, "x.csv")
    _rewrite(path, raw=b"[" * 100_000)  # nested past the parser's depth
    assert "model.json" in one_error(capsys, "evaluate", path, "x.csv")
    _rewrite(path, meta={"kind": "ensemble"})
    assert "model.json" in one_error(capsys, "inspect", path)


def test_every_field_of_model_json_refuses_bad_values(crafted):
    """Generated from the schema (as tests/test_tamper_fuzz.py does for a model): each value a
    field refuses, put into member 1's or the top-level fields, is refused with a
    CheckpointError, never another exception."""
    path, meta, _ = crafted
    cases = [(p, v) for p, f in fields_of(meta, ENSEMBLE)
             if len(p) == 1 or p[:2] == ("members", 1) for v in f.refused()]
    assert len(cases) > 100
    for where, value in cases:
        doc = json.loads(json.dumps(meta))
        node = doc
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = value
        _rewrite(path, doc)
        with pytest.raises(CheckpointError):
            nnfit.load(path)
