"""Tests for nnfit.metrics: every number is checked against scikit-learn on random data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from nnfit.errors import ConfigError, DataError
from nnfit.metrics import (
    ClassificationMetrics,
    MeanMetric,
    Metric,
    RegressionMetrics,
    confusion_matrix,
    merge_moments,
    metric_direction,
    roc_auc_binary,
)

SEEDS = (0, 1, 2)
TOL = {"rel": 1e-6, "abs": 1e-6}


def _probs(n: int, c: int, seed: int) -> torch.Tensor:
    """Random (n, c) class probabilities, rows summing to 1."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(n, c, generator=g, dtype=torch.float64), dim=1)


def _labels(n: int, c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.randint(0, c, (n,), generator=g)


def _binary_forms(p1: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"n": p1, "n1": p1[:, None], "n2": torch.stack([1 - p1, p1], dim=1)}


def _sk_prf(y: np.ndarray, pred: np.ndarray, average: str, c: int) -> tuple[float, ...]:
    # scikit-learn's defaults: averages over the labels present in y or pred.
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=average, zero_division=0)
    return p, r, f


def _run(metric: ClassificationMetrics, scores: torch.Tensor, y: torch.Tensor) -> dict:
    metric.update(scores, y)
    return metric.compute()


# ---------------------------------------------------------------- binary


@pytest.mark.parametrize("form", ["n", "n1", "n2"])
@pytest.mark.parametrize("seed", SEEDS)
def test_binary_matches_sklearn(seed: int, form: str) -> None:
    p1 = _probs(200, 2, seed)[:, 1].float()
    y = _labels(200, 2, seed)
    out = _run(ClassificationMetrics(2), _binary_forms(p1)[form], y)

    yn, pn = y.numpy(), p1.double().numpy()
    pred = (p1 >= 0.5).long().numpy()
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(yn, pred), **TOL)
    assert out["precision"] == pytest.approx(skm.precision_score(yn, pred, zero_division=0), **TOL)
    assert out["recall"] == pytest.approx(skm.recall_score(yn, pred, zero_division=0), **TOL)
    assert out["f1"] == pytest.approx(skm.f1_score(yn, pred, zero_division=0), **TOL)
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(yn, pn), **TOL)
    assert out["confusion_matrix"] == skm.confusion_matrix(yn, pred, labels=[0, 1]).tolist()
    assert set(out) == {"accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"}
    json.dumps(out)  # plain Python values only


def test_binary_threshold_and_float_targets() -> None:
    p1 = _probs(150, 2, 7)[:, 1]
    y = _labels(150, 2, 7)
    out = _run(ClassificationMetrics(2, threshold=0.3), p1, y.double())
    pred = (p1 >= 0.3).long().numpy()
    assert out["f1"] == pytest.approx(skm.f1_score(y.numpy(), pred, zero_division=0), **TOL)
    assert out["confusion_matrix"] == skm.confusion_matrix(y.numpy(), pred).tolist()


def test_binary_no_positive_predictions_gives_zero_precision() -> None:
    out = _run(ClassificationMetrics(2), torch.full((4,), 0.1), torch.tensor([0, 1, 0, 1]))
    assert out["precision"] == 0.0 and out["recall"] == 0.0 and out["f1"] == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_roc_auc_heavy_ties(seed: int) -> None:
    p1 = torch.round(_probs(300, 2, seed)[:, 1], decimals=1)
    y = _labels(300, 2, seed)
    out = _run(ClassificationMetrics(2), p1, y)
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(y.numpy(), p1.numpy()), **TOL)


def test_roc_auc_all_scores_tied_is_half() -> None:
    auc = roc_auc_binary(torch.full((10,), 0.3), torch.tensor([0, 1] * 5))
    assert auc.dim() == 0 and float(auc) == pytest.approx(0.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=2, max_size=40))
def test_roc_auc_binary_property(pairs: list[tuple[int, bool]]) -> None:
    scores = np.array([s for s, _ in pairs], dtype=np.float64) / 4
    y = np.array([int(t) for _, t in pairs])
    auc = float(roc_auc_binary(torch.from_numpy(scores), torch.from_numpy(y)))
    if 0 < y.sum() < len(y):
        assert auc == pytest.approx(skm.roc_auc_score(y, scores), **TOL)
    else:
        assert math.isnan(auc)


def test_undefined_roc_auc_is_nan() -> None:
    out = _run(ClassificationMetrics(2), torch.tensor([0.2, 0.7, 0.9]), torch.ones(3))
    assert math.isnan(out["roc_auc"])
    assert out["accuracy"] == pytest.approx(2 / 3)
    json.dumps(out)


