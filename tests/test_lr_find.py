"""``nnfit.lr_find`` and ``nnfit lr-find``: the range test changes nothing (weights, optimizer
state, random generators, run directories), is deterministic for a seed, cycles through small
data, refuses less than one batch in one line, and writes its curve and plot."""

from __future__ import annotations

import copy
import csv
import hashlib
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import nnfit
from helpers import cli, one_error
from nnfit.errors import ConfigError, DataError
from nnfit.lr_range import smoothed_losses, suggest


def _data(n: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def _csv(path: Path, n: int) -> Path:
    x, y = _data(n)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c", "d", "y"])
        w.writerows([*row, int(label)] for row, label in zip(x.tolist(), y, strict=True))
    return path


def _rng_states() -> tuple:
    return (torch.get_rng_state().clone(), np.random.get_state(legacy=True), random.getstate())


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.filterwarnings("ignore:lr-find. the loss was still")  # a short range for speed: no edge
def test_lr_find_leaves_model_optimizer_rngs_and_run_dir_unchanged(tmp_path):
    x, y = _data()
    torch.manual_seed(0)
    learner = nnfit.fit(nnfit.MLP(4, [8], 1), x, y, epochs=1, quiet=True, device="cpu",
                        run_dir=tmp_path / "run")
    model = learner.model.train()  # a mode lr_find must not switch
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    optim = copy.deepcopy(learner.trainer.optimizer.state_dict())
    files = _files(tmp_path / "run")
    torch.manual_seed(123), np.random.seed(5), random.seed(7)  # not the states fit's seed leaves
    before = _rng_states()
    result = nnfit.lr_find(model, x, y, steps=20, start_lr=1e-3, end_lr=1e-2, seed=3, device="cpu")
    assert len(result.lrs) > 5
    after = _rng_states()
    assert torch.equal(before[0], after[0])
    assert all(np.array_equal(a, b) for a, b in zip(before[1][1:3], after[1][1:3], strict=True))
    assert before[1][3:] == after[1][3:] and before[2] == after[2]
    assert model.training and all(p.grad is None for p in model.parameters())
    state = model.state_dict()
    assert all(torch.equal(weights[k], state[k]) and weights[k].dtype == state[k].dtype for k in weights)
    now = learner.trainer.optimizer.state_dict()
    assert now["param_groups"] == optim["param_groups"]
    for k, s in optim["state"].items():
        assert all(torch.equal(v, now["state"][k][name]) for name, v in s.items())
    assert _files(tmp_path / "run") == files


@pytest.mark.filterwarnings("ignore:lr-find. the loss was still")  # a short range for speed: no edge
def test_lr_find_is_deterministic_for_a_seed():
    x, y = _data()
    spec = {"name": "mlp", "hidden": [8], "dropout": 0.2}  # dropout draws from the global RNG
    kw = {"steps": 40, "start_lr": 1e-3, "end_lr": 0.1, "device": "cpu"}  # 20 steps a decade: no warning
    a, b = (nnfit.lr_find(spec, x, y, seed=1, **kw) for _ in range(2))
    assert (a.lrs, a.losses, a.smoothed, a.suggestion, a.stop) == (b.lrs, b.losses, b.smoothed,
                                                                   b.suggestion, b.stop)
    assert nnfit.lr_find(spec, x, y, seed=2, **kw).losses != a.losses
    assert a.suggestion is not None and a.rule


@pytest.mark.filterwarnings("ignore:lr-find. the loss was still")  # a short range for speed: no edge
def test_small_data_cycles_through_epochs():
    x, y = _data(40)  # two batches of 16 and one of 8 an epoch, without a validation split
    result = nnfit.lr_find({"name": "mlp", "hidden": [8]}, x, y, steps=30, start_lr=1e-3, end_lr=1e-2,
                           batch_size=16, val_split=0.0, seed=0, device="cpu")
    assert len(result.lrs) == 30 and result.stop == "30 steps to lr 0.01, no divergence"
    assert result.lrs[0] == pytest.approx(1e-3) and result.lrs[-1] == pytest.approx(1e-2)
    assert all(np.isfinite(result.losses))


def test_refused_below_one_batch(tmp_path, capsys):
    x, y = _data(40)  # 32 rows after the validation split
    with pytest.raises(DataError, match="one full batch.*32 training rows.*batch_size 64"):
        nnfit.lr_find({"name": "mlp"}, x, y, batch_size=64, device="cpu")
    line = one_error(capsys, "lr-find", _csv(tmp_path / "small.csv", 20), "--target", "y", "--device", "cpu")
    assert "one full batch" in line and "batch_size 32" in line


def test_bad_range_settings_are_one_line_errors(tmp_path, capsys):
    x, y = _data(64)
    with pytest.raises(ConfigError, match="start_lr"):
        nnfit.lr_find({"name": "mlp"}, x, y, start_lr=1.0, end_lr=0.1)
    with pytest.raises(ConfigError, match="rule"):
        nnfit.lr_find({"name": "mlp"}, x, y, rule="magic")
    line = one_error(capsys, "lr-find", "--steps", "2", "--device", "cpu")
    assert "steps must be an integer from 5 to 10000" in line
    run = tmp_path / "run"
    nnfit.fit({"name": "mlp", "hidden": [4]}, x, y, epochs=1, quiet=True, device="cpu", run_dir=run)
    files = _files(run)
    assert "holds an nnfit run" in one_error(capsys, "lr-find", "--out", run, "--device", "cpu")
    assert _files(run) == files


def test_cli_prints_the_suggestion_and_writes_plot_and_csv(tmp_path, capsys):
    from matplotlib.image import imread

    data, out = _csv(tmp_path / "d.csv", 200), tmp_path / "find"
    status, stdout, err = cli(capsys, "lr-find", data, "--target", "y", "--out", out, "--steps", "40",
                              "--hidden", "8", "--device", "cpu")
    assert status == 0, err
    line = stdout.splitlines()[-1]
    assert line.startswith("suggested lr: ") and "(half a decade below the lowest smoothed loss" in line
    suggested = float(line.split()[2])
    with open(out / "lr_find.csv") as f:
        rows = list(csv.DictReader(f))
    assert 5 <= len(rows) <= 40 and list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"]
    assert float(rows[0]["lr"]) == pytest.approx(1e-7)
    assert min(float(r["lr"]) for r in rows) / 10 <= suggested <= max(float(r["lr"]) for r in rows)
    image = imread(out / "lr_find.png")
    assert image.shape[:2] == (400, 640) and image[..., :3].std() > 0.05  # drawn, not blank


def test_suggestion_rules_on_a_known_curve():
    lrs = list(np.logspace(-5, 0, 50))
    curve = [1.0] * 20 + list(np.linspace(1.0, 0.2, 20)) + [0.2, 0.201, 0.25, 0.4, 0.8, 1.5, 3, 5, 8, 9]
    lr, rule = suggest(lrs, curve, "minimum")
    assert lr == pytest.approx(lrs[39] / 10 ** 0.5) and "half a decade below" in rule  # the first 0.2
    lr, _ = suggest(lrs, curve, "steepest")
    assert lrs[20] <= lr <= lrs[39]
    assert suggest(lrs[:3], curve[:3], "minimum")[0] is None
    assert smoothed_losses([2.0, 2.0, float("nan"), 1.0], 0.9)[:2] == pytest.approx([2.0, 2.0])
    assert smoothed_losses([2.0, float("nan"), 1.0], 0.9)[-1] == float("inf")


def test_a_lucky_first_batch_is_not_the_suggestion():
    # The bias-corrected average's first point is one batch: a low one made it the curve's
    # minimum and the suggestion a tenth of the smallest rate (1e-8 on the benchmark).
    lrs = list(np.logspace(-7, 1, 100))
    curve = [0.6] + [1.0] * 69 + list(np.linspace(1.0, 0.7, 15)) + list(np.linspace(0.75, 3.0, 15))
    lr, _ = suggest(lrs, curve, "minimum")
    assert lr == pytest.approx(lrs[84] / 10 ** 0.5)
    for rule in ("valley", "steepest"):
        assert suggest(lrs, curve, rule)[0] >= lrs[10]
