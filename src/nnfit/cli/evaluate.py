"""``nnfit evaluate``: the metrics of a run on labelled data."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..confusion import MAX_SHOWN_CLASSES, split_confusion
from ..data.read import read_table
from ..errors import ConfigError, printable
from ..loading import load
from ..run import jsonable_metrics
from ..tasks import CustomTask
from . import console, dumps
from .predict import _lenient


def _print_metrics(columns: dict[str, dict[str, Any] | None]) -> None:
    from rich.table import Table
    from rich.text import Text

    present = {k: v for k, v in columns.items() if v}
    if not present:
        return
    table = Table(title="metrics")
    table.add_column("metric")
    for name in present:
        table.add_column(Text(name), justify="right")  # Text: a file name is not markup
    keys = list(dict.fromkeys(k for v in present.values() for k in v if k not in _NOT_IN_TABLE))
    for k in keys:
        table.add_row(k, *[_fmt(v.get(k)) for v in present.values()])
    con = console()
    con.print(table)
    for name, v in present.items():
        # markup=False: labels are user data, and "[bold]" is a label like any other
        if "confusion_matrix" in v:
            con.print(f"confusion matrix ({name}; rows = true, columns = predicted): "
                      f"{v['confusion_matrix']}", markup=False)
        if "lowest_recall" in v:
            con.print(_per_class_summary(name, v), markup=False)


# Shown below the table, or not at all (a file name, the class count).
_NOT_IN_TABLE = ("confusion_matrix", "lowest_recall", "confusion_matrix_file", "num_classes")


def _per_class_summary(name: str, v: dict[str, Any]) -> str:
    """The terminal's view of a confusion matrix too large to print (see nnfit.confusion)."""
    where = (f"; in the run's {v['confusion_matrix_file']}, key {name!r}" if "confusion_matrix_file" in v
             else "")
    worst = ", ".join(f"{printable(repr(c['class']))} {c['recall']:.3f} "
                      f"({round(c['recall'] * c['support'])} of {c['support']})" for c in v["lowest_recall"])
    return (f"confusion matrix ({name}): {v['num_classes']} classes, too many to show (over "
            f"{MAX_SHOWN_CLASSES}){where}. Lowest recall: {worst}")


def _fmt(v: Any) -> str:
    """A metric as the table shows it: "-" for none (null in --json), as for NaN."""
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def cmd_evaluate(args: argparse.Namespace) -> int:
    learner = load(args.run, device=args.device)
    if isinstance(learner.task, CustomTask) and learner.task.fn is None:  # its loss was never saved
        raise learner.task.missing()
    target = args.target or learner.target_name
    pre = learner.preprocessor
    if pre is not None and pre.layout is not None:  # the layout reads its own data (a folder...)
        metrics = learner.evaluate(args.data, target=target)
    else:
        if target is None:
            raise ConfigError("name the target column with --target")
        metrics = learner.evaluate(read_table(args.data, exclude=target, allow_missing=_lenient(learner)),
                                   target=target)
    metrics.pop("loss", None)
    metrics, _ = split_confusion(metrics, learner.classes)  # no file: readers never write a run
    if args.json:
        print(dumps(jsonable_metrics(metrics)))
    else:
        # Named by the data, so the confusion line reads "(test.csv; rows = true, ...)".
        _print_metrics({printable(Path(args.data).name): metrics})
    return 0
