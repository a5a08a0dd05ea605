"""A generated tamper test: rewrite one field or tensor of a real checkpoint or saved model,
recompute a valid manifest (a manifest is a checksum, not a signature), and load or resume.

The JSON mutations come from the schema itself (``nnfit.io.schema.fields_of`` lists every field
of the document, ``Field.refused`` gives values each must refuse), so state a later feature adds
to the schema is fuzzed here with no change to this file. Tensor mutations change a shape, a
dtype or values, or add or drop a tensor. Every example must end in a CheckpointError, or (only
when the mutation is a legal value) load and predict or resume and train: never another
exception, a crash or a hang.
"""

from __future__ import annotations

import copy as copy_
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import nnfit
from nnfit.checkpoint import tensors_to_bytes
from nnfit.cli import main
from nnfit.errors import CheckpointError, DataError, TrainingError
from nnfit.files import MANIFEST
from nnfit.io.model_dir import resume_config
from nnfit.io.schema import MAX_DEPTH, Field, SchemaError, fields_of
from nnfit.io.validate import CHECKPOINT, CONFIG, LEARNER
from nnfit.run import CHECKPOINTS, committed
from test_validation import SRC, read_checkpoint, write_bundle_files, write_checkpoint

QUICK = dict(quiet=True, device="cpu", batch_size=16, seed=0, epochs=2)
# Three runs between them holding every optimizer's and schedule's state kinds, every task.
RUNS = {
    "adam": ({"name": "mlp", "hidden": [6], "batchnorm": True}, "binary",
             dict(optimizer="adam", scheduler="onecycle")),
    "sgd": ({"name": "resmlp", "hidden": [5]}, "regression",
            dict(optimizer="sgd", momentum=0.9, scheduler="multistep", milestones=(1,))),
    "rmsprop": ({"name": "mlp", "hidden": [5], "dropout": 0.1}, "multiclass",
                dict(optimizer="rmsprop", momentum=0.5, scheduler="plateau", impute=True)),
}
TARGETS = ("state.json", "state.safetensors", "model.json", "model.safetensors", "config.json")


def _data(task: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(96, 4))
    y = {"binary": (x[:, 0] > x[:, 1]).astype(int), "regression": np.c_[x[:, 0] * 2, x[:, 1] - 1],
         "multiclass": (x[:, 0] > 0).astype(int) + (x[:, 1] > 0)}[task]
    return x, y


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Finished runs whose only checkpoint is inside their second epoch (so it holds the
    epoch's RNG states, the running loss and best weights too)."""
    out = {}
    for name, (spec, task, kw) in RUNS.items():
        d = tmp_path_factory.mktemp("fuzz") / name
        nnfit.fit(spec, *_data(task), task=task, run_dir=d, checkpoint_steps=2, keep_checkpoints=0,
                  **QUICK, **kw)
        names = committed(d)
        keep = [n for n in names if "-epoch-" not in n][-1]
        for n in names:
            if n != keep:
                shutil.rmtree(d / CHECKPOINTS / n)
        out[name] = d
    return out


# --------------------------------------------------------------------------- mutations
def _fails(field: Field, value) -> bool:
    try:
        field.check(value, "")
    except SchemaError:
        return True
    return False


def _at(doc, path):
    for key in path:
        doc = doc[key]
    return doc


def _replace(doc, path, value):
    if not path:
        return value
    _at(doc, path[:-1])[path[-1]] = value
    return doc


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                        st.text(max_size=5), st.lists(st.integers(-3, 3), max_size=3),
                        st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2))


