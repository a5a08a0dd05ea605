"""Second attack on checkpoint validation (review 2, findings 5, 7, 8 and the minor ones): the
loop counters cross-checked against the data's batching and each other, the checkpoint's
place in the run, history values, degenerate generator states, BatchNorm buffers, a
regression target's scale, classes that print alike, and a state.json that parses but is not
a checkpoint's object (refused, not skipped as damage). Every forged file has a valid
manifest: the manifest proves bytes are as written, not that they make sense.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import nnfit
from nnfit.cli import main
from nnfit.errors import CheckpointError
from nnfit.io.resume import read_resume
from nnfit.run import CHECKPOINTS, committed
from nnfit.tasks import make_task
from nnfit.trainer import Trainer
from test_validation import newest, read_checkpoint, tamper_checkpoint, tamper_model

SPEC = {"name": "mlp", "hidden": [6], "batchnorm": True}
# 96 rows, 80 trained on: 5 batches of 16, accumulate 2 -> 3 optimizer steps an epoch.
QUICK = dict(quiet=True, device="cpu", batch_size=16, seed=0, epochs=2, accumulate=2,
             optimizer="adam", checkpoint_steps=2, keep_checkpoints=0)


def _data(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 4))
    return x, (x[:, 0] > x[:, 1]).astype(int)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("review2") / "run"
    nnfit.fit(SPEC, *_data(), run_dir=d, **QUICK)
    return d


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A copy whose newest checkpoint is inside epoch 2 (step 4, batch 2: mid-epoch state)."""
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    for name in committed(d):
        if name.endswith("-epoch-00002"):
            shutil.rmtree(d / CHECKPOINTS / name)
    assert committed(d)[-1] == "step-000000004", committed(d)
    return d


def _resume(run: Path) -> None:
    nnfit.fit(SPEC, *_data(), resume=run, run_dir=run, **QUICK)


def _set(key: str, value):
    def fn(meta: dict) -> None:
        *path, last = key.split(".")
        d = meta
        for k in path:
            d = d[int(k)] if isinstance(d, list) else d[k]
        d[last] = value
    return fn


def test_a_legit_mid_epoch_checkpoint_with_accumulation_resumes(run) -> None:
    _resume(run)  # the exact counter relations hold for what the loop writes
    assert committed(run)[-1] == "step-000000006-epoch-00002"


# ------------------------------------------------------------------ finding 7: the counters
@pytest.mark.parametrize("key, value, named", [
    ("loss_n", 0, "loss_n"),
    ("loss_n", 2**53, "loss_n"),
    ("loss_n", 31, "loss_n"),  # 2 batches of 16 hold 32
    ("step", 0, "step"),  # the next checkpoint would sort before this one
    ("step", 2**53, "step"),
    ("step", 5, "step"),
    ("best", -math.inf, "best"),
    ("history.0.val_loss", "zz", "history[0].val_loss"),
    ("history.0.train_loss", math.nan, "history[0].train_loss"),
    ("best_checkpoint", "step-000000002-epoch-00001", "best_checkpoint"),  # no such checkpoint
    ("best_checkpoint", "step-000000003-epoch-00002", "best_checkpoint"),  # not best_epoch's
])
def test_loop_counters_and_records_are_cross_checked(run, key, value, named) -> None:
    tamper_checkpoint(run, meta_fn=_set(key, value))
    with pytest.raises(CheckpointError, match=rf"state.json: {named.replace('[', '.').replace(']', '.')}"):
        _resume(run)


def test_the_running_loss_cannot_be_below_the_least_possible(run) -> None:
    tamper_checkpoint(run, tensors_fn=lambda t: t.__setitem__("loop/loss_sum", torch.tensor(-1e30)))
    with pytest.raises(CheckpointError, match="loop/loss_sum is below 0"):
        _resume(run)


def test_the_checkpoint_directory_name_must_match_its_counters(run) -> None:
    ck = newest(run)
    ck.rename(ck.parent / "step-000000009")  # sorts last, but holds step 4
    with pytest.raises(CheckpointError, match=r"step-000000009/state.json: step: 4"):
        _resume(run)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_per_parameter_optimizer_steps_equal_the_loop_steps(run, value) -> None:
    tamper_checkpoint(run, tensors_fn=lambda t: t.__setitem__("optimizer/0/step", torch.tensor(value)))
    with pytest.raises(CheckpointError, match=r"optimizer/0/step is .* expected 4"):
        _resume(run)


@pytest.mark.parametrize("key", ["rng/numpy", "rng/python"])
def test_an_all_zero_mt19937_state_is_refused(run, key) -> None:
    def zero(t: dict) -> None:
        s = t[key].clone()
        s[0 if key == "rng/numpy" else 1:][:624] = 0
        t[key] = s
    tamper_checkpoint(run, tensors_fn=zero)
    with pytest.raises(CheckpointError, match=f"{key} is not a valid"):
        _resume(run)


@pytest.fixture(scope="module")
def cli_finished(tmp_path_factory) -> Path:
    x, y = _data()
    d = tmp_path_factory.mktemp("cli")
    csv = d / "d.csv"
    rows = "".join(f"{','.join(map(str, r))},{v}\n" for r, v in zip(x, y, strict=True))
    csv.write_text("a,b,c,d,yy\n" + rows)
    out = str(d / "run")
    assert main(["train", str(csv), "--target", "yy", "--epochs", "1", "--quiet", "--out", out]) == 0
    return d / "run"


