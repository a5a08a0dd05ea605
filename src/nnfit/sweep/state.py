"""A sweep group's checkpoint: everything :class:`~nnfit.sweep.engine.GroupTrainer` needs to
go on bit for bit, as safetensors tensors and JSON (nothing is ever unpickled)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..callbacks import History
from ..checkpoint import STATE_JSON, STATE_TENSORS, parse_checkpoint, save_checkpoint
from ..errors import CheckpointError, warn
from ..files import clean_temporaries, read_bundle, remove_bundle
from ..io.checkpoints import CHECKPOINTS, checkpoint_name, committed
from .engine import GroupTrainer

FORMAT = 1


def capture(gt: GroupTrainer, group: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The group's tensors (stacked model, best copies, optimizer, losses, generators) and
    JSON state (position, each member's progress, history and schedule)."""
    t: dict[str, Tensor] = {}
    t.update({f"param.{n}": p.detach() for n, p in gt.model.params.items()})
    t.update({f"buffer.{n}": b for n, b in gt.model.buffers.items()})
    t.update({f"best.{n}": b for n, b in gt.best.items()})
    t.update({f"opt.{n}": v for n, v in gt.opt.state_tensors().items()})
    t["loss_sum"], t["loss_n"] = gt.loss_sum, gt.loss_n
    members = []
    for i, m in enumerate(gt.members):
        t[f"rng.{i}.data"] = m.data_gen.get_state()
        t[f"rng.{i}.drop"] = m.drop_gen.get_state()
        if m.epoch_rng is not None:
            t[f"rng.{i}.epoch"] = m.epoch_rng
        members.append({"name": m.name, "best": m.best, "best_epoch": m.best_epoch, "stop": m.stop,
                        "stop_reason": m.stop_reason, "failed": m.failed, "history": list(m.history),
                        "param_groups": m.dummy.state_dict()["param_groups"],
                        "schedule": None if m.schedule is None else m.schedule.scheduler.state_dict()})
    meta = {"sweep": FORMAT, "group": group, "epoch": gt.epoch, "batch": gt.batch, "step": gt.step,
            "members": members}
    return {k: v.detach().cpu().contiguous() for k, v in t.items()}, meta


