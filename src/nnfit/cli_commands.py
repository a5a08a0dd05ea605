"""The work behind each ``nnfit`` subcommand (imported only after arguments parse, so
``--help`` stays fast)."""

from __future__ import annotations

import argparse
import csv
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

from .callbacks import Callback
from .checkpoint import atomic_write_text, read_json
from .cli import dumps, flag_values, release_warnings, split_items
from .config import ModelConfig, RunConfig, check_names, make_run_config, read_config_file
from .confusion import MAX_SHOWN_CLASSES, split_confusion
from .data.columns import Columns, read_columns, write_csv
from .data.layouts import IMAGE_MODELS, is_image_path, layout_kind
from .data.layouts import module as layout_module
from .data.read import read_table
from .data.split import split_indices, stratify_labels
from .errors import ConfigError, DataError, Stopped, printable
from .io.layout import check_run_target, new_run_dir, run_name
from .io.lock import hold_run_dir
from .io.model_dir import resume_config
from .learner import Learner, fit, load
from .models import BUILT_IN_STACKS, CLI_MODELS
from .run import jsonable_metrics, write_metrics
from .tasks import CustomTask

# `nnfit train --model cnn`'s learning rate when none is given: over ten seeds of the digits
# test split, 3e-3 scored 0.9928 on average (lowest 0.9861) where 1e-3 scored 0.9909 (0.9861)
# and stopped later.
CNN_LR = 3e-3


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------- train
def _config(args: argparse.Namespace) -> RunConfig:
    data_arg, overrides = split_items(args.items)
    values: dict[str, Any] = {}
    if args.resume:  # config.json as its manifest covers it, checked (nnfit.io.model_dir)
        values.update(resume_config(args.resume))
    if args.config:
        values.update(read_config_file(args.config))
    values.update(overrides)
    values.update(flag_values(args))
    if data_arg is not None:
        values["data"] = data_arg
    if "model" not in values:  # the family the data asks for: a cnn for images, an lstm for sequences
        if values.get("data") is not None and is_image_path(values["data"]):
            values["model"] = "cnn"
        elif values.get("sequence_id") is not None or values.get("window"):
            values["model"] = "lstm"
    cfg = make_run_config(values)
    check_names(cfg)
    if cfg.model.batchnorm is None:  # recorded as the family's default: on for cnn only
        cfg = replace(cfg, model=replace(cfg.model, batchnorm=cfg.model.model == "cnn"))
    if cfg.model.model == "cnn" and "lr" not in values:  # recorded in config.json like any setting
        cfg = replace(cfg, train=replace(cfg.train, lr=CNN_LR))
    return cfg


def _training_columns(cfg: RunConfig) -> tuple[Columns | str, str | None, str, str]:
    """Columns (the data path for an image folder or image files), target name (None for
    images: the folders are the labels), task name and a short run name for the data."""
    d = cfg.data
    if d.data is not None and (is_image_path(d.data) or (cfg.model.model in IMAGE_MODELS
                                                         and d.target is None)):
        # image folders and files, and a table of image paths with a `label` column: the image
        # layout reads them itself (the folders, or that column, are the labels)
        p = Path(d.data).resolve()
        return d.data, d.target, d.task, (p.name if p.is_dir() else p.stem) or "images"
    if d.data is not None and cfg.train.sequence_id is not None:
        if d.target is None:
            raise ConfigError("--target is required with a data file")
        # The sequence layout reads the file itself: ids and times keep their exact values (the
        # table reader's float32 block would round integers above 2**24).
        return d.data, d.target, d.task, Path(d.data).stem
    if d.data is not None:
        if d.target is None:
            raise ConfigError("--target is required with a data file")
        # Gaps are kept: the column roles fill or (with --no-impute) refuse them, per column.
        # A series to forecast is read at full precision: the float32 block would round a
        # numeric time column (epoch seconds) into repeated times.
        read = read_columns if cfg.train.window else read_table
        cols = read(d.data, exclude=d.target, allow_missing=True)
        if d.target not in cols.arrays:
            raise DataError(f"{d.data}: target column {d.target!r} not found "
                            f"(columns: {', '.join(cols.names[:12])})")
        return cols, d.target, d.task, Path(d.data).stem
    from .datasets import load_dataset

    cols, target, task = load_dataset(d.dataset)
    if d.target is not None and d.target != target:
        raise ConfigError(f"dataset {d.dataset!r} has target {target!r}, not {d.target!r}")
    return cols, target, task if d.task == "auto" else d.task, d.dataset


def _run_dir(args: argparse.Namespace, name: str) -> tuple[Path, list[Path]]:
    """The run directory, and the directories just created for it (``runs/NAME-N``, claimed
    by creating it, and ``runs`` when new): removed again if the run fails to start."""
    if args.resume:
        return Path(args.resume), []
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out} exists and is not a directory: choose another --out")
        return out, []
    root = Path("runs")
    made = [] if root.is_dir() else [root]
    out = new_run_dir(root, name)
    return out, [out, *made]


def _check_out(out: Path, args: argparse.Namespace, inputs: list[str | None]) -> None:
    """Refuse to train into a non-empty ``--out`` without ``--overwrite``, and with it when
    ``--out`` holds no nnfit run or clearing it would delete one of ``inputs`` (the data and
    config files); checked under the run's lock, so a run that finished a moment ago is seen."""
    if not args.out or args.resume:
        return
    check_run_target(out, args.overwrite, inputs, "choose another --out or pass --overwrite")