@pytest.fixture
def cli_run(cli_finished, tmp_path) -> Path:
    shutil.copytree(cli_finished, tmp_path / "run")
    return tmp_path / "run"


def test_learner_target_must_be_the_configured_target(cli_run) -> None:
    out = cli_run
    tamper_checkpoint(out, meta_fn=_set("learner.target", "a"))
    with pytest.raises(CheckpointError, match="learner.target: 'a' but config.target is 'yy'"):
        read_resume(out)


# ---------------------------------------------------------------- BatchNorm buffers, NaN
@pytest.mark.parametrize("key, value, problem", [
    ("model/bn1.running_var", -5.0, "negative"),
    ("model/bn1.num_batches_tracked", -7, "negative"),
    ("model/bn1.running_var", math.nan, "NaN"),
])
def test_batchnorm_buffers_in_a_checkpoint_are_checked_at_load(run, key, value, problem) -> None:
    tensors, _ = read_checkpoint(newest(run))
    assert key in tensors, sorted(tensors)

    def put(t: dict) -> None:
        v = t[key].clone().reshape(-1)
        v[0] = value
        t[key] = v.reshape(t[key].shape)
    tamper_checkpoint(run, tensors_fn=put)
    with pytest.raises(CheckpointError, match=f"tensor {key} holds {problem}"):
        _resume(run)


@pytest.mark.parametrize("value, problem", [(math.nan, "NaN"), (-1.0, "negative values")])
def test_batchnorm_running_var_of_a_saved_model_is_checked_at_load(finished, tmp_path, value,
                                                                   problem) -> None:
    d = tmp_path / "m"
    shutil.copytree(finished, d)

    def put(t: dict) -> None:
        t["bn1.running_var"] = t["bn1.running_var"].clone()
        t["bn1.running_var"][0] = value
    tamper_model(d, tensors_fn=put)
    with pytest.raises(CheckpointError, match=f"tensor bn1.running_var holds {problem}"):
        nnfit.load(d)


# --------------------------------------------------------- finding 5 and classes as text
@pytest.fixture(scope="module")
def regression_model(tmp_path_factory) -> Path:
    x, _ = _data()
    d = tmp_path_factory.mktemp("reg") / "model"
    nnfit.fit({"name": "mlp", "hidden": [4]}, x, x[:, 0] * 3 + 1, task="regression", quiet=True,
              device="cpu", epochs=1).save(d)
    return d


@pytest.mark.parametrize("key, value", [("mean", 1e300), ("std", 1e300), ("std", 1e-300), ("mean", -3.5e38)])
def test_a_regression_scale_must_be_a_float32_number(regression_model, tmp_path, key, value) -> None:
    d = tmp_path / "m"
    shutil.copytree(regression_model, d)
    tamper_model(d, meta_fn=lambda m: m["task"].__setitem__(key, [value]))
    with pytest.raises(CheckpointError, match=rf"task.{key}\[0\]: .* out of range"):
        nnfit.load(d)


@pytest.mark.parametrize("classes", [["1", 1], [True, "True"], [1.5, "1.5"]])
def test_classes_that_print_alike_are_refused(finished, tmp_path, classes) -> None:
    d = tmp_path / "m"
    shutil.copytree(finished, d)
    tamper_model(d, meta_fn=lambda m: m["task"].__setitem__("classes", classes))
    with pytest.raises(CheckpointError, match=r"task.classes\[1\]: .* reads the same as classes\[0\]"):
        nnfit.load(d)


# ---------------------------------------------------- finding 8: invalid content is refused
@pytest.mark.parametrize("content", [b"null", b"[]", b"7", b"[" * 5000 + b"]" * 5000])
def test_a_verified_state_json_that_is_no_checkpoint_is_refused_not_skipped(run, content) -> None:
    ck = tamper_checkpoint(run, meta_bytes=content)
    with pytest.raises(CheckpointError, match="state.json: not"):
        _resume(run)
    assert ck.is_dir() and not list(ck.parent.glob("damaged-*"))  # nothing set aside


def test_the_cli_refuses_it_with_exit_2(cli_run, capsys) -> None:
    tamper_checkpoint(cli_run, meta_bytes=b"null")
    capsys.readouterr()
    assert main(["train", "--resume", str(cli_run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "state.json: not an nnfit checkpoint" in err[0], err


# --------------------------------------------------------- a DataLoader of a known length
def test_loss_n_is_exact_for_a_dataloader_source() -> None:
    x, y = _data(40)
    task = make_task("binary", y)
    loader = DataLoader(TensorDataset(torch.tensor(x, dtype=torch.float32),
                                      task.encode_target(y)), batch_size=8, shuffle=False)
    saved = []

    def keep(trainer, improved, force=False):
        if trainer.state.batch == 2 and not saved:
            tensors, meta = trainer.checkpoint_parts()  # live references: copied
            saved.append(({k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(meta))))

    def fit(resume=None):
        torch.manual_seed(0)
        t = Trainer(quiet=True, device="cpu", epochs=1, checkpoint_steps=2)
        t.fit(torch.nn.Linear(4, 1), loader, task=task, resume=resume, checkpoint_fn=keep)

    fit()
    tensors, meta = saved[0]
    assert meta["loss_n"] == 16
    fit((tensors, meta))  # legit
    with pytest.raises(CheckpointError, match="loss_n: 15, but 2 batches of 8"):
        fit((tensors, {**meta, "loss_n": 15}))
