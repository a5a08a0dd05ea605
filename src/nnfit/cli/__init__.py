"""The ``nnfit`` command: train, evaluate, predict, inspect, ls, report, lr-find, runs.

Each subcommand is a thin layer over the Python API, in a module of its own here (loaded
only when it runs: see :data:`COMMANDS`). Every user mistake ends in one line on
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
import importlib  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from ..errors import ConfigError, NnfitError, NnfitWarning, Stopped, printable  # noqa: E402
from .parser import EPILOG, build_parser, torchrun_env  # noqa: E402,F401  (re-exported)

# The module that runs each subcommand, imported only when that command runs.
COMMANDS = {"train": "train", "evaluate": "evaluate", "predict": "predict", "inspect": "info",
            "ls": "info", "report": "report", "lr-find": "lr_find", "runs": "runs", "sweep": "sweep"}



def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nnfit`` command; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command in ("train", "sweep") and not any(e.startswith("-") for e in extra):
        # argparse fills nargs="*" only once: `train data.csv --target y lr=0.1` leaves lr=0.1
        args.items += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        import warnings

        if args.command in ("sweep", "lr-find") and torchrun_env()[1] > 1:
            raise ConfigError(f"nnfit {args.command} runs in one process: start it without torchrun "
                              "(nnfit train takes torchrun --nproc-per-node N)")
        if _RANK and args.command not in RANKED:  # under torchrun: rank 0 runs it alone
            return 0
        if args.command not in RANKED and torchrun_env()[1] > 1:  # ... as one process, in no group
            os.environ.update(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0")
        if _RANK:  # rank 0 prints the results and progress; the others say only what fails
            sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (for the rest of the process)
        module = importlib.import_module(f".{COMMANDS[args.command]}", __name__)

        _imports_done()
        with warnings.catch_warnings():
            warnings.simplefilter("always", NnfitWarning)  # shown, whatever the filters say
            warnings.showwarning = _show_warning
            _HELD.clear()
            _HELD.append([])  # held until the inputs check out: see release_warnings
            status = getattr(module, "cmd_" + args.command.replace("-", "_"))(args)
            release_warnings()
            return status
    except Stopped as e:  # a graceful stop by SIGINT/SIGTERM, checkpoint committed
        release_warnings()
        if not _RANK:  # rank 0 says it for all
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
    escape sequence, say): the last line of defence after NnfitError's own escaping. Under
    torchrun a rank other than 0 names itself, and says nothing but errors and stops."""
    if _RANK and "warning:" in line[:16]:
        return
    if _RANK:  # its stderr is closed for everything else (nnfit's notes, warnings, progress)
        print(f"[rank {_RANK}] {printable(line)}", file=sys.__stderr__)
    else:
        print(printable(line), file=sys.stderr)


# Under torchrun, the commands every rank runs: training and evaluation take all ranks (sweep
# and lr-find refuse torchrun themselves); any other command is rank 0's alone.
RANKED = {"train", "evaluate", "sweep", "lr-find"}
_RANK = torchrun_env()[0]  # this process's rank when torchrun started several, else 0


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


def console() -> Any:
    """The rich console the commands print tables and metrics to."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def dumps(obj: Any) -> str:
    """JSON for the terminal."""
    return json.dumps(obj, indent=2)
