"""Sweeps: every member of a stacked group equals its standalone ``nnfit.fit`` run (seeds,
folds, an lr/weight-decay/dropout grid, BatchNorm, early stopping of one member while the
others go on), a sweep killed with SIGKILL resumes bitwise, and the outputs load."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nnfit
from nnfit.config import train_config
from nnfit.sweep import sweep

HERE = Path(__file__).parent


def _data(n: int = 240, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    score = x[:, 0] + 0.7 * x[:, 1] - 0.5 * x[:, 2] + 0.3 * rng.normal(size=n)
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
    return x, y


def _max_diff(a: torch.nn.Module, b: torch.nn.Module, skip: tuple[str, ...] = ()) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(((sa[k].double() - sb[k].double()).abs().max().item() for k in sa
                if not k.startswith(skip) and sa[k].is_floating_point()), default=0.0)


def _standalone(model, x, y, settings: dict, **common):
    spec = dict(model)
    for key in ("dropout", "hidden", "batchnorm"):
        if key in settings:
            spec[key] = settings[key]
    train_keys = {k: v for k, v in settings.items() if k not in ("dropout", "hidden", "batchnorm")}
    return nnfit.fit(spec, x, y, config=train_config(None, **common, **train_keys))


def _check_members(result, model, x, y, tol: float = 1e-5, skip: tuple[str, ...] = (), **common):
    assert all(result.stacked), "the members trained one after another, not stacked"
    for name, learner in result.members.items():
        settings = next(r for r in result.rows if r["member"] == name)
        settings = {k: v for k, v in _settings_of(result, name).items()}
        alone = _standalone(model, x, y, settings, **common)
        assert len(alone.history) == len(learner.history), name
        assert _max_diff(alone.model, learner.model, skip) < tol, name
        a, b = alone.history[-1], learner.history[-1]
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-5 and a["val_accuracy"] == b["val_accuracy"], name


def _settings_of(result, name: str) -> dict:
    import json

    data = json.loads((result.out / "sweep.json").read_text())
    return next(m["settings"] for m in data["members"] if m["name"] == name)


MLP = {"name": "mlp", "hidden": [24, 12]}


def test_seeds_and_an_lr_weight_decay_dropout_grid_equal_their_standalone_runs(tmp_path):
    x, y = _data()
    common = dict(epochs=3, batch_size=32, quiet=True, threads=1)
    result = sweep(MLP, x, y, out=tmp_path / "s", seeds="0,1",
                   grid={"lr": [1e-3, 4e-3], "weight_decay": [0, 0.01], "dropout": [0, 0.2]}, **common)
    assert len(result.members) == 16 and result.groups == [list(result.members)]
    assert "seed-1_lr-0.004_weight_decay-0.01_dropout-0.2" in result.members
    _check_members(result, MLP, x, y, **common)


def test_kfold_members_equal_their_fold_runs_with_ragged_folds(tmp_path):
    x, y = _data(n=203)  # folds of 67 and 68 rows: the shorter folds sit out the last steps
    common = dict(epochs=3, batch_size=16, quiet=True, threads=1, optimizer="adamw", weight_decay=0.05)
    result = sweep(MLP, x, y, out=tmp_path / "s", kfold=3, **common)
    assert sorted(result.members) == ["fold-1", "fold-2", "fold-3"]
    _check_members(result, MLP, x, y, **common)


def test_batchnorm_members_with_sgd_momentum_equal_their_runs(tmp_path):
    x, y = _data()
    model = {**MLP, "batchnorm": True, "dropout": 0.1}
    common = dict(epochs=3, batch_size=25, quiet=True, threads=1, optimizer="sgd", momentum=0.9,
                  lr=0.05, scheduler="cosine")
    result = sweep(model, x, y, out=tmp_path / "s", seeds="3-5", **common)
    _check_members(result, model, x, y, **common)


def test_batchnorm_with_adam_equal_but_for_the_biases_batchnorm_cancels(tmp_path):
    """A bias feeding a BatchNorm has a gradient of rounding noise only, which Adam scales up
    to lr-sized steps: those biases (and the running means that absorb them) wander apart
    between any two float orders (a standalone run on 1 or 2 threads shows the same). In eval
    mode the running means lag the biases, so probabilities agree to about 1e-3."""
    x, y = _data()
    model = {**MLP, "batchnorm": True}
    common = dict(epochs=3, batch_size=32, quiet=True, threads=1)
    result = sweep(model, x, y, out=tmp_path / "s", seeds="0,1", **common)
    for name, learner in result.members.items():
        alone = _standalone(model, x, y, _settings_of(result, name), **common)
        skip = ("fc1.bias", "fc2.bias", "bn1.running_mean", "bn2.running_mean")
        assert _max_diff(alone.model, learner.model, skip) < 1e-5
        np.testing.assert_allclose(learner.predict_proba(x), alone.predict_proba(x), atol=5e-3)


def test_one_member_stops_early_while_the_others_go_on(tmp_path):
    x, y = _data()
    common = dict(epochs=8, batch_size=32, quiet=True, threads=1, patience=2)
    result = sweep(MLP, x, y, out=tmp_path / "s", grid={"lr": [2e-3, 0.05]}, **common)
    lengths = {n: len(lr.history) for n, lr in result.members.items()}
    assert lengths["lr-0.002"] == 8 and lengths["lr-0.05"] < 8, lengths
    assert result.members["lr-0.05"].stop_reason.startswith("early stopping")
    _check_members(result, MLP, x, y, **common)


def test_outputs_results_members_ensemble_and_best(tmp_path):
    x, y = _data()
    result = sweep(MLP, x, y, out=tmp_path / "s", seeds="0-2", epochs=2, quiet=True)
    out = tmp_path / "s"
    text = (out / "results.csv").read_text().splitlines()
    assert text[0].startswith("member,seed,epochs,best_epoch,best_val_loss")
    assert [r.split(",")[0] for r in text[1:]] == ["seed-0", "seed-1", "seed-2", "mean[all]", "std[all]"]
    for name in ("seed-0", "seed-1", "seed-2"):
        loaded = nnfit.load(out / "members" / name)
        np.testing.assert_allclose(loaded.predict_proba(x), result.members[name].predict_proba(x), atol=1e-6)
    mean = np.mean([result.members[n].predict_proba(x) for n in ("seed-0", "seed-1", "seed-2")], axis=0)
    ensemble = nnfit.load(out / "ensemble")
    np.testing.assert_allclose(ensemble.predict_proba(x), mean, atol=1e-6)
    best = nnfit.load(out / "best")
    np.testing.assert_allclose(best.predict_proba(x), result.members[result.best].predict_proba(x), atol=1e-6)


def test_a_sweep_killed_mid_epoch_resumes_bitwise(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    driver = [sys.executable, str(HERE / "sweep_crash_driver.py")]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run([*driver, "0", str(whole)], check=True, env=env, timeout=300)
    killed = subprocess.run([*driver, "23", str(cut)], env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert any((cut / "checkpoints").iterdir()), "no checkpoint to resume from"
    subprocess.run([*driver, "0", str(cut), "resume"], check=True, env=env, timeout=300)
    for member in sorted(p.name for p in (whole / "members").iterdir()):
        a = (whole / "members" / member / "model.safetensors").read_bytes()
        b = (cut / "members" / member / "model.safetensors").read_bytes()
        assert a == b, member
        assert (whole / "members" / member / "history.csv").read_text().count("\n") == \
            (cut / "members" / member / "history.csv").read_text().count("\n")


@pytest.mark.parametrize("kwargs, message", [
    (dict(kfold=1), "at least 2 folds"),
    (dict(grid={}), "grid|sweep"),
    (dict(grid={"epochs": [1, 2]}), "epochs"),
    (dict(grid={"lrr": [1e-3]}), "lrr"),
    (dict(grid={"hidden": [8, 16]}), "give each point as a list"),
    (dict(grid={"activation": ["relu,gelu"]}), "holds ','"),
    (dict(seeds=[1.5, 2]), "not a whole number"),
    (dict(kfold=2.5), "whole number"),
    (dict(kfold="3"), "whole number"),
    (dict(bootstrap=10**9), "more than 1024"),
])
def test_bad_sweeps_are_refused_in_one_line(tmp_path, kwargs, message):
    x, y = _data()
    with pytest.raises(nnfit.ConfigError, match=message):
        sweep(MLP, x, y, out=tmp_path / "s", epochs=1, quiet=True, **kwargs)
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def _table(n: int = 260):
    import pandas as pd

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                       "c": rng.choice(list("xyzw"), n), "d": rng.choice(list("pqrstu"), n)})
    # six rows: a level needs 5 training rows (schema.MIN_COUNT), so the splits disagree on it
    df.loc[[5, 77, 120, 160, 200, 240], "d"] = "rare"
    df["y"] = ((df.a + (df.c == "x") + 0.3 * rng.normal(size=n)) > 0.5).astype(int)
    return df


@pytest.mark.parametrize("family", ["mlp", "resmlp"])
def test_tables_with_categoricals_of_differing_vocabularies_stack_through_vmap(tmp_path, family):
    df = _table()
    model = {"name": family, "hidden": [16, 16], "dropout": 0.2}
    common = dict(epochs=3, batch_size=32, quiet=True, threads=1)
    result = sweep(model, df, target="y", out=tmp_path / "s", seeds="0-4", **common)
    assert all(result.stacked)
    sizes = set()
    for name, learner in result.members.items():
        alone = nnfit.fit(model, df, target="y", seed=int(name.split("-")[1]), **common)
        assert _max_diff(alone.model, learner.model) < 1e-5, name
        sizes.add(tuple(v.shape[0] for k, v in learner.model.state_dict().items() if k.startswith("embed")))
    assert len(sizes) > 1, "every member had the same vocabularies: the padding went untested"


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.bn = torch.nn.Linear(2, 8), torch.nn.BatchNorm1d(8)
        self.drop, self.l2 = torch.nn.Dropout(0.3), torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.l2(self.drop(torch.relu(self.bn(self.l1(x)))))


def test_a_module_of_your_own_stacks_through_vmap_and_equals_its_twin(tmp_path):
    df = _table()
    x, y = df[["a", "b"]].to_numpy(np.float32), df.y.to_numpy()
    common = dict(epochs=3, batch_size=32, quiet=True, threads=1, optimizer="sgd", lr=0.05, momentum=0.5)
    result = sweep(_Net, x, y, out=tmp_path / "s", seeds="0-2", **common)
    assert all(result.stacked)
    for name, learner in result.members.items():
        seed = int(name.split("-")[1])
        torch.manual_seed(seed)  # the twin of a factory member: seeded, built, then fit
        alone = nnfit.fit(_Net(), x, y, seed=seed, **common)
        assert _max_diff(alone.model, learner.model) < 1e-5, name


def test_resume_refuses_changed_data_and_settings(tmp_path):
    x, y = _data()
    out = tmp_path / "s"
    sweep(MLP, x, y, out=out, seeds="0-1", epochs=2, quiet=True)
    x2 = x.copy()
    x2[0, 0] += 1.0
    with pytest.raises(nnfit.ConfigError, match="changed settings or data: member seed-0.*training data"):
        sweep(MLP, x2, y, out=out, seeds="0-1", epochs=2, quiet=True, resume=True)
    with pytest.raises(nnfit.ConfigError, match="lr"):
        sweep(MLP, x, y, out=out, seeds="0-1", epochs=2, quiet=True, resume=True, lr=0.01)
    with pytest.raises(nnfit.ConfigError, match="epochs"):  # a sweep resumes as it was planned
        sweep(MLP, x, y, out=out, seeds="0-1", epochs=3, quiet=True, resume=True)
    sweep(MLP, x, y, out=out, seeds="0-1", epochs=2, quiet=True, resume=True)


def test_log_sinks_are_refused_and_a_sweep_folder_is_not_a_model(tmp_path):
    x, y = _data()
    with pytest.raises(nnfit.ConfigError, match="not available for a sweep"):
        sweep(MLP, x, y, out=tmp_path / "s", seeds="0-1", epochs=1, quiet=True, log=("jsonl",))
    assert not (tmp_path / "s").exists()
    sweep(MLP, x, y, out=tmp_path / "s", seeds="0-1", epochs=1, quiet=True)
    with pytest.raises(nnfit.ConfigError, match="is a sweep, not a model"):
        nnfit.load(tmp_path / "s")


def test_summary_rows_are_labelled_by_their_grid_point_and_the_best_is_marked(tmp_path):
    import csv

    x, y = _data()
    result = sweep(MLP, x, y, out=tmp_path / "s", seeds="0-1", grid={"weight_decay": [0, 0.01]},
                   epochs=1, quiet=True)
    with open(tmp_path / "s" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    labels = [r["member"] for r in rows[4:]]
    assert labels == ["mean[weight_decay-0]", "std[weight_decay-0]",
                      "mean[weight_decay-0.01]", "std[weight_decay-0.01]"]
    assert rows[6]["weight_decay"] == "0.01" and rows[6]["seed"] == ""
    assert [r["member"] for r in rows if r["best"] == "True"] == [result.best]


def _stopped_sweep(tmp_path, monkeypatch, **kw):
    """A sweep stopped by SIGTERM after its 3rd step: a checkpoint inside epoch 1."""
    from nnfit.sweep import engine

    step = engine.GroupTrainer._train_step

    def signalled(self, *args):
        step(self, *args)
        if self.step == 3:
            self._signal = signal.SIGTERM

    monkeypatch.setattr(engine.GroupTrainer, "_train_step", signalled)
    x, y = _data()
    with pytest.raises(nnfit.errors.Stopped, match="SIGTERM"):
        sweep(MLP, x, y, out=tmp_path / "s", seeds="0-1", epochs=2, quiet=True, **kw)
    monkeypatch.setattr(engine.GroupTrainer, "_train_step", step)
    return x, y


@pytest.mark.parametrize("field, value, named", [
    ("epoch", -5, "epoch"), ("epoch", 10**9, "epoch"), ("batch", -3, "batch"), ("step", "7", "step"),
    ("members.0.best", "low", "members[0].best"), ("members.0.stop", [1], "members[0].stop"),
    ("members.1.history", [1, 2, 3], "members[1].history"),
    ("members.0.param_groups.0.lr", "fast", "members[0].param_groups.lr"),
    ("members.1.param_groups.0.betas", [0.9, -1], "members[1].param_groups.betas"),
])
def test_a_tampered_sweep_checkpoint_is_refused_in_one_line(tmp_path, monkeypatch, field, value, named):
    import json

    from nnfit.files import manifest_bytes

    x, y = _stopped_sweep(tmp_path, monkeypatch)
    (ckpt,) = list((tmp_path / "s" / "checkpoints").iterdir())
    meta = json.loads((ckpt / "state.json").read_text())
    *path, last = field.split(".")
    at = meta
    for key in path:
        at = at[int(key)] if isinstance(at, list) else at[key]
    at[int(last) if isinstance(at, list) else last] = value
    files = {"state.json": json.dumps(meta).encode(),
             "state.safetensors": (ckpt / "state.safetensors").read_bytes()}
    (ckpt / "state.json").write_bytes(files["state.json"])
    (ckpt / "manifest.json").write_bytes(manifest_bytes("checkpoint", files))
    with pytest.raises(nnfit.CheckpointError, match=re.escape(f"field '{named}'")):
        sweep(MLP, x, y, out=tmp_path / "s", seeds="0-1", epochs=2, quiet=True, resume=True)


def test_a_sweep_stopped_by_sigterm_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    x, y = _stopped_sweep(tmp_path, monkeypatch)
    resumed = sweep(MLP, x, y, out=tmp_path / "s", seeds="0-1", epochs=2, quiet=True, resume=True)
    whole = sweep(MLP, x, y, out=tmp_path / "w", seeds="0-1", epochs=2, quiet=True)
    for name in whole.members:
        assert _max_diff(whole.members[name].model, resumed.members[name].model) == 0.0


def test_regression_members_are_ranked_in_the_targets_units(tmp_path):
    """Each member's loss is on its own standardised target: the best member is the one with
    the lowest validation mse in the target's units."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 4)).astype(np.float32)
    y = 100 * x[:, 0] + 5 * rng.normal(size=150)
    result = sweep(MLP, x, y, out=tmp_path / "s", seeds="0-3", epochs=3, quiet=True)
    members = result.rows[:4]
    assert result.best == min(members, key=lambda r: r["val_mse"])["member"]


def test_an_error_in_one_member_names_it(tmp_path):
    x, y = _data()
    y = np.where(np.arange(len(y)) < 3, 7, y)  # a class of 3 rows: fewer than 5 folds
    with pytest.raises(nnfit.errors.NnfitError, match="member fold-1: .*fewer than 5 folds"):
        sweep(MLP, x, y, out=tmp_path / "s", kfold=5, epochs=1, quiet=True)


def test_a_warning_of_the_data_is_said_once_for_all_members(tmp_path):
    import warnings

    x, y = _data()
    x[::9, 0] = np.nan  # filled by every member: one warning, not one per member
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sweep(MLP, x, y, out=tmp_path / "s", seeds="0-3", epochs=1, quiet=True)
    filled = [str(w.message) for w in caught if "filled missing values" in str(w.message)]
    assert len(filled) == 1 and filled[0].endswith("(4 of 4 members)"), filled
