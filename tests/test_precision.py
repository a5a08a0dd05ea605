"""``precision``: bf16 autocast on the CPU against a hand-written autocast loop, the fp16
gradient scaler (forced on the CPU, where torch has one too) against a hand-written GradScaler
loop and through an exact resume, the guard's rule for skipped steps, crafted scaler state in
a checkpoint, the refusals (fp16 without CUDA) and tf32 on the CPU. CUDA runs: test_gpu.py."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnfit
import nnfit.state
import nnfit.trainer
from helpers import TermAt, one_error
from nnfit.errors import CheckpointError, ConfigError, NnfitWarning, TrainingError
from nnfit.precision import MIN_SCALE, Precision
from nnfit.run import CHECKPOINTS, committed
from nnfit.tasks import make_task
from test_validation import read_checkpoint, write_checkpoint

CPU = dict(device="cpu", quiet=True, val_split=0, patience=0, restore_best=False)
SEED = 3


@pytest.fixture
def cpu_fp16(monkeypatch):
    """fp16 allowed on the CPU: the trainer's precision built without the CUDA check."""
    monkeypatch.setattr(nnfit.trainer, "resolve_precision", Precision)


def _problem(n: int = 150, d: int = 6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.randn(d, 3, generator=g)).argmax(1)
    task = make_task("multiclass", y.numpy())
    return x, task, task.encode_target(y.numpy())


def _model(gain: float = 1.0) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3), Gain(gain))


class Gain(nn.Module):
    """Multiplies by a constant: a large one makes the float16 backward overflow at the
    scaler's first scales, so its first steps are skipped."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, x):
        return x * self.gain


def _hand_loop(model, x, target, dtype, scaler=None, *, epochs=3, batch_size=16):
    """The textbook autocast loop (and GradScaler loop), with nnfit's seeding and order."""
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            with torch.autocast("cpu", dtype=dtype):
                loss = F.cross_entropy(model(x[idx]), target[idx])
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            opt.zero_grad(set_to_none=True)
    return model


def _fit(model, x, task, target, **kw) -> nnfit.Trainer:
    t = nnfit.Trainer(**{"epochs": 3, "batch_size": 16, "seed": SEED, "optimizer": "adam", "lr": 1e-2,
                         **CPU, **kw})
    t.fit(model, (x,), task=task, target=target)
    return t


def _equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------ bf16
def test_bf16_fit_equals_a_hand_written_autocast_loop_and_is_close_to_fp32() -> None:
    x, task, target = _problem()
    ours, fp32 = _model(), _model()
    theirs = copy.deepcopy(ours)
    t = _fit(ours, x, task, target, precision="bf16")
    _hand_loop(theirs, x, target, torch.bfloat16)
    assert _equal(ours, theirs)
    hist32 = _fit(fp32, x, task, target).state.history["train_loss"]
    hist16 = t.state.history["train_loss"]
    assert hist16[-1] < hist16[0]  # it trains
    assert not _equal(ours, fp32)  # in bfloat16, not fp32...
    np.testing.assert_allclose(hist16, hist32, rtol=0.02)  # ...and close to it on a small problem
    for k, v in fp32.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v, atol=0.02, rtol=0.05)


def test_bf16_evaluates_and_predicts_under_autocast_in_float32() -> None:
    x, task, target = _problem()
    model = _model()
    t = _fit(model, x, task, target, precision="bf16", epochs=1)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        by_hand = model(x).float()
    out = t.predict_outputs(model, (x,))
    assert out.dtype == torch.float32 and torch.equal(out, by_hand)
    metrics = t.evaluate(model, (x,), target=target)
    exact = nnfit.Trainer(**CPU).evaluate(model, (x,), task=task, target=target)
    assert metrics["loss"] == pytest.approx(F.cross_entropy(by_hand, target).item(), rel=1e-6)
    assert metrics["loss"] != exact["loss"] and metrics["loss"] == pytest.approx(exact["loss"], rel=0.01)


def test_infer_returns_floating_leaves_in_float32_and_fp32_untouched() -> None:
    p = Precision("bf16", torch.device("cpu"))
    out = p.infer(lambda: {"a": torch.ones(2, dtype=torch.bfloat16), "b": torch.arange(2)})
    assert out["a"].dtype == torch.float32 and out["b"].dtype == torch.int64
    same = torch.ones(2)
    assert Precision("fp32", torch.device("cpu")).infer(lambda: same) is same


