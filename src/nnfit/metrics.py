"""Evaluation metrics that accumulate on the device and synchronise only in ``compute()``.

The design follows ignite: a metric is a small state machine with ``reset()``, ``update()`` and
``compute()``. ``update()`` runs once per batch inside the evaluation loop, so it only launches
tensor kernels on the batch's device: no ``.item()``, ``.tolist()``, ``.cpu()``, ``bool(tensor)``
or Python branches on tensor values, and therefore no CPU-GPU sync. Shape checks are fine there,
because shapes live on the host. ``compute()`` runs once per epoch; it is the one place that
copies results to the host and turns them into plain Python numbers (JSON-serialisable) for
the ``logs`` dict, the history and the checkpoint metadata.

Each metric keeps its state as a few tensors, returned by ``state()``. That is also where a
later distributed (DDP) path plugs in: summable accumulators (counts, confusion matrices, sums
of errors) are combined across ranks with one ``all_reduce(SUM)`` each. The target mean and M2
of :class:`RegressionMetrics` are *mergeable* with Chan's formula, not summable; a DDP path
all-gathers them and folds them with :func:`merge_moments`. ROC-AUC needs every score, so it
keeps the detached scores and gathers them at the end.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .errors import ConfigError, DataError

__all__ = [
    "ClassificationMetrics",
    "MeanMetric",
    "Metric",
    "RegressionMetrics",
    "confusion_matrix",
    "merge_moments",
    "metric_direction",
    "roc_auc_binary",
]

# Names (or name endings) of metrics where smaller is better; everything else is maximised.
_MINIMISED = ("loss", "mse", "rmse", "mae")


def metric_direction(name: str) -> str:
    """Whether a metric improves by going down (``"min"``) or up (``"max"``).

    Losses and errors (``loss``, ``mse``, ``rmse``, ``mae`` and any name ending in one of them,
    such as ``val_loss`` or ``val_rmse``) are minimised; everything else (accuracy, f1, r2,
    roc_auc, ...) is maximised. Early stopping and best-checkpoint selection use this.

    Args:
        name: a metric name as it appears in the ``logs`` dict.

    Returns:
        ``"min"`` or ``"max"``.

    Example:
        >>> metric_direction("val_loss"), metric_direction("val_accuracy")
        ('min', 'max')
    """
    return "min" if name.strip().lower().endswith(_MINIMISED) else "max"


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Count (true class, predicted class) pairs into a ``(C, C)`` int64 matrix, without a sync.

    Rows are true classes and columns predicted classes, as in scikit-learn. A pair with a label
    outside ``[0, num_classes)`` is not counted (checking for one would need a host sync);
    :class:`ClassificationMetrics` counts such pairs and raises in ``compute()``.

    Args:
        pred: predicted class indices.
        target: true class indices (any integer or float dtype holding whole numbers).
        num_classes: C, the number of classes.

    Returns:
        The confusion matrix on ``pred``'s device.

    Shape:
        - pred, target: ``(n,)``
        - output: ``(C, C)``

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2).tolist()
        [[1, 1], [0, 1]]
    """
    return _confusion_counts(pred, target, num_classes)[0]


