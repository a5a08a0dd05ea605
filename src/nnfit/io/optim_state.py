"""The optimizer and scheduler state of a checkpoint, checked against the optimizer and schedule
it is loaded into, one table per type.

* :data:`STATE` -- per optimizer type, the tensors each parameter's state holds (a moment
  shaped like the parameter, a step counter), and when (``momentum_buffer`` only with
  momentum, ``max_exp_avg_sq`` only with amsgrad, ``grad_avg`` only when centered).
* :data:`GROUPS` -- per optimizer type, the hyperparameters of a parameter group.
* :data:`SCHEDULES` -- per scheduler type, the fields of its ``state_dict``.

A field a newer torch adds and no table names yet must have the type the live object gives it.
A wrong shape here once reached the fused Adam kernel, which crashed the process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import lr_scheduler as lrs

from ..errors import CheckpointError
from .schema import Bool, Field, Float, Int, Json, Maybe, Obj, SchemaError, Seq, Str, check
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
