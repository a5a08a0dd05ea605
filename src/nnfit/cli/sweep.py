"""``nnfit sweep``: many members at once (seeds, a grid, k folds, bootstrap samples), each
built exactly as its own ``nnfit train`` run would be, trained by :func:`nnfit.sweep.run_sweep`.

Every mistake in the sweep's definition or in a member's settings is refused before any data
is read or directory made. What defines the sweep (the settings given, the seeds, grid, folds
and samples) is recorded as ``OUT/sweep.json``, so ``nnfit sweep --resume OUT`` alone rebuilds
the same members.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from ..config import SECTIONS, RunConfig, read_config_file
from ..errors import CheckpointError, ConfigError, NnfitError, Stopped, printable
from ..files import read_json
from ..io.layout import is_empty, new_run_dir
from ..io.lock import hold_run_dir
from ..models import CLI_MODELS
from ..run import RESUMABLE
from ..sweep import check_sweepable, in_memory
from ..sweep.jobs import MemberJob
from ..sweep.members import Member, check_bootstrap, check_kfold, parse_grid, parse_seeds, plan_members
from . import console, flag_values, release_warnings, split_items
from .train import _config, _hold_out, _model_spec, _training_columns, write_test

RECORD_FILE = "sweep.json"  # written by run_sweep: this command's record is its field "record"
RECORD_VERSION = 1
MAX_RECORD_BYTES = 64 * 2**20  # a member's record is ~2 KB: 1024 members fit many times over
SWEEP_FLAGS = ("seeds", "grid", "kfold", "bootstrap")
CONFIG_KEYS = frozenset(f.name for section in SECTIONS for f in fields(section))


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run ``nnfit sweep``: plan the members, build their jobs, train, print the results.

    Raises:
        ConfigError: a bad sweep definition or member setting, or a non-empty ``--out``
            without ``--overwrite``, before anything is read or written.
        CheckpointError: ``--resume OUT`` without a valid ``OUT/sweep.json``.
        DataError: data that cannot be read or split.
    """
    record = _resumed_record(args) if args.resume else _new_record(args)
    members, configs = _plan(record, Path(args.resume) / RECORD_FILE if args.resume else None)
    if args.out and not args.overwrite:
        _check_out(Path(args.out))
    check_sweepable(configs[0].train)  # before any data is read
    # read whole, a directory or a large file too: the members then share the columns in memory
    cols, target, task, name = _training_columns(replace(configs[0], train=in_memory(configs[0].train)))
    jobs = _jobs(members, configs, cols, target, task)
    if record["base"].get("data") is not None:  # absolute, so --resume works from any directory
        record["base"]["data"] = str(Path(record["base"]["data"]).resolve())
    out, made = _sweep_dir(args, name)
    from ..sweep import run_sweep  # the engine: loaded once the inputs checked out

    with hold_run_dir(out, create=not args.resume, made=made):
        if args.out and not args.overwrite:  # again, under the lock: a sweep that just started
            _check_out(out)
        try:
            result = run_sweep(jobs, out, resume=bool(args.resume), overwrite=args.overwrite,
                               started=release_warnings,
                               sweep_record=record, quiet=configs[0].train.quiet)
        except Stopped as e:
            raise Stopped(f"{e}; resume with: nnfit sweep --resume {out}", e.exit_code - 128) from None
    _print_rows(result.rows, {k for m in members for k in m.settings})
    best = f" (best member: {printable(result.best)})" if result.best else ""
    print(f"sweep written to {printable(out)}{best}")
    return 0


