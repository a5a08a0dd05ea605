"""Integer arrays and tensors reach a user's module unchanged: int64, in the shape given, never
standardised or imputed, through fit, evaluate, predict, predict_proba and save -> load ->
predict; built-in models keep treating them as numeric features; old saved schemas keep their
float32 behaviour; the categorical-codes example runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nnfit
from nnfit.data.inputs import raw_inputs
from nnfit.data.preprocess import Preprocessor
from nnfit.errors import DataError

QUICK = dict(epochs=2, batch_size=16, quiet=True, device="cpu", seed=0)
N, LEVELS = 60, 7


class CodesNet(nn.Module):
    """Floats plus one code per row (named inputs); records what reaches ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(LEVELS, 3)
        self.out = nn.Linear(2 + 3, 3)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, city: torch.Tensor) -> torch.Tensor:
        self.seen.append(city.detach().clone())
        return self.out(torch.cat([x, self.emb(city)], dim=1))


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, LEVELS, N)
    x = rng.normal(size=(N, 2)) * 5 + 3
    return x, codes, codes % 3


@pytest.mark.parametrize("kind", ["numpy_int64", "numpy_int32", "numpy_uint8", "torch_int64", "torch_int32"])
def test_integer_codes_reach_a_user_module_unchanged(tmp_path: Path, kind: str) -> None:
    x, codes, y = _data()
    lib, dtype = kind.split("_")
    given = (torch.from_numpy(codes).to(getattr(torch, dtype)) if lib == "torch"
             else codes.astype(dtype))
    data = {"x": x, "city": given}
    model = CodesNet()
    learner = nnfit.fit(model, data, y, **QUICK)
    assert {(t.dtype, t.ndim) for t in model.seen} == {(torch.int64, 1)}  # every training batch
    want = torch.from_numpy(codes)

    def last_call_saw_the_codes(m: CodesNet) -> bool:
        return torch.equal(m.seen[-1], want)

    model.seen.clear()
    assert learner.evaluate(data, y)["loss"] > 0 and last_call_saw_the_codes(model)
    pred = learner.predict(data)
    assert last_call_saw_the_codes(model)
    proba = learner.predict_proba(data)
    assert proba.shape == (N, 3) and last_call_saw_the_codes(model)
    spec = learner.preprocessor.inputs  # the floats standardised (and imputed), the codes not
    assert [(s.name, s.dtype, s.shape, s.mean is None) for s in spec] == [
        ("x", "float32", [2], False), ("city", "int64", [], True)]
    assert spec[1].fill is None

    learner.save(tmp_path / "m")
    restored = nnfit.load(tmp_path / "m", model=CodesNet(), device="cpu")
    np.testing.assert_array_equal(restored.predict(data), pred)
    assert last_call_saw_the_codes(restored.model)


def test_integer_arrays_of_a_single_input_keep_their_shape_and_values() -> None:
    codes = np.arange(12).reshape(6, 2) * 100
    pre = Preprocessor.fit(raw_inputs(codes))
    (out,) = pre.transform(raw_inputs(codes))
    assert out.dtype == torch.int64 and torch.equal(out, torch.from_numpy(codes))  # not standardised
    (one,) = Preprocessor.fit(raw_inputs(codes[:, 0])).transform(raw_inputs(codes[:, 0]))
    assert one.shape == (6,) and one.dtype == torch.int64
    index = torch.arange(6, dtype=torch.int16)
    (t,) = Preprocessor.fit(raw_inputs(index)).transform(raw_inputs(index))
    assert t.shape == (6,) and t.dtype == torch.int64


def test_floats_and_booleans_keep_todays_shapes() -> None:
    (f,) = Preprocessor.fit(raw_inputs(np.arange(5.0))).transform(raw_inputs(np.arange(5.0)))
    assert f.shape == (5, 1) and f.dtype == torch.float32
    flags = np.array([True, False, True, True])
    pre = Preprocessor.fit(raw_inputs(flags))
    assert (pre.inputs[0].dtype, pre.inputs[0].shape) == ("float32", [1])


def test_built_in_models_treat_integer_columns_as_numbers() -> None:
    rng = np.random.default_rng(1)
    ints = rng.integers(0, 50, size=(80, 3))
    y = (ints[:, 0] > 25).astype(int)
    learner = nnfit.fit("mlp", ints, y, **QUICK)
    s = learner.preprocessor.inputs[0]
    assert (s.dtype, s.shape, s.mean is not None) == ("float32", [3], True)
    np.testing.assert_array_equal(learner.predict_proba(ints), learner.predict_proba(ints.astype(float)))
    one = nnfit.fit("mlp", ints[:, 0], y, **QUICK)  # a 1-D integer array: one numeric feature
    assert one.spec["in_features"] == 1 and one.preprocessor.inputs[0].shape == [1]
    np.testing.assert_array_equal(one.predict(ints[:, 0]), one.predict(ints[:, :1].astype(float)))
    tensor = nnfit.fit("mlp", torch.from_numpy(ints[:, 0]), y, **QUICK)
    assert tensor.predict(torch.from_numpy(ints[:, 0])).shape == (80,)


def test_old_saved_schemas_keep_float32_for_integer_inputs() -> None:
    """A model saved before codes kept their dtype and shape says float32 (or int64 with shape
    [1] for a 1-D index tensor) for an integer input: it still gets what it was trained on."""
    old = Preprocessor.from_dict({"style": "single", "inputs": [
        {"name": "x", "features": ["x0"], "shape": [1], "dtype": "float32", "mean": [2.0],
         "std": [2.0], "named": False}]})
    (t,) = old.transform(raw_inputs(np.array([0, 2, 4])))
    assert t.dtype == torch.float32 and torch.equal(t, torch.tensor([[-1.0], [0.0], [1.0]]))
    index = Preprocessor.from_dict({"style": "single", "inputs": [
        {"name": "x", "features": None, "shape": [1], "dtype": "int64", "mean": None, "std": None}]})
    (t,) = index.transform(raw_inputs(torch.tensor([3, 1, 2])))
    assert t.dtype == torch.int64 and t.shape == (3, 1)


def test_integers_int64_cannot_hold_are_refused() -> None:
    with pytest.raises(DataError, match=r"^input: integer value beyond int64 range at row 2$"):
        raw_inputs(np.array([1, 2**63, 3], dtype=np.uint64))


def test_the_categorical_codes_example_runs(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "examples" / "categorical_codes.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "city codes reached forward as torch.int64, per-row shape ()" in proc.stdout
    assert "same predictions: True" in proc.stdout and proc.stderr == ""
    assert list(tmp_path.iterdir()) == []
