"""A fit's checkpoint state: what the loop keeps besides tensors (:class:`FitState`), and
how a :class:`~nnfit.trainer.Trainer`'s whole state becomes a checkpoint and comes back.

:func:`capture_state` gathers the model, optimizer, every RNG stream, the running epoch's
data order and loss, the best weights, early stopping and the schedule; :func:`restore_state`
first checks all of it against what it goes into (:func:`nnfit.io.resume.check_resume`) and
then loads it one piece at a time (``restore_model`` ... ``restore_best``: the resume tests
leave each piece out in turn to prove it is needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from torch import Tensor

from . import rng
from .callbacks import History
from .checkpoint import load_state_dict_strict, optimizer_from_parts, optimizer_to_parts, split_prefix
from .errors import CheckpointError, ConfigError, TrainingError
from .guards import first_non_finite
from .io.optim_state import Plan, check_plan, check_task_loss
from .io.resume import check_resume
from .metrics import metric_direction
from .optim import build_optimizer, build_schedule

if TYPE_CHECKING:
    from .trainer import Trainer


@dataclass
class FitState:
    """Everything about a fit in progress that a checkpoint must hold besides tensors.

    Attributes:
        epoch: epochs completed (the 0-based index of the epoch running).
        step: optimizer steps taken.
        batch: batches of the running epoch done (0 between epochs); a checkpoint taken
            inside an epoch resumes with the next one.
        history: one record per completed epoch.
        best: the best value of the monitored metric so far (None before the first epoch).
        best_epoch: the 1-based epoch that reached ``best``.
        best_weights: a copy of the model's state at ``best_epoch`` (kept on the device).
        stop: set by early stopping or a callback to end training after this epoch.
        stop_reason: why training stopped early, for the user.
    """

    epoch: int = 0
    step: int = 0
    batch: int = 0
    history: History = field(default_factory=History)
    best: float | None = None
    best_epoch: int = 0
    best_weights: dict[str, Tensor] | None = None
    stop: bool = False
    stop_reason: str = ""


def capture_state(trainer: Trainer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and JSON state that let :meth:`Trainer.fit` resume exactly where it is now, between
    epochs or inside one (after ``state.batch`` batches).

    Raises:
        TrainingError: a parameter, its optimizer state or the running loss is NaN or
            infinite, or a buffer holds NaN: no checkpoint may hold it, whatever
            ``check_finite`` (which only turns the loop's guards off) says.
    """
    st = trainer.state
    tensors = {f"model/{k}": v for k, v in trainer.model.state_dict().items()}
    opt_tensors, opt_meta = optimizer_to_parts(trainer.optimizer)
    tensors.update(opt_tensors)
    tensors.update({f"rng/{k}": v for k, v in trainer._rng_states().items()})
    tensors.update(trainer.precision.state_tensors())  # fp16: the gradient scaler's scale
    if st.best_weights is not None:
        tensors.update({f"best/{k}": v for k, v in st.best_weights.items()})
    if st.batch:  # inside an epoch: its order and its running loss
        tensors.update({f"rng_epoch/{k}": v for k, v in trainer._epoch_rng.items()})
        tensors["loop/loss_sum"] = trainer._loss_sum
    # Parameters, their optimizer state and the running loss must be finite. Buffers may
    # legitimately hold inf (an attention mask) but never NaN (a BatchNorm running
    # statistic gone NaN would poison every later prediction).
    params = {n for n, _ in trainer.model.named_parameters()}
    weights = [(k, v) for k, v in tensors.items() if k.startswith(("model/", "best/"))]
    checked = [(k, v) for k, v in tensors.items() if k.split("/", 1)[0] in ("optimizer", "loop", "scaler")]
    checked += [(k, v) for k, v in weights if k.split("/", 1)[1] in params]
    bad = first_non_finite(checked)
    if bad is not None:  # fit() adds which earlier checkpoint, if any, is left
        raise TrainingError(f"{bad} is non-finite at step {st.step}: not checkpointed")
    bad = next((k for k, v in weights if k.split("/", 1)[1] not in params and v.is_floating_point()
                and bool(v.isnan().any())), None)  # sync: per buffer, at checkpoints only
    if bad is not None:
        raise TrainingError(f"{bad} holds NaN at step {st.step}: not checkpointed")
    meta = {
        "epoch": st.epoch, "step": st.step, "batch": st.batch, "loss_n": trainer._loss_n,
        "epochs": trainer.config.epochs, "history": st.history.records,
        "best": st.best, "best_epoch": st.best_epoch, "stop": st.stop,
        "stop_reason": st.stop_reason, "optimizer": opt_meta,
        "scheduler": None if trainer.schedule is None else trainer.schedule.scheduler.state_dict(),
    }
    skipped = trainer.precision.skipped_steps()  # steps an fp16 scaler skipped (0 in fp32)
    if skipped or trainer.precision.scaler is not None:
        meta["skipped_steps"] = skipped
    if trainer.runtime.distributed:  # every rank's generators and running loss, into rank 0's
        from .distributed import gather_rank_states

        ranks, more = gather_rank_states(trainer)
        tensors.update(ranks)
        meta.update(more)
    return tensors, meta


