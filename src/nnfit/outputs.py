"""Model outputs that are not one tensor: a (mean, log-variance) pair, a dict of heads, any
nesting of tuples, lists and dicts of tensors (what a custom loss may take).

A built-in task's output is one tensor and never comes here: the loop tests ``isinstance(out,
Tensor)`` and keeps its own fast path. These helpers walk a structure in one fixed order
(positions, then dict insertion order) so that its leaves can be concatenated batch by batch,
checked one by one and rebuilt in the shape the model returned them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .errors import ConfigError


def leaves(out: Any, path: str = "output") -> list[tuple[str, Tensor]]:
    """Every tensor of ``out`` with its path (``output``, ``output[1]``, ``output['mean']``).

    Raises:
        ConfigError: a leaf that is not a tensor, or a structure without any tensor.
    """
    found: list[tuple[str, Tensor]] = []
    _walk(out, path, found)
    if not found:
        raise ConfigError(f"the model returned {type(out).__name__} {out!r:.40} with no tensor in it: "
                          "return a tensor, or tuples, lists or dicts of tensors")
    return found


def _walk(out: Any, path: str, found: list[tuple[str, Tensor]]) -> None:
    if isinstance(out, Tensor):
        found.append((path, out))
    elif isinstance(out, dict):
        for k, v in out.items():
            _walk(v, f"{path}[{k!r}]", found)
    elif isinstance(out, (tuple, list)):
        for i, v in enumerate(out):
            _walk(v, f"{path}[{i}]", found)
    else:
        raise ConfigError(f"the model's {path} is a {type(out).__name__}, not a tensor: return a tensor, "
                          "or tuples, lists or dicts of tensors")


def map_leaves(fn: Callable[[Tensor], Any], out: Any) -> Any:
    """``out`` rebuilt with ``fn(t)`` for every tensor ``t``, in the order of :func:`leaves`
    (tuples stay tuples, named tuples keep their type, dicts their keys)."""
    if isinstance(out, Tensor):
        return fn(out)
    if isinstance(out, dict):
        return type(out)((k, map_leaves(fn, v)) for k, v in out.items())
    items = [map_leaves(fn, v) for v in out]
    return type(out)(*items) if hasattr(out, "_fields") else type(out)(items)  # a namedtuple


def cat_outputs(outs: list[Any]) -> Any:
    """The outputs of consecutive batches as one structure, every leaf concatenated along its
    first (row) dimension and moved to the CPU.

    Raises:
        ConfigError: batches whose structures differ, or a leaf without a row dimension (a
            0-d tensor: one value per batch, not one per input row).
    """
    first = leaves(outs[0])
    for path, t in first:
        if t.dim() == 0:
            raise ConfigError(f"the model's {path} is a single value (a 0-d tensor), not one row per input "
                              "row: predictions need a row for every input")
    paths = [p for p, _ in first]
    columns: list[list[Tensor]] = [[] for _ in first]
    for out in outs:
        batch = leaves(out)
        if [p for p, _ in batch] != paths:
            raise ConfigError(f"the model returned outputs of different structures for different batches "
                              f"({', '.join(paths)} vs {', '.join(p for p, _ in batch)})")
        for column, (_, t) in zip(columns, batch, strict=True):
            column.append(t)
    joined = iter([torch.cat(column).cpu() for column in columns])
    return map_leaves(lambda _: next(joined), outs[0])


@torch.inference_mode()
def in_order(trainer: Any, model: torch.nn.Module, source: Any,
             limit: int | None = None) -> tuple[list[Any], list[Any]]:
    """``model``'s outputs and the targets of every batch of ``source``, in order, in eval mode
    without autograd (the model's mode is put back); batches of the trainer's evaluation size.
    ``limit``: stop after the batch that reaches this many rows (None: read them all)."""
    was_training = model.training
    model.eval()
    outs, targets, rows = [], [], 0
    try:
        for inputs, tgt in source.batches(trainer.config.eval_batch_size):
            if limit is not None and rows >= limit:
                break
            outs.append(trainer.forward(model, inputs))
            targets.append(tgt)
            rows += len(tgt)
    finally:
        model.train(was_training)
    return outs, targets

