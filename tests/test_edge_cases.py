"""Cases found by an independent review: each one pinned by a test."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics as skm
import torch
from torch import nn

import nnfit
from nnfit.cli import main
from nnfit.errors import CheckpointError, DataError

FAST = dict(quiet=True, device="cpu")


def test_regression_with_a_large_offset_keeps_its_digits_and_matches_sklearn():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    y = 1e8 + 3 * x[:, 0] + 0.1 * rng.normal(size=300)
    learner = nnfit.fit({"name": "mlp", "hidden": [16]}, x, y, epochs=30, **FAST)
    pred = learner.predict(x)
    assert len(np.unique(pred)) > 250  # not rounded to float32's multiples of 8
    ours = learner.evaluate(x, y)
    assert ours["mse"] == pytest.approx(skm.mean_squared_error(y, pred), rel=1e-6)
    assert ours["r2"] == pytest.approx(skm.r2_score(y, pred), rel=1e-6, abs=1e-9)


def test_macro_metrics_on_data_missing_some_trained_classes_match_sklearn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    y = np.digitize(x[:, 0], [-1, -0.3, 0.3, 1])  # 5 classes
    learner = nnfit.fit("mlp", x, y, epochs=10, **FAST)
    keep = y <= 2
    out = learner.evaluate(x[keep], y[keep])
    pred = learner.predict(x[keep])
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score),
                     ("f1", skm.f1_score)):
        assert out[name] == pytest.approx(fn(y[keep], pred, average="macro", zero_division=0),
                                          abs=1e-9)


def test_keyword_inputs_match_by_name_in_any_order():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.out = nn.Linear(3, 8), nn.Linear(2, 8), nn.Linear(16, 3)

        def forward(self, x1, x2):
            return self.out(torch.cat([self.a(x1).relu(), self.b(x2).relu()], 1))

    x = np.random.default_rng(0).normal(size=(120, 5)).astype("float32")
    y = np.digitize(x[:, 0], [-0.5, 0.5])
    learner = nnfit.fit(Two(), {"x1": x[:, :3], "x2": x[:, 3:]}, y, epochs=2, **FAST)
    a = learner.predict_proba({"x1": x[:5, :3], "x2": x[:5, 3:]})
    b = learner.predict_proba({"x2": x[:5, 3:], "x1": x[:5, :3]})
    np.testing.assert_array_equal(a, b)


def test_explicit_class_task_on_a_continuous_target_says_so():
    x = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(DataError, match="fractional values.*use task 'regression'"):
        nnfit.fit("mlp", x, x[:, 0] * 1000.5, task="multiclass", epochs=1, **FAST)


def test_load_weights_reads_a_pt_state_dict_and_refuses_anything_else(tmp_path):
    net = nn.Linear(3, 2)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    other = nn.Linear(3, 2)
    nnfit.load_weights(other, tmp_path / "w.pt")
    assert torch.equal(other.weight, net.weight)
    torch.save({"weight": net.weight, "note": {"not": "tensors"}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError):
        nnfit.load_weights(other, tmp_path / "bad.pt")


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    lines = ["a,b,label"] + [f"{p},{q},{'yes' if p > 0 else 'no'}" for p, q in x]
    (tmp_path / "b.csv").write_text("\n".join(lines) + "\n")
    assert main(["train", "b.csv", "--target", "label", "--epochs", "2", "--quiet",
                 "--out", "r"]) == 0
    return tmp_path


@pytest.mark.parametrize("flags, named", [
    (["--hidden", "8"], "hidden"), (["--lr", "0.5"], "lr"), (["--optimizer", "sgd"], "optimizer"),
    (["--task", "regression"], "task"),
])
def test_resume_refuses_changed_settings(run, capsys, flags, named):
    before = (run / "r" / "config.json").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", "r", "--epochs", "4", "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]
    assert err[0].startswith("nnfit: error: cannot resume with changed settings")
    assert (run / "r" / "config.json").read_bytes() == before


def test_resume_may_extend_epochs(run):
    assert main(["train", "--resume", "r", "--epochs", "4", "--quiet"]) == 0
    assert len((run / "r" / "history.csv").read_text().splitlines()) == 5


def test_unwritable_prediction_output_is_a_one_line_error(run, capsys):
    capsys.readouterr()
    assert main(["predict", "r", "b.csv", "-o", "r"]) == 2  # a directory
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnfit: error:")


def test_fit_never_overwrites_a_run_directory_by_accident(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 2))
    y = x[:, 0] > 0
    nnfit.fit("mlp", x, y, epochs=1, run_dir=tmp_path / "r", **FAST)
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    with pytest.raises(nnfit.ConfigError, match="exists and is not empty"):
        nnfit.fit("mlp", x, y, epochs=1, run_dir=tmp_path / "r", **FAST)
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before
    nnfit.fit("mlp", x, y, epochs=1, run_dir=tmp_path / "r", overwrite=True, **FAST)
