"""A loss function of the user's own (nnfit.tasks.CustomTask): outputs that are not class
scores or one value per target train through the same loop, resume exactly, match a
hand-written loop, save and load without code, and every misuse is one line. CPU, tiny data."""

from __future__ import annotations

import collections
import copy
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnfit
from helpers import TermAt, one_error
from nnfit.errors import CheckpointError, ConfigError, DataError
from nnfit.io.validate import CONFIG, LEARNER, validate
from nnfit.tasks import ClassificationTask, CustomTask, RegressionTask, Task, make_task
from test_validation import tamper_checkpoint

CPU = {"device": "cpu", "quiet": True}
T = 8  # time steps of the sequence problem


def masked_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the steps a sequence has: target (n, T, 2) = (value, mask)."""
    value, mask = target[..., 0], target[..., 1]
    return ((out - value) ** 2 * mask).sum() / mask.sum()


def shifted_nll(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gaussian NLL of (mean, log-variance) outputs, shifted below zero: a custom loss may be
    negative, and a checkpoint of a negative running loss must resume."""
    return F.gaussian_nll_loss(out[:, 0], target, out[:, 1].exp()) - 5.0


class Smoother(nn.Module):
    """One output per time step: (n, T, 1) inputs -> (n, T)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(1, 8, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0]).squeeze(-1)


def _sequences(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sequences of varying length; the target is each step's running mean, masked
    past the sequence's end."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, T, 1)).astype(np.float32)
    lengths = rng.integers(3, T + 1, size=n)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)
    x[..., 0] *= mask
    value = np.cumsum(x[..., 0], 1) / np.arange(1, T + 1)
    return x, np.stack([value, mask], -1)


def _smoother() -> Smoother:
    torch.manual_seed(3)
    return Smoother()


def _weights(learner: nnfit.Learner) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in learner.model.state_dict().items()}


def _equal(a: nnfit.Learner, b: nnfit.Learner) -> bool:
    wa, wb = _weights(a), _weights(b)
    untimed = [[{k: v for k, v in r.items() if k != "time"} for r in x.history] for x in (a, b)]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa) and untimed[0] == untimed[1]


# --- the protocol and the task ----------------------------------------------------------------


def test_every_task_implements_the_protocol() -> None:
    members = ("name", "out_features", "encode_target", "loss", "metric_inputs", "make_metrics",
               "decode", "to_dict")
    y = np.array([0, 1, 1, 0])
    for task in (make_task("binary", y), make_task("regression", y * 1.5), CustomTask(F.mse_loss)):
        assert all(hasattr(task, m) for m in members), type(task)
    assert Task.__module__ == "nnfit.tasks.base" and nnfit.CustomTask is CustomTask
    assert isinstance(make_task("binary", y), ClassificationTask)
    assert isinstance(make_task("regression", y * 1.5), RegressionTask)


def test_targets_are_taken_as_given() -> None:
    task = CustomTask(F.mse_loss)
    floats = task.encode_target(np.ones((3, 2, 4)))
    assert floats.dtype == torch.float32 and floats.shape == (3, 2, 4)
    assert task.encode_target(np.array([[1], [2]])).dtype == torch.int64
    assert task.encode_target(np.array([True, False])).tolist() == [1.0, 0.0]
    with pytest.raises(DataError, match="t: must be numbers or booleans for a custom loss"):
        CustomTask(F.mse_loss).encode_target(np.array(["a", "b"]), "t:")
    with pytest.raises(DataError, match=r"t has a missing value \(row 2: nan\)"):
        task.encode_target(np.array([1.0, np.nan]), "t")
    fitted = CustomTask(F.mse_loss, target_shape=(2,))
    with pytest.raises(DataError, match=r"t has rows of shape \(3,\), the model was trained on rows of "
                                        r"shape \(2,\)"):
        fitted.encode_target(np.ones((4, 3)), "t")
    out = torch.randn(5, 3)
    assert np.array_equal(task.decode(out), out.numpy())
    assert task.make_metrics().compute() == {}


def test_a_column_of_targets_keeps_its_shape_and_out_features_default_to_its_width() -> None:
    seen: list[tuple] = []

    def loss(out, target):
        seen.append((tuple(out.shape[1:]), tuple(target.shape[1:])))
        return F.mse_loss(out, target)

    x = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)
    nnfit.fit({"name": "mlp", "hidden": [4]}, x, x[:, :1], loss=loss, epochs=1, **CPU)
    assert set(seen) == {((1,), (1,))}  # (n, 1) outputs against (n, 1) targets, never (n,)
    learner = nnfit.fit({"name": "mlp", "hidden": [4]}, x, x[:, :2] * 2, loss=F.l1_loss, epochs=1, **CPU)
    assert learner.spec["out_features"] == 2 and learner.predict(x[:5]).shape == (5, 2)
    assert learner.task.to_dict() == {"name": "custom", "loss": "l1_loss", "target_shape": [2]}
    assert learner.classes is None and list(learner.history[0]) == ["epoch", "train_loss", "val_loss",
                                                                      "lr", "time"]


# --- the done-when: a sequence output trains and resumes exactly ---------------------------------


def test_a_sequence_model_trains_on_a_masked_loss_and_resumes_bitwise(tmp_path) -> None:
    x, y = _sequences()
    kw = dict(loss=masked_mse, batch_size=16, lr=1e-2, **CPU)
    straight = nnfit.fit(_smoother(), x, y, epochs=4, **kw)
    first = straight.history["val_loss"][0]
    assert straight.history["val_loss"][-1] < 0.7 * first  # it learns the running mean
    assert straight.predict(x[:3]).shape == (3, T)

    nnfit.fit(_smoother(), x, y, epochs=2, run_dir=tmp_path / "r", **kw)
    resumed = nnfit.fit(_smoother(), x, y, epochs=4, run_dir=tmp_path / "r", resume=tmp_path / "r", **kw)
    assert _equal(resumed, straight)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["loss"] == "custom"


def test_a_negative_loss_resumes_exactly_from_inside_an_epoch(tmp_path) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] + 0.1 * rng.normal(size=120)).astype(np.float32)
    spec = {"name": "mlp", "hidden": [16], "out_features": 2}  # a mean and a log-variance
    kw = dict(loss=shifted_nll, epochs=3, batch_size=16, checkpoint_steps=4, **CPU)
    straight = nnfit.fit(spec, x, y, **kw)
    assert straight.history["train_loss"][-1] < 0
    with pytest.raises(nnfit.errors.Stopped):
        nnfit.fit(spec, x, y, run_dir=tmp_path / "r", callbacks=[TermAt(9)], **kw)
    resumed = nnfit.fit(spec, x, y, run_dir=tmp_path / "r", resume=tmp_path / "r", **kw)
    assert _equal(resumed, straight)


def test_fit_with_a_custom_loss_is_bitwise_a_hand_loop() -> None:
    x, y = _sequences(80)
    ours, theirs = _smoother(), _smoother()
    nnfit.fit(ours, x, y, task=CustomTask(masked_mse), epochs=3, batch_size=16, optimizer="adam",
              lr=1e-2, seed=5, val_split=0, standardize=False, patience=0, restore_best=False, **CPU)

    torch.manual_seed(5)
    g = torch.Generator().manual_seed(5)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    opt = torch.optim.Adam(theirs.parameters(), lr=1e-2, fused=True)
    start = copy.deepcopy(theirs.state_dict())
    for _ in range(3):
        theirs.train()
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 16):
            idx = perm[i:i + 16]
            masked_mse(theirs(xt[idx]), yt[idx]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    a, b = ours.state_dict(), theirs.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(start[k], b[k]) for k in b)


# --- save, load, evaluate ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nll_run(tmp_path_factory):
    """A run of an mlp spec trained with a custom loss, and its data."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(80, 3)).astype(np.float32)
    y = (2 * x[:, 0]).astype(np.float32)
    run = tmp_path_factory.mktemp("nll") / "run"
    learner = nnfit.fit({"name": "mlp", "hidden": [8], "out_features": 2}, x, y, loss=shifted_nll,
                        epochs=2, run_dir=run, **CPU)
    return run, learner, x, y