def test_fp32_adds_nothing_to_the_step(monkeypatch) -> None:
    """No autocast, no scaler, no gradient scaling: the step is the plain one."""
    def refuse(*a, **k):
        raise AssertionError("fp32 built an autocast context or a scaler")

    monkeypatch.setattr(torch, "autocast", refuse)
    monkeypatch.setattr(torch.amp, "GradScaler", refuse)
    x, task, target = _problem()
    t = _fit(_model(), x, task, target)
    assert t.precision.scaler is None and t.precision.dtype is None
    tensors, meta = t.checkpoint_parts()
    assert "skipped_steps" not in meta and not any(k.startswith("scaler/") for k in tensors)


# ------------------------------------------------------------------------------ fp16
def test_fp16_scaler_fit_equals_a_hand_written_gradscaler_loop(cpu_fp16) -> None:
    x, task, target = _problem()
    ours = _model(gain=4e3)
    theirs = copy.deepcopy(ours)
    t = _fit(ours, x, task, target, precision="fp16")
    scaler = torch.amp.GradScaler("cpu")
    _hand_loop(theirs, x, target, torch.float16, scaler)
    assert _equal(ours, theirs)
    p = t.precision
    assert p.scaler.get_scale() == scaler.get_scale() < 2.0 ** 16
    adam_steps = int(t.optimizer.state_dict()["state"][0]["step"])
    assert 0 < p.skipped_steps() == t.state.step - adam_steps  # the skipped steps, counted


def test_fp16_clips_the_unscaled_gradients(cpu_fp16) -> None:
    x, task, target = _problem()
    ours = _model()
    theirs = copy.deepcopy(ours)
    _fit(ours, x, task, target, precision="fp16", grad_clip=0.05, epochs=1)
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    opt, scaler = torch.optim.Adam(theirs.parameters(), lr=1e-2, fused=True), torch.amp.GradScaler("cpu")
    perm = torch.randperm(len(x), generator=g)
    for i in range(0, len(x), 16):
        idx = perm[i:i + 16]
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(theirs(x[idx]), target[idx])
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(theirs.parameters(), 0.05)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    assert _equal(ours, theirs)


# A built-in model on a regression with raw targets in the thousands: its float16 gradients
# overflow at the scaler's first scales, so the run skips steps (14 of its first 48).
SPEC = {"name": "mlp", "hidden": [16]}
RUN = dict(task="regression", epochs=3, batch_size=16, quiet=True, device="cpu", precision="fp16",
           scale_target=False, lr=0.05, seed=0, checkpoint_steps=5)


def _xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 5))
    return x, 3000 * x[:, 0] + 500 * rng.normal(size=240)


@pytest.fixture(scope="module")
def fp16_run(tmp_path_factory):
    """(the uninterrupted run's weights, a run stopped by SIGTERM inside epoch 2) in fp16."""
    d = tmp_path_factory.mktemp("fp16")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(nnfit.trainer, "resolve_precision", Precision)
        full = nnfit.fit(SPEC, *_xy(), **RUN)
        with pytest.raises(nnfit.errors.Stopped):
            nnfit.fit(SPEC, *_xy(), run_dir=d / "run", callbacks=[TermAt(21)], **RUN)
    return d / "run", full.model.state_dict()


def _resume(run, tmp_path) -> dict:
    copy_ = tmp_path / "copy"
    shutil.copytree(run, copy_)
    return nnfit.fit(SPEC, *_xy(), run_dir=copy_, resume=copy_, **RUN).model.state_dict()


def _newest(run):
    return run / CHECKPOINTS / committed(run)[-1]


def test_fp16_resume_with_the_scaler_state_is_exact(fp16_run, tmp_path, cpu_fp16) -> None:
    run, full = fp16_run
    tensors, meta = read_checkpoint(_newest(run))
    assert meta["batch"] > 0 and meta["config"]["precision"] == "fp16"
    assert float(tensors["scaler/scale"]) < 2.0 ** 16 and int(tensors["scaler/growth_tracker"]) > 0
    assert 0 < meta["skipped_steps"] < meta["step"]
    resumed = _resume(run, tmp_path)
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_fp16_resume_without_the_scaler_state_differs(fp16_run, tmp_path, cpu_fp16, monkeypatch) -> None:
    run, full = fp16_run
    monkeypatch.setattr(nnfit.state, "restore_precision", lambda trainer, *a: None)
    resumed = _resume(run, tmp_path)
    assert not all(torch.equal(full[k], resumed[k]) for k in full)


def _set(key, value):
    def fn(tensors, meta):
        tensors[key] = value
    return fn


