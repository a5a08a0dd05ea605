"""``nnfit predict``: one prediction per row, image or sequence of the data, as CSV."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from ..checkpoint import atomic_write_text
from ..data.columns import Columns
from ..data.read import read_table
from ..errors import ConfigError
from ..io.layout import run_name
from ..learner import Learner
from ..loading import load


def _lenient(learner: Learner) -> bool:
    """Whether reading may keep gaps: the model fills them, or its column roles decide (a gap
    in a column a table model does not use is no error, and ``--no-impute`` refuses the rest)."""
    pre = learner.preprocessor
    return learner.imputes or (pre is not None and pre.table is not None)


def _prediction_rows(learner: Learner, data: Columns | str, proba: bool) -> tuple[list[str], list[list]]:
    """The header and rows of a prediction file: the columns naming each row (an image's
    path, a sequence id, a forecast's time) when the data has a layout, then the prediction
    (named after the target, or ``prediction``) and, with ``proba``, the class probabilities."""
    if isinstance(data, Columns) and learner.target_name in data.arrays:
        data.pop(learner.target_name)
    # once, for labels and probabilities alike; refuses NaN/inf
    out, keys = learner.prediction_keys(data)
    pred = learner.task.decode(out)
    name = learner.target_name or "prediction"
    if pred.ndim == 2:
        header = [f"{name}_{i}" for i in range(pred.shape[1])]
        rows = pred.tolist()
    else:
        header, rows = [name], [[v] for v in pred.tolist()]
    if keys:
        header = [*keys, *header]
        key_rows = zip(*[v.tolist() for v in keys.values()], strict=True)
        rows = [[*k, *r] for k, r in zip(key_rows, rows, strict=True)]
    if proba:
        p = learner.task.proba(out).double().numpy()
        header += [f"proba_{c}" for c in learner.classes]
        rows = [r + pr for r, pr in zip(rows, p.tolist(), strict=False)]
    return header, rows


def _check_output(output: str, data: str, run: str, overwrite: bool) -> None:
    """Refuse ``-o`` naming a file or folder of the run's layout inside RUN (whatever
    ``overwrite`` says: the run read from would be damaged), and ``-o`` naming DATA itself
    (by any path: a link, ``./x.csv``) unless ``overwrite``: the predictions would silently
    replace the input."""
    name = run_name(run, output)
    if name is not None:
        what = f"inside the run's {name}" if name.endswith("/") else f"the run's {name}"
        raise ConfigError(f"-o {output} is {what} in {run}: writing there would damage the run; "
                          "choose an output outside the run's files")
    try:
        same = Path(output).resolve() == Path(data).resolve() or Path(output).samefile(data)
    except OSError:  # -o does not exist yet (or cannot be looked at): not the input
        return
    if same and not overwrite:
        raise ConfigError(f"-o {output} is the input DATA file: choose another output, or pass "
                          "--overwrite to replace the input with the predictions")


def _check_not_read(output: str, paths: list[str], overwrite: bool) -> None:
    """Refuse ``-o`` naming one of the image files just read (unless ``overwrite``): the
    predictions would replace an input image with CSV text."""
    try:
        target = Path(output).resolve(strict=True)
    except OSError:  # -o does not exist yet: it is none of the inputs
        return
    hit = next((p for p in paths if Path(p).resolve() == target), None)
    if hit is not None and not overwrite:
        raise ConfigError(f"-o {output} is the input image {hit}: choose another output, or pass "
                          "--overwrite to replace it with the predictions")


def cmd_predict(args: argparse.Namespace) -> int:
    output = None if args.output == "-" else args.output  # "-": standard output, as for most tools
    items = args.data if isinstance(args.data, list) else [args.data]
    if output:
        for item in items:
            _check_output(output, item, args.run, args.overwrite)
    learner = load(args.run, device=args.device)
    if args.proba and learner.classes is None:
        raise ConfigError("--proba needs a classification model")
    pre = learner.preprocessor
    if len(items) > 1 and (pre is None or pre.layout is None or pre.layout.kind != "image"):
        raise ConfigError(f"one DATA file, got {len(items)}: several are read as the image files of "
                          "a model trained on images")
    if pre is not None and pre.layout is not None:  # the layout reads its own data (a folder...)
        data: Columns | str | list[str] = items[0] if len(items) == 1 else items
    else:
        data = read_table(items[0], exclude=learner.target_name, allow_missing=_lenient(learner))
    header, rows = _prediction_rows(learner, data, args.proba)
    if output and header[0] == "path":  # the images read: -o must not replace one of them
        _check_not_read(output, [r[0] for r in rows], args.overwrite)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    if output:
        atomic_write_text(output, buf.getvalue())
    else:
        print(buf.getvalue(), end="")
    return 0


# --------------------------------------------------------------------------- inspect / ls
