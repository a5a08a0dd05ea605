"""The optimizer and scheduler state of a checkpoint, checked against the optimizer and schedule
it is loaded into, one table per type.

* :data:`STATE` -- per optimizer type, the tensors each parameter's state holds (a moment
  shaped like the parameter, a step counter), and when (``momentum_buffer`` only with
  momentum, ``max_exp_avg_sq`` only with amsgrad, ``grad_avg`` only when centered).
* :data:`GROUPS` -- per optimizer type, the hyperparameters of a parameter group.
* :data:`SCHEDULES` -- per scheduler type, the fields of its ``state_dict``.
* :func:`check_plan` -- the values against what the run's own settings build (:class:`Plan`):
  every hyperparameter but the ones a schedule moves (:data:`MOVES`) and how a step runs
  (:data:`HOW`); every schedule setting, and its progress (:data:`PROGRESS`) at the loop's
  position: a state that fits its types could still train with other settings, or crash
  one-cycle's step past its total.

A field a newer torch adds and no table names yet must have the type the live object gives it.
A wrong shape here once reached the fused Adam kernel, which crashed the process.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import lr_scheduler as lrs

from ..errors import CheckpointError
from .schema import Bool, Field, Float, Int, Json, Maybe, Obj, SchemaError, Seq, Str, check, short
from .weights import Want, scalar_dtypes


@dataclass(frozen=True)
class Slot:
    """One tensor of a parameter's optimizer state.

    Attributes:
        kind: "param" (shaped and typed like the parameter) or "step" (a scalar counter).
        nonneg: its values are never negative (second moments).
        when: given the parameter's group, whether the tensor exists.
    """

    kind: str = "param"
    nonneg: bool = False
    when: Callable[[Mapping[str, Any]], bool] = lambda group: True


_ADAM = {"step": Slot("step"), "exp_avg": Slot(), "exp_avg_sq": Slot(nonneg=True),
         "max_exp_avg_sq": Slot(nonneg=True, when=lambda g: bool(g["amsgrad"]))}
STATE: dict[type, dict[str, Slot]] = {
    torch.optim.SGD: {"momentum_buffer": Slot(when=lambda g: g["momentum"] != 0)},
    torch.optim.Adam: _ADAM,
    torch.optim.AdamW: _ADAM,
    torch.optim.RMSprop: {"step": Slot("step"), "square_avg": Slot(nonneg=True),
                          "momentum_buffer": Slot(when=lambda g: g["momentum"] > 0),
                          "grad_avg": Slot(when=lambda g: bool(g["centered"]))},
}

RATE = Float(0.0)
_COMMON = {"lr": RATE, "weight_decay": Float(0.0), "maximize": Bool(), "foreach": Maybe(Bool()),
           "differentiable": Bool(), "capturable": Bool(), "fused": Maybe(Bool())}
_ADAM_GROUP = {**_COMMON, "betas": Seq(Float(0.0, 1.0, open_hi=True), 2, 2), "eps": Float(0.0),
               "amsgrad": Bool(), "decoupled_weight_decay": Bool()}
GROUPS: dict[type, dict[str, Field]] = {
    torch.optim.SGD: {**_COMMON, "momentum": Float(0.0), "dampening": Float(), "nesterov": Bool()},
    torch.optim.Adam: _ADAM_GROUP,
    torch.optim.AdamW: _ADAM_GROUP,
    torch.optim.RMSprop: {**_COMMON, "momentum": Float(0.0), "alpha": Float(0.0), "eps": Float(0.0),
                          "centered": Bool()},
}
# Keys a scheduler adds to a group; absent after a --force-resume that changed the scheduler.
SCHEDULE_KEYS: dict[str, Field] = {"initial_lr": RATE, "max_lr": RATE, "min_lr": RATE,
                                   "max_momentum": Float(0.0, 1.0), "base_momentum": Float(0.0, 1.0)}


def _as_field(value: Any) -> Field:
    """The field of a hyperparameter no table names: the type the live optimizer gives it."""
    if isinstance(value, bool):
        return Bool()
    if isinstance(value, (int, float)):
        return Float()
    if value is None:
        return Maybe(Json(finite=True))
    if isinstance(value, (list, tuple)):
        return Seq(Json(finite=True), len(value), len(value))
    return Str(max_len=1000)


def check_groups(saved: list[dict], optimizer: torch.optim.Optimizer, source: str) -> None:
    """The saved parameter groups fit ``optimizer``: same groups over the same parameters,
    every hyperparameter present and of its type, no unknown one.

    Raises:
        CheckpointError: naming ``optimizer.param_groups[i].KEY``.
    """
    live = optimizer.state_dict()["param_groups"]
    table = GROUPS.get(type(optimizer), {})
    where = "optimizer.param_groups"
    if len(saved) != len(live):
        raise CheckpointError(f"{source}: {where}: {len(saved)} groups, the optimizer has {len(live)}")
    for i, (group, now) in enumerate(zip(saved, live, strict=True)):
        if group["params"] != now["params"]:
            raise CheckpointError(f"{source}: {where}[{i}].params: not the optimizer's parameters "
                                  f"({len(group['params'])} saved, {len(now['params'])} now)")
        # This torch's optimizer and the table agree on the hyperparameters that must be
        # there; one only a newer torch has, or a scheduler's, is taken from the live group
        # when missing (optimizer_from_parts), as torch itself fills defaults of older saves.
        fields = {**SCHEDULE_KEYS, **table, **{k: table.get(k) or _as_field(v) for k, v in now.items()}}
        required = ({k for k in now if k in table} | {"params"}) - set(SCHEDULE_KEYS)
        schema = Obj({**fields, "params": Json()}, optional=frozenset(set(fields) - required))
        try:
            check(group, schema, f"{where}[{i}]")
        except SchemaError as e:
            raise CheckpointError(f"{source}: {e}") from None


def state_wants(optimizer: torch.optim.Optimizer, saved_groups: list[dict], present: set[int],
                all_params: bool) -> dict[str, Want]:
    """The tensors ``optimizer/IDX/NAME`` a checkpoint must hold for ``optimizer``.

    Args:
        optimizer: the live optimizer (its parameters give shapes and dtypes).
        saved_groups: the checked saved groups (their hyperparameters decide which tensors
            exist: a momentum buffer only with momentum...).
        present: the parameter indices the checkpoint holds state for; a parameter has all
            of its state or none (one never updated has none).
        all_params: every trainable parameter must have state (a built-in model after its
            first step: every parameter is used).
    """
    slots = STATE.get(type(optimizer))
    if slots is None:
        raise CheckpointError(f"cannot check the state of a {type(optimizer).__name__} optimizer")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    step_dtypes = scalar_dtypes()
    wants: dict[str, Want] = {}
    for group in saved_groups:
        for idx in group["params"]:
            p = params[idx]
            if idx not in present and not (all_params and p.requires_grad):
                continue
            for name, slot in slots.items():
                if not slot.when(group):
                    continue
                if slot.kind == "step":
                    wants[f"{idx}/{name}"] = Want((), step_dtypes, finite=True)
                else:
                    wants[f"{idx}/{name}"] = Want(tuple(p.shape), (p.dtype,), finite=True, nonneg=slot.nonneg)
    return wants


def check_steps(tensors: Mapping[str, Tensor], loop_step: int, source: str) -> None:
    """Per-parameter step counters: whole numbers, at most the optimizer steps the loop took."""
    for name, t in tensors.items():
        if name.endswith("/step"):
            v = float(t)
            if v != math.floor(v) or not 0 <= v <= loop_step:
                raise CheckpointError(f"{source}: tensor optimizer/{name} is {v}, expected a whole "
                                      f"number of steps up to {loop_step}")


# ------------------------------------------------------------------------------- schedules
def _lrs(n: int) -> Field:
    return Seq(RATE, n, n)


def _phase_keys(d: dict) -> tuple[str, str] | None:
    last, total = d["last_epoch"], d["total_steps"]
    return None if last <= total else ("last_epoch", f"{last} is past total_steps={total}")


_GROUP_KEY = Str(tuple(SCHEDULE_KEYS))
_PHASE = Obj({"end_step": Float(), "start_lr": _GROUP_KEY, "end_lr": _GROUP_KEY,
              "start_momentum": _GROUP_KEY, "end_momentum": _GROUP_KEY})


def schedules(n_groups: int) -> dict[type, tuple[dict[str, Field], tuple]]:
    """Per scheduler type: its ``state_dict`` fields for ``n_groups`` parameter groups, and
    rules across them."""
    common = {"base_lrs": _lrs(n_groups), "last_epoch": Int(-1, 2**53), "_step_count": Int(0, 2**53),
              "_is_initial": Bool(), "_get_lr_called_within_step": Bool(), "_last_lr": _lrs(n_groups),
              "verbose": Bool()}
    gamma = Float(0.0, open_lo=True)
    return {
        lrs.StepLR: ({**common, "step_size": Int(1, 2**53), "gamma": gamma}, ()),
        lrs.MultiStepLR: ({**common, "gamma": gamma, "milestones": Obj(
            rest=Int(1, 2**53), rest_keys=r"0|[1-9][0-9]{0,15}")}, ()),
        lrs.ExponentialLR: ({**common, "gamma": gamma}, ()),
        # lr_lambdas: None for a plain function (nnfit's); a callable object's __dict__ otherwise
        lrs.LambdaLR: ({**common, "lr_lambdas": Seq(Maybe(Obj()), n_groups, n_groups)}, ()),
        lrs.OneCycleLR: ({**common, "total_steps": Int(1, 2**53), "_schedule_phases": Seq(_PHASE, 1, 10),
                          "_anneal_func_type": Str(("cos", "linear")), "cycle_momentum": Bool(),
                          "use_beta1": Bool()}, (_phase_keys,)),
        lrs.ReduceLROnPlateau: ({"factor": Float(0.0, 1.0, open_lo=True, open_hi=True),
                                 "default_min_lr": RATE, "min_lrs": _lrs(n_groups),
                                 "patience": Int(0, 2**53), "cooldown": Int(0, 2**53),
                                 "cooldown_counter": Int(0, 2**53), "num_bad_epochs": Int(0, 2**53),
                                 "eps": Float(0.0), "threshold": Float(), "verbose": Bool(),
                                 "threshold_mode": Str(("rel", "abs")), "mode": Str(("min", "max")),
                                 "best": Float(inf=True), "mode_worse": Float(inf=True),
                                 "last_epoch": Int(0, 2**53), "_last_lr": _lrs(n_groups)}, ()),
    }


def check_schedule(saved: Any, scheduler: Any, n_groups: int, source: str) -> None:
    """The saved scheduler state fits the live ``scheduler``: exactly its fields, each of its
    type and range (a junk state would be taken as it is by ``load_state_dict``).

    Raises:
        CheckpointError: naming ``scheduler.FIELD``.
    """
    live = scheduler.state_dict()
    table, rules = schedules(n_groups).get(type(scheduler), ({}, ()))
    fields = {k: table.get(k) or _as_field(v) for k, v in live.items()}
    try:
        check(saved, Obj(fields, rules=rules), "scheduler")
    except SchemaError as e:
        raise CheckpointError(f"{source}: {e}") from None


# ------------------------------------------------------------- against the run's settings
# How a step runs (this run's device and flags decide it), not what it computes.
HOW = frozenset({"fused", "capturable", "foreach", "differentiable"})
# Per scheduler type: the group hyperparameters it moves as training goes (any schedule moves
# "lr"; one-cycle also beta1 or momentum). Every other hyperparameter is a setting.
MOVES: dict[type, frozenset[str]] = {lrs.OneCycleLR: frozenset({"lr", "betas", "momentum"})}
# Per scheduler type: the state keys that record progress, checked against the loop's position;
# every other key is a setting and must be what the run's settings build.
_COUNTERS = frozenset({"last_epoch", "_step_count", "_last_lr"})
PROGRESS: dict[type, frozenset[str]] = {
    lrs.ReduceLROnPlateau: frozenset({"last_epoch", "_last_lr", "best", "num_bad_epochs",
                                      "cooldown_counter"}),
}


@dataclass(frozen=True)
class Plan:
    """The optimizer and schedule a checkpoint's own run builds from its settings (fresh,
    untouched by training), and where its loop is.

    Attributes:
        optimizer: built from the run's settings over the model's parameters.
        scheduler: the torch scheduler built on ``optimizer`` from the run's settings and the
            checkpoint's ``epochs``, or None.
        interval: "step" or "epoch": what the schedule's ``last_epoch`` counts.
        monitor: the metric reduce-on-plateau watches (its ``best`` is one of its values).
    """

    optimizer: torch.optim.Optimizer
    scheduler: Any
    interval: str
    monitor: str


def _json(value: Any) -> Any:
    """``value`` as saved in ``state.json`` (a tuple as a list, a Counter's keys as strings)."""
    return json.loads(json.dumps(value))


def _same(a: Any, b: Any) -> bool:
    """JSON values equal, numbers as numbers (``0`` and ``0.0``)."""
    return _json(a) == _json(b)


def check_plan(meta: Mapping[str, Any], plan: Plan, source: str) -> None:
    """The checkpoint's optimizer hyperparameters and schedule state are what its run's
    settings build, and the schedule is where the loop is (a checked ``state.json`` whose
    values each fit their type can still train with other settings, or crash a schedule).

    Args:
        meta: the checkpoint's ``state.json``, already checked field by field
            (:func:`check_groups`, :func:`check_schedule`).
        plan: what its run builds.
        source: the file named in messages.

    Raises:
        CheckpointError: naming ``optimizer.param_groups[i].KEY`` or ``scheduler.KEY``.
    """
    groups, saved = meta["optimizer"]["param_groups"], meta["scheduler"]
    sched = plan.scheduler if saved is not None else None
    # The rate is a setting only where nothing schedules it (after a change of schedule in an
    # in-process resume, the saved or the new schedule has moved it).
    scheduled = plan.scheduler is not None or saved is not None
    moved = MOVES.get(type(plan.scheduler), frozenset({"lr"})) if scheduled else frozenset()
    planned = plan.optimizer.state_dict()["param_groups"]
    for i, (group, ref) in enumerate(zip(groups, planned, strict=False)):
        for key, want in ref.items():
            if key in group and key not in HOW | moved | {"params"} and not _same(group[key], want):
                raise CheckpointError(f"{source}: optimizer.param_groups[{i}].{key}: {short(group[key])}, "
                                      f"but the run's settings give {short(_json(want))}")
    if sched is None:
        return
    progress = PROGRESS.get(type(sched), _COUNTERS)
    for key, want in sched.state_dict().items():
        if key not in progress and key in saved and not _same(saved[key], want):
            raise CheckpointError(f"{source}: scheduler.{key}: {short(saved[key])}, but the run's "
                                  f"settings give {short(_json(want))}")
    position = meta["step"] if plan.interval == "step" else meta["epoch"]
    problem = (_plateau_progress(saved, meta, plan, position) if type(sched) in PROGRESS
               else _progress(saved, position, plan.interval))
    if problem is None:
        problem = _scheduled_values(groups, saved, plan, moved)
    if problem is not None:
        raise CheckpointError(f"{source}: {problem[0]}: {problem[1]}")


def _progress(saved: Mapping[str, Any], position: int, interval: str) -> tuple[str, str] | None:
    """A stepped schedule has stepped once per optimizer step (per epoch): ``last_epoch`` is
    the loop's position; ``_step_count`` is one more (two or three more after a re-planned
    resume at step 0 or 1, see :func:`nnfit.state.restore_schedule`)."""
    last = saved["last_epoch"]
    if last != position:
        where = "optimizer steps taken" if interval == "step" else "epochs done"
        return "scheduler.last_epoch", f"{last}, but the loop is at {position} {where}"
    if not 1 <= saved["_step_count"] - last <= 3:
        return "scheduler._step_count", f"{saved['_step_count']} does not follow last_epoch={last}"
    return None


def _plateau_progress(saved: Mapping[str, Any], meta: Mapping[str, Any], plan: Plan,
                      position: int) -> tuple[str, str] | None:
    """Reduce-on-plateau steps once per epoch; its ``best`` is a value of the monitored metric
    (or "worse than any" before the first epoch), reached at least ``num_bad_epochs`` epochs
    before the end of the history."""
    if saved["last_epoch"] != position:
        return "scheduler.last_epoch", f"{saved['last_epoch']}, but the loop is at {position} epochs done"
    if saved["cooldown_counter"] > plan.scheduler.cooldown:
        return "scheduler.cooldown_counter", (f"{saved['cooldown_counter']} is past "
                                              f"cooldown={plan.scheduler.cooldown}")
    history, best = meta["history"], saved["best"]
    values = [r.get(plan.monitor) for r in history if isinstance(r, dict)]
    if len(values) != position:  # a history that does not fit the loop: refused elsewhere
        return None
    if not any(_is(v, best) for v in values) and not _is(best, plan.scheduler.mode_worse):
        return "scheduler.best", f"{best} is not a value of {plan.monitor} in the history"
    first = next((i for i, v in enumerate(values) if _is(v, best)), -1)
    most = position if first < 0 else position - 1 - first
    if saved["num_bad_epochs"] > most:
        return "scheduler.num_bad_epochs", (f"{saved['num_bad_epochs']}, but at most {most} epochs "
                                            f"ran since best={best}")
    return None


def _is(a: Any, b: Any) -> bool:
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b)