def test_a_loaded_model_predicts_and_evaluates_only_with_its_loss(nll_run) -> None:
    run, learner, x, y = nll_run
    meta = json.loads((run / "model.json").read_text())
    assert meta["task"] == {"name": "custom", "loss": "shifted_nll", "target_shape": []}
    loaded = nnfit.load(run)
    assert np.array_equal(loaded.predict(x), learner.predict(x)) and loaded.predict(x).shape == (80, 2)
    with pytest.raises(ConfigError, match=r"custom loss function 'shifted_nll', which is not saved: pass it "
                                          r"as loss= \(nnfit.load\(path, loss=fn\)"):
        loaded.evaluate(x, y)
    assert nnfit.load(run, loss=shifted_nll).evaluate(x, y) == learner.evaluate(x, y)
    assert set(learner.evaluate(x, y)) == {"loss"}
    with pytest.raises(ConfigError, match="predict_proba needs a classification model"):
        loaded.predict_proba(x)


def test_loss_for_a_built_in_model_is_refused(tmp_path) -> None:
    x = np.random.default_rng(0).normal(size=(40, 3))
    nnfit.fit({"name": "mlp", "hidden": [4]}, x, x[:, 0], epochs=1, **CPU).save(tmp_path / "m")
    with pytest.raises(ConfigError, match="loss=: this model trains a built-in regression task"):
        nnfit.load(tmp_path / "m", loss=F.mse_loss)


