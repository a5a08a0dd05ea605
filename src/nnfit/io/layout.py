"""The run directory's layout: every name nnfit writes into a run, in one registry.

``--overwrite`` (``fit(overwrite=True)``) removes exactly the names in :data:`RUN_LAYOUT`, so
nothing of an earlier run (its checkpoints above all, which rotation would otherwise prefer to
the new run's) survives into the new one, while anything else a user keeps in the directory
stays. Inside a folder of the layout only the entries nnfit writes there (:data:`FOLDER_ENTRIES`)
are removed, and the folder itself only when nothing else is left in it. A feature that writes
a new file or folder into a run (plots, reports, logger folders, sweep members) adds its name
here (a folder with the pattern of its entries); ``tests/test_run_dir.py`` fails when a run
writes a name the registry lacks.

:func:`check_overwrite` decides whether a directory may be overwritten at all: only one that
holds an nnfit run (or is empty), and never when an input of the new run is a path clearing
would remove.

Example:
    >>> "checkpoints/" in RUN_LAYOUT and "config.json" in RUN_LAYOUT
    True
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from ..errors import ConfigError
from ..files import MANIFEST, fsync_dir, remove_bundle
from ..plots import FILES as PLOT_FILES
from ..plots import PLOTS_DIR
from .checkpoints import NAME

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
    PLOTS_DIR + "/": "loss, metric and validation plots (PNG) and worst.csv (nnfit.plots)",
    "report.html": "the one-file HTML report (nnfit report, --report)",
    "resumes.json": "when the run was resumed, from which epoch and step (the report shows it)",
    "metrics.jsonl": "--log jsonl: one JSON line per epoch and per logged step",
    "tensorboard/": "--log tensorboard: TensorBoard event files",
    "mlflow_run.json": "--log mlflow: the MLflow run's tracking URI and id, continued by a resume",
    "mlflow.db": "--log mlflow without MLFLOW_TRACKING_URI: the MLflow store (SQLite)",
    "mlflow.db-journal": "SQLite's rollback journal of mlflow.db, left by a writer killed mid-write",
    "mlartifacts/": "--log mlflow without MLFLOW_TRACKING_URI: the MLflow run's artifacts",
}

# What nnfit writes inside each folder of the layout: only these are removed with the run.
FOLDER_ENTRIES: dict[str, re.Pattern[str]] = {
    "checkpoints/": re.compile(r"(?:damaged-)?" + NAME.pattern),  # damaged: set aside by a resume
    PLOTS_DIR + "/": PLOT_FILES,
    "tensorboard/": re.compile(r"events\.out\.tfevents\..+"),
    "mlartifacts/": re.compile(r"[0-9a-f]{32}"),  # an MLflow run id
}

# The lock of the run's writer (nnfit.io.lock): in the run, but never part of a run's content.
LOCK_FILE = ".nnfit.lock"


def is_empty(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds nothing but (perhaps) its lock file: a run may start there
    without ``overwrite``."""
    return all(p.name == LOCK_FILE for p in Path(run_dir).iterdir())


def clear_run(run_dir: str | Path) -> list[str]:
    """Remove the earlier run's paths of :data:`RUN_LAYOUT` from ``run_dir``; returns them.

    A file's name goes (a link by itself, never what it points to; a directory under a file's name,
    or a file under a folder's, is not nnfit's and stays). In a folder only the entries
    :data:`FOLDER_ENTRIES` names for it go, then the folder if that left it empty. The manifest goes
    first, so an old model never verifies once a part of it is gone; a bundle is renamed to a
    temporary name before it is deleted (one atomic step). Call it only while holding the run's
    lock, after :func:`check_overwrite`. Other files stay.
    """
    d, removed = Path(run_dir), []
    for name in RUN_LAYOUT:
        p = d / name.rstrip("/")
        if p.is_symlink() or (p.exists() and not p.is_dir() and not name.endswith("/")):
            p.unlink()
            removed.append(name)
        elif name.endswith("/") and p.is_dir():
            removed += _clear_folder(p, name)
    if removed:
        fsync_dir(d)
    return removed


def _clear_folder(folder: Path, name: str) -> list[str]:
    """Remove the entries nnfit writes in ``folder`` (the layout's ``name``), then the folder
    when nothing else is in it."""
    removed = []
    for p in sorted(folder.iterdir()):
        if FOLDER_ENTRIES[name].fullmatch(p.name):
            if p.is_dir() and not p.is_symlink():
                remove_bundle(p)
            else:
                p.unlink()
            removed.append(name + p.name)
    try:
        folder.rmdir()
        removed.append(name)
    except OSError:  # a user's file is still in it: it stays, and so does the folder
        if removed:
            fsync_dir(folder)
    return removed


