"""``nnfit inspect`` and ``nnfit ls``: a run's model, and everything a setting can name."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..errors import printable
from ..learner import Learner
from ..loading import load
from . import console, dumps

if TYPE_CHECKING:
    from ..sweep.ensemble import Ensemble


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..summary import parameter_shapes

    learner = load(args.run, device="cpu")
    if not isinstance(learner, Learner):  # a sweep's ensemble
        return _inspect_ensemble(learner, args.json)
    summary = learner.summary()
    table = None if learner.preprocessor is None else learner.preprocessor.table
    if args.json:
        d = summary.to_dict()
        d["parameter_shapes"] = {k: list(v) for k, v in parameter_shapes(learner.model).items()}
        if table is not None:
            d["columns"] = table.to_dict()
        print(dumps(d))
        return 0
    con = console()
    con.print(summary.table())
    task = learner.task.to_dict()
    con.print(f"task: {task['name']}" + (f", classes: {task['classes']}" if "classes" in task else ""),
              markup=False)  # labels are user data: "[red]" is a label, not a colour
    if table is not None:
        con.print(table.summary(), markup=False)
    return 0


def _inspect_ensemble(ens: Ensemble, as_json: bool) -> int:
    """An ensemble's members, one line (or JSON object) each: name, model and parameters; then
    the task and the columns (member 0's: every member reads the same ones)."""
    from rich.table import Table
    from rich.text import Text

    members = [(name, m.spec["name"] if m.spec else type(m.model).__name__, m.summary())
               for name, m in zip(ens.names, ens.members, strict=True)]
    task = ens.task.to_dict()
    table = None if ens.preprocessor is None else ens.preprocessor.table
    if as_json:
        d = {"kind": "ensemble", "combine": "mean", "task": task,
             "members": [{"name": n, "model": kind, **s.to_dict()} for n, kind, s in members]}
        if table is not None:
            d["columns"] = table.to_dict()
        print(dumps(d))
        return 0
    what = "probabilities" if ens.classes is not None else "predictions"
    out = Table(title=f"ensemble of {len(ens)} members: the mean of their {what}", title_justify="left")
    for column in ("member", "model", "params"):
        out.add_column(column, justify="right" if column == "params" else "left")
    for name, kind, s in members:
        out.add_row(Text(printable(name)), kind, str(s.total_params))  # Text: a name is not markup
    con = console()
    con.print(out)
    con.print(f"task: {task['name']}" + (f", classes: {task['classes']}" if "classes" in task else ""),
              markup=False)
    if table is not None:
        con.print(table.summary(), markup=False)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..datasets import DATASETS
    from ..models import ACTIVATIONS, MODELS
    from ..optim import OPTIMIZERS, SCHEDULERS
    from ..tasks import LOSSES

    con = console()
    for title, reg in [("models", MODELS), ("optimizers", OPTIMIZERS), ("schedulers", SCHEDULERS),
                       ("losses", LOSSES), ("activations", ACTIVATIONS), ("datasets", DATASETS)]:
        table = Table(title=title, title_justify="left")
        table.add_column("name")
        table.add_column("description")
        for e in reg.entries():
            table.add_row(e.name, e.help)
        con.print(table)
    return 0
