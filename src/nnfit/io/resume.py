"""A checkpoint checked whole before a resume uses any of it.

Two steps, because the model and optimizer a checkpoint is loaded into do not exist when it is
read:

* :func:`check_checkpoint` -- right after reading, before the task, preprocessing or model
  are made from it: ``state.json`` against :data:`~nnfit.io.validate.CHECKPOINT`, and the
  ``model/`` and ``best/`` tensors against the spec's analytic shapes (so a tampered spec can
  never make a resume build a model of gigabytes);
* :func:`check_resume` -- in :func:`nnfit.state.restore_state`, before anything is
  loaded: every tensor and value against the live model, optimizer, schedule, generators and
  data (a same-size transposed optimizer state, a wrong-shaped one that crashed the fused Adam
  kernel, an extra ``optimizer/99`` tensor, missing best weights...).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint import STATE_JSON, STATE_TENSORS
from ..errors import CheckpointError
from .checkpoints import checkpoint_name, latest_checkpoint
from .optim_state import STATE, check_groups, check_schedule, check_steps, state_wants
from .validate import CHECKPOINT, LOOP_STATE, validate
from .weights import Want, check_entries, check_values, model_wants, rng_wants, scalar_dtypes

# Every group of tensors a checkpoint holds, by the prefix of its names.
PREFIXES = ("model", "best", "optimizer", "rng", "rng_epoch", "loop", "ranks", "scaler")
# The generators each rank of a torchrun run has its own state of (the data order's is shared).
RANK_RNG = ("torch", "cuda", "numpy", "numpy_gauss", "python", "python_gauss")
_OPTIMIZER_KEY = re.compile(r"(0|[1-9][0-9]{0,8})/([A-Za-z_][A-Za-z0-9_]{0,100})")


def _parts(tensors: Mapping[str, Tensor], source: str) -> dict[str, dict[str, Tensor]]:
    parts: dict[str, dict[str, Tensor]] = {p: {} for p in PREFIXES}
    for key, t in tensors.items():
        prefix, _, rest = key.partition("/")
        if prefix not in parts or not rest:
            raise CheckpointError(f"{source}: unexpected tensor {key!r}")
        parts[prefix][rest] = t
    return parts


def check_checkpoint(tensors: Mapping[str, Tensor], meta: Any, source: str | Path) -> None:
    """Check a run's checkpoint as read, before any of it is used.

    Args:
        tensors: its tensors (``state.safetensors``).
        meta: its parsed ``state.json``.
        source: the checkpoint directory, named in messages.

    Raises:
        CheckpointError: naming the file and the field or tensor.
    """
    validate(meta, CHECKPOINT, f"{source}/{STATE_JSON}")
    spec = meta["learner"]["spec"]
    if spec is None:  # a user's module: checked against it in check_resume
        return
    from ..models import state_shapes

    state = state_shapes(spec)  # checked by the schema: cannot fail here
    wants = model_wants(state, (k for k, s in state.items() if s.parameter))
    parts = _parts(tensors, f"{source}/{STATE_TENSORS}")
    for prefix in ("model", "best"):
        if prefix == "model" or parts["best"]:
            check_entries(parts[prefix], wants, f"{source}/{STATE_TENSORS}", f"{prefix}/",
                          "weights do not fit the model", "model")


def check_resume(tensors: Mapping[str, Tensor], meta: Any, *, model: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: Any, rng_live: Mapping[str, Tensor],
                 cuda: torch.device | None, batches_per_epoch: int | None, accumulate: int,
                 restore_best: bool, source: str | Path = "checkpoint", batch_size: int | None = None,
                 epoch_samples: tuple[int, int] | None = None, loss_floor: float | None = None,
                 same_data: Callable[[], bool] | None = None) -> None:
    """Check a checkpoint against what it is about to be loaded into; nothing is loaded yet.

    Args:
        tensors, meta: the checkpoint (as :meth:`~nnfit.trainer.Trainer.checkpoint_parts`
            made it, plus what a run adds).
        model, optimizer, scheduler: the live objects (``scheduler`` may be None).
        rng_live: this process's generator states (:func:`nnfit.rng.capture`): their shapes.
        cuda: the CUDA device resumed on, or None.
        batches_per_epoch, accumulate: the loop's batching (where a checkpoint can be);
            ``batches_per_epoch`` None: training data of unknown length, checkpointed at epoch
            ends only.
        restore_best: whether best weights are kept (when the checkpoint's config says nothing).
        source: the checkpoint directory, named in messages.
        batch_size: the configured batch size (None: not known, the loop counters are bounded
            instead of checked exactly).
        epoch_samples: ``(per batch, per epoch)`` when every batch of an epoch but the last
            holds the same number of samples (None when a user's loader decides).
        loss_floor: the least value the loss can take (0 for the built-in losses), if known.
        same_data: whether the fit runs on the checkpoint's data (asked only when the counters
            do not fit this data's batching: a forced resume onto other data is let through).

    Raises:
        CheckpointError: naming the file and the field or tensor.
    """
    src_json, src = f"{source}/{STATE_JSON}", f"{source}/{STATE_TENSORS}"
    validate(meta, LOOP_STATE, src_json)
    groups = meta["optimizer"]["param_groups"]
    check_groups(groups, optimizer, src_json)
    if meta["optimizer"]["scalars"] and type(optimizer) in STATE:
        raise CheckpointError(f"{src_json}: optimizer.scalars: unexpected state "
                              f"(a {type(optimizer).__name__} keeps none outside tensors)")
    if scheduler is not None and meta["scheduler"] is not None:
        check_schedule(meta["scheduler"], scheduler, len(groups), src_json)
    batch = meta["batch"]  # after a full accumulation window, or the epoch's last batch (a signal)
    if batches_per_epoch is None and batch:
        raise CheckpointError(f"{src_json}: batch: {batch}, but training data of unknown length resumes "
                              "from epoch ends only (batch 0)")
    if batches_per_epoch is not None and (
            batch > batches_per_epoch or (batch % accumulate and batch != batches_per_epoch)):
        raise CheckpointError(f"{src_json}: batch: {batch} is not where a checkpoint of an epoch "
                              f"of {batches_per_epoch} batches (accumulate={accumulate}) can be")
    config = meta.get("config")
    same = not isinstance(config, dict) or (config.get("batch_size", batch_size),
                                            config.get("accumulate", accumulate)) == (batch_size, accumulate)
    if batch_size is not None and same and batches_per_epoch is not None:  # a --force-resume to
        # other batching: bounds only; unknown length: no count to check the steps against
        try:
            check_counters(meta, batches_per_epoch, accumulate, epoch_samples, src_json)
        except CheckpointError:
            if same_data is None or same_data():
                raise
    parts = _parts(tensors, src)
    params = [n for n, _ in model.named_parameters()]
    wants: dict[str, dict[str, Want]] = {"model": model_wants(model.state_dict(), params)}
    keep = config.get("restore_best", restore_best) if isinstance(config, dict) else restore_best
    wants["best"] = wants["model"] if parts["best"] or (keep and meta["best"] is not None) else {}
    present = {int(_optimizer_key(k, src)[0]) for k in parts["optimizer"]}
    built_in = isinstance(meta.get("learner"), dict) and meta["learner"].get("spec") is not None
    wants["optimizer"] = state_wants(optimizer, groups, present, built_in and meta["step"] > 0)
    wants["rng"] = rng_wants(rng_live, cuda)
    wants["rng_epoch"] = wants["rng"] if batch else {}
    floor = None if loss_floor is None else lambda t: (
        None if float(t) >= loss_floor * meta["loss_n"]
        else f"is below {loss_floor} a sample, the least the loss can be")
    wants["loop"] = {"loss_sum": Want((), scalar_dtypes(), finite=True, value=floor)} if batch else {}
    # a run of several processes: every other rank's generators and running loss (nnfit.distributed)
    per_rank = {**{f"rng/{k}": w for k, w in wants["rng"].items() if k in RANK_RNG},
                **{f"loop/{k}": w for k, w in wants["loop"].items()}}
    wants["ranks"] = {f"{r}/{k}": w for r in range(1, meta.get("world_size", 1)) for k, w in per_rank.items()}
    wants["scaler"] = scaler_wants(config, bool(parts["scaler"]))
    for prefix in PREFIXES:
        weights = prefix in ("model", "best")
        check_entries(parts[prefix], wants[prefix], src, f"{prefix}/",
                      *(("weights do not fit the model", "model") if weights else ()))
        check_values(parts[prefix], wants[prefix], src, f"{prefix}/")
    check_steps(parts["optimizer"], meta["step"], src)
    if built_in:  # every parameter of a built-in model is stepped at every step not skipped (fp16)
        check_equal_steps(parts["optimizer"], meta["step"] - meta.get("skipped_steps", 0), src)


def scaler_wants(config: Any, present: bool) -> dict[str, Want]:
    """The fp16 gradient scaler's state (:mod:`nnfit.precision`) a checkpoint holds: required
    when its run's ``config`` says fp16, none for another precision, and both tensors or
    neither when there is no config to say (a checkpoint of :meth:`Trainer.checkpoint_parts`).
    A fit that has no scaler ignores a checked one (a forced resume to another precision)."""
    from ..precision import GROWTH_INTERVAL

    precision = config.get("precision", "fp32") if isinstance(config, dict) else None
    if precision not in (None, "fp16"):
        return {}
    optional = precision is None and not present

    def positive(t: Tensor) -> str | None:
        return None if float(t) > 0 else "is not a positive scale"

    def tracker(t: Tensor) -> str | None:
        return None if int(t) < GROWTH_INTERVAL else f"is not below the growth interval {GROWTH_INTERVAL}"

    return {"scale": Want((), (torch.float32,), finite=True, optional=optional, value=positive),
            "growth_tracker": Want((), (torch.int64,), nonneg=True, optional=optional, value=tracker)}


def check_counters(meta: Mapping[str, Any], batches_per_epoch: int, accumulate: int,
                   epoch_samples: tuple[int, int] | None, source: str) -> None:
    """The loop's counters agree with the data's batching, as Trainer._train_epoch advances
    them: ``ceil(batches / accumulate)`` optimizer steps an epoch (the last window may be
    shorter), and in the running epoch ``ceil(batch / accumulate)`` steps over ``batch``
    batches of ``per batch`` samples each (the last one fewer).

    Raises:
        CheckpointError: naming ``step`` or ``loss_n``.
    """
    epoch, batch, step = meta["epoch"], meta["batch"], meta["step"]
    per_epoch = math.ceil(batches_per_epoch / accumulate)
    want = epoch * per_epoch + math.ceil(batch / accumulate)
    if step != want:
        raise CheckpointError(f"{source}: step: {step}, but {epoch} epochs of {per_epoch} optimizer steps "
                              f"and {batch} batches (accumulate={accumulate}) take {want}")
    if batch and epoch_samples is not None:
        per_batch, total = epoch_samples
        n = min(batch * per_batch, total)
        if meta["loss_n"] + sum(meta.get("rank_loss_n", ())) != n:  # over every rank
            raise CheckpointError(f"{source}: loss_n: {meta['loss_n']}, but {batch} batches of "
                                  f"{per_batch} ({total} samples an epoch) hold {n}")


def check_equal_steps(tensors: Mapping[str, Tensor], loop_step: int, source: str) -> None:
    """Every per-parameter step counter equals the optimizer steps the loop took (as a float
    counter holds it: one of float32 stops counting at 2**24)."""
    for name, t in tensors.items():
        if name.endswith("/step"):
            want = min(loop_step, round(2 / torch.finfo(t.dtype).eps))
            if float(t) != want:
                raise CheckpointError(f"{source}: tensor optimizer/{name} is {float(t)}, expected "
                                      f"{want} (the optimizer steps taken)")


def check_place(meta: Mapping[str, Any], path: Path) -> None:
    """A run's checkpoint is where its counters say (its directory's name is made from them:
    a wrong name sorts it among the others wrongly), and its best checkpoint is this one or
    one of the run's. Rotation never removes the best checkpoint before a newer one is
    committed; when newer ones were set aside as damaged, the best may be gone legitimately.

    Raises:
        CheckpointError: naming ``step`` or ``best_checkpoint``.
    """
    name = checkpoint_name(meta["step"], None if meta["batch"] else meta["epoch"])
    if path.name != name:
        raise CheckpointError(f"{path / STATE_JSON}: step: {meta['step']} (epoch {meta['epoch']}, "
                              f"batch {meta['batch']}) is not the checkpoint {path.name}")
    best, parent = meta["best_checkpoint"], path.parent
    fell_back = any(p.name.startswith("damaged-") for p in parent.iterdir())
    if best not in (None, name) and not fell_back and not (parent / best).is_dir():
        raise CheckpointError(f"{path / STATE_JSON}: best_checkpoint: {best} is not a checkpoint of the run")


def read_resume(run_dir: str | Path,
                set_aside: bool = True) -> tuple[dict[str, Tensor], dict[str, Any], Path]:
    """The newest checkpoint of ``run_dir`` that verifies (damaged ones set aside, see
    :func:`nnfit.io.checkpoints.latest_checkpoint`), checked by :func:`check_checkpoint`.

    ``set_aside`` False reads without renaming damaged checkpoints (what the ranks of a
    torchrun run but rank 0 do: rank 0 renames them).

    Returns:
        ``(tensors, meta, checkpoint directory)``: what ``Trainer.fit(resume=...)`` takes.

    Raises:
        CheckpointError: no checkpoint verifies, or the newest one's content is invalid
            (refused, not skipped: its bytes are as written, so it was written so).
    """
    path, tensors, meta = latest_checkpoint(run_dir, set_aside=set_aside)
    check_checkpoint(tensors, meta, path)
    check_place(meta, path)
    return tensors, meta, path


def _optimizer_key(key: str, source: str) -> tuple[str, str]:
    m = _OPTIMIZER_KEY.fullmatch(key)
    if m is None:
        raise CheckpointError(f"{source}: unexpected tensor 'optimizer/{key}'")
    return m.group(1), m.group(2)
