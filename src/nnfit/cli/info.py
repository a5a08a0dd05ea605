"""``nnfit inspect`` and ``nnfit ls``: a run's model, and everything a setting can name."""

from __future__ import annotations

import argparse

from ..learner import load
from . import console, dumps


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..summary import parameter_shapes

    learner = load(args.run, device="cpu")
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