def restore(gt: GroupTrainer, tensors: dict[str, Tensor], meta: dict[str, Any], where: str) -> None:
    """Put ``gt`` where the checkpoint left it.

    Raises:
        CheckpointError: the checkpoint is not this group's (other members, missing or
            misshapen tensors), named.
    """
    names = [m.get("name") if isinstance(m, dict) else None for m in meta.get("members", [])]
    if names != [m.name for m in gt.members]:
        raise CheckpointError(f"{where}: its members {names} are not this sweep's group "
                              f"{[m.name for m in gt.members]}")
    check_meta(meta, gt, where)
    try:
        with torch.no_grad():
            for n, p in gt.model.params.items():
                _load(p, tensors, f"param.{n}")
            for n, b in gt.model.buffers.items():
                _load(b, tensors, f"buffer.{n}")
            for n, b in gt.best.items():
                _load(b, tensors, f"best.{n}")
            opt = gt.opt.state_tensors()
            for n, v in opt.items():
                _load(v, tensors, f"opt.{n}")
            _load(gt.loss_sum, tensors, "loss_sum")
            _load(gt.loss_n, tensors, "loss_n")
        gt.epoch, gt.batch, gt.step = int(meta["epoch"]), int(meta["batch"]), int(meta["step"])
        for i, (m, saved) in enumerate(zip(gt.members, meta["members"], strict=True)):
            m.data_gen.set_state(tensors[f"rng.{i}.data"])
            m.drop_gen.set_state(tensors[f"rng.{i}.drop"])
            m.epoch_rng = tensors.get(f"rng.{i}.epoch")
            m.best, m.best_epoch = saved["best"], int(saved["best_epoch"])
            m.stop, m.stop_reason = bool(saved["stop"]), str(saved["stop_reason"])
            m.failed = bool(saved["failed"])
            m.history = History([dict(r) for r in saved["history"]])
            m.dummy.load_state_dict({"state": {}, "param_groups": saved["param_groups"]})
            if m.schedule is not None and saved["schedule"] is not None:
                m.schedule.scheduler.load_state_dict(saved["schedule"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{where}: not a checkpoint of this sweep ({type(e).__name__}: {e})") from None
    gt.restored()


def check_meta(meta: dict[str, Any], gt: GroupTrainer, where: str) -> None:
    """Every field of a group checkpoint's ``state.json`` against what a sweep writes there:
    its manifest proves the bytes are as written, not that a person did not write them.

    Raises:
        CheckpointError: naming the first field that holds what no sweep writes.
    """
    def bad(field: str, value: Any) -> CheckpointError:
        return CheckpointError(f"{where}: field {field!r} holds {str(value)[:60]!r}, "
                               "not what a sweep writes there")

    def whole(field: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise bad(field, value)
        return value

    c = gt.config
    epoch = whole("epoch", meta.get("epoch"), 0, c.epochs)
    last = max(m.n_batches for m in gt.members) - 1 if epoch < c.epochs else 0
    whole("batch", meta.get("batch"), 0, last)
    whole("step", meta.get("step"), 0, 2**62)
    for i, m in enumerate(meta["members"]):
        at = f"members[{i}]"
        if m.get("best") is not None and not _number(m.get("best"), finite=False):
            raise bad(f"{at}.best", m.get("best"))
        whole(f"{at}.best_epoch", m.get("best_epoch"), 0, epoch)
        for key, kind in (("stop", bool), ("failed", bool), ("stop_reason", str)):
            if not isinstance(m.get(key), kind):
                raise bad(f"{at}.{key}", m.get(key))
        history = m.get("history")
        if not isinstance(history, list) or len(history) > epoch or not all(_record(r) for r in history):
            raise bad(f"{at}.history", history)
        groups = m.get("param_groups")
        if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
            raise bad(f"{at}.param_groups", groups)
        for key, value in groups[0].items():
            numbers = value if key == "betas" and isinstance(value, list) else [value]
            if key in _RATES and not all(_number(v) and v >= 0 for v in numbers):
                raise bad(f"{at}.param_groups.{key}", value)
        if m.get("schedule") is not None and not isinstance(m.get("schedule"), dict):
            raise bad(f"{at}.schedule", m.get("schedule"))


_RATES = ("lr", "weight_decay", "momentum", "eps", "betas", "initial_lr", "max_lr", "min_lr")


def _number(v: Any, finite: bool = True) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and (not finite or math.isfinite(v))


def _record(r: Any) -> bool:
    """An epoch's record: names to numbers, text or None."""
    return isinstance(r, dict) and all(isinstance(k, str) and (v is None or isinstance(v, (int, float, str)))
                                       for k, v in r.items())


def _load(target: Tensor, tensors: dict[str, Tensor], key: str) -> None:
    value = tensors[key]
    if value.shape != target.shape or value.dtype != target.dtype:
        raise ValueError(f"{key} is {tuple(value.shape)} {value.dtype}, "
                         f"expected {tuple(target.shape)} {target.dtype}")
    target.copy_(value)


def save(out: Path, gt: GroupTrainer, group: int, keep: int) -> Path:
    """Commit a checkpoint of the running group under ``OUT/checkpoints`` and keep the newest
    ``keep`` (at least one)."""
    tensors, meta = capture(gt, group)
    name = f"group-{group:03d}-" + checkpoint_name(gt.step, None if gt.batch else gt.epoch)
    target = out / CHECKPOINTS / name
    (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    if target.exists():
        remove_bundle(target)
    save_checkpoint(target, tensors, json.loads(json.dumps(meta)))
    names = _committed(out)
    for old in names[:-max(1, keep)]:
        remove_bundle(out / CHECKPOINTS / old)
    return target


def _committed(out: Path) -> list[str]:
    d = out / CHECKPOINTS
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.is_dir() and p.name.startswith("group-"))


def latest(out: Path) -> tuple[Path, dict[str, Tensor], dict[str, Any]] | None:
    """The newest sweep checkpoint of ``out`` that verifies (damaged ones are skipped with a
    warning), or None when there is none."""
    d = out / CHECKPOINTS
    if not d.is_dir():
        return None
    for name in clean_temporaries(d):
        warn(f"removed {d / name}: an unfinished checkpoint of a sweep killed while saving")
    for name in reversed(_committed(out)):
        try:
            files = read_bundle(d / name, "checkpoint", (STATE_TENSORS, STATE_JSON))
            tensors, meta = parse_checkpoint(files, d / name, required=("sweep", "group", "members"))
        except CheckpointError as e:
            warn(f"skipping checkpoint {name}: {e}")
            continue
        if meta.get("sweep") != FORMAT or not isinstance(meta.get("group"), int):
            raise CheckpointError(f"{d / name}: not a checkpoint of this nnfit's sweeps")
        return d / name, tensors, meta
    return None


def clear(out: Path) -> None:
    """Remove every checkpoint (a group finished: its members' run directories hold it)."""
    for name in _committed(out):
        remove_bundle(out / CHECKPOINTS / name)
    d = out / CHECKPOINTS
    if d.is_dir() and not any(d.iterdir()):  # nothing left to resume from: no empty folder
        d.rmdir()


__all__ = ["capture", "clear", "committed", "latest", "restore", "save"]
