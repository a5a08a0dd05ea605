"""The learning-rate range test: train a copy of the model for a bounded number of steps while
the learning rate grows exponentially, and suggest a rate from the smoothed loss curve.

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
from .errors import ConfigError, DataError
from .specs import built_in, complete_spec, family
from .tasks import CustomTask, Task
from .trainer import Trainer

CHECK_EVERY = 10  # steps between reads of the device losses: one host sync per 10 steps
RULES = ("minimum", "valley", "steepest")
MIN_POINTS = 5  # fewer steps before divergence draw no curve to read a rate from
NEAR_MIN = 0.01  # "at the minimum": within 1% of the lowest smoothed loss
# The first tenth of the curve is never suggested (fastai skips it too): the bias-corrected
# average there holds only a few batches, so one lucky batch at the smallest rates can be the
# curve's lowest point (it was on 3 of 15 benchmark curves, which got 1e-8), and nothing has
# trained at those rates yet.
WARMUP = 0.1


@dataclass(frozen=True)
class LRFindResult:
    """What a range test measured and suggests.

    Attributes:
        lrs: the learning rate of each optimizer step, in order.
        losses: each step's training loss (the mean of its accumulated batches).
        smoothed: the losses smoothed by a bias-corrected exponential moving average.
        suggestion: the suggested learning rate, or None when the curve is too short (the
            loss diverged within the first few steps: lower ``start_lr``).
        rule: the rule that gave the suggestion, in words.
        stop: why the test ended ("diverged at step N" or "N steps").
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
    moments: the first values are not pulled towards zero). A non-finite loss makes the rest
    infinite."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss if math.isfinite(loss) and math.isfinite(avg) else math.inf
        out.append(avg / (1 - beta ** (i + 1)))
    return out


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

    Rules:
        valley: the middle of the longest stretch of steadily falling smoothed loss, on the
            curve up to its minimum (fastai's "valley").
        steepest: the rate where the smoothed loss falls fastest per unit of log rate, up to
            its minimum.
        minimum: a tenth of the last rate whose smoothed loss is within 1% of its minimum
            (the default of :func:`lr_find`: the one that passed ``benchmarks/lr_find.py``).
    """
    if len(lrs) < MIN_POINTS:
        return None, f"no suggestion: the loss diverged after {len(lrs)} steps; lower start_lr"
    skip = int(len(lrs) * WARMUP)  # at least MIN_POINTS remain: MIN_POINTS < 1 / WARMUP
    low = skip + int(np.argmin(smoothed[skip:]))
    if rule == "minimum":
        # The last rate still within NEAR_MIN of the lowest loss: on a curve that stays flat
        # until it diverges (a model that needs more steps to start learning), the minimum is
        # noise, and its rate could be the first; the edge of the flat part is not.
        near = max(i for i, v in enumerate(smoothed) if v <= smoothed[low] + NEAR_MIN * abs(smoothed[low]))
        return lrs[near] / 10, "a tenth of the last rate within 1% of the smoothed loss's minimum"
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
            end_lr: float = 10.0, steps: int = 100, smooth: float = 0.98, diverge: float = 4.0,
            rule: str = "minimum", **overrides: Any) -> LRFindResult:
    """Suggest a learning rate with a range test on a copy of ``model``, changing nothing.

    The rate grows exponentially from ``start_lr`` to ``end_lr`` over ``steps`` optimizer
    steps of the training ``nnfit.fit`` would run (same split, preprocessing, task, loss,
    optimizer, batch size, accumulation and clipping; no schedule), cycling through the
    training data as often as needed. The test stops early when the smoothed loss exceeds
    ``diverge`` times its best. It is deterministic for a ``seed``.

    Args:
        model, x, y, target, task, config, **overrides: as :func:`nnfit.fit` (no validation
            data, run directory or callbacks: nothing is kept). ``lr`` and ``scheduler`` are
            ignored: the test sets the rate.
        start_lr, end_lr: the first and last rate. Defaults 1e-7 and 10.
        steps: optimizer steps at most. Default 100.
        smooth: the moving average's weight of the past, in [0, 1). Default 0.98.
        diverge: stop once the smoothed loss is above this many times its best. Default 4.
        rule: "minimum" (default), "valley" or "steepest": see :func:`suggest`.

    Returns:
        An :class:`LRFindResult` with the curve, the suggestion and the rule used.

    Raises:
        ConfigError: bad arguments or settings, named.
        DataError: bad data, or less training data than one full batch.

    Example:
        >>> import numpy as np, nnfit
        >>> x, y = np.random.rand(256, 4), np.random.rand(256) > 0.5
        >>> result = nnfit.lr_find({"name": "mlp", "hidden": [16]}, x, y, steps=30)
        >>> len(result.lrs) <= 30
        True
    """
    _check_arguments(start_lr, end_lr, steps, smooth, diverge, rule)
    lrs = [float(start_lr * (end_lr / start_lr) ** (i / max(1, steps - 1))) for i in range(steps)]
    with _rng_untouched():
        trainer, module, train = _prepared(model, x, y, target, task, config, overrides, lrs, smooth, diverge)
        try:
            trainer.fit(module, train, task=trainer.task)
        except _Done:
            pass
        losses = trainer.read
    n = len(losses) if trainer.diverged_at is None else trainer.diverged_at + 1
    curve = smoothed_losses(losses, smooth)[:n]
    stop = f"diverged at step {n}" if trainer.diverged_at is not None else f"{n} steps"
    # the point that diverged is drawn, never suggested
    suggestion, why = suggest(lrs[:len(curve) - (trainer.diverged_at is not None)],
                              curve[:len(curve) - (trainer.diverged_at is not None)], rule)
    return LRFindResult(lrs[:n], losses[:n], curve, suggestion, why, stop)


def _check_arguments(start_lr: float, end_lr: float, steps: int, smooth: float, diverge: float,
                     rule: str) -> None:
    """Refuse range-test settings that cannot make a curve, naming the argument."""
    if not (isinstance(start_lr, (int, float)) and 0 < start_lr < end_lr and math.isfinite(end_lr)):
        raise ConfigError(f"lr-find: start_lr must be > 0 and below end_lr, got {start_lr!r} and {end_lr!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < MIN_POINTS:
        raise ConfigError(f"lr-find: steps must be an integer >= {MIN_POINTS}, got {steps!r}")
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
