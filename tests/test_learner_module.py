"""The learner's model after fit: in eval mode, and as one module from raw features to outputs
(``Learner.as_module``: the fitted fill and standardisation in front of the model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import nnfit
from nnfit.data.preprocess import Standardize
from nnfit.errors import ConfigError, NnfitWarning

QUICK = dict(epochs=2, batch_size=16, quiet=True, device="cpu", seed=0)


def _data(n: int = 80) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)) * [1.0, 10.0, 100.0, 0.1] + [5.0, -3.0, 50.0, 0.0]
    return x, (x[:, 0] > 5).astype(int)


def test_after_fit_the_model_is_in_eval_mode() -> None:
    x, y = _data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 1))
    learner = nnfit.fit(model, x, y, **QUICK)
    assert learner.model.training is False
    assert not any(m.training for m in learner.model.modules())
    (x_std,) = learner.preprocessor.transform(nnfit.data.inputs.raw_inputs(x))
    with torch.no_grad():
        assert torch.equal(learner.model(x_std), learner.model(x_std))  # no dropout, running stats
    spec = nnfit.fit({"name": "mlp", "hidden": [8], "dropout": 0.5}, x, y, **QUICK)
    assert spec.model.training is False


def test_the_trainer_leaves_the_model_in_eval_mode() -> None:
    from nnfit.tasks import make_task

    x, y = torch.randn(40, 3), torch.randn(40)
    task = make_task("regression", y.numpy(), scale_target=False)
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.3), nn.Linear(8, 1))
    nnfit.Trainer(epochs=1, quiet=True, device="cpu").fit(model, (x,), task=task,
                                                          target=task.encode_target(y.numpy()))
    assert model.training is False


@pytest.mark.filterwarnings("ignore:.*filled missing values")  # the line: test_tables.py
def test_as_module_goes_from_raw_features_to_the_outputs() -> None:
    x, y = _data()
    x[3, 1] = x[10, 2] = np.nan  # filled with the training medians, inside the module too
    learner = nnfit.fit("mlp", x, y, **QUICK)
    raw = torch.tensor(x, dtype=torch.float32)
    module = learner.as_module()
    assert isinstance(module[0], Standardize) and module[1] is learner.model
    assert module.training is False and not learner.model.training
    with torch.no_grad():
        out = module(raw)
    assert torch.equal(out, learner.outputs(raw))
    with torch.no_grad():  # the pitfall it avoids: the bare model on raw features, silently wrong
        bare = learner.model(torch.nan_to_num(raw))
    assert not torch.allclose(bare, learner.outputs(raw))
    names = {n for n, _ in module.named_buffers()}
    assert {"0.mean", "0.std", "0.fill"} <= names


def test_as_module_of_a_numeric_table() -> None:
    x, y = _data()
    df = pd.DataFrame(x, columns=list("abcd")).assign(t=y)
    learner = nnfit.fit("mlp", df, target="t", **QUICK)
    raw = torch.tensor(x, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(learner.as_module()(raw), learner.outputs(df.drop(columns="t")))


def test_as_module_refuses_inputs_it_cannot_take() -> None:
    x, y = _data()
    df = pd.DataFrame(x, columns=list("abcd")).assign(city=np.array(["x", "y", "z", "w"])[y + y % 2 * 2],
                                                      t=y)
    table = nnfit.fit("mlp", df, target="t", **QUICK)
    with pytest.raises(ConfigError, match=r"^as_module wraps a model of one numeric input, and text "
                                          r"categorical columns \(city\) reach it as codes"):
        table.as_module()
    gaps = pd.DataFrame(x, columns=list("abcd")).assign(t=y)
    gaps.loc[[2, 7], "b"] = np.nan  # a gap in training adds a "b was missing" feature
    with pytest.warns(NnfitWarning, match="filled missing values"):  # said once per fit, expected
        filled = nnfit.fit("mlp", gaps, target="t", **QUICK)
    with pytest.raises(ConfigError, match=r"^as_module: column 'b' becomes values plus a missing-value "
                                          r"indicator, which a tensor of raw numbers cannot give"):
        filled.as_module()

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(2, 1), nn.Linear(2, 1)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.a(a) + self.b(b)

    two = nnfit.fit(Two(), {"a": x[:, :2], "b": x[:, 2:]}, y, **QUICK)
    with pytest.raises(ConfigError, match=r"it takes 2 inputs \(a, b\): use learner.predict"):
        two.as_module()