@st.composite
def json_mutation(draw, doc, schema):
    """(mutated document, description, must it be refused?)"""
    path, field = draw(st.sampled_from(list(fields_of(doc, schema))))
    old = _at(doc, path)
    kinds = ["refused", "any", "deep"] + (["extra key", "drop key"] if isinstance(old, dict) and old else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "refused" and field.refused():
        value = draw(st.sampled_from(field.refused()))
    elif kind == "deep":
        value = json.loads("[" * (MAX_DEPTH + 8) + "]" * (MAX_DEPTH + 8))
    elif kind == "extra key":
        value = {**old, "zz_extra": draw(JSON_VALUES)}
    elif kind == "drop key":
        gone = draw(st.sampled_from(sorted(old)))
        value = {k: v for k, v in old.items() if k != gone}
        kind = f"drop key {gone!r}"
    else:
        value = draw(JSON_VALUES)
    must = kind == "deep" or _fails(field, value)
    desc = f"{'.'.join(map(str, path))}: {kind} {value!r:.60}"
    return _replace(copy_.deepcopy(doc), path, value), desc, must


def _finite_required(key: str, model_params: set[str]) -> bool:
    prefix, _, rest = key.partition("/")
    if prefix in ("optimizer", "loop"):
        return True
    if prefix in ("model", "best"):
        return rest in model_params
    return key in model_params  # model.safetensors: names without a prefix


@st.composite
def tensor_mutation(draw, tensors, model_params):
    """(mutated tensors, description, must it be refused?)"""
    key = draw(st.sampled_from(sorted(tensors)))
    t = tensors[key]
    kind = draw(st.sampled_from(["shape", "dtype", "nan", "inf", "huge", "negative", "drop", "extra"]))
    out = dict(tensors)
    must = True
    if kind == "shape":
        out[key] = t.t() if t.ndim == 2 and t.shape[0] != t.shape[1] else t.reshape(1, *t.shape)
    elif kind == "dtype":
        out[key] = t.double() if t.dtype != torch.float64 else t.float()
    elif kind == "drop":
        del out[key]
    elif kind == "extra":
        out[f"{key}_extra"] = t.clone()
    elif t.numel() == 0:
        must = False
    else:
        v = t.clone().reshape(-1)
        value = {"nan": math.nan, "inf": math.inf, "huge": 1e38, "negative": -1.0}[kind]
        if v.dtype == torch.int64:
            value = {"nan": 2**31, "inf": 2**40, "huge": 2**62, "negative": -1}[kind]
        elif not v.is_floating_point():
            value = 255
        v[draw(st.integers(0, len(v) - 1))] = value
        out[key] = v.reshape(t.shape)
        second_moment = key.endswith(("exp_avg_sq", "square_avg")) or key.endswith("/step")
        must = (kind in ("nan", "inf") and v.is_floating_point() and _finite_required(key, model_params)) \
            or (kind == "negative" and second_moment)
    return out, f"{key}: {kind}", must


# -------------------------------------------------------------------------------- actions
def _resume(run: Path, name: str) -> None:
    spec, task, kw = RUNS[name]
    nnfit.fit(spec, *_data(task), task=task, resume=run, **QUICK, **kw)


def _load(run: Path, name: str) -> None:
    nnfit.load(run).predict(_data(RUNS[name][1])[0][:5])


def _tamper(work: Path, target: str, draw, runs_name: str) -> tuple[str, bool, callable]:
    """Rewrite ``target`` of the run copy ``work``; returns (description, must refuse, action)."""
    ck = work / CHECKPOINTS / committed(work)[0]
    listed = json.loads((work / MANIFEST).read_text())["files"]
    root = {n: (work / n).read_bytes() for n in listed}
    if target.startswith("state."):
        tensors, meta = read_checkpoint(ck)
        params = _params(meta["learner"]["spec"])
        if target == "state.json":
            meta, desc, must = draw(json_mutation(meta, CHECKPOINT))
        else:
            tensors, desc, must = draw(tensor_mutation(tensors, params))
        write_checkpoint(ck, tensors, meta_bytes=json.dumps(meta).encode())
        return desc, must, lambda: _resume(work, runs_name)
    if target == "model.safetensors":
        from safetensors.torch import load

        meta = json.loads(root["model.json"])
        tensors, desc, must = draw(tensor_mutation(load(root[target]), _params(meta["spec"])))
        root[target] = tensors_to_bytes(tensors)
    else:
        schema = LEARNER if target == "model.json" else CONFIG
        doc, desc, must = draw(json_mutation(json.loads(root[target]), schema))
        root[target] = json.dumps(doc).encode()
    write_bundle_files(work, "model", root)
    if target == "config.json":
        return desc, must, lambda: (_load(work, runs_name), resume_config(work))
    return desc, must, lambda: _load(work, runs_name)


def _params(spec) -> set[str]:
    from nnfit.models import state_shapes

    return {k for k, s in state_shapes(spec).items() if s.parameter}


def _alarm(signum, frame):
    raise TimeoutError("a load or resume of a tampered file hung")


@pytest.mark.filterwarnings("ignore::nnfit.errors.NnfitWarning")  # a skipped checkpoint is said so
@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(name=st.sampled_from(sorted(RUNS)), target=st.sampled_from(TARGETS), data=st.data())
def test_a_tampered_checkpoint_or_model_is_refused_or_loads_never_crashes(runs, name, target, data) -> None:
    work = Path(tempfile.mkdtemp(prefix="tamper-")) / "run"
    try:
        shutil.copytree(runs[name], work)
        desc, must, action = _tamper(work, target, data.draw, name)
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(60)
        try:
            action()
            outcome = "accepted"
        except CheckpointError as e:
            outcome = "refused"
            assert "\n" not in str(e) and str(e)
        except TrainingError:  # a legal but absurd value (lr 1e38) can make training diverge
            outcome = "diverged"
        except DataError:  # or standardisation overflow (a legal mean of 3e38): refused at predict
            outcome = "data refused"
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        event(f"{target}: {outcome}{' (must refuse)' if must else ''}")
        assert outcome == "refused" or not must, f"{target} {desc}: {outcome}, should be refused"
    finally:
        shutil.rmtree(work.parent, ignore_errors=True)


# ------------------------------------------------------------------------ through the CLI
@pytest.mark.parametrize("mutate", ["optimizer shape", "task classes"])
def test_tampered_cli_runs_exit_2_with_one_line(tmp_path, mutate) -> None:
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "nnfit", "train"]
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    assert main(["train", "--dataset", "wine", "--epochs", "1", "--quiet", "--out", str(run)]) == 0
    ck = run / CHECKPOINTS / committed(run)[-1]
    tensors, meta = read_checkpoint(ck)
    if mutate == "optimizer shape":
        tensors["optimizer/0/exp_avg"] = tensors["optimizer/0/exp_avg"].t()
        named, where = "optimizer/0/exp_avg (13, 64) vs expected (64, 13)", "state.safetensors"
    else:
        meta["learner"]["task"]["classes"] = meta["learner"]["task"]["classes"][:1]
        named, where = "learner.task.classes", "state.json"
    write_checkpoint(ck, tensors, meta)
    r = subprocess.run([*cli, "--resume", str(run), "--epochs", "2"], capture_output=True, text=True,
                       env=env, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("nnfit: error: "), r.stderr
    assert where in lines[0] and named in lines[0], lines[0]