def test_cli_evaluate_of_a_custom_loss_run_is_one_line(nll_run, capsys, tmp_path) -> None:
    run, _, x, y = nll_run
    data = tmp_path / "d.csv"
    data.write_text("a,b,c,y\n" + "".join(f"{r[0]},{r[1]},{r[2]},{t}\n" for r, t in zip(x, y, strict=True)))
    line = one_error(capsys, "evaluate", run, data)
    assert "custom loss function 'shifted_nll'" in line and "loss=" in line


def test_the_saved_task_and_config_are_checked(nll_run, tmp_path) -> None:
    run, *_ = nll_run
    meta = json.loads((run / "model.json").read_text())
    validate({**meta, "spec": {**meta["spec"], "out_features": 5}}, LEARNER, "m")  # any width
    with pytest.raises(CheckpointError, match=r"m: task.target_shape\[0\]"):
        validate({**meta, "task": {**meta["task"], "target_shape": [-1]}}, LEARNER, "m")
    with pytest.raises(CheckpointError, match="m: task.loss"):
        validate({**meta, "task": {"name": "custom", "loss": "", "target_shape": None}}, LEARNER, "m")
    config = json.loads((run / "config.json").read_text())
    validate(config, CONFIG, "c")
    with pytest.raises(CheckpointError, match="c: loss: 'no-such' is not one of"):
        validate({**config, "loss": "no-such"}, CONFIG, "c")
    # a checkpoint whose config names a built-in loss for the custom task is refused
    copy_run = tmp_path / "r"
    shutil.copytree(run, copy_run)
    tamper_checkpoint(copy_run, meta_fn=lambda m: m["config"].update(loss="mse"))
    with pytest.raises(CheckpointError, match="config.loss: 'mse' for a custom task"):
        nnfit.fit({"name": "mlp", "hidden": [8], "out_features": 2}, np.zeros((8, 3)), np.zeros(8),
                  loss=shifted_nll, resume=copy_run, **CPU)


# --- misuse: one line each -------------------------------------------------------------------------