# ---------------------------------------------------------------- multiclass


def _check_multiclass(out: dict, scores: torch.Tensor, y: torch.Tensor, c: int) -> None:
    yn = y.numpy()
    pred = scores.argmax(dim=1).numpy()
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(yn, pred), **TOL)
    for average in ("macro", "micro", "weighted"):
        p, r, f = _sk_prf(yn, pred, average, c)
        assert out[f"precision_{average}"] == pytest.approx(p, **TOL)
        assert out[f"recall_{average}"] == pytest.approx(r, **TOL)
        assert out[f"f1_{average}"] == pytest.approx(f, **TOL)
    assert out["precision"] == out["precision_macro"]
    assert out["recall"] == out["recall_macro"]
    assert out["f1"] == out["f1_macro"]
    labels = list(range(c))
    assert out["confusion_matrix"] == skm.confusion_matrix(yn, pred, labels=labels).tolist()


@pytest.mark.parametrize("c", [3, 5])
@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_matches_sklearn(seed: int, c: int) -> None:
    scores, y = _probs(250, c, seed), _labels(250, c, seed)
    out = _run(ClassificationMetrics(c), scores, y)
    _check_multiclass(out, scores, y, c)
    expected_auc = skm.roc_auc_score(
        y.numpy(), scores.numpy(), multi_class="ovr", average="macro", labels=list(range(c))
    )
    assert out["roc_auc"] == pytest.approx(expected_auc, **TOL)
    json.dumps(out)


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_missing_class(seed: int) -> None:
    """Class 4 never appears in the targets: averages still run over all 5 labels."""
    c = 5
    scores, y = _probs(120, c, seed), _labels(120, c - 1, seed)
    out = _run(ClassificationMetrics(c), scores, y)
    _check_multiclass(out, scores, y, c)
    assert math.isnan(out["roc_auc"])  # sklearn raises here; we report nan


def test_multiclass_roc_auc_ties_is_mean_of_one_vs_rest() -> None:
    c = 4
    scores, y = torch.round(_probs(300, c, 3), decimals=1), _labels(300, c, 3)
    out = _run(ClassificationMetrics(c), scores, y)
    yn = y.numpy()
    per_class = [skm.roc_auc_score(yn == k, scores[:, k].numpy()) for k in range(c)]
    assert out["roc_auc"] == pytest.approx(float(np.mean(per_class)), **TOL)


def test_roc_auc_can_be_turned_off() -> None:
    out = _run(ClassificationMetrics(3, roc_auc=False), _probs(20, 3, 0), _labels(20, 3, 0))
    assert "roc_auc" not in out and "accuracy" in out


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_matrix_function(seed: int) -> None:
    pred, y = _labels(100, 4, seed + 5), _labels(100, 4, seed)
    cm = confusion_matrix(pred, y, 4)
    assert cm.dtype == torch.int64 and cm.shape == (4, 4)
    assert cm.tolist() == skm.confusion_matrix(y.numpy(), pred.numpy(), labels=range(4)).tolist()


def test_out_of_range_labels_raise_in_compute() -> None:
    m = ClassificationMetrics(3)
    m.update(_probs(4, 3, 0), torch.tensor([0, 1, 3, -1]))  # update cannot look: no sync
    with pytest.raises(DataError, match=r"2 target label\(s\) outside \[0, 3\)"):
        m.compute()
    assert confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), 2).tolist() == [
        [1, 0],
        [0, 0],
    ]


def test_bad_shapes_and_config() -> None:
    with pytest.raises(DataError, match=r"shape \(n, 3\)"):
        ClassificationMetrics(3).update(torch.rand(4, 2), torch.zeros(4))
    with pytest.raises(DataError, match=r"\(n,\), \(n, 1\) or \(n, 2\)"):
        ClassificationMetrics(2).update(torch.rand(4, 3), torch.zeros(4))
    with pytest.raises(DataError, match="do not match"):
        ClassificationMetrics(2).update(torch.rand(4), torch.zeros(5))
    with pytest.raises(ConfigError, match="num_classes must be an int >= 2"):
        ClassificationMetrics(1)
    with pytest.raises(ConfigError, match="threshold"):
        ClassificationMetrics(2, threshold=1.5)


# ---------------------------------------------------------------- batching, reset, empty

CHUNKS = (1, 17, 40, 3, 59, 80)  # uneven, sums to 200


def _chunked(metric: Metric, output: torch.Tensor, target: torch.Tensor) -> dict:
    for out_part, target_part in zip(output.split(CHUNKS), target.split(CHUNKS), strict=True):
        metric.update(out_part, target_part)
    return metric.compute()


