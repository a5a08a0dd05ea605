"""Second review, findings 1 and 6: a checkpoint's optimizer hyperparameters and schedule state
are checked against what the run's own settings build and where its loop is, not just their
types (``nnfit.io.optim_state.check_plan``): each value below fits its schema, and was
resumed with other settings, or crashed one-cycle's step with an internal error.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnfit
from nnfit.cli import main
from nnfit.errors import CheckpointError
from nnfit.io.optim_state import HOW, PROGRESS
from nnfit.run import CHECKPOINTS, committed
from test_validation import SRC, one_line_error, read_checkpoint, write_checkpoint

QUICK = dict(quiet=True, device="cpu", batch_size=16, seed=0, epochs=3, checkpoint_steps=2,
             keep_checkpoints=100)
SPEC = {"name": "mlp", "hidden": [4]}
RUNS = {
    "adam_onecycle": dict(optimizer="adam", scheduler="onecycle"),
    "adam_cosine": dict(optimizer="adam", scheduler="cosine", warmup_epochs=1, min_lr=1e-5),
    "sgd_multistep": dict(optimizer="sgd", momentum=0.9, scheduler="multistep", milestones=(1, 2)),
    "sgd_step": dict(optimizer="sgd", scheduler="step", step_size=1, gamma=0.5),
    "adamw_exponential": dict(optimizer="adamw", scheduler="exponential", gamma=0.9, weight_decay=0.01),
    "rmsprop_plateau": dict(optimizer="rmsprop", momentum=0.5, scheduler="plateau", sched_patience=1),
}


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4))
    return x, (x[:, 0] - x[:, 1] > 0).astype(int)


def _fit(run: Path | None = None, resume: Path | None = None, name: str = "adam_onecycle", **kw):
    return nnfit.fit(SPEC, *_data(), run_dir=run, resume=resume, **{**QUICK, **RUNS[name], **kw})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Finished 3-epoch runs that kept every checkpoint (one every 2 steps and every epoch)."""
    root = tmp_path_factory.mktemp("review2-optim")
    out = {}
    for name in RUNS:
        _fit(root / name, name=name)
        out[name] = root / name
    return out


def _copy(runs: dict[str, Path], name: str, tmp_path: Path, newest: str | None = None) -> tuple[Path, Path]:
    """A copy of run ``name`` whose newest checkpoint is ``newest`` (default: the last one)."""
    run = tmp_path / name
    shutil.copytree(runs[name], run)
    names = committed(run)
    keep = newest or names[-1]
    for n in names[names.index(keep) + 1:]:
        shutil.rmtree(run / CHECKPOINTS / n)
    return run, run / CHECKPOINTS / keep


def _tamper(ck: Path, edit) -> None:
    tensors, meta = read_checkpoint(ck)
    edit(meta, tensors)
    write_checkpoint(ck, tensors, meta)


def _refused(run: Path, name: str, *named: str, **kw) -> str:
    with pytest.raises(CheckpointError) as e:
        _fit(resume=run, name=name, **kw)
    msg = str(e.value)
    assert "state.json" in msg and len(msg.splitlines()) == 1, msg
    for word in named:
        assert word in msg, (word, msg)
    return msg


# -------------------------------------------------------------------- finding 1: one-cycle
def _end_of_epoch_2(run: Path) -> tuple[str, int]:
    """The checkpoint at the end of epoch 2 of 3, and its step."""
    name = next(n for n in committed(run) if n.endswith("-epoch-00002"))
    return name, read_checkpoint(run / CHECKPOINTS / name)[1]["step"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """A finished 3-epoch `nnfit train` one-cycle regression run, every checkpoint kept."""
    d = tmp_path_factory.mktemp("review2-cli")
    x, _ = _data()
    np.savetxt(d / "d.csv", np.c_[x, x[:, 0] * 2], delimiter=",", header="a,b,c,d,y", comments="", fmt="%.6g")
    assert main(["train", str(d / "d.csv"), "--target", "y", "--epochs", "3", "--quiet",
                 "--out", str(d / "r"), "--optimizer", "adam", "--scheduler", "onecycle", "--hidden", "4",
                 "checkpoint_steps=2", "keep_checkpoints=100"]) == 0
    return d / "r"


def test_onecycle_total_steps_not_of_the_runs_epochs_is_refused_by_the_cli(cli_run, tmp_path) -> None:
    """Was: ``internal error: ValueError: Tried to step 11 times`` (exit 1)."""
    name, step = _end_of_epoch_2(cli_run)
    run, ck = _copy({"r": cli_run}, "r", tmp_path, name)
    _tamper(ck, lambda m, t: m["scheduler"].update(total_steps=step))
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "nnfit", "train", "--resume", str(run)], capture_output=True,
                       text=True, env=env, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith("nnfit: error: ") and "scheduler.total_steps" in lines[0], p.stderr
    assert "state.json" in lines[0] and "internal error" not in p.stderr


