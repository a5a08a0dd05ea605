"""``nnfit lr-find``: a learning-rate range test on the data ``nnfit train`` would train on,
printing the suggested rate; nothing of a run is read or written."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import ConfigError, printable
from ..models import CLI_MODELS

# The range test's own flags: not TrainConfig fields, so kept out of the training config.
RANGE_FLAGS = ("out", "steps", "start_lr", "end_lr", "overwrite")
OUTPUTS = ("lr_find.png", "lr_find.csv")


def _check_out(out: str | None, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, a run directory or inside one (lr-find leaves runs
    unchanged: a file in a checkpoint bundle makes a resume call it damaged), or that holds
    lr-find's outputs already unless ``overwrite``; before the test runs.

    Raises:
        ConfigError: naming ``--out``.
    """
    from ..io.layout import holds_run

    if out is None:
        return
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {printable(out)} exists and is not a directory")
    if path.is_dir() and holds_run(path):
        raise ConfigError(f"--out {printable(out)} holds an nnfit run, which lr-find leaves unchanged: "
                          "choose another directory")
    # resolved: "run/checkpoints/../plots" and links into a run are inside it too
    for folder in path.resolve().parents:
        if holds_run(folder):
            raise ConfigError(f"--out {printable(out)} is inside the nnfit run {printable(folder)}, which "
                              "lr-find leaves unchanged: choose a directory outside it")
    existing = [name for name in OUTPUTS if os.path.lexists(path / name)]
    if existing and not overwrite:
        raise ConfigError(f"--out {printable(out)} already holds {' and '.join(existing)}: pass "
                          "--overwrite to replace them")


def cmd_lr_find(args: argparse.Namespace) -> int:
    """Run the range test on the training part of the data (``--test-split`` and the
    validation split held out as ``nnfit train`` holds them out) and print the suggestion;
    with ``--out``, write ``lr_find.png`` and ``lr_find.csv`` there."""
    from ..lr_range import lr_find, write_outputs
    from . import release_warnings
    from .train import _config, _hold_out, _model_spec, _training_columns

    _check_out(args.out, args.overwrite)
    train_args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in RANGE_FLAGS},
                                    resume=None)
    cfg = _config(train_args)
    if cfg.model.model not in CLI_MODELS:
        raise ConfigError(f"--model must be one of {', '.join(CLI_MODELS)}, got {cfg.model.model!r}")
    cols, target, task, _ = _training_columns(cfg)
    train_cols, _, _ = _hold_out(cfg, cols, target, task)
    result = lr_find(_model_spec(cfg.model), train_cols, target=target, task=task, config=cfg.train,
                     start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps)
    release_warnings()  # the data's and the test's warnings come before its result
    if args.out is not None:
        png, csv = write_outputs(result, args.out)
        print(f"wrote {printable(png)} and {printable(csv)}")
    if result.suggestion is None:
        raise ConfigError(f"lr-find: {result.rule}")
    print(f"suggested lr: {result.suggestion:.3g} ({result.rule}; {result.stop})")
    return 0