def restore_state(trainer: Trainer, tensors: dict[str, Tensor], meta: dict[str, Any],
                  source: Any = "checkpoint", *, monitor: str | None = None, data: tuple = ()) -> None:
    """Load every piece of a checkpoint's state; each piece is its own function. First every
    tensor and value is checked against what it goes into (:func:`nnfit.io.resume.check_resume`,
    a CheckpointError naming ``source``, the checkpoint's directory, and the field), and the
    optimizer's and schedule's state against what the run's settings build
    (:func:`nnfit.io.optim_state.check_plan`). ``monitor`` is the metric the fit watches
    (default: the config's). ``data``: the fit's training and validation sources (whether the
    checkpoint's loop counters must fit their batching: only on the data it was trained on)."""
    check_resume(tensors, meta, model=trainer.model, optimizer=trainer.optimizer,
                 scheduler=None if trainer.schedule is None else trainer.schedule.scheduler,
                 rng_live=trainer._rng_states(cuda=False),
                 cuda=trainer.runtime.device if trainer.runtime.is_cuda else None,
                 batches_per_epoch=trainer.batches_per_epoch, accumulate=trainer.config.accumulate,
                 restore_best=trainer.config.restore_best, source=source,
                 batch_size=trainer.config.batch_size, epoch_samples=trainer.epoch_samples,
                 loss_floor=_loss_floor(trainer), same_data=lambda: _same_data(meta, data))
    src = f"{source}/state.json"
    check_plan(meta, saved_plan(trainer, meta, monitor or trainer.config.monitor, src), src)
    try:
        restore_model(trainer, tensors, meta)
        restore_optimizer(trainer, tensors, meta)
        restore_precision(trainer, tensors, meta)
        restore_schedule(trainer, tensors, meta)
        restore_rng(trainer, tensors, meta)
        restore_progress(trainer, tensors, meta)
        restore_order(trainer, tensors, meta)
        restore_best(trainer, tensors, meta)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"checkpoint: incomplete or inconsistent state ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None


# The settings that decide the optimizer, its schedule and the loss: a checkpoint's own run
# may have had others than this one only under --force-resume (which lists them).
PLAN_SETTINGS = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "scheduler", "step_size",
                 "gamma", "milestones", "warmup_epochs", "min_lr", "sched_patience", "accumulate", "loss")


