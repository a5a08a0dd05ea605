"""The learning-rate range test: train a copy of the model for a bounded number of steps while
the learning rate grows exponentially, and suggest a rate from the smoothed loss curve.

Two smoothers, for two jobs. While the test runs, an exponential moving average of the losses
decides when to stop (it needs only the past). The suggestion is read afterwards from a centred
moving average over one decade of rate: the exponential one lags, by ``smooth / (1 - smooth)``
steps (49 at 0.98: two decades of rate at the default 200 steps over 8 decades), so its
minimum sits past the rate where the loss turned, and a suggestion read from it comes out too
high (``benchmarks/lr_find.py``: +4.2% on the regression task); a centred average has no lag.

Nothing of the caller's changes: the model is copied (a spec is built fresh), the optimizer is
a new one, and every global random generator (torch CPU and CUDA, NumPy, Python) is put back
as it was, so a later ``nnfit.fit`` draws the same numbers as without the test. The data goes
through the path ``nnfit.fit`` takes (the same split, preprocessing, task, loss and optimizer
settings), so the suggestion is for the training that follows.

Host syncs: the step losses stay on the device and are read every :data:`CHECK_EVERY` steps
(to stop on divergence), not once per step.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .config import TrainConfig, train_config
from .data import LoaderData
from .data.columns import column_name
from .data.prepare import prepare
from .errors import ConfigError, DataError, warn
from .specs import built_in, complete_spec, family
from .tasks import CustomTask, Task
from .trainer import Trainer

CHECK_EVERY = 10  # steps between reads of the device losses: one host sync per 10 steps
RULES = ("minimum", "valley", "steepest")
MIN_POINTS = 5  # fewer steps before divergence draw no curve to read a rate from
MAX_STEPS = 10_000  # "a bounded number of steps": the rates are a list, and a test is minutes at most
LR_BOUNDS = (1e-12, 1e3)  # outside, a rate is a typo (1e-320 is subnormal; 1e300 overflows Adam)
# The centred average's window, in decades of rate. A decade holds the rates the suggestion
# moves between (the benchmark's grid has two points a decade), so the loss is averaged only
# over rates the question does not tell apart.
WINDOW = 1.0
# Steps per decade below which the window averages too few batch losses: at 12 a decade the
# benchmark's image task got suggestions off by a factor of 3 either way (+14%); at 25 it
# passed. Fewer warn.
MIN_PER_DECADE = 20
# The suggestion sits half a decade below the smoothed loss's lowest point. That point is the
# edge of stability for the short run of the test; a constant rate for a whole training must
# stay clear of it (Smith's cyclical schedules put their base a third to a quarter of the way
# up to that edge). Read without lag, the lowest point was on average 0.4 to 0.7 decades above
# each benchmark seed's best grid rate, at every step count tried (100 to 500); a tenth of it
# (fastai's lr_min / 10, meant for a lagging curve) failed the regression task at every one
# (+15% to +33%).
BELOW = 10 ** 0.5
# The first tenth of the curve is never suggested (fastai skips it too): nothing has trained at
# those rates yet, and the window there is one-sided.
WARMUP = 0.1


@dataclass(frozen=True)
class LRFindResult:
    """What a range test measured and suggests.

    Attributes:
        lrs: the learning rate of each optimizer step, in order.
        losses: each step's training loss (the mean of its accumulated batches).
        smoothed: the losses smoothed by a centred moving average over one decade of rate
            (:func:`centred_losses`): the curve the suggestion is read from.
        suggestion: the suggested learning rate, or None when the curve is too short (the
            loss diverged within the first few steps: lower ``start_lr``).
        rule: the rule that gave the suggestion, in words.
        stop: why the test ended ("diverged at step N (lr X)" or "N steps to lr X, no
            divergence").
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    rule: str
    stop: str

    def to_csv(self) -> str:
        """The curve as CSV text: ``step,lr,loss,smoothed_loss``, one row per step."""
        rows = ["step,lr,loss,smoothed_loss"]
        rows += [f"{i + 1},{lr!r},{loss!r},{s!r}" for i, (lr, loss, s)
                 in enumerate(zip(self.lrs, self.losses, self.smoothed, strict=True))]
        return "\n".join(rows) + "\n"

    def plot_png(self) -> bytes:
        """The smoothed (and raw) loss against the learning rate on a log axis, the suggestion
        marked, as PNG bytes (matplotlib's Agg backend: no display needed)."""
        import io

        from matplotlib.figure import Figure  # lazily: matplotlib takes ~0.3 s to import

        fig = Figure(figsize=(6.4, 4.0), dpi=100)
        ax = fig.add_subplot()
        ax.plot(self.lrs, self.losses, color="0.75", linewidth=0.8, label="loss")
        ax.plot(self.lrs, self.smoothed, color="C0", linewidth=1.6, label="smoothed loss")
        if self.suggestion is not None:
            ax.axvline(self.suggestion, color="C3", linestyle="--",
                       label=f"suggested lr {self.suggestion:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        finite = [v for v in self.smoothed if math.isfinite(v)]
        if finite:  # the divergence at the end would flatten the rest of the curve
            low = min(finite + [v for v in self.losses if math.isfinite(v)])
            high = max(finite[0], finite[0] + 0.5 * (finite[0] - low))
            ax.set_ylim(low - 0.05 * (high - low + 1e-12), high + 0.1 * (high - low + 1e-12))
        ax.set_title(f"learning-rate range test ({self.stop})")
        ax.legend(loc="best")
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png")
        return out.getvalue()


class _Done(Exception):
    """Raised inside the loop when the range test has all its steps or has diverged."""


class _RangeTest(Trainer):
    """The trainer's loop with an exponentially growing learning rate: each optimizer step
    records its loss on the device and sets the rate of the next step (the step seams are
    overridden, so a CUDA graph, which would keep its captured rate, is never used)."""

    def __init__(self, config: TrainConfig, lrs: list[float], smooth: float, diverge: float) -> None:
        super().__init__(config)
        self.lrs, self.smooth, self.diverge = lrs, smooth, diverge
        self.losses = torch.full((len(lrs),), math.nan, dtype=torch.float64, device=self.runtime.device)
        self._window: Tensor | None = None
        self._window_n = 0
        self.read: list[float] = []  # losses read back to the host so far
        self.diverged_at: int | None = None  # the step (0-based) whose smoothed loss diverged

    def train_step(self, inputs: Any, target: Tensor, scale: float) -> Tensor:
        loss = super().train_step(inputs, target, scale)
        self._window = loss.double() if self._window is None else self._window + loss.double()
        self._window_n += 1
        return loss

    def optimizer_step(self) -> None:
        super().optimizer_step()
        k = self.state.step - 1
        self.losses[k] = self._window / self._window_n  # on the device: no sync
        self._window, self._window_n = None, 0
        if (k + 1) % CHECK_EVERY == 0 or k + 1 == len(self.lrs):
            self._check(k + 1)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lrs[k + 1]

    def _check(self, n: int) -> None:
        """Read the losses up to step ``n`` and stop at all steps or at divergence."""
        self.read += self.losses[len(self.read):n].tolist()  # sync: once per CHECK_EVERY steps
        self.diverged_at = diverged(smoothed_losses(self.read, self.smooth), self.diverge)
        if self.diverged_at is not None or n == len(self.lrs):
            raise _Done


def smoothed_losses(losses: list[float], beta: float) -> list[float]:
    """The bias-corrected exponential moving average of ``losses`` (as Adam corrects its
    moments: the first values are not pulled towards zero), for the divergence stop while the
    test runs. A non-finite loss makes the rest infinite."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss if math.isfinite(loss) and math.isfinite(avg) else math.inf
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def centred_losses(lrs: list[float], losses: list[float], window: float = WINDOW) -> list[float]:
    """Each loss replaced by the mean of the finite losses whose rate is within half a
    ``window`` (in decades) of its own: a smoother without lag, as the whole curve is known.

    A step whose own loss is not finite stays infinite (it is drawn, never suggested); its
    neighbours average the finite losses around them. Near the ends the window is one-sided.

    Args:
        lrs: increasing learning rates, one per step.
        losses: each step's loss.
        window: the width of the window in decades of rate. Default 1.

    Example:
        >>> centred_losses([1e-3, 2e-3, 4e-3], [1.0, 2.0, float("inf")])
        [1.5, 1.5, inf]
    """
    x, y = np.log10(np.asarray(lrs, dtype=np.float64)), np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(y)
    total = np.concatenate([[0.0], np.cumsum(np.where(finite, y, 0.0))])
    count = np.concatenate([[0], np.cumsum(finite)])
    lo = np.searchsorted(x, x - window / 2, side="left")
    hi = np.searchsorted(x, x + window / 2, side="right")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (total[hi] - total[lo]) / (count[hi] - count[lo])
    return np.where(finite, mean, math.inf).tolist()


def diverged(smoothed: list[float], factor: float) -> int | None:
    """The first step whose smoothed loss is not finite or above ``factor`` times the best
    one before it, or None."""
    best = math.inf
    for i, value in enumerate(smoothed):
        if not math.isfinite(value) or (i > 0 and value > factor * best):
            return i
        best = min(best, value)
    return None


def suggest(lrs: list[float], smoothed: list[float], rule: str) -> tuple[float | None, str]:
    """The suggested rate of a curve and the rule in words; None when it has fewer than
    :data:`MIN_POINTS` steps. No rule looks at the first tenth of the curve (:data:`WARMUP`).

    Args:
        lrs: the rates of the curve.
        smoothed: the smoothed loss at each rate: without lag (:func:`centred_losses`) for
            "minimum", the moving average (:func:`smoothed_losses`) for fastai's two.
        rule: one of :data:`RULES`.

    Rules:
        valley: the middle of the longest stretch of steadily falling smoothed loss, on the
            curve up to its minimum (fastai's "valley").
        steepest: the rate where the smoothed loss falls fastest per unit of log rate, up to
            its minimum.
        minimum: half a decade below the rate of the lowest smoothed loss (:data:`BELOW`; the
            default of :func:`lr_find`: the one that passed ``benchmarks/lr_find.py``).
    """
    if len(lrs) < MIN_POINTS:
        return None, f"no suggestion: the loss diverged after {len(lrs)} steps; lower start_lr"
    skip = int(len(lrs) * WARMUP)  # at least MIN_POINTS remain: MIN_POINTS < 1 / WARMUP
    low = skip + int(np.argmin(smoothed[skip:]))
    if rule == "minimum":
        return lrs[low] / BELOW, "half a decade below the lowest smoothed loss"
    upto = max(low, skip + MIN_POINTS - 1) + 1
    x, y = np.log(np.asarray(lrs[skip:upto])), np.asarray(smoothed[skip:upto])
    if rule == "steepest":
        return float(np.exp(x[int(np.argmin(np.gradient(y, x)))])), "steepest fall of the smoothed loss"
    start, end = _longest_fall(y)
    mid = start + (end - start) * 2 // 3  # the lower part of the valley: fastai takes 2/3 in
    return float(np.exp(x[mid])), "valley of the smoothed loss (longest steady fall)"



def _longest_fall(y: np.ndarray) -> tuple[int, int]:
    """The first and last index of the longest decreasing run of ``y`` (a longest decreasing
    subsequence's ends, as fastai's valley finds them)."""
    n = len(y)
    run, prev = [1] * n, [-1] * n
    for i in range(1, n):
        for j in range(i):
            if y[i] < y[j] and run[j] + 1 > run[i]:
                run[i], prev[i] = run[j] + 1, j
    end = int(np.argmax(run))
    start = end
    while prev[start] != -1:
        start = prev[start]
    return start, end


@contextmanager
def _rng_untouched() -> Iterator[None]:
    """Put every global random generator back as it was on leaving, whatever happened."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(state[0])
        np.random.set_state(state[1])
        random.setstate(state[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def lr_find(model: nn.Module | Mapping | str, x: Any, y: Any = None, *, target: str | None = None,
            task: str | Task = "auto", config: TrainConfig | None = None, start_lr: float = 1e-7,
            end_lr: float = 10.0, steps: int = 200, smooth: float = 0.98, diverge: float = 4.0,
            rule: str = "minimum", **overrides: Any) -> LRFindResult:
    """Suggest a learning rate with a range test on a copy of ``model``, changing nothing.

    The rate grows exponentially from ``start_lr`` to ``end_lr`` over ``steps`` optimizer
    steps of the training ``nnfit.fit`` would run (same split, preprocessing, task, loss,
    optimizer, batch size, accumulation and clipping; no schedule), cycling through the
    training data as often as needed. The test stops early when the moving average of the loss
    exceeds ``diverge`` times its best. The suggestion is read from the losses smoothed without
    lag (:func:`centred_losses`). It is deterministic for a ``seed``.

    Args:
        model, x, y, target, task, config, **overrides: as :func:`nnfit.fit` (no validation
            data, run directory or callbacks: nothing is kept). ``lr`` and ``scheduler`` are
            ignored: the test sets the rate.
        start_lr, end_lr: the first and last rate, within [1e-12, 1e3]. Defaults 1e-7 and 10.
        steps: optimizer steps at most, from 5 to 10,000. Default 200; fewer than 20 a decade
            of rate warn (the suggestion needs them).
        smooth: the divergence stop's moving average's weight of the past, in [0, 1).
            Default 0.98.
        diverge: stop once that average is above this many times its best. Default 4.
        rule: "minimum" (default), "valley" or "steepest": see :func:`suggest`. The last two
            are fastai's, read as fastai reads them: from the moving average.

    Returns:
        An :class:`LRFindResult` with the curve, the suggestion and the rule used.

    Raises:
        ConfigError: bad arguments or settings, named.
        DataError: bad data, or less training data than one full batch.

    Warns:
        NnfitWarning: fewer than :data:`MIN_PER_DECADE` steps a decade of rate; the loss
            lowest near ``end_lr`` without diverging (no edge found).

    Example:
        >>> import numpy as np, nnfit
        >>> x, y = np.random.rand(256, 4), np.random.rand(256) > 0.5
        >>> result = nnfit.lr_find({"name": "mlp", "hidden": [16]}, x, y, end_lr=1.0, steps=150)
        >>> len(result.lrs) <= 150
        True
    """
    _check_arguments(start_lr, end_lr, steps, smooth, diverge, rule)
    decades = math.log10(end_lr / start_lr)
    if steps < MIN_PER_DECADE * decades * (1 - 1e-9):  # 1e-9: 1e-7..10 is 8 decades, not 8.0000001
        warn(f"lr-find: {steps} steps over {decades:.3g} decades of rate are too few for a sound "
             f"suggestion (it averages the loss over a decade): use steps >= "
             f"{math.ceil(MIN_PER_DECADE * decades * (1 - 1e-9))}")
    lrs = [float(start_lr * (end_lr / start_lr) ** (i / max(1, steps - 1))) for i in range(steps)]
    with _rng_untouched():
        trainer, module, train = _prepared(model, x, y, target, task, config, overrides, lrs, smooth, diverge)
        try:
            trainer.fit(module, train, task=trainer.task)
        except _Done:
            pass
        losses = trainer.read
    n = len(losses) if trainer.diverged_at is None else trainer.diverged_at + 1
    curve = centred_losses(lrs[:n], losses[:n])
    if trainer.diverged_at is not None:
        stop = f"diverged at step {n} (lr {lrs[n - 1]:.3g})"
    else:
        stop = f"{n} steps to lr {lrs[n - 1]:.3g}, no divergence"
    last = n - (trainer.diverged_at is not None)  # the point that diverged is drawn, never suggested
    # fastai's rules were made for its moving average (on the centred curve the benchmark's
    # valley lost 8% to 90%): they read that one; the default reads the curve without lag
    read = curve if rule == "minimum" else smoothed_losses(losses[:n], smooth)
    suggestion, why = suggest(lrs[:last], read[:last], rule)
    if rule == "minimum" and trainer.diverged_at is None and suggestion is not None \
            and suggestion * BELOW >= end_lr / 10 ** (WINDOW / 2):
        # lowest within the last half window: the loss had not turned up yet (a model that
        # memorises a few rows, batch norm shrugging off any rate), so the edge the rule steps
        # back from was never found. Half a decade below end_lr is then no advice (a 96-image
        # folder got 2.88, and training at it stayed at chance): the steepest fall of the same
        # lag-free curve needs no edge.
        suggestion, _ = suggest(lrs[:last], curve[:last], "steepest")
        why = "steepest fall of the loss: it never turned up before end_lr"
        warn(f"lr-find: the loss was still at its lowest near end_lr {end_lr:g} and never diverged: "
             "the suggestion is the steepest fall instead; raise end_lr or read the plot")
    return LRFindResult(lrs[:n], losses[:n], curve, suggestion, why, stop)


def _check_arguments(start_lr: float, end_lr: float, steps: int, smooth: float, diverge: float,
                     rule: str) -> None:
    """Refuse range-test settings that cannot make a curve, naming the argument."""
    low, high = LR_BOUNDS
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ConfigError(f"lr-find: {name} must be a rate from {low:g} to {high:g}, got {value!r}")
    if not start_lr < end_lr:
        raise ConfigError(f"lr-find: start_lr must be below end_lr, got {start_lr!r} and {end_lr!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not MIN_POINTS <= steps <= MAX_STEPS:
        raise ConfigError(f"lr-find: steps must be an integer from {MIN_POINTS} to {MAX_STEPS}, "
                          f"got {steps!r}")
    if not 0 <= smooth < 1:
        raise ConfigError(f"lr-find: smooth must be in [0, 1), got {smooth!r}")
    if not diverge > 1:
        raise ConfigError(f"lr-find: diverge must be > 1, got {diverge!r}")
    if rule not in RULES:
        raise ConfigError(f"lr-find: unknown rule {rule!r} (choose from: {', '.join(RULES)})")


def _prepared(model: Any, x: Any, y: Any, target: str | None, task: Any, config: TrainConfig | None,
              overrides: dict[str, Any], lrs: list[float], smooth: float,
              diverge: float) -> tuple[_RangeTest, nn.Module, Any]:
    """The range test's trainer, the model copy it trains and the training data, through the
    steps ``nnfit.fit`` takes (without a run directory or a resume)."""
    from .learner import _custom_task
    from .memory import check_training_memory
    from .models import build_model, state_shapes
    from .tasks.custom import training_task

    task, overrides = _custom_task(task, config, overrides)
    cfg = train_config(config, **overrides)
    # The rate is the test's; no schedule, no finiteness guard (divergence is the expected
    # end), no best-weights copies; epochs only bound the loop: each holds at least a batch.
    test_cfg = replace(cfg, lr=lrs[0], scheduler="none", check_finite=False, restore_best=False,
                       patience=0, quiet=True, epochs=len(lrs) * cfg.accumulate)
    trainer = _RangeTest(test_cfg, lrs, smooth, diverge)  # seeds the global RNG, as fit does
    target = column_name(target)
    data = prepare(x, y, target=target, task=task, config=cfg, numeric=built_in(model), family=family(model))
    fitted_task, train = data.task, data.train
    if isinstance(task, CustomTask):
        fitted_task = training_task(fitted_task, task.fn, train, data.val)
    _check_one_batch(train, cfg.batch_size)
    spec = complete_spec(model, data.preprocessor, fitted_task)
    if not isinstance(model, nn.Module):
        check_training_memory(state_shapes(spec), cfg, trainer.runtime, False)
    module = copy.deepcopy(model) if isinstance(model, nn.Module) else build_model(spec)
    trainer.task = fitted_task
    return trainer, module, train


def _check_one_batch(train: Any, batch_size: int) -> None:
    """Refuse training data smaller than one full batch: every step of the test would see
    the same few rows, and its curve would say nothing about training at that batch size.

    Raises:
        DataError: naming the rows and the batch size.
    """
    if isinstance(train, LoaderData) and hasattr(train.data, "batch_size"):
        batch_size = train.data.batch_size or 1  # a user's DataLoader batches by itself
    n = train.length
    if n is not None and n < batch_size:
        raise DataError(f"lr-find needs at least one full batch of training data: {n} training rows "
                        f"(after the validation split) for batch_size {batch_size}; pass more rows "
                        "or a smaller batch_size")


def write_outputs(result: LRFindResult, out: str | Path) -> tuple[Path, Path]:
    """Write ``lr_find.png`` and ``lr_find.csv`` into ``out`` (created when missing), each
    atomically; returns their paths."""
    from .files import atomic_write_bytes, atomic_write_text

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    png, csv = folder / "lr_find.png", folder / "lr_find.csv"
    atomic_write_text(csv, result.to_csv())
    atomic_write_bytes(png, result.plot_png())
    return png, csv


__all__ = ["LRFindResult", "lr_find", "suggest", "write_outputs"]