@pytest.mark.parametrize("c", [2, 3, 5])
def test_classification_chunks_equal_one_shot(c: int) -> None:
    scores, y = torch.round(_probs(200, c, 4), decimals=2), _labels(200, c, 4)
    one_shot = _run(ClassificationMetrics(c), scores, y)
    chunked = _chunked(ClassificationMetrics(c), scores, y)
    assert chunked.keys() == one_shot.keys()
    for key, value in one_shot.items():
        assert chunked[key] == (pytest.approx(value, **TOL) if key != "confusion_matrix" else value)


def test_regression_chunks_equal_one_shot() -> None:
    g = torch.Generator().manual_seed(9)
    y = 1e6 + torch.randn(200, 3, generator=g, dtype=torch.float64)
    pred = y + 0.5 * torch.randn(200, 3, generator=g, dtype=torch.float64)
    one_shot = RegressionMetrics()
    one_shot.update(pred, y)
    chunked = _chunked(RegressionMetrics(), pred, y)
    assert chunked == pytest.approx(one_shot.compute(), rel=1e-9)


def test_reset_clears_state() -> None:
    cls, reg, mean = ClassificationMetrics(3), RegressionMetrics(), MeanMetric()
    cls.update(_probs(10, 3, 0), _labels(10, 3, 0))
    reg.update(torch.randn(10, 2), torch.randn(10, 2))
    mean.update(torch.tensor(2.0))
    for metric in (cls, reg, mean):
        metric.reset()
        with pytest.raises(ValueError, match="no samples"):
            metric.compute()
    # After reset, a different number of outputs is accepted and results start fresh.
    reg.update(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
    assert reg.compute()["mse"] == pytest.approx(2.0)
    cls.update(torch.eye(3), torch.tensor([0, 1, 2]))
    assert cls.compute()["confusion_matrix"] == torch.eye(3, dtype=torch.int64).tolist()


def test_no_samples_raises() -> None:
    for metric in (ClassificationMetrics(2), RegressionMetrics(), MeanMetric()):
        with pytest.raises(ValueError, match="no samples"):
            metric.compute()
    with pytest.raises(ValueError, match="no samples"):
        MeanMetric().value()
    empty = ClassificationMetrics(3)
    empty.update(torch.empty(0, 3), torch.empty(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="no samples"):
        empty.compute()


def test_base_metric_methods_must_be_overridden() -> None:
    class Half(Metric):
        def reset(self) -> None:
            pass

    metric = Half()
    metric.reset()
    with pytest.raises(NotImplementedError, match="Half must implement update"):
        metric.update(torch.zeros(1), torch.zeros(1))
    with pytest.raises(NotImplementedError, match="Half must implement compute"):
        metric.compute()


# ---------------------------------------------------------------- regression


def _sk_regression(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {
        "mse": skm.mean_squared_error(y, pred),
        "rmse": skm.root_mean_squared_error(y, pred),
        "mae": skm.mean_absolute_error(y, pred),
        "r2": skm.r2_score(y, pred),
    }


@pytest.mark.parametrize("shape", [(150,), (150, 1), (150, 4)])
@pytest.mark.parametrize("seed", SEEDS)
def test_regression_matches_sklearn(seed: int, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(seed)
    y = 3 * torch.randn(shape, generator=g)
    pred = y + torch.randn(shape, generator=g)
    m = RegressionMetrics()
    m.update(pred, y)
    expected = _sk_regression(pred.double().numpy(), y.double().numpy())
    assert m.compute() == pytest.approx(expected, **TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_large_offset(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    y = 1e6 + torch.randn(400, 2, generator=g, dtype=torch.float64)
    pred = y + 0.7 * torch.randn(400, 2, generator=g, dtype=torch.float64)
    out = _chunked(RegressionMetrics(), pred[:200], y[:200])  # also merges chunks
    expected = _sk_regression(pred[:200].numpy(), y[:200].numpy())
    assert out == pytest.approx(expected, **TOL)
    assert 0.3 < out["r2"] < 0.9  # a real score, not cancellation noise


def test_regression_constant_target_follows_force_finite() -> None:
    y = torch.tensor([[3.0, 1.0], [3.0, 2.0], [3.0, 4.0]])
    for pred in (y.clone(), y + torch.tensor([[0.5, 0.1]])):
        m = RegressionMetrics()
        m.update(pred, y)
        expected = skm.r2_score(y.numpy(), pred.numpy(), force_finite=True)
        assert m.compute()["r2"] == pytest.approx(expected, **TOL)


def test_regression_constant_target_despite_rounding() -> None:
    """Deviation: a constant 0.1 target is treated as constant even where sklearn's mean
    of the column is off by an ulp (its R² then explodes); we apply the force_finite rule."""
    y = torch.full((1001,), 0.1, dtype=torch.float64)
    m = RegressionMetrics()
    m.update(y + 0.01, y)
    assert m.compute()["r2"] == 0.0


def test_regression_single_sample_r2_is_nan() -> None:
    m = RegressionMetrics()
    m.update(torch.tensor([1.0]), torch.tensor([2.0]))
    out = m.compute()
    assert out["mse"] == 1.0 and math.isnan(out["r2"])


def test_regression_bad_shapes() -> None:
    m = RegressionMetrics()
    with pytest.raises(DataError, match="same shape"):
        m.update(torch.zeros(3), torch.zeros(3, 1))
    m.update(torch.zeros(3, 2), torch.ones(3, 2))
    with pytest.raises(DataError, match="got 3 output"):
        m.update(torch.zeros(3, 3), torch.ones(3, 3))


def test_merge_moments_matches_direct_moments() -> None:
    y = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b = y[:20], y[20:]

    def moments(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mean = t.mean(0)
        return torch.tensor(len(t)), mean, (t - mean).square().sum(0)

    count, mean, m2 = merge_moments(*moments(a), *moments(b))
    assert int(count) == 50
    torch.testing.assert_close(mean, y.mean(0))
    torch.testing.assert_close(m2, (y - y.mean(0)).square().sum(0))


def test_regression_state_is_tensors() -> None:
    m = RegressionMetrics()
    m.update(torch.randn(5, 2), torch.randn(5, 2))
    state = m.state()
    assert int(state["count"]) == 5
    assert all(isinstance(t, torch.Tensor) and t.dtype != torch.float32 for t in state.values())


# ---------------------------------------------------------------- mean, direction, sync


def test_mean_metric_weighted() -> None:
    values, weights = [0.5, 2.0, 1.25, 3.0], [32, 32, 7, 1]
    m = MeanMetric()
    for v, w in zip(values, weights, strict=True):
        m.update(torch.tensor(v, requires_grad=True) * 1, weight=w)
    expected = float(np.average(values, weights=weights))
    assert m.compute() == pytest.approx({"mean": expected}, rel=1e-12)
    assert m.value().dtype == torch.float64 and m.value().dim() == 0
    assert not m.value().requires_grad
    m.update(torch.tensor(10.0), weight=torch.tensor(0))
    assert m.compute()["mean"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("loss", "min"),
        ("val_loss", "min"),
        ("mse", "min"),
        ("val_rmse", "min"),
        ("train_mae", "min"),
        ("accuracy", "max"),
        ("val_f1_macro", "max"),
        ("r2", "max"),
        ("roc_auc", "max"),
    ],
)
def test_metric_direction(name: str, direction: str) -> None:
    assert metric_direction(name) == direction


def test_update_does_not_sync_with_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside update(), any host read of a tensor value raises; compute() may read freely."""
    metrics: list[tuple[Metric, torch.Tensor, torch.Tensor]] = [
        (ClassificationMetrics(2), _probs(30, 2, 0), _labels(30, 2, 0)),
        (ClassificationMetrics(4), _probs(30, 4, 0), _labels(30, 4, 0)),
        (RegressionMetrics(), torch.randn(30, 2), torch.randn(30, 2)),
    ]
    mean = MeanMetric()

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("host sync inside update()")

    with monkeypatch.context() as patch:
        for attr in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
            patch.setattr(torch.Tensor, attr, forbidden)
        with pytest.raises(AssertionError, match="host sync"):
            bool(torch.tensor(1))  # the trap is armed
        for metric, output, target in metrics:
            for out_part, target_part in zip(output.split(7), target.split(7), strict=True):
                metric.update(out_part, target_part)
        mean.update(torch.tensor(1.5), weight=torch.tensor(4))
        mean.value()
    for metric, _, _ in metrics:
        json.dumps(metric.compute())
    assert mean.compute() == {"mean": 1.5}


def test_macro_averages_skip_a_class_absent_from_targets_and_predictions() -> None:
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(200, 5, generator=g)
    scores[:, 4] = 0.0  # class 4 is never predicted...
    y = torch.randint(0, 4, (200,), generator=g)  # ...and never a target
    out = _run(ClassificationMetrics(5), scores.softmax(1), y)
    _check_multiclass(out, scores, y, 5)
    assert len(out["confusion_matrix"]) == 5  # the matrix still lists every trained class
