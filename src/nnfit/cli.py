"""The ``nnfit`` command: train, evaluate, predict, inspect, ls.

Each subcommand is a thin layer over the Python API. Every user mistake ends in one line on
stderr and exit status 2; nothing is written until the inputs have been checked.
"""

from __future__ import annotations

# Signal handling comes first, before this module imports anything else (argparse, nnfit's
# own modules): a Ctrl-C in the first milliseconds must end in one line and 130, not in a
# KeyboardInterrupt traceback from inside an import. os, signal and sys are loaded by the
# interpreter's start-up already, so these three imports cost nothing.
import os
import signal
import sys

_SIGNAL_LINES = {signal.SIGINT: "nnfit: interrupted", signal.SIGTERM: "nnfit: terminated"}


def _exit_at_once(signum: int, frame: object) -> None:
    """While modules load: one line and 128 + signum at once. A KeyboardInterrupt raised
    inside ``import torch`` leaves half-built modules that then fail in unrelated ways (a
    RecursionError, say), and nothing has been written yet that would need cleaning up."""
    os.write(2, (_SIGNAL_LINES[signum] + "\n").encode())
    os._exit(128 + signum)


def _started_as_nnfit() -> bool:
    """Whether this process is the ``nnfit`` command (the console script, or ``python -m
    nnfit``), not a program or test that imports this module: only then may importing it take
    over SIGINT and SIGTERM."""
    main = sys.modules.get("__main__")
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return spec_name == "nnfit.__main__" or os.path.splitext(script)[0] in ("nnfit", "nnfit-script")


if _started_as_nnfit():
    for _sig in _SIGNAL_LINES:
        signal.signal(_sig, _exit_at_once)

import argparse  # noqa: E402  (after the handlers, on purpose: see above)
import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from .errors import ConfigError, NnfitError, NnfitWarning, Stopped, printable  # noqa: E402

EPILOG = "Docs and examples: README.md. Errors exit with status 2."


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"nnfit: error: {printable(message)} (see {self.prog} --help)\n")


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # absent flags stay absent, so a config file's values survive
    add = p.add_argument
    add("items", nargs="*", metavar="DATA | key=value",
        help="a CSV/TSV/Parquet file, or a folder of class folders of images, to train on (omit "
             "for a bundled dataset) and any key=value config overrides (e.g. eval_batch_size=2048)")
    add("--target", default=S, help="target column of DATA")
    add("--dataset", default=S, help="bundled dataset when no DATA is given (default breast_cancer)")
    add("--task", default=S, choices=["auto", "binary", "multiclass", "regression"])
    add("--model", default=S,
        help="mlp or resmlp for tables (default mlp), cnn for images, lstm or gru for sequences")
    add("--hidden", default=S, help="hidden sizes, comma separated (default 64,64)")
    add("--activation", default=S, help="relu, gelu, tanh, sigmoid, leaky_relu, silu")
    add("--dropout", default=S, type=float, help="dropout probability (default 0)")
    add("--batchnorm", default=S, action="store_true",
        help="batch normalisation in hidden layers (on by default for cnn)")
    add("--no-batchnorm", dest="batchnorm", default=S, action="store_false", help="no batch normalisation")
    add("--channels", default=S, metavar="C,...",
        help="cnn channels per stage (default by image size: 32,64 up to 16 px, 32,64,128 up to 32 px, "
             "32,64,128,256 above)")
    add("--residual", default=S, action="store_true", help="cnn stages as residual blocks")
    add("--bidirectional", default=S, action="store_true", help="lstm/gru: read both directions")
    add("--readout", default=S, choices=["last", "mean"],
        help="lstm/gru output: the last state (default) or the mean over time")
    add("--optimizer", default=S, help="sgd, adam, adamw or rmsprop (default adam)")
    add("--lr", default=S, type=float, help="learning rate (default 1e-3; 3e-3 for cnn)")
    add("--momentum", default=S, type=float, help="momentum for sgd/rmsprop (default 0)")
    add("--weight-decay", dest="weight_decay", default=S, type=float, help="weight decay (default 0)")
    add("--scheduler", default=S,
        help="none, step, multistep, exponential, cosine, onecycle or plateau (default none)")
    add("--epochs", default=S, type=int, help="maximum epochs (default 100)")
    add("--batch-size", dest="batch_size", default=S, type=int, help="batch size (default 32)")
    add("--val-split", dest="val_split", default=S, type=float,
        help="fraction held out for validation (default 0.2)")
    add("--test-split", dest="test_split", default=S, type=float,
        help="fraction held out as a test set (default 0.2 for bundled datasets, else 0)")
    add("--patience", default=S, type=int, help="early-stopping patience in epochs, 0 = off (default 10)")
    add("--seed", default=S, type=int, help="random seed (default 0)")
    add("--impute", default=S, action="store_true",
        help="fill missing feature values (the default): numeric gaps with training medians "
             "plus a was-missing feature, categorical gaps with their own index")
    add("--no-impute", dest="impute", default=S, action="store_false",
        help="refuse missing feature values instead of filling them")
    add("--categorical", default=S, metavar="COL,...",
        help="columns to treat as categorical (e.g. integer-coded categories)")
    add("--numeric", default=S, metavar="COL,...", help="columns to treat as numeric")
    add("--drop", default=S, metavar="COL,...", help="columns never to use")
    add("--features", default=S, metavar="COL,...", help="use only these columns")
    add("--numeric-transform", dest="numeric_transform", default=S, choices=["standard", "quantile"],
        help="numeric columns: standardise (default), or quantile-map to normal scores first")
    _add_layout_flags(p)
    add("--device", default=S, help="auto, cpu, cuda or cuda:N (default auto)")
    add("--config", default=None, help="YAML or TOML config file; flags override it")
    add("--out", default=None, help="run directory (default runs/NAME-N)")
    add("--resume", default=None, metavar="RUN_DIR",
        help="continue a run from its newest valid checkpoint (same settings and data)")
    add("--force-resume", dest="force_resume", action="store_true",
        help="with --resume: continue even though settings or data changed (the changes are listed)")
    add("--overwrite", action="store_true",
        help="start over in an existing --out: the earlier run's files are removed, yours stay")
    add("--quiet", default=S, action="store_true", help="no progress display")