class _InputsChecked(Callback):
    """Shows the warnings the CLI held while the data was checked, once training starts."""

    def on_fit_start(self, trainer: Any) -> None:
        release_warnings()


def _model_spec(m: ModelConfig) -> dict[str, Any]:
    """The spec of the built-in model the flags describe (sizes from the data come later)."""
    spec: dict[str, Any] = {"name": m.model, "activation": m.activation, "dropout": m.dropout}
    if m.model in BUILT_IN_STACKS:
        spec["hidden"] = list(m.hidden)
    elif m.model == "cnn":
        spec["residual"] = m.residual
        if m.channels:  # none: the image layout's default by image size
            spec["channels"] = list(m.channels)
    else:  # lstm, gru: one recurrent layer per --hidden entry
        spec.update(hidden=list(m.hidden), bidirectional=m.bidirectional, readout=m.readout)
        spec.pop("activation")
    if m.model not in ("lstm", "gru"):
        spec["batchnorm"] = bool(m.batchnorm)
    return spec


def _hold_out(cfg: RunConfig, data: Columns | str, target: str | None,
              task: str) -> tuple[Any, Any, int]:
    """The training part and the test part (``--test-split``) of the data, and the test size:
    rows of a table (stratified), whole sequences, the last part of a series, or image files,
    as the data's layout holds out."""
    test_split = cfg.data.test_split if cfg.data.test_split is not None else (
        0.2 if cfg.data.data is None else 0.0)
    kind = layout_kind(data, cfg.train, cfg.model.model)
    if kind is not None:
        return layout_module(kind).hold_out(data, test_split, cfg.train, target, task)
    assert isinstance(data, Columns) and target is not None
    train_idx, test_idx = split_indices(len(data), test_split, cfg.train.seed,
                                        stratify_labels(data.arrays[target], task))
    return data.take(train_idx), data.take(test_idx), len(test_idx)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg.model.model not in CLI_MODELS:
        raise ConfigError(f"--model must be one of {', '.join(CLI_MODELS)}, got {cfg.model.model!r}")
    cols, target, task, name = _training_columns(cfg)
    train_cols, test_cols, n_test = _hold_out(cfg, cols, target, task)
    spec = _model_spec(cfg.model)
    record = cfg.to_dict()
    if record["data"] is not None:  # absolute, so `--resume` works from any directory
        record["data"] = str(Path(record["data"]).resolve())
    out, made = _run_dir(args, name)
    # One writer per run: the lock covers fit and the test files written after it (fit takes
    # it again, re-entrantly); a second writer is refused here, before anything is written.
    with hold_run_dir(out, create=not args.resume, made=made):
        _check_out(out, args, [cfg.data.data, args.config])
        try:
            learner = fit(spec, train_cols, target=target, task=task, config=cfg.train, run_dir=out,
                          run_config=record, resume=out if args.resume else None,
                          overwrite=args.overwrite, force_resume=args.force_resume,
                          callbacks=[_InputsChecked()])
        except Stopped as e:
            raise Stopped(f"{e}; resume with: nnfit train --resume {out}", e.exit_code - 128) from None
        val = read_json(out / "metrics.json") if (out / "metrics.json").is_file() else None
        test = None
        kind = layout_kind(cols, cfg.train, cfg.model.model)
        if n_test and kind is not None:  # the layout writes its own test.csv (paths, whole sequences)
            test_file = layout_module(kind).write_test(out / "test.csv", test_cols, cfg.train, target)
            test = learner.evaluate(str(test_file), target=target)
            test.pop("loss", None)
            test = write_metrics(out, "test", test, learner.classes)
        elif n_test:
            write_csv(out / "test.csv", test_cols)
            test_cols.source = str(out / "test.csv")  # its rows, as errors number them
            test_cols.rows = None
            test = learner.evaluate(test_cols, target=target)
            test.pop("loss", None)
            test = write_metrics(out, "test", test, learner.classes)
    if not cfg.train.quiet and learner.stop_reason:
        _console().print(learner.stop_reason)
    _print_metrics({"validation": val, "test": test})
    print(f"run written to {printable(out)}")
    return 0


# ------------------------------------------------------------------------- evaluate/predict
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
    con = _console()
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
def cmd_inspect(args: argparse.Namespace) -> int:
    from .summary import parameter_shapes

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
    con = _console()
    con.print(summary.table())
    task = learner.task.to_dict()
    con.print(f"task: {task['name']}" + (f", classes: {task['classes']}" if "classes" in task else ""),
              markup=False)  # labels are user data: "[red]" is a label, not a colour
    if table is not None:
        con.print(table.summary(), markup=False)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .datasets import DATASETS
    from .models import ACTIVATIONS, MODELS
    from .optim import OPTIMIZERS, SCHEDULERS
    from .tasks import LOSSES

    con = _console()
    for title, reg in [("models", MODELS), ("optimizers", OPTIMIZERS), ("schedulers", SCHEDULERS),
                       ("losses", LOSSES), ("activations", ACTIVATIONS), ("datasets", DATASETS)]:
        table = Table(title=title, title_justify="left")
        table.add_column("name")
        table.add_column("description")
        for e in reg.entries():
            table.add_row(e.name, e.help)
        con.print(table)
    return 0
