"""A run's checkpoints: how they are named, which are committed, and the newest that verifies.

A checkpoint directory of ``RUN/checkpoints/`` is named from the loop's counters:
``step-000000120`` inside an epoch, ``step-000000150-epoch-00003`` at the end of epoch 3
(:func:`checkpoint_name`). :data:`NAME` is the one pattern of those names: the run directory's
layout, the checkpoint schema and the listing here all use it.

Example:
    >>> checkpoint_name(150, 3)
    'step-000000150-epoch-00003'
    >>> bool(NAME.fullmatch(checkpoint_name(120, None)))
    True
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from ..checkpoint import STATE_JSON, STATE_TENSORS, parse_checkpoint
from ..errors import CheckpointError, warn
from ..files import clean_temporaries, read_bundle

CHECKPOINTS = "checkpoints"
# Groups: the step, and the epoch of a checkpoint taken at an epoch's end (None inside one).
# The padding is a minimum: a longer number still matches, and sorts by its value.
NAME = re.compile(r"step-(\d{9,})(?:-epoch-(\d{5,}))?")


def checkpoint_name(step: int, epoch_end: int | None) -> str:
    """``step-000000120`` inside an epoch, ``step-000000150-epoch-00003`` at the end of one."""
    return f"step-{step:09d}" + (f"-epoch-{epoch_end:05d}" if epoch_end is not None else "")


def committed(run_dir: str | Path) -> list[str]:
    """Names of the committed checkpoints of a run, oldest first."""
    d = Path(run_dir) / CHECKPOINTS
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), m.group(2) is not None, p.name) for p in d.iterdir()
             if p.is_dir() and (m := NAME.fullmatch(p.name))]
    return [name for *_, name in sorted(found)]


def latest_checkpoint(run_dir: str | Path, set_aside: bool = False,
                      ) -> tuple[Path, dict[str, Tensor], dict[str, Any]]:
    """The newest checkpoint of ``run_dir`` that verifies, as ``(directory, tensors, meta)``.

    Damaged checkpoints (files that do not match their manifest) are skipped with a warning
    naming the file and why; with ``set_aside`` (a resume, which will write new checkpoints)
    they are renamed ``damaged-NAME`` so rotation never counts them. Temporaries of a writer
    that was killed are removed (with a warning).

    Raises:
        CheckpointError: no run there, or no valid checkpoint in it, or the newest one that
            verifies holds what no nnfit writes (not JSON, not a checkpoint's object, tensors
            that do not parse): its bytes are as written, so it is refused, not skipped.
    """
    p = Path(run_dir)
    if not p.is_dir():
        raise CheckpointError(f"{p}: no such run directory")
    for name in clean_temporaries(p / CHECKPOINTS):
        warn(f"removed {p / CHECKPOINTS / name}: an unfinished checkpoint of a run killed while saving")
    names = committed(p)
    if not names:
        raise CheckpointError(f"{p}: no checkpoint to resume from")
    problems = []
    for name in reversed(names):
        try:
            files = read_bundle(p / CHECKPOINTS / name, "checkpoint", (STATE_TENSORS, STATE_JSON))
        except CheckpointError as e:
            problems.append(str(e))
            aside = ""
            if set_aside:
                os.rename(p / CHECKPOINTS / name, p / CHECKPOINTS / f"damaged-{name}")
                aside = f" (kept as damaged-{name})"
            warn(f"skipping checkpoint {name}{aside}: {e}")
            continue
        d = p / CHECKPOINTS / name
        return (d, *parse_checkpoint(files, d, required=("learner", "optimizer")))
    raise CheckpointError(f"{p}: no valid checkpoint ({'; '.join(problems)})")
