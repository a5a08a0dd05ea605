"""Tests for nnfit.fit and the Learner: every data form, any label type, predictions in the
user's units, error messages, pickle-free save/load, and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nnfit
from nnfit.checkpoint import legacy_state_dict
from nnfit.data import split_indices
from nnfit.errors import CheckpointError, ConfigError, DataError
from nnfit.files import write_files
from nnfit.run import committed, read_latest
from nnfit.summary import capture_activations

QUICK = {"epochs": 3, "quiet": True, "device": "cpu", "batch_size": 16}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.int64)
    return x, y


class TwoInputs(nn.Module):
    """A model called positionally as ``model(numbers, extra)``."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers = nn.Linear(3, 8)
        self.extra = nn.Linear(1, 8)
        self.head = nn.Linear(16, 1)

    def forward(self, numbers: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.numbers(numbers), self.extra(extra)], dim=1)
        return self.head(torch.relu(h))


class KeywordInputs(nn.Module):
    """A model called by keyword as ``model(num=..., ids=...)``, with an embedding input.

    nnfit hands a 1-D input over as one column, (n, 1), so the embedding output is flattened.
    """

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.num = nn.Linear(4, 5)
        self.head = nn.Linear(8, 2)

    def forward(self, *, num: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.num(num), self.emb(ids).flatten(1)], dim=1))