def _scheduled_values(groups: list[dict], saved: Mapping[str, Any], plan: Plan,
                      moved: frozenset[str]) -> tuple[str, str] | None:
    """Each group's rate is the schedule's last rate and the one its settings give at
    ``last_epoch`` (closed form; up to rounding, chained schedules multiply step by step);
    one-cycle's momentum likewise; reduce-on-plateau's rate lies between its floor and ``lr``."""
    sched, planned = plan.scheduler, plan.optimizer.param_groups
    rates = _rates_at(sched, saved["last_epoch"])
    for i, group in enumerate(groups[:len(planned)]):
        where = f"optimizer.param_groups[{i}]"
        if not _is(group["lr"], saved["_last_lr"][i]):
            return f"{where}.lr", f"{group['lr']} is not the schedule's last rate {saved['_last_lr'][i]}"
        if rates is None:  # reduce-on-plateau: lr only ever goes down, never under min_lrs
            if not sched.min_lrs[i] <= group["lr"] <= planned[i]["lr"]:
                return f"{where}.lr", f"{group['lr']} is outside [{sched.min_lrs[i]}, {planned[i]['lr']}]"
            continue
        if not math.isclose(group["lr"], rates[i], rel_tol=1e-6, abs_tol=1e-12 * max(sched.base_lrs)):
            return f"{where}.lr", (f"{group['lr']}, but the schedule gives {rates[i]} at "
                                   f"last_epoch={saved['last_epoch']}")
        for key in sorted(moved - {"lr"}):
            got, want = group.get(key), planned[i].get(key)
            if got is not None and want is not None and not all(
                    math.isclose(a, b, rel_tol=1e-6) for a, b in zip(_flat(got), _flat(want), strict=True)):
                return f"{where}.{key}", f"{short(got)}, but the schedule gives {short(want)}"
    return None