def _confusion_counts(pred: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """The confusion matrix and the number of out-of-range pairs left out of it (0-d int64)."""
    c = num_classes
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long().to(pred.device)
    valid = (target >= 0) & (target < c) & (pred >= 0) & (pred < c)
    # Invalid pairs go to an overflow bin past the end. Not torch.bincount: on CUDA it reads
    # max() to size its output (a sync); scatter_add_ into a fixed size does not.
    index = torch.where(valid, target * c + pred, c * c)
    counts = torch.zeros(c * c + 1, dtype=torch.int64, device=pred.device)
    counts.scatter_add_(0, index, torch.ones_like(index))
    return counts[: c * c].reshape(c, c), counts[c * c]


def roc_auc_binary(scores: Tensor, target: Tensor) -> Tensor:
    """Area under the ROC curve for one positive class, exactly as scikit-learn computes it.

    Uses the Mann-Whitney formulation, ``(R+ - n+(n+ + 1)/2) / (n+ n-)`` where ``R+`` is the sum
    of the positives' ranks; tied scores share their average rank, which gives the same number
    as the trapezoidal area under sklearn's ROC curve. Computed in float64. The result stays on
    the device (``unique_consecutive`` does sync on CUDA, so call this from ``compute()``).

    Args:
        scores: higher means more likely positive.
        target: 1 (or True) for positives, 0 for negatives.

    Returns:
        A 0-d float64 tensor; ``nan`` when there are no positives or no negatives.

    Shape:
        - scores, target: ``(n,)``
        - output: ``()``

    Example:
        >>> roc_auc_binary(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        tensor(0.7500, dtype=torch.float64)
    """
    scores = scores.reshape(-1)
    n, dev = scores.numel(), scores.device
    sorted_scores, order = torch.sort(scores)
    positive = (target.reshape(-1).to(dev) == 1)[order]  # in score order
    # From here on a few bytes per score: evaluation keeps every score, and a validation set
    # streamed from a file may hold millions of them.
    del order
    edges = torch.ones(n + 1, dtype=torch.bool, device=dev)  # where a tie group begins (and n)
    edges[1:n] = sorted_scores[1:] != sorted_scores[:-1]
    del sorted_scores
    edges = torch.nonzero(edges).reshape(-1)
    before = torch.zeros(n + 1, dtype=torch.int32 if n < 2**31 else torch.int64, device=dev)
    torch.cumsum(positive, 0, out=before[1:])  # positives before each row
    # 1-based ranks: a tie group of c rows after the first f spans f+1 .. f+c, average f + (c+1)/2.
    # Twice the positives' rank sum, group by group in integers (exact), a block of groups at a time.
    twice = torch.zeros((), dtype=torch.int64, device=dev)
    for i in range(0, len(edges) - 1, 1 << 16):
        e = edges[i:i + (1 << 16) + 1]
        f, c = e[:-1], e[1:] - e[:-1]
        twice += ((before[e[1:]] - before[f]).long() * (2 * f + c + 1)).sum()
    n_pos = before[-1].to(torch.float64)
    n_neg = n - n_pos
    rank_sum = twice.to(torch.float64) / 2
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return torch.where((n_pos > 0) & (n_neg > 0), auc, math.nan)


def merge_moments(
    count_a: Tensor, mean_a: Tensor, m2_a: Tensor, count_b: Tensor, mean_b: Tensor, m2_b: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Merge two (count, mean, M2) summaries with Chan et al.'s parallel variance formula.

    Merging means and centred sums of squares, instead of summing ``y`` and ``y**2``, keeps the
    variance exact even when the data sit on a large offset (``1e6 + noise``), where the naive
    ``E[y^2] - E[y]^2`` cancels catastrophically. Used per batch, and by a DDP path per rank.

    Args:
        count_a, count_b: sample counts (0-d, any numeric dtype).
        mean_a, mean_b: per-output means (float64).
        m2_a, m2_b: per-output sums of squared deviations from the mean (float64).

    Returns:
        ``(count, mean, m2)`` of the union; a zero total count gives zeros, not nan.

    Shape:
        - counts: ``()``; means and M2s: ``(k,)``

    Example:
        >>> c, m, m2 = merge_moments(torch.tensor(2), torch.tensor([1.0]), torch.tensor([2.0]),
        ...                          torch.tensor(1), torch.tensor([4.0]), torch.tensor([0.0]))
        >>> m.item(), m2.item()
        (2.0, 8.0)
    """
    na = count_a.to(torch.float64)
    nb = count_b.to(torch.float64)
    total = na + nb
    # clamp keeps 0/0 out when both sides are empty; the weights are then both 0.
    safe_total = total.clamp(min=1.0)
    delta = mean_b - mean_a
    mean = mean_a + delta * (nb / safe_total)
    m2 = m2_a + m2_b + delta.square() * (na * nb / safe_total)
    return count_a + count_b, mean, m2


class Metric:
    """Base class of all metrics: ``reset()``, then ``update()`` per batch, then ``compute()``.

    Subclass it (one level) and implement all three methods; the base versions raise
    :class:`NotImplementedError` rather than silently doing nothing, so a forgotten override
    fails loudly. ``update()`` must not sync with the host (no ``.item()``, ``.tolist()``,
    ``.cpu()``, ``bool(tensor)``); ``compute()`` is where results come to the host, and must
    return plain Python values (floats, ints, nested lists) so the dict is JSON-serialisable.
    ``__init__`` should call ``reset()`` so a new metric is ready to use.

    Example:
        >>> class CountSamples(Metric):
        ...     def reset(self) -> None:
        ...         self.n = 0  # a host int: shapes are known on the host, no sync needed
        ...     def update(self, output: Tensor, target: Tensor) -> None:
        ...         self.n += target.shape[0]
        ...     def compute(self) -> dict[str, float | list]:
        ...         return {"samples": float(self.n)}
    """

    def reset(self) -> None:
        """Clear the accumulated state so the metric can start a new epoch."""
        raise NotImplementedError(f"{type(self).__name__} must implement reset()")

    def update(self, output: Tensor, target: Tensor) -> None:
        """Accumulate one batch, on the batch's device, without a host sync.

        Args:
            output: the model's output for the batch (after the task's activation).
            target: the batch's targets.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement update()")

    def compute(self) -> dict[str, float | list]:
        """Bring the accumulated state to the host and return named, JSON-serialisable values."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute()")


class MeanMetric(Metric):
    """Running weighted mean of a scalar, such as a batch loss, kept in float64 on its device.

    Example:
        >>> m = MeanMetric()
        >>> m.update(torch.tensor(1.0), weight=3)
        >>> m.update(torch.tensor(3.0), weight=1)
        >>> m.compute()
        {'mean': 1.5}
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget all values; the state is re-created on the next value's device."""
        self._sum: Tensor | None = None
        self._weight: Tensor | None = None

    def update(self, value: Tensor | float, weight: int | float | Tensor = 1) -> None:  # type: ignore[override]
        """Add ``value`` with weight ``weight`` (for a mean loss, the batch size), without a sync.

        Args:
            value: a scalar; it is detached, so the autograd graph is not kept alive.
            weight: how many samples ``value`` stands for. Default: 1.

        Shape:
            - value: ``()`` or any shape with one element
        """
        value = torch.as_tensor(value).detach().reshape(()).to(torch.float64)
        # torch.full writes a Python weight on the device; as_tensor would copy it (and sync).
        if isinstance(weight, Tensor):
            weight = weight.detach().to(value.device, torch.float64)
        else:
            weight = torch.full((), weight, dtype=torch.float64, device=value.device)
        if self._sum is None or self._weight is None:
            self._sum = torch.zeros((), dtype=torch.float64, device=value.device)
            self._weight = torch.zeros((), dtype=torch.float64, device=value.device)
        self._sum += value * weight
        self._weight += weight

    def value(self) -> Tensor:
        """The current mean as a 0-d float64 tensor on the device, without a sync.

        Raises:
            ValueError: ``"no samples"`` before the first ``update()``.
        """
        state = self.state()
        return state["sum"] / state["weight"]

    def state(self) -> dict[str, Tensor]:
        """The summable accumulators: weighted ``sum`` and total ``weight``."""
        if self._sum is None or self._weight is None:
            raise ValueError("no samples")
        return {"sum": self._sum, "weight": self._weight}

    def compute(self) -> dict[str, float | list]:
        """The mean as a Python float (the one host sync).

        Raises:
            ValueError: ``"no samples"`` before the first update or when the weights sum to 0.
        """
        total, weight = torch.stack(list(self.state().values())).tolist()
        if weight == 0:
            raise ValueError("no samples")
        return {"mean": total / weight}


class ClassificationMetrics(Metric):
    """Accuracy, precision, recall, F1, ROC-AUC and the confusion matrix, accumulated on device.

    Binary tasks (``num_classes == 2``) report precision, recall and F1 of class 1; multiclass
    tasks report macro, micro and weighted averages equal to scikit-learn's defaults (macro
    over the classes present in the targets or predictions), with ``precision``/``recall``/
    ``f1`` being the macro ones; the confusion matrix always covers all ``num_classes``.
    Undefined ratios (0/0) count as 0.0, like sklearn's ``zero_division=0``. ROC-AUC is
    one-vs-rest macro for multiclass and ``nan`` when a class has no positives or negatives.

    Args:
        num_classes: C, at least 2.
        threshold: binary only: predict class 1 when P(class 1) >= threshold. Default: 0.5.
        roc_auc: keep every score (n x C memory) to report ``roc_auc``. Default: True.

    Raises:
        ConfigError: ``num_classes < 2`` or a threshold outside [0, 1].

    Shape:
        - scores: binary ``(n,)``, ``(n, 1)`` (P(class 1)) or ``(n, 2)``; multiclass ``(n, C)``
          probabilities (rows summing to 1)
        - target: ``(n,)`` class indices, int64 or float 0./1.

    Example:
        >>> m = ClassificationMetrics(3)
        >>> m.update(torch.eye(3), torch.tensor([0, 1, 1]))
        >>> m.compute()["confusion_matrix"]
        [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    """

    def __init__(self, num_classes: int, *, threshold: float = 0.5, roc_auc: bool = True) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold!r}")
        self.num_classes = num_classes
        self.threshold = threshold
        self.roc_auc = roc_auc
        self._device = torch.device("cpu")
        self.reset()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, "
            f"threshold={self.threshold}, roc_auc={self.roc_auc})"
        )

    def reset(self) -> None:
        """Zero the counts and drop the kept scores; the state stays on its current device."""
        c = self.num_classes
        self._cm = torch.zeros(c, c, dtype=torch.int64, device=self._device)
        self._invalid = torch.zeros((), dtype=torch.int64, device=self._device)
        self._scores: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._fresh = True

    def _prepare(self, scores: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Check shapes (host-side only) and return (AUC scores, predictions, target)."""
        n = scores.shape[0] if scores.dim() > 0 else -1
        if target.numel() != n or target.dim() > 2:
            raise DataError(
                f"scores {tuple(scores.shape)} and target {tuple(target.shape)} do not match: "
                "expected target of shape (n,) for scores with n rows"
            )
        target = target.reshape(-1).long().to(scores.device)
        if self.num_classes == 2:
            if scores.dim() == 1 or (scores.dim() == 2 and scores.shape[1] == 1):
                p1 = scores.reshape(-1)
            elif scores.dim() == 2 and scores.shape[1] == 2:
                p1 = scores[:, 1]
            else:
                raise DataError(
                    "binary scores must have shape (n,), (n, 1) or (n, 2); "
                    f"got {tuple(scores.shape)}"
                )
            return p1, (p1 >= self.threshold).long(), target
        if scores.dim() != 2 or scores.shape[1] != self.num_classes:
            raise DataError(
                f"scores for {self.num_classes} classes must have shape (n, {self.num_classes}); "
                f"got {tuple(scores.shape)}"
            )
        return scores, scores.argmax(dim=1), target

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add one batch of probabilities and targets, without a host sync.

        Args:
            output: class probabilities (see the class's Shape section).
            target: true class indices.

        Raises:
            DataError: shapes that do not fit ``num_classes`` or each other. Label values are
                checked in ``compute()``, since looking at them here would need a sync.
        """
        scores = output.detach()
        auc_scores, pred, target = self._prepare(scores, target.detach())
        if scores.device != self._device:
            if not self._fresh:
                raise DataError(f"batch on {scores.device}, earlier batches on {self._device}")
            # The first batch decides the device. Zeros are made there rather than copied
            # from the host, because a pageable host-to-device copy synchronises.
            self._device = scores.device
            self.reset()
        self._fresh = False
        cm, invalid = _confusion_counts(pred, target, self.num_classes)
        self._cm += cm
        self._invalid += invalid
        if self.roc_auc:
            # clone: the caller may reuse the output buffer for the next batch.
            self._scores.append(auc_scores.clone())
            # the kept labels as small as the classes allow (one byte up to 256 classes)
            self._targets.append(target.to(torch.uint8 if self.num_classes <= 256 else torch.int32))

    def state(self) -> dict[str, Tensor]:
        """The summable ``confusion_matrix`` (C, C) and ``invalid`` label count, on the device.

        The kept ROC-AUC scores are gathered across ranks, not summed, so they are not here."""
        return {"confusion_matrix": self._cm, "invalid": self._invalid}

    def _roc_auc(self) -> float:
        """One-vs-rest macro ROC-AUC (binary: of class 1) over the kept scores."""
        scores = torch.cat(self._scores)
        target = torch.cat(self._targets)
        if self.num_classes == 2:
            return float(roc_auc_binary(scores, target))
        per_class = [roc_auc_binary(scores[:, k], target == k) for k in range(self.num_classes)]
        # Any undefined class makes the macro average nan, where sklearn would raise.
        return float(torch.stack(per_class).mean())

    def compute(self) -> dict[str, float | list]:
        """Bring the counts to the host and derive every metric from the confusion matrix.

        Returns:
            Binary: ``accuracy``, ``precision``, ``recall``, ``f1``, ``roc_auc``,
            ``confusion_matrix``. Multiclass: also ``precision_macro``, ``precision_micro``,
            ``precision_weighted`` and likewise for ``recall`` and ``f1``. ``roc_auc`` is left
            out when the metric was built with ``roc_auc=False``.

        Raises:
            DataError: some targets were outside ``[0, num_classes)``.
            ValueError: ``"no samples"`` when nothing was accumulated.
        """
        invalid = int(self._invalid)
        if invalid:
            raise DataError(
                f"{invalid} target label(s) outside [0, {self.num_classes}) "
                f"for a {self.num_classes}-class task"
            )
        cm = self._cm.cpu()
        if int(cm.sum()) == 0:
            raise ValueError("no samples")
        out = _scores_from_confusion(cm.to(torch.float64), binary=self.num_classes == 2)
        if self.roc_auc:
            out["roc_auc"] = self._roc_auc()
        out["confusion_matrix"] = cm.tolist()
        return out


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den with 0.0 where den is 0 (sklearn's ``zero_division=0``)."""
    return torch.where(den > 0, num / den.clamp(min=1e-300), 0.0)


def _scores_from_confusion(cm: Tensor, *, binary: bool) -> dict[str, float | list]:
    """Accuracy and precision/recall/F1 (per class 1, or averaged) from a float64 matrix."""
    tp = cm.diagonal()
    pred_sum = cm.sum(dim=0)
    true_sum = cm.sum(dim=1)
    total = cm.sum()
    per_class = {
        "precision": _ratio(tp, pred_sum),
        "recall": _ratio(tp, true_sum),
        # From counts, not from P and R, as sklearn does: F1 = 2TP / (2TP + FP + FN).
        "f1": _ratio(2 * tp, pred_sum + true_sum),
    }
    out: dict[str, float | list] = {"accuracy": float(tp.sum() / total)}
    if binary:
        out.update({name: float(values[1]) for name, values in per_class.items()})
        return out
    micro = {
        "precision": _ratio(tp.sum(), pred_sum.sum()),
        "recall": _ratio(tp.sum(), true_sum.sum()),
        "f1": _ratio(2 * tp.sum(), pred_sum.sum() + true_sum.sum()),
    }
    # Macro: over classes present in targets or predictions, like scikit-learn's defaults.
    present = (true_sum + pred_sum) > 0
    for name, values in per_class.items():
        macro = float(values[present].mean())
        out[name] = macro
        out[f"{name}_macro"] = macro
        out[f"{name}_micro"] = float(micro[name])
        out[f"{name}_weighted"] = float((values * true_sum).sum() / total)
    return out


class RegressionMetrics(Metric):
    """MSE, RMSE, MAE and R², accumulated in float64 on device; multi-output averaged uniformly.

    Matches scikit-learn's defaults (``multioutput="uniform_average"``): ``mse`` and ``mae``
    average the per-output errors, ``rmse`` averages the per-output RMSEs (as
    ``root_mean_squared_error`` does), and ``r2`` averages the per-output R² scores. A constant
    target output scores R² 1.0 when predicted perfectly and 0.0 otherwise (sklearn's
    ``force_finite=True``); fewer than two samples give an R² of nan, as in sklearn.

    Example:
        >>> m = RegressionMetrics()
        >>> m.update(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]))
        >>> round(m.compute()["mse"], 4)
        0.3333
    """

    def __init__(self) -> None:
        self._device = torch.device("cpu")
        self.reset()

    def reset(self) -> None:
        """Drop the state; its per-output size is fixed again by the next ``update()``."""
        self._outputs: int | None = None
        self._count = torch.zeros((), dtype=torch.int64, device=self._device)
        self._alloc(0)

    def _alloc(self, k: int) -> None:
        """Create zeroed per-output accumulators for ``k`` outputs on the current device."""
        zeros = [torch.zeros(k, dtype=torch.float64, device=self._device) for _ in range(4)]
        self._sse, self._sae, self._mean, self._m2 = zeros
        # Min and max tell an exactly constant target apart from one whose M2 is a rounding
        # residue (the mean of many 0.1s is not exactly 0.1), so the constant rule is exact.
        self._min = torch.full((k,), math.inf, dtype=torch.float64, device=self._device)
        self._max = torch.full((k,), -math.inf, dtype=torch.float64, device=self._device)

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add one batch of predictions and targets, without a host sync.

        Args:
            output: predictions.
            target: true values, the same shape as ``output``.

        Raises:
            DataError: mismatched shapes, or a different number of outputs than earlier batches.

        Shape:
            - output, target: ``(n,)`` or ``(n, k)``
        """
        if output.shape != target.shape or output.dim() not in (1, 2):
            raise DataError(
                f"predictions {tuple(output.shape)} and targets {tuple(target.shape)} must have "
                "the same shape, (n,) or (n, k)"
            )
        pred = output.detach().reshape(output.shape[0], -1).to(torch.float64)
        y = target.detach().reshape(target.shape[0], -1).to(pred.device, torch.float64)
        n, k = y.shape
        if self._outputs is None:
            # Zeros are made on the batch's device: copying them from the host would sync.
            self._outputs, self._device = k, pred.device
            self._count = torch.zeros((), dtype=torch.int64, device=self._device)
            self._alloc(k)
        elif pred.device != self._device:
            raise DataError(f"batch on {pred.device}, earlier batches on {self._device}")
        elif k != self._outputs:
            raise DataError(f"got {k} output(s) per sample, earlier batches had {self._outputs}")
        if n == 0:  # a host-side shape: nothing to add, and the batch mean would be 0/0
            return
        err = pred - y
        self._sse += err.square().sum(dim=0)
        self._sae += err.abs().sum(dim=0)
        batch_mean = y.mean(dim=0)
        batch_m2 = (y - batch_mean).square().sum(dim=0)
        # torch.full writes n on the device; torch.tensor(n) would copy it from the host.
        batch_count = torch.full((), n, dtype=torch.int64, device=self._device)
        self._count, self._mean, self._m2 = merge_moments(
            self._count, self._mean, self._m2, batch_count, batch_mean, batch_m2
        )
        self._min = torch.minimum(self._min, y.amin(dim=0))
        self._max = torch.maximum(self._max, y.amax(dim=0))

    def state(self) -> dict[str, Tensor]:
        """The accumulators, all on the device.

        ``count``, ``sum_squared_error`` and ``sum_abs_error`` are summable across ranks;
        ``target_min``/``target_max`` reduce with MIN/MAX; ``target_mean`` and ``target_m2``
        are mergeable with :func:`merge_moments` (Chan's formula), not summable.
        """
        return {
            "count": self._count,
            "sum_squared_error": self._sse,
            "sum_abs_error": self._sae,
            "target_min": self._min,
            "target_max": self._max,
            "target_mean": self._mean,
            "target_m2": self._m2,
        }

    def compute(self) -> dict[str, float | list]:
        """Bring the state to the host and return ``mse``, ``rmse``, ``mae`` and ``r2``.

        Raises:
            ValueError: ``"no samples"`` when nothing was accumulated.
        """
        count = int(self._count)
        if count == 0:
            raise ValueError("no samples")
        sse, sae, m2 = self._sse.cpu(), self._sae.cpu(), self._m2.cpu()
        constant = (self._min == self._max).cpu()
        mse = sse / count
        # sklearn's force_finite rule: a constant target scores 1.0 if predicted exactly, else 0.
        r2 = torch.where(
            constant | (m2 == 0),
            torch.where(sse == 0, 1.0, 0.0),
            1.0 - sse / torch.where(m2 == 0, 1.0, m2),
        )
        return {
            "mse": float(mse.mean()),
            "rmse": float(mse.sqrt().mean()),
            "mae": float((sae / count).mean()),
            "r2": float(r2.mean()) if count >= 2 else math.nan,
        }