def _add_layout_flags(p: argparse.ArgumentParser) -> None:
    """The flags of data beyond rows of features: images, sequences, time series."""
    S = argparse.SUPPRESS  # absent flags stay absent, so a config file's values survive
    add = p.add_argument
    add("--image-size", dest="image_size", default=S, metavar="H,W",
        help="resize every image to H,W (default: all images must have one size)")
    add("--augment", default=S, choices=["auto", "none", "crop", "flip", "crop,flip"],
        metavar="auto|none|crop|flip|crop,flip",
        help="training-only image augmentation (default auto: random crops and horizontal flips for "
             "colour images, none for greyscale ones)")
    add("--image-cache", dest="image_cache", default=S, action="store_true",
        help="cache decoded images next to the image folder, keyed by content")
    add("--sequence-id", dest="sequence_id", default=S, metavar="COL",
        help="long-format sequences: the column naming each row's sequence (one label per sequence)")
    add("--time", default=S, metavar="COL", help="the column ordering rows in time")
    add("--window", default=S, type=int, metavar="W",
        help="forecast each row from the W rows before it (with --time)")
    add("--horizon", default=S, type=int, metavar="H", help="forecast H rows ahead (default 1)")
    add("--season", default=S, type=int, metavar="P",
        help="seasonal-naive baseline period in rows (default: from the time column's frequency)")