def holds_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` shows an nnfit run or saved model: a checkpoint bundle, or a
    manifest of nnfit's (read loosely: a damaged run is still a run)."""
    d = Path(run_dir)
    folder = d / "checkpoints"
    if folder.is_dir() and any(FOLDER_ENTRIES["checkpoints/"].fullmatch(p.name) for p in folder.iterdir()):
        return True
    if not (d / MANIFEST).is_file():  # a FIFO or a device there would block the open forever
        return False
    try:
        with open(d / MANIFEST, "rb") as f:
            body = json.loads(f.read(1 << 20))  # nnfit's is a few hundred bytes
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(body, dict) and body.get("kind") == "model"  # nnfit.io.model_dir.KIND


def check_overwrite(run_dir: str | Path, inputs: Iterable[str | Path | None] = (), *,
                    writer_died: bool = False) -> None:
    """Refuse to overwrite ``run_dir`` when that could delete what is not an earlier run's.

    A non-empty directory may be overwritten only when it holds an nnfit run
    (:func:`holds_run`, or ``writer_died``: its lock was taken over from an nnfit writer that
    died, perhaps before it wrote a manifest), and never when one of ``inputs`` (the new run's
    data and config files) is, or links to, a path :func:`clear_run` would remove.

    Args:
        run_dir: the directory to overwrite (a missing or empty one is always fine).
        inputs: paths the new run reads; None entries are skipped.
        writer_died: see :func:`nnfit.io.lock.taken_over`.

    Raises:
        ConfigError: naming the directory, and the input that overwriting would delete.
    """
    d = Path(run_dir)
    if not d.is_dir() or is_empty(d):
        return
    for p in inputs:
        name = None if p is None else _cleared_name(d, p)
        if name is not None:
            raise ConfigError(f"{p} is the run file {name} of {d}: overwriting {d} would delete "
                              "it; move it out of the run directory or write the run elsewhere")
    if not writer_died and not holds_run(d):
        raise ConfigError(f"{d} is not empty and holds no nnfit run: overwriting replaces "
                          "only an earlier run's files; choose a new or empty directory")


def check_run_target(run_dir: str | Path, overwrite: bool, inputs: Iterable[str | Path | None],
                     hint: str) -> None:
    """Refuse to start a new run in a non-empty ``run_dir`` unless ``overwrite``, and with it
    when :func:`check_overwrite` refuses (its ``writer_died`` read from the run's lock).

    Call it while holding the run's lock, so a run that finished a moment ago is seen.

    Args:
        run_dir: the new run's directory (a missing or empty one is always fine).
        overwrite: whether the caller was told to overwrite an earlier run.
        inputs: the new run's data and config files, as for :func:`check_overwrite`.
        hint: how the caller's user chooses otherwise, ending the message (the CLI's flags,
            the API's arguments).

    Raises:
        ConfigError: naming the directory.
    """
    from .lock import taken_over  # nnfit.io.lock imports this module

    d = Path(run_dir)
    if overwrite:
        check_overwrite(d, inputs, writer_died=taken_over(d))
    elif d.exists() and (not d.is_dir() or not is_empty(d)):
        raise ConfigError(f"{d} exists and is not empty: {hint}")


def run_name(run_dir: str | Path, path: str | Path) -> str | None:
    """The name of :data:`RUN_LAYOUT` (or the lock file) that ``path`` is or lies in inside
    ``run_dir`` (``"checkpoints/"`` for anything in that folder), or None.

    Both the path itself and what it links to count, so neither ``./``, ``..`` nor a link
    hides a run's file.
    """
    for parts in _inside(Path(run_dir), Path(path)):
        if parts and parts[0] in (*RUN_LAYOUT, LOCK_FILE):
            return parts[0]
        if parts and f"{parts[0]}/" in RUN_LAYOUT:
            return f"{parts[0]}/"
    return None


def _cleared_name(run_dir: Path, path: str | Path) -> str | None:
    """The path under ``run_dir`` that :func:`clear_run` would remove and ``path`` is or
    lies in (or links to), or None."""
    for parts in _inside(run_dir, Path(path)):
        if len(parts) == 1 and parts[0] in RUN_LAYOUT:
            return parts[0]
        folder = f"{parts[0]}/" if parts else ""
        if len(parts) > 1 and folder in FOLDER_ENTRIES and FOLDER_ENTRIES[folder].fullmatch(parts[1]):
            return "/".join(parts)
    return None


def _inside(run_dir: Path, path: Path) -> list[tuple[str, ...]]:
    """``path`` relative to ``run_dir`` as parts: for the entry itself (its folders' links
    resolved) and for what it finally points to, where these lie inside ``run_dir``."""
    try:
        root = run_dir.resolve()
        candidates = (path.absolute().parent.resolve() / path.name, path.resolve())
    except (OSError, RuntimeError):  # a link loop: nothing nnfit writes
        return []
    found = []
    for c in candidates:
        try:
            found.append(c.relative_to(root).parts)
        except ValueError:  # outside the run
            continue
    return found


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