def _drop(key):
    def fn(tensors, meta):
        tensors.pop(key) if key in tensors else meta.pop(key)
    return fn


def _meta(key, value):
    def fn(tensors, meta):
        meta[key] = value
    return fn


CRAFTED = {
    "scale NaN": (_set("scaler/scale", torch.tensor(float("nan"))), "scaler/scale holds NaN"),
    "scale inf": (_set("scaler/scale", torch.tensor(float("inf"))), "scaler/scale holds NaN or infinite"),
    "scale zero": (_set("scaler/scale", torch.tensor(0.0)), "scaler/scale is not a positive scale"),
    "scale negative": (_set("scaler/scale", torch.tensor(-8.0)), "scaler/scale is not a positive scale"),
    "scale float64": (_set("scaler/scale", torch.tensor(8.0, dtype=torch.float64)),
                      "dtype mismatch: scaler/scale float64"),
    "scale shape": (_set("scaler/scale", torch.ones(2)), "shape mismatch: scaler/scale (2,)"),
    "tracker past interval": (_set("scaler/growth_tracker", torch.tensor(2000)),
                              "scaler/growth_tracker is not below the growth interval"),
    "tracker negative": (_set("scaler/growth_tracker", torch.tensor(-1)), "growth_tracker holds negative"),
    "tracker float": (_set("scaler/growth_tracker", torch.tensor(3.0)),
                      "dtype mismatch: scaler/growth_tracker"),
    "scale missing": (_drop("scaler/scale"), "missing keys: scaler/scale"),
    "extra scaler tensor": (_set("scaler/found_inf", torch.tensor(0.0)), "unexpected keys: scaler/found_inf"),
    "skipped past step": (_meta("skipped_steps", 10**6), "skipped_steps: 1000000 skipped of"),
    "skipped negative": (_meta("skipped_steps", -1), "skipped_steps"),
    "skipped dropped": (_drop("skipped_steps"), "expected 21 (the optimizer steps taken)"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_scaler_state_is_one_checkpoint_error(fp16_run, tmp_path, cpu_fp16, case) -> None:
    run, _ = fp16_run
    copy_ = tmp_path / "copy"
    shutil.copytree(run, copy_)
    tamper, said = CRAFTED[case]
    ck = _newest(copy_)
    tensors, meta = read_checkpoint(ck)
    tamper(tensors, meta)
    write_checkpoint(ck, tensors, meta)
    with pytest.raises(CheckpointError) as e:
        nnfit.fit(SPEC, *_xy(), run_dir=copy_, resume=copy_, **RUN)
    assert said in str(e.value) and "\n" not in str(e.value)


def test_scaler_tensors_in_an_fp32_runs_checkpoint_are_refused_by_the_cli(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert nnfit.cli.main(["train", "--dataset", "wine", "--epochs", "1", "--quiet", "--device", "cpu",
                           "--out", str(run)]) == 0
    ck = _newest(run)
    tensors, meta = read_checkpoint(ck)
    tensors.update({"scaler/scale": torch.tensor(8.0), "scaler/growth_tracker": torch.tensor(0)})
    write_checkpoint(ck, tensors, meta)
    line = one_error(capsys, "train", "--resume", run, "--epochs", "2", "--quiet")
    assert "unexpected keys: scaler/growth_tracker, scaler/scale" in line


# ------------------------------------------------------------------- the guard's rule
class NanGrad(nn.Module):
    """A finite output whose gradient is NaN at every step: 0 * sqrt(z) at z = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.z = nn.Linear(6, 3), nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.fc(x) + 0 * torch.sqrt(self.z)


def test_fp16_steps_skipped_until_no_step_can_succeed_stop_the_run(cpu_fp16) -> None:
    x, task, target = _problem(n=160)  # 10 steps an epoch
    torch.manual_seed(1)
    model = NanGrad()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    t = nnfit.Trainer(epochs=8, batch_size=16, seed=SEED, precision="fp16", **CPU)
    with pytest.raises(TrainingError) as e:
        t.fit(model, (x,), task=task, target=target)
    # 40 skips bring 2**16 to 2**-24: the check after epoch 5 (50 steps) is the first below it
    assert t.state.epoch == 4 and t.precision.scaler.get_scale() < MIN_SCALE
    assert "fp16 loss scale fell to" in str(e.value) and "in epoch 5" in str(e.value)
    assert "50 steps skipped" in str(e.value) and "\n" not in str(e.value)
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())  # never stepped


def test_fp16_non_finite_loss_still_stops_the_run(cpu_fp16) -> None:
    from helpers import NanAt

    x = torch.randn(64, 4)
    task = make_task("multiclass", np.arange(64) % 2)
    t = nnfit.Trainer(epochs=2, batch_size=16, precision="fp16", **CPU)
    with pytest.raises(TrainingError, match="non-finite mean training loss"):
        t.fit(NanAt(3), (x,), task=task, target=task.encode_target(np.arange(64) % 2))


# ------------------------------------------------------------------- refusals and tf32
def test_fp16_without_cuda_is_refused_at_once() -> None:
    with pytest.raises(ConfigError, match=r"^precision fp16 needs CUDA .*: use bf16 or fp32"):
        nnfit.Trainer(precision="fp16", device="cpu")
    x, y = _xy()
    with pytest.raises(ConfigError, match="precision fp16 needs CUDA"):
        nnfit.fit(SPEC, x, y, precision="fp16", device="cpu", quiet=True)


def test_fp16_without_cuda_is_one_line_exit_2_before_reading_data(tmp_path, capsys, monkeypatch) -> None:
    line = one_error(capsys, "train", "--data", tmp_path / "missing.csv", "--precision", "fp16",
                     "--device", "cpu", "--out", tmp_path / "r")
    assert "precision fp16 needs CUDA" in line and not (tmp_path / "r").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # device auto, no CUDA
    line = one_error(capsys, "train", "--dataset", "wine", "--precision", "fp16", "--out", tmp_path / "r")
    assert "precision fp16 needs CUDA" in line and "use bf16 or fp32" in line


def test_tf32_on_cpu_warns_once_and_trains_exactly_as_fp32() -> None:
    x, task, target = _problem()
    ours, fp32 = _model(), _model()
    with pytest.warns(NnfitWarning, match="tf32 has no effect on the cpu") as said:
        _fit(ours, x, task, target, precision="tf32")
    assert len(said) == 1
    _fit(fp32, x, task, target)
    assert _equal(ours, fp32)


def test_tf32_scope_turns_tf32_on_for_the_fit_and_restores_the_settings() -> None:
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = matmul.fp32_precision, conv.fp32_precision
    p = Precision("tf32", torch.device("cuda"))  # flags only: no CUDA needed to set them
    with pytest.raises(RuntimeError, match="boom"), p.fit_scope():
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        raise RuntimeError("boom")
    assert (matmul.fp32_precision, conv.fp32_precision) == before
    with Precision("tf32", torch.device("cpu")).fit_scope():
        assert (matmul.fp32_precision, conv.fp32_precision) == before


def test_changing_precision_on_resume_is_a_listed_settings_change(tmp_path) -> None:
    x, y = _xy()
    kw = dict(task="regression", epochs=1, quiet=True, device="cpu", run_dir=tmp_path / "r")
    nnfit.fit(SPEC, x, y, **kw)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["precision"] == "fp32"
    with pytest.raises(ConfigError, match="changed settings: precision"):
        nnfit.fit(SPEC, x, y, **{**kw, "epochs": 2}, precision="bf16", resume=tmp_path / "r")
    with pytest.warns(NnfitWarning, match="precision"):
        learner = nnfit.fit(SPEC, x, y, **{**kw, "epochs": 2}, precision="bf16", resume=tmp_path / "r",
                            force_resume=True)
    assert learner.trainer.precision.dtype == torch.bfloat16 and len(learner.history) == 2


def test_a_forced_resume_from_fp16_to_fp32_keeps_the_count_of_skipped_steps(fp16_run, tmp_path,
                                                                             cpu_fp16) -> None:
    """The skipped steps stay in the run's record: the Adam step counters of its later fp32
    checkpoints lag the loop by them, and a plain resume of those checks out."""
    run, _ = fp16_run
    copy_ = tmp_path / "copy"
    shutil.copytree(run, copy_)
    skipped = read_checkpoint(_newest(copy_))[1]["skipped_steps"]
    fp32 = {**RUN, "precision": "fp32"}
    with pytest.warns(NnfitWarning, match="precision"):
        nnfit.fit(SPEC, *_xy(), run_dir=copy_, resume=copy_, force_resume=True, **fp32)
    tensors, meta = read_checkpoint(_newest(copy_))
    assert meta["skipped_steps"] == skipped and not any(k.startswith("scaler/") for k in tensors)
    learner = nnfit.fit(SPEC, *_xy(), run_dir=copy_, resume=copy_, **{**fp32, "epochs": 4})
    assert len(learner.history) == 4