def saved_plan(trainer: Trainer, meta: dict[str, Any], monitor: str, source: str) -> Plan:
    """The optimizer and schedule the checkpoint's own run built at its start: this run's config
    with the checkpoint's optimizer and schedule settings and its ``epochs`` (a resume may
    change ``epochs``: a per-step schedule is then re-planned, see :func:`restore_schedule`).

    Raises:
        CheckpointError: the checkpoint's config or loss does not fit (naming the field).
    """
    saved = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    changes = {k: tuple(saved[k]) if k == "milestones" else saved[k] for k in PLAN_SETTINGS if k in saved}
    try:
        c = replace(trainer.config, **changes, epochs=meta.get("epochs", trainer.config.epochs))
        optimizer = build_optimizer(trainer.model.parameters(), c)
        steps = math.ceil((trainer.batches_per_epoch or 1) / c.accumulate)  # 1: unknown length,
        # which trains with epoch schedules only (they ignore it)
        schedule = build_schedule(optimizer, replace(c, monitor=monitor), steps)
    except (ConfigError, ValueError, TypeError) as e:
        raise CheckpointError(f"{source}: config: the saved settings do not build an optimizer "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    check_task_loss(meta, c.loss, "dataset" in saved, source)
    return Plan(optimizer, None if schedule is None else schedule.scheduler,
                "epoch" if schedule is None else schedule.interval, monitor)


def _same_data(meta: dict[str, Any], data: tuple) -> bool:
    """Whether the fit runs on the data the checkpoint was trained on, as far as it can tell
    (a run's checkpoint records a fingerprint; a --force-resume may change the data)."""
    from .run import data_fingerprint

    saved = meta.get("data_sha256") if isinstance(meta, dict) else None
    return saved is None or not data or saved == data_fingerprint(*data)


def _loss_floor(trainer: Trainer) -> float | None:
    """0 when the loop's loss is a built-in task's built-in loss (never negative), else None."""
    from .tasks import ClassificationTask, ForecastTask, RegressionTask
    from .trainer import Trainer

    built_in = type(trainer).compute_loss is Trainer.compute_loss
    tasks = (ClassificationTask, RegressionTask, ForecastTask)  # a subclass may change the loss
    return 0.0 if built_in and type(trainer.task) in tasks else None


def restore_model(trainer: Trainer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    load_state_dict_strict(trainer.model, split_prefix(tensors, "model/"), "checkpoint")


def restore_optimizer(trainer: Trainer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    try:
        optimizer_from_parts(trainer.optimizer, tensors, meta["optimizer"])
    except (KeyError, ValueError, RuntimeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"checkpoint: optimizer state does not fit ({why})") from None


def restore_precision(trainer: Trainer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """The fp16 gradient scaler where the checkpoint left it, and the run's skipped steps."""
    trainer.precision.load_state(tensors, int(meta.get("skipped_steps", 0)))


def restore_schedule(trainer: Trainer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """The schedule where the checkpoint left it (exactly, with the same ``epochs``).
    A per-step schedule (cosine, onecycle) resumed with other ``epochs`` is re-planned:
    from here on its rate (and momentum) is that of a run started with the new ``epochs``,
    as Hugging Face's schedules do when the number of training steps changes."""
    if trainer.schedule is None or meta.get("scheduler") is None:
        return
    c, sched, saved = trainer.config, trainer.schedule.scheduler, meta["scheduler"]
    steps = saved["last_epoch"]  # optimizer steps taken
    total = c.epochs * math.ceil((trainer.batches_per_epoch or 1) / c.accumulate)  # as saved_plan
    if trainer.schedule.interval == "step" and meta.get("epochs", c.epochs) != c.epochs and steps <= total:
        # The fresh plan, built over this run's epochs, moved to the checkpoint's step; its
        # step count past 1 keeps torch's "scheduler stepped before optimizer" check quiet.
        sched.load_state_dict({**sched.state_dict(), "last_epoch": int(steps) - 1,
                               "_step_count": max(2, int(steps))})
        sched.step()  # sets the new plan's rate (and momentum) for the next step
        return
    sched.load_state_dict(saved)
    milestones = getattr(trainer.schedule.scheduler, "milestones", None)
    if isinstance(milestones, dict):  # MultiStepLR's Counter: JSON turned its int keys to str
        trainer.schedule.scheduler.milestones = type(milestones)({int(k): v for k, v in milestones.items()})


def restore_rng(trainer: Trainer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    rng.restore(split_prefix(tensors, "rng/"), trainer.generator, trainer._loader_rngs,
                trainer.runtime.device if trainer.runtime.is_cuda else None)


def restore_progress(trainer: Trainer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    st = trainer.state
    st.epoch, st.step, st.batch = int(meta["epoch"]), int(meta["step"]), int(meta.get("batch", 0))
    st.history = History(meta["history"])
    if st.batch:
        trainer._loss_sum = tensors["loop/loss_sum"].to(trainer.runtime.device)
        trainer._loss_n = int(meta["loss_n"])


def restore_order(trainer: Trainer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    if meta.get("batch"):
        trainer._epoch_rng = split_prefix(tensors, "rng_epoch/")


def restore_best(trainer: Trainer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    st, best = trainer.state, split_prefix(tensors, "best/")
    st.best, st.best_epoch = meta["best"], meta["best_epoch"]
    st.best_weights = {k: v.to(trainer.runtime.device) for k, v in best.items()} or None
    st.stop, st.stop_reason = meta.get("stop", False), meta.get("stop_reason", "")


def improves(value: float, best: float | None, monitor: str, min_delta: float) -> bool:
    """Whether ``value`` of ``monitor`` is a new best over ``best`` (by more than
    ``min_delta``, in the metric's direction); an undefined or overflowed value never is."""
    sign = 1.0 if metric_direction(monitor) == "min" else -1.0
    if best is not None and not sign * (best - value) > min_delta:
        return False
    return math.isfinite(value)


def early_stop_reason(monitor: str, patience: int, best: float | None, best_epoch: int) -> str:
    """Why early stopping ended a fit (``best`` is None when every value so far was NaN)."""
    shown = f"best {best:.4g} at epoch {best_epoch}" if best is not None else "no finite value"
    return f"early stopping: {monitor} did not improve for {patience} epochs ({shown})"


def resume_ended(trainer: Trainer, meta: dict[str, Any]) -> None:
    """Refuse a resume whose ``epochs`` ends where the run already is (or before) while
    asking for other epochs than the run's: it would train nothing and say "run written".
    The run's own ``epochs`` on a finished run stays a no-op, as asked.

    Raises:
        ConfigError: saying how far the run got and which ``epochs`` trains on.
    """
    st, planned = trainer.state, meta.get("epochs", trainer.config.epochs)
    if trainer.config.epochs > st.epoch or trainer.config.epochs == planned:
        return
    at = f"{st.batch} batches into epoch {st.epoch + 1}" if st.batch else f"epoch {st.epoch}"
    finish = f"; {planned} finishes it as planned" if planned > st.epoch else ""
    raise ConfigError(f"nothing to train: the run got to {at} of {planned}, and epochs "
                      f"{trainer.config.epochs} goes no further; to train on, resume with epochs "
                      f"above {st.epoch} (--epochs N, epochs=N in Python){finish}")

def resume_stopped(trainer: Trainer, meta: dict[str, Any], monitor: str) -> None:
    """Decide again whether a resumed run that had stopped goes on: early stopping under
    this run's patience (a larger one trains on). Still stopped, a resume given other
    ``epochs`` would train nothing while asked for more: refused, saying how to go on.

    Raises:
        ConfigError: the run stays stopped although ``epochs`` changed.
    """
    st, c = trainer.state, trainer.config
    if not st.stop:
        return
    if st.stop_reason.startswith("early stopping"):
        st.stop, st.stop_reason = False, ""
        trainer._early_stop(monitor)
    if not st.stop or c.epochs == meta.get("epochs", c.epochs) or c.epochs <= st.epoch:
        return
    how = (f"resume with a patience above {st.epoch - st.best_epoch} (--patience N, patience=N in "
           "Python; 0 turns early stopping off)" if st.stop_reason.startswith("early stopping")
           else "start a new run")
    raise ConfigError(f"nothing to train: the run stopped after epoch {st.epoch} ("
                      f"{st.stop_reason or 'by a callback'}); to train on to epoch {c.epochs}, {how}")