def test_resume_needs_the_same_loss_function(nll_run) -> None:
    run, _, x, y = nll_run
    spec = {"name": "mlp", "hidden": [8], "out_features": 2}
    with pytest.raises(ConfigError, match="custom loss function 'shifted_nll', which is not saved"):
        nnfit.fit(spec, x, y, epochs=3, run_dir=run, resume=run, **CPU)

    def other(out, target):
        return shifted_nll(out, target)

    with pytest.raises(ConfigError, match=r"cannot resume with changed settings: loss "
                                          r"\('shifted_nll' -> '\S+<locals>.other'\)"):
        nnfit.fit(spec, x, y, loss=other, epochs=3, run_dir=run, resume=run, **CPU)


def test_a_built_in_run_is_not_resumed_with_a_loss_function(tmp_path) -> None:
    x = np.random.default_rng(0).normal(size=(40, 3))
    nnfit.fit({"name": "mlp", "hidden": [4]}, x, x[:, 0], epochs=1, run_dir=tmp_path / "r", **CPU)
    with pytest.raises(ConfigError, match="cannot resume with a custom loss function: the run trains a "
                                          "built-in regression task"):
        nnfit.fit({"name": "mlp", "hidden": [4]}, x, x[:, 0], loss=F.mse_loss, epochs=2,
                  run_dir=tmp_path / "r", resume=tmp_path / "r", **CPU)


def test_conflicting_arguments_are_one_line() -> None:
    x = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(ConfigError, match="loss=<function> trains a custom task: drop task='regression'"):
        nnfit.fit({"name": "mlp"}, x, x[:, 0], loss=F.mse_loss, task="regression", **CPU)
    with pytest.raises(ConfigError, match="loss 'l1': a CustomTask trains with its own loss function"):
        nnfit.fit({"name": "mlp"}, x, x[:, 0], task=CustomTask(F.mse_loss), loss="l1", **CPU)
    with pytest.raises(ConfigError, match="unknown loss 'custom'"):
        nnfit.fit({"name": "mlp"}, x, x[:, 0], loss="custom", **CPU)
    with pytest.raises(ConfigError, match="loss must be a function"):
        CustomTask(3)
    with pytest.raises(DataError, match=r"validation data: target rows of shape \(3,\), the training "
                                        r"targets' are \(2,\)"):
        nnfit.fit({"name": "mlp"}, x, x[:, :2], val=(x, x), loss=F.mse_loss, **CPU)


# --- structured outputs: a (mean, log-variance) pair, dicts, nestings ------------------------------


def gaussian_nll(out: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Gaussian NLL of a (mean, log-variance) pair of (n, 3) outputs."""
    mean, log_var = out
    return (0.5 * (log_var + (target - mean) ** 2 / log_var.exp())).mean()


class MeanAndVariance(nn.Module):
    """Two heads returned as a tuple; ``poison`` puts NaN in the log-variance of a batch's row 3."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.mean, self.log_var = nn.Linear(4, 3), nn.Linear(4, 3)
        self.poison = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_var = self.log_var(x)
        if self.poison and len(log_var) > 2:  # row 3 of every batch that has one
            log_var = log_var.clone()
            log_var[2, 1] = float("nan")
        return self.mean(x), log_var


def _pairs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    return x, (x[:, :3] * 2 + 0.1 * rng.normal(size=(50, 3))).astype(np.float32)


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory):
    """A run of a two-headed model trained with a loss of the (mean, log-variance) pair."""
    x, y = _pairs()
    run = tmp_path_factory.mktemp("pair") / "run"
    learner = nnfit.fit(MeanAndVariance(), x, y, loss=gaussian_nll, epochs=2, batch_size=16,
                        eval_batch_size=16, standardize=False, run_dir=run, **CPU)
    return run, learner, x, y