def test_onecycle_last_epoch_ahead_of_the_loop_is_refused(runs, tmp_path) -> None:
    name, step = _end_of_epoch_2(runs["adam_onecycle"])
    run, ck = _copy(runs, "adam_onecycle", tmp_path, name)
    total = read_checkpoint(ck)[1]["scheduler"]["total_steps"]
    _tamper(ck, lambda m, t: m["scheduler"].update(last_epoch=total, _step_count=total + 1))
    _refused(run, "adam_onecycle", "scheduler.last_epoch", f"at {step} optimizer steps")


# ------------------------------------------------------ finding 6: settings and loop position
def _set_group(**values):
    return lambda m, t: m["optimizer"]["param_groups"][0].update(values)


def _set_sched(**values):
    return lambda m, t: m["scheduler"].update(values)


def _centered(m, t) -> None:
    m["optimizer"]["param_groups"][0]["centered"] = True
    for key in [k for k in t if k.endswith("/square_avg")]:
        t[key.replace("square_avg", "grad_avg")] = t[key].clone() * 0


def _both_rates(m, lr: float) -> None:
    m["optimizer"]["param_groups"][0]["lr"] = lr
    m["scheduler"]["_last_lr"] = [lr]


CASES = {
    "adam maximize": ("adam_onecycle", _set_group(maximize=True), "param_groups[0].maximize"),
    "adam decoupled": ("adam_onecycle", _set_group(decoupled_weight_decay=True, weight_decay=0.5),
                       "param_groups[0].weight_decay"),
    "adam eps 0": ("adam_cosine", _set_group(eps=0), "param_groups[0].eps"),
    "sgd nesterov": ("sgd_multistep", _set_group(nesterov=True), "param_groups[0].nesterov"),
    "sgd dampening": ("sgd_multistep", _set_group(dampening=-5), "param_groups[0].dampening"),
    "rmsprop centered": ("rmsprop_plateau", _centered, "param_groups[0].centered"),
    "rmsprop alpha": ("rmsprop_plateau", _set_group(alpha=5), "param_groups[0].alpha"),
    "cosine base_lrs": ("adam_cosine", _set_sched(base_lrs=[1e10]), "scheduler.base_lrs"),
    "cosine not started": ("adam_cosine", _set_sched(last_epoch=-1, _step_count=0), "scheduler.last_epoch"),
    "cosine step count": ("adam_cosine", lambda m, t: m["scheduler"].update(
        _step_count=m["scheduler"]["last_epoch"] + 50), "scheduler._step_count"),
    "step last_epoch": ("sgd_step", _set_sched(last_epoch=10**15), "scheduler.last_epoch"),
    "multistep milestones": ("sgd_multistep", _set_sched(milestones={"0": 1}), "scheduler.milestones"),
    "exponential gamma": ("adamw_exponential", _set_sched(gamma=1e300), "scheduler.gamma"),
    "onecycle phase": ("adam_onecycle", lambda m, t: m["scheduler"]["_schedule_phases"][0].update(
        start_lr="max_momentum"), "scheduler._schedule_phases"),
    "onecycle use_beta1": ("adam_onecycle", _set_sched(use_beta1=False), "scheduler.use_beta1"),
    "plateau mode": ("rmsprop_plateau", _set_sched(mode="max"), "scheduler.mode"),
    "plateau num_bad_epochs": ("rmsprop_plateau", _set_sched(num_bad_epochs=10**15),
                               "scheduler.num_bad_epochs"),
    "plateau best": ("rmsprop_plateau", _set_sched(best=-math.inf), "scheduler.best"),
    "plateau cooldown_counter": ("rmsprop_plateau", _set_sched(cooldown_counter=3),
                                 "scheduler.cooldown_counter"),
    # a chained schedule multiplies the rate it finds: a rate set to another value would stay
    "step rate": ("sgd_step", _set_group(lr=0.5), "param_groups[0].lr"),
    "step rate and last rate": ("sgd_step", lambda m, t: _both_rates(m, 0.5), "the schedule gives"),
    "plateau rate": ("rmsprop_plateau", lambda m, t: _both_rates(m, 0.5), "param_groups[0].lr"),
    "onecycle momentum": ("adam_onecycle", _set_group(betas=[0.5, 0.999]), "param_groups[0].betas"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_setting_or_position_other_than_the_runs_is_refused(runs, tmp_path, case) -> None:
    name, edit, field = CASES[case]
    run, ck = _copy(runs, name, tmp_path)
    _tamper(ck, edit)
    _refused(run, name, field)


def _changed(value):
    """Another value of the same JSON type (so only the plan check can refuse it)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):  # in range: a fraction stays a fraction
        return -value if not math.isfinite(value) else value / 2 if 0 < value < 1 else value * 2 + 1
    if isinstance(value, str):
        return {"min": "max", "max": "min", "rel": "abs", "abs": "rel", "cos": "linear",
                "linear": "cos"}.get(value, value + "x")
    if isinstance(value, list):
        return [_changed(value[0]), *value[1:]] if value else [1]
    if isinstance(value, dict):
        if all(k.isdigit() for k in value):  # MultiStepLR's milestones
            return {**value, "7": 1}
        first = next(k for k, v in value.items() if isinstance(v, (int, float)))  # one-cycle's end_step
        return {**value, first: _changed(value[first])}
    return {} if value is None else value


DECIDE_TENSORS = {"amsgrad", "centered", "momentum"}  # see nnfit.io.optim_state.STATE


@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_setting_of_the_optimizer_and_schedule_is_checked(runs, tmp_path, name) -> None:
    """Generated from the saved state itself: each hyperparameter and schedule setting changed
    to another value of its type is refused naming it (a key a newer torch adds is covered)."""
    run, ck = _copy(runs, name, tmp_path)
    original = ck.with_name("orig")
    shutil.copytree(ck, original)
    _, meta = read_checkpoint(ck)
    keys = [("optimizer.param_groups[0]", k) for k in meta["optimizer"]["param_groups"][0]
            if k not in HOW | {"params"}]
    progress = next((v for t, v in PROGRESS.items() if t.__name__ == "ReduceLROnPlateau"), set()) \
        if name.endswith("plateau") else {"last_epoch", "_step_count", "_last_lr"}
    keys += [("scheduler", k) for k in meta["scheduler"] if k not in progress]
    assert len(keys) > 10
    for where, key in keys:
        shutil.rmtree(ck)
        shutil.copytree(original, ck)

        def edit(m, t, where=where, key=key):
            d = m["optimizer"]["param_groups"][0] if where != "scheduler" else m["scheduler"]
            d[key] = _changed(d[key])

        _tamper(ck, edit)
        with pytest.raises(CheckpointError) as e:
            _fit(resume=run, name=name)
        # a hyperparameter that decides which state tensors exist may be refused with them first
        msg = str(e.value)
        assert f"{where}.{key}:" in msg or (key in DECIDE_TENSORS and "tensors do not fit" in msg), msg


def test_the_task_loss_must_be_the_configured_one(cli_run, tmp_path, capsys) -> None:
    run, ck = _copy({"r": cli_run}, "r", tmp_path)
    _tamper(ck, lambda m, t: m["learner"]["task"].update(loss="huber"))
    capsys.readouterr()
    code = main(["train", "--resume", str(run), "--epochs", "4"])
    one_line_error(capsys, code, "learner.task.loss", "huber")


# ------------------------------------------------------------------- legitimate resumes pass
@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_checkpoint_of_a_run_resumes(runs, tmp_path, name) -> None:
    """Mid-epoch, end of epoch, before and after a schedule's milestone: each checks out."""
    for ck_name in committed(runs[name]):
        run, _ = _copy(runs, name, tmp_path / ck_name, ck_name)
        _fit(resume=run, name=name)


def test_a_replanned_and_accumulated_onecycle_run_resumes_again(tmp_path) -> None:
    """More epochs re-plan one-cycle (its total_steps then follow the new epochs) and
    accumulate changes the steps per epoch: the checkpoints written after either resume."""
    run = tmp_path / "r"
    _fit(run, epochs=2, accumulate=2)
    _fit(run, resume=run, epochs=3, accumulate=2)
    meta = read_checkpoint(run / CHECKPOINTS / committed(run)[-1])[1]
    assert meta["epochs"] == 3 and meta["scheduler"]["total_steps"] == meta["step"]
    assert len(_fit(run, resume=run, epochs=4, accumulate=2).history) == 4