def _flat(v: Any) -> list[float]:
    return [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)]


def _rates_at(sched: Any, last_epoch: int) -> list[float] | None:
    """The planned scheduler's rates (and one-cycle's momentum, set on its optimizer) at
    ``last_epoch``; None for reduce-on-plateau, whose rates depend on the metric's history."""
    if isinstance(sched, lrs.ReduceLROnPlateau):
        return None
    sched.last_epoch = last_epoch
    closed = getattr(sched, "_get_closed_form_lr", None)
    if closed is not None:
        return list(closed())
    sched._get_lr_called_within_step = True  # get_lr warns when called outside step()
    try:
        return list(sched.get_lr())
    finally:
        sched._get_lr_called_within_step = False


def check_task_loss(meta: Mapping[str, Any], loss: str, from_config: bool, source: str) -> None:
    """The saved task trains with the loss its run's settings name (``auto``: the task's own;
    a two-class ``multiclass`` task asked for with ``auto`` gets ``cross_entropy``).

    Only for a run whose task was made from its settings (``from_config``: ``nnfit train``);
    the Python API also takes a ready-made task, whose loss is its own.

    Raises:
        CheckpointError: naming ``learner.task.loss``.
    """
    learner = meta.get("learner")
    task = learner.get("task") if isinstance(learner, dict) else None
    if not from_config or not isinstance(task, dict) or task.get("name") == "custom":
        return  # a custom task's loss names its function: config loss "custom" (validate._run)
    allowed = {loss}
    if loss == "auto" and task.get("name") == "multiclass" and len(task.get("classes", ())) == 2:
        allowed = {"cross_entropy"}
    if task.get("loss", "auto") not in allowed:
        raise CheckpointError(f"{source}: learner.task.loss: {short(task.get('loss'))}, but the "
                              f"run's settings give {short(loss)}")