class SmallNet(nn.Module):
    """A user model without a spec: saving it needs the class to load it back."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, width)
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


class NotATensor:
    """Stands for arbitrary pickled code in a .pt file."""

    def __init__(self) -> None:
        self.payload = "x"


def check_classifier(learner: nnfit.Learner, x: object, n: int) -> None:
    """predict/predict_proba agree with each other and with the label vocabulary."""
    pred, proba = learner.predict(x), learner.predict_proba(x)
    assert proba.shape == (n, len(learner.classes)) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(pred, np.asarray(learner.classes)[proba.argmax(1)])


# ------------------------------------------------------------------------------ data forms
def test_numpy_arrays(data) -> None:
    x, y = data
    learner = nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, **QUICK)
    assert learner.task.name == "binary" and learner.classes == [0, 1]
    assert len(learner.history) == 3 and learner.model.out_features == 1
    check_classifier(learner, x, 64)
    assert set(learner.evaluate(x, y)) >= {"loss", "accuracy", "f1", "roc_auc"}


def test_torch_tensors(data) -> None:
    x, y = data
    learner = nnfit.fit("mlp", torch.from_numpy(x), torch.from_numpy(y), **QUICK)
    np.testing.assert_array_equal(learner.predict(torch.from_numpy(x)), learner.predict(x))
    check_classifier(learner, torch.from_numpy(x[:5]), 5)


def test_frame_and_series_and_target_column(data) -> None:
    x, y = data
    df = pd.DataFrame(x, columns=["w", "x", "y", "z"])
    with_series = nnfit.fit("mlp", df, pd.Series(y), **QUICK)
    with_target = nnfit.fit("mlp", df.assign(label=y), target="label", **QUICK)
    assert [s.features for s in with_target.preprocessor.inputs] == [["w", "x", "y", "z"]]
    assert with_target.target_name == "label"
    # Same data, same seed: the two spellings train the same model.
    for a, b in zip(with_series.model.parameters(), with_target.model.parameters(), strict=True):
        assert torch.equal(a, b)
    reordered = df[["z", "x", "w", "y"]]
    np.testing.assert_array_equal(with_target.predict_proba(reordered),
                                  with_target.predict_proba(df))
    assert with_target.evaluate(df.assign(label=y))["accuracy"] == \
        with_target.evaluate(df, y)["accuracy"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_path_and_target(tmp_path: Path, data, suffix: str) -> None:
    x, y = data
    df = pd.DataFrame(x, columns=list("abcd")).assign(kind=np.where(y == 1, "up", "down"))
    path = tmp_path / f"train{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path)
    learner = nnfit.fit("mlp", path, target="kind", **QUICK)
    assert learner.classes == ["down", "up"]
    pred = learner.predict(df[list("abcd")])
    assert pred.dtype.kind == "U" and set(pred) <= {"down", "up"}
    by_path = learner.evaluate(path)  # the target column is remembered
    assert by_path == learner.evaluate(df, target="kind")


def test_tuple_of_arrays_two_inputs(data) -> None:
    x, y = data
    learner = nnfit.fit(TwoInputs(), (x[:, :3], x[:, 3:]), y, **QUICK)
    assert learner.preprocessor.style == "positional" and learner.spec is None
    check_classifier(learner, (x[:, :3], x[:, 3:]), 64)
    with pytest.raises(DataError, match="expected inputs"):
        learner.predict(x)


def test_dict_of_arrays_keyword_inputs(data) -> None:
    x, y = data
    ids = torch.from_numpy(np.abs(x[:, 0] * 2).astype(np.int64) % 5)
    learner = nnfit.fit(KeywordInputs(), {"num": x, "ids": ids}, y, **QUICK)
    assert [(s.name, s.dtype) for s in learner.preprocessor.inputs] == [
        ("num", "float32"), ("ids", "int64")]
    assert learner.task.out_features == 1 and learner.classes == [0, 1]  # 2 outputs: softmax
    check_classifier(learner, {"num": x, "ids": ids}, 64)


def test_dataset_and_dataloader(data) -> None:
    x, y = data
    ds = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    with pytest.raises(ConfigError, match="pass task="):
        nnfit.fit(nn.Linear(4, 2), ds, **QUICK)
    from_ds = nnfit.fit(nn.Linear(4, 2), ds, task="multiclass", **QUICK)
    assert from_ds.preprocessor is None and from_ds.classes == [0, 1]
    assert from_ds.predict(ds).shape == (64,)
    loader = DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    from_loader = nnfit.fit(nn.Linear(4, 1), loader, task="binary", **QUICK)
    assert len(from_loader.history) == 3
    check_classifier(from_loader, ds, 64)
    assert 0.0 <= from_loader.evaluate(ds)["accuracy"] <= 1.0


def test_dataset_regression_targets_are_not_broadcast() -> None:
    # A Dataset yields (n,) targets for a (n, 1) output: the loss must pair them row by row.
    x = torch.linspace(-1, 1, 32).unsqueeze(1)
    ds = TensorDataset(x, 3 * x[:, 0])
    learner = nnfit.fit(nn.Linear(1, 1), ds, task="regression", lr=0.1, **QUICK)
    model = learner.model
    want = nn.functional.mse_loss(model(x).detach(), 3 * x)
    assert learner.evaluate(ds)["loss"] == pytest.approx(want.item(), rel=1e-5)


# ------------------------------------------------------------------------------ label types
@pytest.mark.parametrize(
    ("labels", "kind"),
    [
        (np.array([3, 7]), "i"),
        (np.array(["bird", "cat", "dog"]), "U"),
        (np.array([False, True]), "b"),
    ],
)
def test_labels_of_any_type(data, labels: np.ndarray, kind: str) -> None:
    x, _ = data
    y = labels[np.arange(64) % len(labels)]
    learner = nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, epochs=5, quiet=True,
                        device="cpu", lr=0.01)
    assert learner.classes == sorted(labels.tolist())
    pred = learner.predict(x)
    assert pred.dtype.kind == kind and set(pred.tolist()) <= set(labels.tolist())
    check_classifier(learner, x, 64)


def test_string_labels_from_object_series(data) -> None:
    x, _ = data
    y = pd.Series(np.array(["cat", "dog", "bird", "cat"] * 16, dtype=object))
    learner = nnfit.fit("mlp", x, y, **QUICK)
    assert learner.task.name == "multiclass" and learner.model.out_features == 3
    assert learner.classes == ["bird", "cat", "dog"]
    check_classifier(learner, x, 64)


# ------------------------------------------------------------------------------ regression
def test_regression_in_original_units() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 2))
    y = 1000 + 50 * x[:, 0]
    learner = nnfit.fit({"name": "mlp", "hidden": [16]}, x, y, epochs=5, quiet=True,
                        device="cpu", lr=0.01)
    assert learner.task.name == "regression"
    pred = learner.predict(x)
    assert pred.shape == (80,) and abs(pred.mean() - 1000) < 15
    assert learner.task.mean[0] == pytest.approx(y[split_indices(80, 0.2, 0)[0]].mean())
    # The metrics are in the same units as the predictions.
    rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
    assert learner.evaluate(x, y)["rmse"] == pytest.approx(rmse, rel=1e-4)


def test_multi_output_regression() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 3))
    y = np.c_[500 + 10 * x[:, 0], -3 + 0.1 * x[:, 1]]
    learner = nnfit.fit("mlp", x, y, **QUICK)
    assert learner.task.n_targets == 2 and learner.model.out_features == 2
    pred = learner.predict(x)
    assert pred.shape == (60, 2)
    assert abs(pred[:, 0].mean() - 500) < 10 and abs(pred[:, 1].mean() + 3) < 0.2


# ------------------------------------------------------------------------------ errors
def test_single_class_target(data) -> None:
    x, _ = data
    with pytest.raises(DataError, match=r"target has a single class \('yes'\)"):
        nnfit.fit("mlp", x, np.array(["yes"] * 64), **QUICK)


def test_unseen_label_at_evaluate(data) -> None:
    x, _ = data
    y = np.array(["a", "b"] * 32)
    learner = nnfit.fit("mlp", x, y, **QUICK)
    with pytest.raises(DataError) as e:
        learner.evaluate(x[:3], np.array(["a", "zebra", "b"]))
    assert str(e.value) == ("evaluation data target has labels unseen at training: 'zebra', "
                            "first at row 2 (known: 'a', 'b')")


def test_bad_inputs(data) -> None:
    x, y = data
    df = pd.DataFrame(x, columns=list("abcd")).assign(colour=["red"] * 64)
    with pytest.raises(DataError, match=r"^training data: column 'colour' is not numeric \(row 1: 'red'\)$"):
        nnfit.fit("mlp", df, y, numeric=["colour"], **QUICK)
    # by default a text column is a categorical feature, with its vocabulary
    roles = nnfit.fit("mlp", df, y, **QUICK).preprocessor.table.to_dict()["columns"]
    assert roles[-1] == {"name": "colour", "role": "categorical", "levels": ["red"], "missing": False,
                         "unknown": 0.0}
    assert [c["role"] for c in roles[:4]] == ["numeric"] * 4
    with pytest.raises(DataError, match="^training data: features must be numeric"):
        nnfit.fit("mlp", np.array([["a", "b"]] * 64), y, **QUICK)
    with pytest.raises(DataError, match="^training data: no data rows$"):
        nnfit.fit("mlp", np.zeros((0, 4)), np.zeros(0), **QUICK)
    with pytest.raises(DataError, match="no data rows"):
        nnfit.fit("mlp", pd.DataFrame({"a": [], "t": []}), target="t", **QUICK)
    with pytest.raises(DataError, match="64 rows of inputs but 10 targets"):
        nnfit.fit("mlp", x, y[:10], **QUICK)
    bad = torch.from_numpy(x.copy())
    bad[1, 3] = float("nan")
    with pytest.raises(DataError, match="non-finite value at row 2, feature 3"):
        nnfit.fit("mlp", bad, y, impute=False, **QUICK)
    bad[1, 3] = float("inf")  # imputation (the default) fills gaps, never infinities
    with pytest.raises(DataError, match="non-finite value at row 2, feature 3"):
        nnfit.fit("mlp", bad, y, **QUICK)


# ------------------------------------------------------------------------------ save / load
@pytest.mark.parametrize("spec", [{"name": "mlp", "hidden": [8, 4], "dropout": 0.2},
                                  {"name": "resmlp", "hidden": [8, 8], "batchnorm": True}])
def test_save_load_spec_model(tmp_path: Path, data, spec: dict) -> None:
    x, y = data
    learner = nnfit.fit(spec, x, np.array(["no", "yes"])[y], **QUICK)
    learner.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["manifest.json", "model.json", "model.safetensors"]
    for p in (tmp_path / "m").iterdir():
        assert not p.read_bytes().startswith(b"\x80")  # no pickle protocol header anywhere
    loaded = nnfit.load(tmp_path / "m", device="cpu")
    assert type(loaded.model) is type(learner.model) and loaded.spec == learner.spec
    assert loaded.classes == ["no", "yes"] and not loaded.model.training
    np.testing.assert_array_equal(loaded.predict(x), learner.predict(x))
    np.testing.assert_array_equal(loaded.predict_proba(x), learner.predict_proba(x))
    for name, t in learner.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], t)


def test_save_load_regression_keeps_scaling(tmp_path: Path) -> None:
    x = np.linspace(0, 1, 40).reshape(-1, 1)
    learner = nnfit.fit("mlp", x, 200 + 30 * x[:, 0], **QUICK)
    loaded = nnfit.load(learner.save(tmp_path / "r"), device="cpu")
    np.testing.assert_array_equal(loaded.predict(x), learner.predict(x))


def test_user_module_needs_an_instance(tmp_path: Path, data) -> None:
    x, y = data
    learner = nnfit.fit(SmallNet(), x, y, **QUICK)
    learner.save(tmp_path / "u")
    with pytest.raises(CheckpointError) as e:
        nnfit.load(tmp_path / "u")
    assert str(e.value) == (f"{tmp_path / 'u'}: the model is a user-defined module, which only "
                            "Python can rebuild: nnfit.load(path, model=YourModule(...))")
    loaded = nnfit.load(tmp_path / "u", model=SmallNet(), device="cpu")
    np.testing.assert_array_equal(loaded.predict_proba(x), learner.predict_proba(x))


def test_architecture_mismatch_is_named(tmp_path: Path, data) -> None:
    x, y = data
    nnfit.fit(SmallNet(6), x, y, **QUICK).save(tmp_path / "u")
    with pytest.raises(CheckpointError) as e:
        nnfit.load(tmp_path / "u", model=SmallNet(9))
    assert "weights do not fit the model (shape mismatch: hidden.weight (6, 4) vs model (9, 4)" \
        in str(e.value)
    nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, **QUICK).save(tmp_path / "m")
    with pytest.raises(CheckpointError) as e:
        nnfit.load(tmp_path / "m", model=nnfit.MLP(4, [8, 8], 1))
    assert "missing keys: fc2.weight, fc2.bias" in str(e.value)
    assert "shape mismatch: out.weight (1, 8)" not in str(e.value)
    with pytest.raises(CheckpointError) as e:
        nnfit.load(tmp_path / "m", model=nnfit.MLP(4, [], 1))
    assert "unexpected keys: fc1.bias, fc1.weight" in str(e.value)
    assert "shape mismatch: out.weight (1, 8) vs model (1, 4)" in str(e.value)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a run or model directory"):
        nnfit.load(tmp_path / "missing")
    # a valid model.json (every field is checked first), so the weights are what is refused
    (tmp_path / "model.json").write_text(json.dumps({
        "format": 1, "nnfit_version": "0.1.0", "spec": None, "target": None, "preprocess": None,
        "task": {"name": "binary", "classes": [0, 1], "loss": "auto"}}))
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match="manifest.json: manifest missing"):
        nnfit.load(tmp_path, model=SmallNet())
    # With a manifest that matches (anyone can write one), the pickle is still not loaded.
    write_files(tmp_path, "model", {"model.json": (tmp_path / "model.json").read_bytes(),
                                    "model.safetensors": b"\x80\x04garbage"})
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        nnfit.load(tmp_path, model=SmallNet())


def test_save_and_load_weights(tmp_path: Path) -> None:
    model, other = SmallNet(), SmallNet()
    nnfit.save_weights(model, tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").read_bytes().startswith(b"\x80")
    assert nnfit.load_weights(other, tmp_path / "w.safetensors") is other
    for name, t in model.state_dict().items():
        assert torch.equal(other.state_dict()[name], t)
    with pytest.raises(CheckpointError, match="missing keys"):
        nnfit.load_weights(nn.Sequential(nn.Linear(4, 6)), tmp_path / "w.safetensors")


def test_legacy_state_dict(tmp_path: Path) -> None:
    model = SmallNet()
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    state = legacy_state_dict(tmp_path / "plain.pt")
    assert list(state) == list(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    torch.save({"w": torch.zeros(2), "obj": NotATensor()}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match=r"code.pt: refused to load \(UnpicklingError\)$"):
        legacy_state_dict(tmp_path / "code.pt")
    torch.save({"w": torch.zeros(2), "n": 3}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="expected a state_dict of tensors"):
        legacy_state_dict(tmp_path / "mixed.pt")


# ------------------------------------------------------------------------------ runs, resume
def test_resume_equals_uninterrupted_run(tmp_path: Path, data) -> None:
    x, y = data
    spec = {"name": "mlp", "hidden": [16], "dropout": 0.3}
    kw = {"quiet": True, "device": "cpu", "batch_size": 8, "scheduler": "step", "step_size": 2,
          "gamma": 0.5}
    full = nnfit.fit(spec, x, y, epochs=6, run_dir=tmp_path / "A", **kw)
    part = nnfit.fit(spec, x, y, epochs=3, run_dir=tmp_path / "B", **kw)
    assert len(part.history) == 3
    resumed = nnfit.fit(spec, x, y, epochs=6, run_dir=tmp_path / "B", resume=tmp_path / "B", **kw)

    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    # The whole last checkpoint, optimizer moments and RNG states included, is identical too.
    ta, ma = read_latest(tmp_path / "A")
    tb, mb = read_latest(tmp_path / "B")
    assert sorted(ta) == sorted(tb) and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert any(k.startswith("optimizer/") for k in ta) and "rng/data" in ta

    def no_time(h: nnfit.History) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "time"} for r in h]

    assert no_time(resumed.history) == no_time(full.history)
    assert full.history["lr"] == [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4]
    assert ma["epoch"] == mb["epoch"] == 6

    run = tmp_path / "B"
    for name in ("config.json", "model.safetensors", "model.json", "manifest.json", "history.csv",
                 "metrics.json"):
        assert (run / name).is_file(), name
    assert committed(run)[-1].endswith("-epoch-00006") and mb["best_checkpoint"] in committed(run)
    rows = (run / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 and rows[0].startswith("epoch,train_loss,val_loss")
    assert json.loads((run / "config.json").read_text())["epochs"] == 6
    assert "accuracy" in json.loads((run / "metrics.json").read_text())
    saved = nnfit.load(run, device="cpu")
    np.testing.assert_array_equal(saved.predict_proba(x), resumed.predict_proba(x))


def test_resume_from_nothing(tmp_path: Path, data) -> None:
    x, y = data
    with pytest.raises(CheckpointError, match="no such run directory"):
        nnfit.fit("mlp", x, y, resume=tmp_path / "none", **QUICK)


# ------------------------------------------------------------------------------ inspection
def test_summary_and_activations(data) -> None:
    x, y = data
    learner = nnfit.fit({"name": "mlp", "hidden": [8, 5]}, x, y, **QUICK)
    s = learner.summary()
    assert s.total_params == sum(p.numel() for p in learner.model.parameters()) == 40 + 45 + 6
    assert [r.output_shape for r in s.layers if r.name == "fc2"] == ["(2, 5)"]
    model = learner.model.eval()
    batch = torch.from_numpy(x[:7])
    with capture_activations(model, ["fc1", "act2"]) as acts:
        out = model(batch)
    torch.testing.assert_close(acts["fc1"], model.fc1(batch).detach())
    torch.testing.assert_close(acts["act2"], torch.relu(model.fc2(torch.relu(acts["fc1"]))))
    assert out.shape == (7, 1) and not model.fc1._forward_hooks
