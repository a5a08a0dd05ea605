"""The run directory's layout: every name nnfit writes into a run, in one registry.

``--overwrite`` (``fit(overwrite=True)``) removes exactly the names in :data:`RUN_LAYOUT`, so
nothing of an earlier run (its checkpoints above all, which rotation would otherwise prefer to
the new run's) survives into the new one, while anything else a user keeps in the directory
stays. A feature that writes a new file or folder into a run (plots, reports, logger folders,
sweep members) adds its name here; ``tests/test_run_dir.py`` fails when a run writes a name
the registry lacks.

Example:
    >>> "checkpoints/" in RUN_LAYOUT and "config.json" in RUN_LAYOUT
    True
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..files import MANIFEST, fsync_dir, remove_bundle

# Every file and folder (trailing "/") nnfit writes into a run directory.
RUN_LAYOUT: dict[str, str] = {
    MANIFEST: "size and SHA-256 of the final model's files",
    "model.safetensors": "the final weights",
    "model.json": "task, labels, preprocessing, model spec, nnfit version",
    "config.json": "the resolved configuration",
    "checkpoints/": "checkpoint bundles: the newest keep_checkpoints plus the best",
    "history.csv": "one row per epoch",
    "metrics.json": "final validation metrics",
    "test.csv": "the held-out test split (nnfit train on a bundled dataset)",
    "test_metrics.json": "metrics on test.csv",
    "confusion_matrix.safetensors": "the confusion matrix of a target with many classes",
}

# The lock of the run's writer (nnfit.io.lock): in the run, but never part of a run's content.
LOCK_FILE = ".nnfit.lock"


def is_empty(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds nothing but (perhaps) its lock file: a run may start there
    without ``overwrite``."""
    return all(p.name == LOCK_FILE for p in Path(run_dir).iterdir())


def clear_run(run_dir: str | Path) -> list[str]:
    """Remove every path of :data:`RUN_LAYOUT` from ``run_dir``; returns the names removed.

    The manifest goes first, so an old model never verifies once a part of it is gone; a
    folder is renamed to a temporary name before it is deleted (one atomic step). Call it only
    while holding the run's lock. Other files stay.
    """
    d, removed = Path(run_dir), []
    for name in RUN_LAYOUT:
        p = d / name.rstrip("/")
        if p.is_dir() and not p.is_symlink():
            remove_bundle(p)
        elif p.is_symlink() or p.exists():
            p.unlink()
        else:
            continue
        removed.append(name)
    if removed:
        fsync_dir(d)
    return removed


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create and return ``root/NAME-N`` for the next free N (one past the highest there).

    The directory is claimed by creating it (``os.mkdir`` fails when another process took
    that name a moment ago: the next number is tried), so two runs started at once never share
    a directory.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(name) + r"-(\d+)")
    n = max((int(m.group(1)) for p in root.iterdir() if (m := pattern.fullmatch(p.name))), default=0)
    while True:
        n += 1
        try:
            os.mkdir(root / f"{name}-{n}", 0o777)
            return root / f"{name}-{n}"
        except FileExistsError:
            continue