def _new_record(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep a new ``nnfit sweep`` defines: the settings given (as ``nnfit train`` gathers
    them: config file, ``key=value`` items, flags, DATA) and the members' flags, checked."""
    if args.seeds is not None:
        parse_seeds(args.seeds)  # checked now; parsed again from the record by _plan
    if args.grid is not None:
        parse_grid(args.grid)
    if args.kfold is not None:
        check_kfold(args.kfold)  # --kfold 0 too: only an absent flag means no folds
    if args.bootstrap is not None:
        check_bootstrap(args.bootstrap)
    data, overrides = split_items(args.items)
    base: dict[str, Any] = {}
    if args.config:
        base.update(read_config_file(args.config))
    base.update(overrides)
    base.update(flag_values(_without_sweep_flags(args)))
    if data is not None:
        base["data"] = data
    return {"version": RECORD_VERSION, "base": base, "seeds": args.seeds, "grid": args.grid,
            "kfold": args.kfold or 0, "bootstrap": args.bootstrap or 0}


def _without_sweep_flags(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` without the members' flags, which are no config keys."""
    return argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in SWEEP_FLAGS})


def _resumed_record(args: argparse.Namespace) -> dict[str, Any]:
    """``OUT/sweep.json`` of ``--resume OUT``, with the settings a resume may change (device,
    threads, quiet...: ``nnfit.run.RESUMABLE`` but epochs and patience) as given now; anything
    else given is refused."""
    given = [f"--{k}" for k in SWEEP_FLAGS if getattr(args, k) is not None]
    given += [f"--{k}" for k in ("out", "config") if getattr(args, k)]
    given += ["--overwrite"] * bool(args.overwrite)
    data, overrides = split_items(args.items)
    if data is not None:
        given.append(data)
    if given:
        raise ConfigError(f"--resume takes the sweep's settings from {RECORD_FILE}: {given[0]!r:.60} "
                          "cannot be given with it")
    changes = {**overrides, **flag_values(_without_sweep_flags(args))}
    # a sweep resumes as planned: its written groups cannot train on (nnfit.sweep.runner)
    may = sorted(RESUMABLE - {"epochs", "patience"})
    fixed = next((k for k in changes if k not in may), None)
    if fixed is not None:
        raise ConfigError(f"--resume: {fixed!r:.60} cannot change in a resumed sweep (what may: "
                          f"{', '.join(may)})")
    record = read_record(Path(args.resume))
    record["base"].update(changes)
    return record


def read_record(out: Path) -> dict[str, Any]:
    """The sweep record ``OUT/sweep.json``, its fields checked (their values are checked as a
    new sweep's are, when the members are planned from it).

    Raises:
        CheckpointError: no such directory or record, or a record that is not one, naming
            the file and the field.
    """
    path = out / RECORD_FILE
    if not out.is_dir():
        raise CheckpointError(f"{out}: no such sweep directory")
    if not path.is_file():
        raise CheckpointError(f"{out}: not a sweep directory (no {RECORD_FILE}): resume a "
                              "directory written by nnfit sweep")
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise CheckpointError(f"{path}: larger than a sweep record can be ({MAX_RECORD_BYTES} bytes)")
    doc = read_json(path, "sweep record")
    if not isinstance(doc, dict) or "record" not in doc:  # nnfit.sweep.runner writes the record there
        raise CheckpointError(f"{path}: not a sweep record (a JSON object with a field 'record')")
    record = doc["record"]
    if record is None:
        raise CheckpointError(f"{out}: a sweep of the Python API (nnfit.sweep), which holds its data: "
                              "resume it there with resume=True")
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: field 'record' is not a JSON object")
    checks = {"version": lambda v: v == RECORD_VERSION,
              "base": lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
              "seeds": lambda v: v is None or isinstance(v, str),
              "grid": lambda v: v is None or (isinstance(v, list) and all(isinstance(t, str) for t in v)),
              "kfold": lambda v: type(v) is int, "bootstrap": lambda v: type(v) is int}
    for key, ok in checks.items():
        if key not in record:
            raise CheckpointError(f"{path}: not a sweep record (no field 'record.{key}')")
        if not ok(record[key]):
            raise CheckpointError(f"{path}: field 'record.{key}' holds {printable(repr(record[key]))[:60]}, "
                                  "not what nnfit sweep writes there")
    return {key: record[key] for key in checks}


def _plan(record: dict[str, Any], source: Path | None) -> tuple[list[Member], list[RunConfig]]:
    """The members of ``record`` and each one's RunConfig, as ``nnfit train`` builds its
    standalone twin's; a resumed record's mistakes name its file (``source``).

    Raises:
        ConfigError: (CheckpointError for a resumed record) a bad definition or setting.
    """
    try:
        members = plan_members(
            seeds=None if record["seeds"] is None else parse_seeds(record["seeds"]),
            grid=None if record["grid"] is None else parse_grid(record["grid"]),
            kfold=record["kfold"], bootstrap=record["bootstrap"])
        configs = [member_config(record["base"], m.settings) for m in members]
    except NnfitError as e:
        if source is None:
            raise
        raise CheckpointError(f"{source}: {e}") from None
    return members, configs


def member_config(base: dict[str, Any], settings: dict[str, Any]) -> RunConfig:
    """The RunConfig of the ``nnfit train`` run that a member equals: ``base`` (the settings the
    sweep was given) with the member's ``settings`` on top, resolved by ``nnfit train``'s own
    ``_config`` (names checked, the family's defaults for ``batchnorm`` and a cnn's ``lr``).

    Raises:
        ConfigError: a setting of the wrong type or out of range, an unknown name or a model
            ``nnfit train`` cannot build, naming the key.
    """
    values = {**base, **settings}
    unknown = next((k for k in values if k not in CONFIG_KEYS), None)
    if unknown is not None:  # before they become attributes below: "items" is no setting
        raise ConfigError(f"unknown config key {unknown!r:.60} "
                          f"(valid keys: {', '.join(sorted(CONFIG_KEYS))})")
    # Given to _config as flags, which win over everything else there, as a member's settings do.
    cfg = _config(argparse.Namespace(items=[], config=None, resume=None, **values))
    if cfg.model.model not in CLI_MODELS:
        raise ConfigError(f"--model must be one of {', '.join(CLI_MODELS)}, got {cfg.model.model!r}")
    return cfg


def _jobs(members: list[Member], configs: list[RunConfig], cols: Any, target: str | None,
          task: str) -> list[MemberJob]:
    """Each member's job: its training part of the data (the test split held out by its own
    seed, as its standalone run holds it out), model spec, TrainConfig and ``config.json``."""
    parts: dict[tuple, Any] = {}
    jobs = []
    for member, cfg in zip(members, configs, strict=True):
        # The hold-out reads the data settings, the model family (its layout) and the seed:
        # of these only the seed and the family may differ between members, so members that
        # share both share one training part (a copy of the data each would be K copies).
        key = (cfg.data, cfg.model.model, cfg.train.seed)
        if key not in parts:
            parts[key] = _hold_out(cfg, cols, target, task)
        train_part, test_part, n_test = parts[key]
        record = cfg.to_dict()
        if record["data"] is not None:  # absolute, as nnfit train records it
            record["data"] = str(Path(record["data"]).resolve())
        test = None if not n_test else functools.partial(
            _member_test, cfg=cfg, cols=cols, test_part=test_part, n_test=n_test, target=target)
        jobs.append(MemberJob(name=member.name, settings=dict(member.settings),
                              model=_model_spec(cfg.model), config=cfg.train, record=record,
                              fit_kwargs={"x": train_part, "target": target, "task": task}, test=test))
    return jobs


def _member_test(run_dir: Path, learner: Any, *, cfg: RunConfig, cols: Any, test_part: Any, n_test: int,
                 target: str | None) -> dict[str, Any] | None:
    """A member's test split scored into its run directory, as ``nnfit train`` scores it."""
    import copy

    # write_test names the rows' file on the part it writes: a shared part is not changed
    return write_test(run_dir, learner, cfg, cols, copy.copy(test_part), n_test, target)


def _check_out(out: Path) -> None:
    """Refuse a ``--out`` that holds anything, unless ``--overwrite``."""
    if out.exists() and (not out.is_dir() or not is_empty(out)):
        raise ConfigError(f"{out} exists and is not empty: choose another --out or pass --overwrite")


def _sweep_dir(args: argparse.Namespace, name: str) -> tuple[Path, list[Path]]:
    """The sweep's directory, and the directories just created for it (``sweeps/NAME-N``, and
    ``sweeps`` when new): removed again if the sweep fails to start."""
    if args.resume:
        return Path(args.resume), []
    if args.out:
        return Path(args.out), []
    root = Path("sweeps")
    made = [] if root.is_dir() else [root]
    out = new_run_dir(root, name)
    return out, [out, *made]


def _print_rows(rows: list[dict[str, Any]], settings: set[str]) -> None:
    """The rows of ``results.csv`` as one compact table: the member's name (which spells out
    its ``settings``, left out) and as many of the numbers as the terminal is wide for; every
    column is in ``results.csv``."""
    from rich.table import Table
    from rich.text import Text  # names and values are text, not markup

    keys = [k for k in dict.fromkeys(k for row in rows for k in row)
            if k == "member" or (k not in settings and any(_is_number(r.get(k)) for r in rows))]
    cells = {k: [_cell(r.get(k)) for r in rows] for k in keys}
    con = console()
    room, shown = con.width - 1, []
    for k in keys:  # whole columns, left to right, while they fit: never a cut number or name
        room -= max(len(str(k)), *map(len, cells[k])) + 3
        if room < 0 and len(shown) > 1:
            break
        shown.append(k)
    if not rows or not shown:
        return
    table = Table(title="sweep" + (" (more columns in results.csv)" if len(shown) < len(keys) else ""))
    for k in shown:
        table.add_column(Text(str(k)), justify="left" if k == "member" else "right", no_wrap=True)
    for i in range(len(rows)):
        table.add_row(*[Text(cells[k][i]) for k in shown])
    con.print(table)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    """A value of the table: numbers to 4 significant digits, nothing as ``-``."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return printable(str(value))