def test_a_pair_of_outputs_predicts_and_evaluates_batch_by_batch(pair_run) -> None:
    run, learner, x, y = pair_run
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        mean, log_var = learner.model(xt)  # the whole data at once; predict runs 4 batches of 16
    out = learner.outputs(x)
    assert type(out) is tuple and [t.shape for t in out] == [(50, 3), (50, 3)]
    assert torch.allclose(out[0], mean) and torch.allclose(out[1], log_var)
    pred = learner.predict(x)
    assert type(pred) is tuple and all(isinstance(p, np.ndarray) for p in pred)
    assert np.array_equal(pred[0], out[0].numpy()) and np.array_equal(pred[1], out[1].numpy())
    # the loss gets the pair as the model returns it; the batch means are weighted by their rows
    batches = [gaussian_nll(learner.model(xt[i:i + 16]), yt[i:i + 16]).item() * len(xt[i:i + 16])
               for i in range(0, 50, 16)]
    assert learner.evaluate(x, y)["loss"] == pytest.approx(sum(batches) / 50, rel=1e-6)


def test_a_loaded_pair_model_predicts_and_evaluates_with_its_loss(pair_run) -> None:
    run, learner, x, y = pair_run
    loaded = nnfit.load(run, model=MeanAndVariance())
    assert all(np.array_equal(a, b) for a, b in zip(loaded.predict(x), learner.predict(x), strict=True))
    with pytest.raises(ConfigError, match="custom loss function 'gaussian_nll', which is not saved"):
        loaded.evaluate(x, y)
    again = nnfit.load(run, model=MeanAndVariance(), loss=gaussian_nll).evaluate(x, y)
    assert again["loss"] == pytest.approx(learner.evaluate(x, y)["loss"], rel=1e-6)  # other batch sizes


def test_a_non_finite_leaf_is_refused_naming_it_and_its_row(pair_run) -> None:
    _, learner, x, y = pair_run
    learner.model.poison = True
    try:
        with pytest.raises(DataError,
                           match=r"input: the model's output\[1\] for row 3 is not finite \(nan\)"):
            learner.predict(x)
        with pytest.raises(DataError, match=r"evaluation data: the model's output\[1\] for row 3 is not "):
            learner.evaluate(x, y)
        assert torch.isnan(learner.outputs(x, check_finite=False)[1][2, 1])
    finally:
        learner.model.poison = False


Heads = collections.namedtuple("Heads", "mean extra")


