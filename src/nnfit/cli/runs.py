"""``nnfit runs compare RUN... [--out FILE.png]``: what differs between runs, and how they did.

One table (rows: the settings of ``config.json`` whose values differ between the runs, then
the epochs trained, the best monitored value and the final validation metrics of
``metrics.json``; columns: the runs) and, with ``--out``, one plot of their validation loss
per epoch, a line per run. Without ``--out`` nothing is written: comparing only reads (as
TensorBoard's and MLflow's comparisons do; the plot is asked for by naming its file).
A single run is accepted (its metrics, no differences): a script comparing "all runs so far"
should not fail on the first one.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

from ..config import effective_settings
from ..errors import ConfigError, DataError, printable
from ..files import read_json
from . import console


def read_run(path: str) -> dict[str, Any]:
    """A run directory's ``config.json``, ``history.csv`` rows and ``metrics.json`` (empty when
    the run has none: no validation data, or unfinished).

    Raises:
        ConfigError: ``path`` is not a directory holding a run's config.json.
        DataError: its config.json or history.csv cannot be read, named.
    """
    d = Path(path)
    if not d.is_dir() or not (d / "config.json").is_file():
        raise ConfigError(f"{printable(path)} is not a run directory (no config.json): give directories "
                          "written by nnfit train or fit(run_dir=...)")
    config = _json(d / "config.json")
    if not isinstance(config, dict):
        raise DataError(f"{printable(d / 'config.json')}: not a run's configuration (a JSON object)")
    metrics = _json(d / "metrics.json") if (d / "metrics.json").is_file() else {}
    return {"name": printable(path), "config": effective_settings(config),
            "history": _history(d / "history.csv"), "metrics": metrics if isinstance(metrics, dict) else {}}


def _json(path: Path) -> Any:
    """A JSON file of a run; a damaged one is a DataError naming it."""
    try:
        return read_json(path)
    except Exception as e:  # CheckpointError (damaged), OSError (unreadable)
        raise DataError(f"{printable(path)}: cannot be read ({e})") from None


def _history(path: Path) -> list[dict[str, Any]]:
    """The rows of ``history.csv``, values as text (the plot reads the numbers).

    Raises:
        DataError: a missing or unreadable file, or one without an ``epoch`` column.
    """
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{printable(path)}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if rows and "epoch" not in rows[0]:
        raise DataError(f"{printable(path)}: not a run's history (no epoch column)")
    for i, row in enumerate(rows):  # the table and the plot count epochs: a damaged one is named
        if not _whole(row["epoch"]):
            raise DataError(f"{printable(path)}: row {i + 1}: epoch {printable(str(row['epoch']))[:40]!r} "
                            "is not a whole number of epochs")
    return rows


def _whole(text: Any) -> bool:
    """Whether ``text`` is a positive whole number (``3``, ``3.0``), not NaN, infinite or 2.5."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and v >= 1 and v == int(v)


def _check_out(out: Path, runs: list[str], overwrite: bool) -> None:
    """Refuse an ``--out`` that would write inside a compared run (its plots, its checkpoints)
    or, without ``--overwrite``, replace an existing file.

    Raises:
        ConfigError: naming ``--out`` and why.
    """
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {printable(str(out))}: the overlay plot is a PNG; name a .png file")
    where = out.resolve()
    for run in runs:
        if where.is_relative_to(Path(run).resolve()):
            raise ConfigError(f"--out {printable(str(out))} is inside the run {printable(run)}: "
                              "write the plot outside the runs compared")
    if out.is_dir():
        raise ConfigError(f"--out {printable(str(out))} is a directory: name a .png file")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {printable(str(out))} exists: pass --overwrite to replace it")


def differing(configs: list[dict[str, Any]]) -> list[str]:
    """The keys whose values are not the same in every config (a missing key counts as a
    value), in first-seen order; every key of a single config.

    Example:
        >>> differing([{"lr": 0.1, "seed": 0}, {"lr": 0.01, "seed": 0, "epochs": 3}])
        ['lr', 'epochs']
    """
    keys = list(dict.fromkeys(k for c in configs for k in c))
    if len(configs) == 1:
        return []
    return [k for k in keys if len({json.dumps(c.get(k, "<unset>"), sort_keys=True, default=str)
                                    for c in configs}) > 1]


def _cell(v: Any) -> str:
    """A value for the table: numbers to 4 significant digits, lists joined, None as '-'."""
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ",".join(_cell(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


def table_rows(runs: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """``(field, [value per run])``: the differing settings, epochs, the best monitored value
    and every final metric (a confusion matrix and other lists left out)."""
    from ..plots.history import best_epoch

    rows = [(k, [_cell(r["config"].get(k)) for r in runs]) for k in differing([r["config"] for r in runs])]
    rows.append(("epochs trained", [str(len(r["history"])) for r in runs]))
    best = []
    for r in runs:
        monitor = str(r["config"].get("monitor") or "val_loss")
        found = best_epoch(r["history"], monitor)
        best.append("-" if found is None else f"{monitor} {found[1]:.4g} (epoch {found[0]})")
    rows.append(("best", best))
    names = dict.fromkeys(k for r in runs for k, v in r["metrics"].items() if not isinstance(v, (list, dict)))
    rows += [(f"val {k}", [_cell(r["metrics"].get(k)) for r in runs]) for k in names]
    return rows


def cmd_runs(args: argparse.Namespace) -> int:
    """``nnfit runs compare``: print the table; with ``--out``, draw the validation curves."""
    from rich.table import Table
    from rich.text import Text  # run names and labels are user data: "[red]" is no colour

    runs = [read_run(p) for p in args.runs]
    out = None if args.out is None else Path(args.out)
    if out is not None:  # before the table: nothing printed, nothing written on a refusal
        _check_out(out, args.runs, args.overwrite)
    table = Table(title="runs compared" + (" (no settings differ)" if len(runs) > 1 and not
                                           differing([r["config"] for r in runs]) else ""))
    table.add_column("")
    for r in runs:
        table.add_column(Text(r["name"]), overflow="fold")
    for name, values in table_rows(runs):
        table.add_row(Text(name), *map(Text, values))
    console().print(table)
    if out is not None:
        from ..plots.history import draw_overlay

        key = "val_loss" if any("val_loss" in row for r in runs for row in r["history"]) else "train_loss"
        draw_overlay([(r["name"], r["history"]) for r in runs], key, out)
        print(f"{key} curves written to {printable(out)}")
    return 0