def build_parser() -> argparse.ArgumentParser:
    """The ``nnfit`` argument parser with all subcommands."""
    from . import __version__

    parser = _Parser(prog="nnfit", description="Train, evaluate, save and inspect PyTorch models.",
                     epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"nnfit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a model on a table, an image folder, sequences, a time "
                       "series or a bundled dataset",
                       description="Train a model and write a run directory.", epilog=EPILOG)
    _add_train_flags(p)

    p = sub.add_parser("evaluate", help="metrics of a trained run on labelled data",
                       description="Print the metrics of RUN on DATA: a table holding the target column (the "
                                   "run's sequence id and time columns too, for sequences and forecasts), "
                                   "or a folder of class folders for an image model.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--target", default=None, help="target column (default: the one trained on)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")

    p = sub.add_parser("predict", help="write predictions for DATA",
                       description="Predict every row of DATA, in order; for a model trained on "
                                   "images every image of a folder or of the image files given (a path "
                                   "column first), on sequences one row per sequence id, on a time series "
                                   "every row with enough rows before it (the time column first).")
    p.add_argument("run", metavar="RUN")
    p.add_argument("data", metavar="DATA", nargs="+", help="a table, or image files or a folder")
    p.add_argument("-o", "--output", default=None, help="output CSV (default, or -: standard output)")
    p.add_argument("--proba", action="store_true", help="add one probability column per class")
    p.add_argument("--overwrite", action="store_true", help="allow -o to name DATA itself")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")

    p = sub.add_parser("inspect", help="layer table and parameter counts of a run's model",
                       description="Print the model summary of RUN.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    sub.add_parser("ls", help="list models, optimizers, schedulers, losses and bundled datasets",
                   description="List everything a config or flag can name.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nnfit`` command; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "train" and not any(e.startswith("-") for e in extra):
        # argparse fills nargs="*" only once: `train data.csv --target y lr=0.1` leaves lr=0.1
        args.items += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        import warnings

        from . import cli_commands

        _imports_done()
        with warnings.catch_warnings():
            warnings.simplefilter("always", NnfitWarning)  # shown, whatever the filters say
            warnings.showwarning = _show_warning
            _HELD.clear()
            _HELD.append([])  # held until the inputs check out: see release_warnings
            status = getattr(cli_commands, f"cmd_{args.command}")(args)
            release_warnings()
            return status
    except Stopped as e:  # a graceful stop by SIGINT/SIGTERM, checkpoint committed
        release_warnings()
        _say(f"nnfit: {e}")
        return e.exit_code
    except NnfitError as e:
        # Bad input: its one line is the answer; warnings about the same input are dropped
        # (shown already when training had started).
        _HELD.clear()
        _say(f"nnfit: error: {e}")
        return e.exit_code
    except OSError as e:  # the file system said no: a full disk, a directory, no permission
        where = f"{e.filename}: " if e.filename else ""
        _say(f"nnfit: error: {where}{e.strerror or e}")
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM outside training (see run)
        return _interrupted(e)
    except Exception as e:  # a bug, not bad input: one line unless debugging
        if os.environ.get("NNFIT_DEBUG"):
            raise
        _say(f"nnfit: internal error: {type(e).__name__}: {e} (NNFIT_DEBUG=1 shows the traceback)")
        return 1


def _say(line: str) -> None:
    """One line on stderr, whatever the message holds (a column name with a newline or an
    escape sequence, say): the last line of defence after NnfitError's own escaping."""
    print(printable(line), file=sys.stderr)


_HELD: list[list[str]] = []  # warnings not shown yet: [] outside a command, [lines] inside


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:
    """Warnings as one ``nnfit: warning:`` line on stderr; held while a command still checks
    its inputs, so bad input ends with its one error line alone."""
    if _HELD:
        _HELD[0].append(f"nnfit: warning: {message}")
    else:
        _say(f"nnfit: warning: {message}")


def release_warnings() -> None:
    """Show the warnings held so far and any later ones at once: the inputs checked out
    (training starts, or the command is done)."""
    for line in _HELD.pop() if _HELD else []:
        _say(line)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived outside the training loop (which handles them itself).

    Attributes:
        signum: the signal; the exit status is 128 + signum.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupted(e: KeyboardInterrupt) -> int:
    """Say which signal stopped nnfit, in one line; returns the exit status 128 + signum."""
    signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
    print(_SIGNAL_LINES[signum], file=sys.stderr)
    return 128 + signum


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def _imports_done() -> None:
    """From here on a signal raises :class:`Interrupted`, so writes in progress clean up their
    temporaries; only when :func:`run` installed the early handlers (never in-process)."""
    for sig in _SIGNAL_LINES:
        if signal.getsignal(sig) is _exit_at_once:
            signal.signal(sig, _raise_interrupted)


def run() -> None:
    """The process entry point (``nnfit``, ``python -m nnfit``): :func:`main`, then exit.

    SIGINT and SIGTERM are handled before the heavy imports (torch takes about a second): the
    process ends with one line and 130 / 143, never a traceback or death by signal. As the
    ``nnfit`` command, the handlers are installed by the first lines of this module, before
    it imports anything (``import nnfit`` before it loads nothing, see ``nnfit/__init__.py``);
    imported otherwise, by this function's first line. Only a signal during the interpreter's
    own start-up, before any code of nnfit's runs, still ends the process the default way.

    The exit skips C++ static destructors (``os._exit`` after flushing): right after a
    multi-threaded pyarrow read a reader thread may still be winding down, and with torch
    loaded an ordinary exit then sometimes aborts (SIGABRT, status 134) instead of returning
    the status nnfit chose. Every file nnfit writes is closed and fsynced before this point.
    """
    for sig in _SIGNAL_LINES:
        signal.signal(sig, _exit_at_once)
    try:
        status = main()
    except KeyboardInterrupt as e:  # a signal between main's own handlers
        status = _interrupted(e)
    except SystemExit as e:  # argparse: --help, --version and usage errors
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        if isinstance(e.code, str):
            print(printable(e.code), file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to deliver
            pass
    os._exit(status)


def split_items(items: list[str]) -> tuple[str | None, dict[str, Any]]:
    """Split positional ``train`` arguments into DATA and ``key=value`` overrides."""
    data, overrides = None, {}
    for item in items:
        if "=" in item and not _exists(item):
            key, _, value = item.partition("=")
            overrides[key.strip().replace("-", "_")] = value
        elif data is None:
            data = item
        else:
            raise ConfigError(f"more than one DATA argument: {data!r} and {item!r}")
    return data, overrides


def _exists(path: str) -> bool:
    try:
        return Path(path).exists()
    except OSError:  # a name too long to be a file: an override such as lr=0.000...1
        return False


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys set by flags on the command line."""
    skip = {"command", "items", "config", "out", "resume", "overwrite", "force_resume"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def dumps(obj: Any) -> str:
    """JSON for the terminal."""
    return json.dumps(obj, indent=2)