class Nested(nn.Module):
    """Any nesting: a dict holding a tensor, a list and a named tuple."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(8)
        self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> dict:
        a, b = self.a(x), self.b(x)
        return {"m": a, "parts": [b, Heads(a.sum(1), (b > 0).long())]}


def nested_loss(out: dict, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out["m"], target) + out["parts"][1].mean.mean() * 0 + out["parts"][0].pow(2).mean()


def test_any_nesting_of_outputs_keeps_its_structure() -> None:
    x, y = _pairs()
    learner = nnfit.fit(Nested(), x, y, loss=nested_loss, epochs=1, eval_batch_size=7, standardize=False,
                        **CPU)
    out = learner.outputs(x)  # 8 batches of 7 rows or fewer, concatenated leaf by leaf
    with torch.no_grad():
        whole = learner.model(torch.from_numpy(x))
    assert list(out) == ["m", "parts"] and type(out["parts"]) is list
    assert type(out["parts"][1]) is Heads and out["parts"][1].extra.dtype == torch.int64
    assert out["m"].shape == (50, 3) and out["parts"][1].mean.shape == (50,)
    assert torch.allclose(out["parts"][1].mean, out["m"].sum(1))
    assert torch.allclose(whole["m"], out["m"])
    assert torch.equal(whole["parts"][1].extra, out["parts"][1].extra)
    pred = learner.predict(x)
    assert isinstance(pred["parts"][1].extra, np.ndarray) and pred["parts"][0].shape == (50, 2)
    assert set(learner.evaluate(x, y)) == {"loss"}


class WithExtra(nn.Module):
    """A model returning its output beside something that is not one row per input."""

    def __init__(self, extra: str) -> None:
        super().__init__()
        self.lin, self.extra = nn.Linear(4, 3), extra

    def forward(self, x: torch.Tensor) -> tuple:
        out = self.lin(x)
        return out, (None if self.extra == "none" else out.pow(2).mean())


def first_mse(out: tuple, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out[0], target)


@pytest.mark.parametrize(("extra", "message"), [
    ("none", r"the model's output\[1\] is a NoneType, not a tensor: return a tensor, or tuples"),
    ("scalar", r"the model's output\[1\] is a single value \(a 0-d tensor\), not one row per input row"),
])
def test_an_output_leaf_without_rows_is_one_line_when_predicting(extra, message) -> None:
    x, y = _pairs()
    learner = nnfit.fit(WithExtra(extra), x, y, loss=first_mse, epochs=1, **CPU)  # trains
    with pytest.raises(ConfigError, match=message):
        learner.predict(x)


def test_built_in_tasks_keep_the_one_tensor_path(monkeypatch) -> None:
    def never(*_):
        raise AssertionError("a structured-output helper ran for a one-tensor output")

    x, y = _pairs()
    learner = nnfit.fit({"name": "mlp", "hidden": [4]}, x, y[:, 0], epochs=1, **CPU)
    monkeypatch.setattr(nnfit.trainer, "cat_outputs", never)
    monkeypatch.setattr(nnfit.trainer, "all_finite", never)
    monkeypatch.setattr(nnfit.guards, "leaves", never)
    assert isinstance(learner.outputs(x), torch.Tensor) and learner.predict(x).shape == (50,)
    assert set(learner.evaluate(x, y[:, 0])) >= {"loss"}


# --- a loss that backward cannot use, ragged targets: one line each ---------------------------------


def per_element(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out - target) ** 2


def python_float(out: torch.Tensor, target: torch.Tensor) -> float:
    return float(((out - target) ** 2).mean().detach())


def constant(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (target ** 2).mean()


@pytest.mark.parametrize(("fn", "message"), [
    (per_element, r"loss function 'per_element' returned a tensor of shape \(16, 3\), not one value: "
                  r"reduce it to the batch's mean"),
    (python_float, r"loss function 'python_float' returned a float \(\d\.\d+\), not a tensor: compute it "
                   "from the output with torch operations"),
    (constant, "loss function 'constant' returned a tensor without a gradient: compute it from the "
               "model's output"),
])
def test_a_loss_backward_cannot_use_is_one_line(fn, message) -> None:
    x, y = _pairs()
    with pytest.raises(ConfigError, match=message) as caught:
        nnfit.fit(nn.Linear(4, 3), x, y, loss=fn, epochs=1, batch_size=16, **CPU)
    assert "\n" not in str(caught.value)


def test_a_float_loss_is_one_line_in_evaluation_too(pair_run) -> None:
    run, _, x, y = pair_run
    def nll_value(out, target):
        return float(gaussian_nll(out, target))

    learner = nnfit.load(run, model=MeanAndVariance(), loss=nll_value)
    with pytest.raises(ConfigError, match=r"loss function '\S+nll_value' returned a float"):
        learner.evaluate(x, y)


def test_a_ragged_target_is_one_line() -> None:
    x = np.zeros((6, 4), dtype=np.float32)
    ragged = [np.zeros(i % 3 + 1) for i in range(6)]
    with pytest.raises(DataError, match=r"training data target: row 2 has shape \(2,\), row 1 \(1,\): every "
                                        "target row needs the same shape"):
        nnfit.fit(nn.Linear(4, 3), x, ragged, loss=F.mse_loss, epochs=1, **CPU)
    with pytest.raises(DataError, match=r"target: row 2 has shape \(2,\)"):  # a built-in task alike
        nnfit.fit({"name": "mlp"}, x, ragged, epochs=1, **CPU)
