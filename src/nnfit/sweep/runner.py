"""Run a sweep: build every member as its standalone run would be built, train the members
that share an architecture as one stacked model (or, where a member cannot be stacked, as its
own run), and write ``OUT``: ``results.csv``, ``members/<name>/``, ``ensemble/`` and ``best/``.

Layout of ``OUT``::

    sweep.json        the sweep's members and what ``nnfit sweep --resume OUT`` rebuilds them from
    checkpoints/      the running group's checkpoints (removed when the group's members are written)
    members/<name>/   one run directory per member (evaluate, predict, inspect accept it)
    results.csv       one row per member, then mean and std rows over seeds/folds/bootstraps
    ensemble/         the members' mean (probabilities, or regression outputs)
    best/             the member with the best monitored value, as a model directory
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, TrainingError, warn
from .jobs import FAILED, MEMBERS, SWEEP_FILE, Built, MemberJob, SweepResult
from .results import finish

# Settings a stacked group lets differ between its members; any other difference splits groups.
PER_MEMBER = ("seed", "fold", "bootstrap", "lr", "weight_decay")


def build_member(job: MemberJob) -> Built:
    """``fit``'s preparation for ``job``: seed, prepare the data, complete the spec, build
    the model (in that order: the model's initialisation is the standalone run's)."""
    from ..data.columns import column_name
    from ..data.prepare import prepare
    from ..learner import Learner, _custom_task
    from ..models import build_model
    from ..specs import built_in, complete_spec, family
    from ..tasks import CustomTask
    from ..tasks.custom import training_task
    from ..trainer import Trainer
    from . import in_memory

    kw = dict(job.fit_kwargs)
    task, _ = _custom_task(kw.get("task", "auto"), job.config, {})
    model = job.model
    if callable(model) and not isinstance(model, nn.Module):
        # its twin: torch.manual_seed(seed); fit(factory(), seed=seed), as fit's docs advise
        if job.config.seed is not None:
            torch.manual_seed(job.config.seed)
        model = model()
    elif isinstance(model, nn.Module):
        model = copy.deepcopy(model)
    trainer = Trainer(job.config, quiet=True)  # seeds the global RNG, as fit does
    target = column_name(kw.get("target"))
    data = prepare(kw.get("x"), kw.get("y"), target=target, val=kw.get("val"), task=task,
                   config=in_memory(job.config), resumed=None, numeric=built_in(model), family=family(model))
    fitted = data.task
    if isinstance(task, CustomTask):
        fitted = training_task(fitted, task.fn, data.train, data.val)
    spec = complete_spec(model, data.preprocessor, fitted)
    module = model if isinstance(model, nn.Module) else build_model(spec)
    learner = Learner(module, task=fitted, preprocessor=data.preprocessor, spec=spec, config=job.config,
                      trainer=trainer, target_name=None if data.preprocessor is None else target)
    return Built(job, learner, trainer, data.train, data.val, data.val_keys, torch.get_rng_state())


def group_key(b: Built) -> str:
    """What must be equal for members to share a stacked model: the spec but its dropout
    rate and vocabulary sizes, and every setting but the per-member ones."""
    spec = dict(b.learner.spec or {"module": type(b.learner.model).__qualname__})
    spec.pop("dropout", None)
    if "embeddings" in spec:
        spec["embeddings"] = [[0, w] for _, w in spec["embeddings"]]
    cfg = {k: v for k, v in asdict(b.job.config).items() if k not in PER_MEMBER}
    return json.dumps([spec, cfg, type(b.learner.model).__qualname__], sort_keys=True, default=str)


def why_not_stacked(group: list[Built]) -> str | None:
    """Why these members cannot train as one stacked model (None when they can)."""
    from ..data import TensorData
    from ..tasks import CustomTask
    from .optim import STACKED_OPTIMIZERS

    c = group[0].job.config
    if c.optimizer not in STACKED_OPTIMIZERS:
        return f"optimizer {c.optimizer!r} has no stacked form"
    if c.accumulate != 1 or c.compile:
        return "accumulate or compile is set"
    for b in group:
        if type(b.train) is not TensorData or (b.val is not None and type(b.val) is not TensorData):
            return "the data is not in-memory rows of tensors (images, sequences, a Dataset)"
        if _input_names(b.train.inputs) != _input_names(group[0].train.inputs):
            return "the members' inputs differ"
        if isinstance(b.learner.task, CustomTask):
            return "a custom loss function"
    if len({b.val is None for b in group}) > 1:
        return "some members have validation data and others not"
    for m in group[0].learner.model.modules():
        if isinstance(m, nn.RNNBase):  # no batching rule for the fused recurrent kernels
            return f"a recurrent layer ({type(m).__name__})"
        if isinstance(m, nn.modules.dropout._DropoutNd) and type(m) is not nn.Dropout:
            return f"a {type(m).__name__} layer (only nn.Dropout is drawn per member)"
    return None


def _input_names(inputs: Any) -> list[str] | int:
    """The names of keyword inputs, or the number of positional ones."""
    return list(inputs) if isinstance(inputs, dict) else len(inputs)


def plan_groups(built: list[Built]) -> list[list[int]]:
    """Member indices per group, in member order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, b in enumerate(built):
        groups.setdefault(group_key(b), []).append(i)
    return list(groups.values())


def run_sweep(jobs: list[MemberJob], out: str | Path, *, resume: bool = False, overwrite: bool = False,
              sweep_record: dict[str, Any] | None = None, quiet: bool = False,
              started: Callable[[], None] | None = None) -> SweepResult:
    """Train every job's member and write ``out`` (see the module's docstring).

    Args:
        jobs: the members, each with the settings of its standalone run.
        out: the sweep directory.
        resume: go on from ``out``'s newest checkpoint (groups already written are loaded).
        overwrite: start over in an ``out`` that holds an earlier sweep (its files removed).
        sweep_record: JSON-able data stored in ``sweep.json`` for ``nnfit sweep --resume``.
        quiet: no progress lines.
        started: called once every member is built, before training (the CLI shows the
            warnings it held while the inputs were checked).

    Raises:
        ConfigError: duplicate member names, ``out`` in the way, nothing to resume.
        Stopped: SIGINT/SIGTERM: a checkpoint was committed; resume with ``resume=True``.
    """
    from ..io.lock import hold_run_dir
    from . import state  # with the engine: loaded once a sweep runs

    out = Path(out)
    names = [j.name for j in jobs]
    if not jobs or len(set(names)) != len(names):
        raise ConfigError(f"a sweep needs members with distinct names, got {names}")
    logged = sorted({s for j in jobs for s in j.config.log})
    if logged:  # refused before the directory is made
        raise ConfigError(f"--log {','.join(logged)} (log=) is not available for a sweep: each member's "
                          "history.csv and OUT/results.csv hold its metrics")
    with hold_run_dir(out, create=not resume):
        _check_out(out, resume, overwrite)
        built = _build_all(jobs)
        if started is not None:
            started()
        members = [_member_record(b) for b in built]
        if resume:
            _check_same(out, members)
        else:
            _write_json(out / SWEEP_FILE, {"format": 1, "members": members, "record": sweep_record})
        groups = plan_groups(built)
        result = SweepResult(out)
        ckpt = state.latest(out) if resume else None
        for g, idx in enumerate(groups):
            group = [built[i] for i in idx]
            result.groups.append([b.job.name for b in group])
            reason = why_not_stacked(group)
            result.stacked.append(reason is None)
            done = _written(out, group) if resume else None
            if done is not None:
                result.members.update(done)
                continue
            if reason is not None:
                if not quiet and len(group) > 1:
                    _say(f"group {g + 1}: {len(group)} members train one after another: {reason}")
                for b in group:
                    result.members[b.job.name] = _train_alone(b, out, resume)
                    _score_test(out, b, result.members[b.job.name])
            else:
                own = ckpt if ckpt is not None and ckpt[2]["group"] == g else None
                result.members.update(_train_group(g, len(groups), group, out, own, quiet))
            state.clear(out)
        finish(result, built, quiet)
    return result


def _build_all(jobs: list[MemberJob]) -> list[Built]:
    """Every member built; a warning its data gives each member (a filled gap, a dropped id
    column) is said once, with how many members it concerns, not once per member."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = [_built(j) for j in jobs]
    counts: dict[tuple[type, str], int] = {}
    for w in caught:
        key = (w.category, str(w.message))
        counts[key] = counts.get(key, 0) + 1
    for (category, text), n in counts.items():
        many = f" ({n} of {len(jobs)} members)" if len(jobs) > 1 else ""
        warnings.warn(text + many, category, stacklevel=3)
    return built


def _built(job: MemberJob) -> Built:
    """:func:`build_member`, its errors naming the member (a fold without a class's rows,
    a bootstrap sample that drew none of one)."""
    from ..errors import NnfitError

    try:
        return build_member(job)
    except NnfitError as e:
        if e.args and isinstance(e.args[0], str):
            e.args = (f"member {job.name}: {e.args[0]}", *e.args[1:])
        raise


def _member_record(b: Built) -> dict[str, Any]:
    """What ``sweep.json`` keeps of a member: its name, settings, the config its run records
    and the fingerprint of its data (what a resume must find unchanged)."""
    from ..run import data_fingerprint

    record = b.job.record or {**asdict(b.job.config), "model": b.learner.spec}
    return {"name": b.job.name, "settings": b.job.settings,
            "config": json.loads(json.dumps(record, default=str)),
            "data_sha256": data_fingerprint(b.train, b.val)}


def _check_same(out: Path, members: list[dict[str, Any]]) -> None:
    """Refuse to resume a sweep whose members, settings or data changed (what a run may change
    on resume, ``epochs`` or ``patience`` say, may).

    Raises:
        ConfigError: naming the first member that differs and how.
    """
    from ..files import read_json
    from ..run import resume_differences

    saved = read_json(out / SWEEP_FILE)
    old = saved.get("members") if isinstance(saved, dict) else None
    if not isinstance(old, list) or [m.get("name") if isinstance(m, dict) else None for m in old] != [
            m["name"] for m in members]:
        raise ConfigError(f"{out / SWEEP_FILE}: its members are not this sweep's: start a new sweep")
    for was, now in zip(old, members, strict=True):
        config = was.get("config")
        if not isinstance(config, dict):
            raise ConfigError(f"{out / SWEEP_FILE}: member {now['name']} has no recorded settings")
        diffs = resume_differences(config, now["config"], was.get("data_sha256"), now["data_sha256"])
        # a sweep resumes as planned: groups already written cannot train on, and members of
        # one ensemble trained for different epochs would not be the sweep asked for
        diffs += [f"{k} ({config.get(k)!r} -> {now['config'].get(k)!r})" for k in ("epochs", "patience")
                  if k in now["config"] and config.get(k) != now["config"].get(k)]
        if diffs:
            raise ConfigError(f"cannot resume the sweep with changed settings or data: member {now['name']}: "
                              f"{', '.join(diffs)}; start a new sweep (--overwrite)")


def _say(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


def _write_json(path: Path, data: Any) -> None:
    from ..checkpoint import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data)


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an ``out`` that holds files unless resuming a sweep or overwriting one."""
    if resume:
        if not (out / SWEEP_FILE).is_file():
            raise ConfigError(f"{out}: no sweep to resume ({SWEEP_FILE} is missing)")
        return
    held = [p for p in out.iterdir() if p.name != ".nnfit.lock"] if out.is_dir() else []
    if not held:
        return
    if not (out / SWEEP_FILE).is_file():
        raise ConfigError(f"{out} holds files and no nnfit sweep: choose another --out")
    if not overwrite:
        raise ConfigError(f"{out} holds an earlier sweep: pass --overwrite (overwrite=True) "
                          "or choose another --out")
    import shutil

    for name in (MEMBERS, "checkpoints", "ensemble", "best"):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in ("results.csv", SWEEP_FILE):
        if (out / name).is_file():
            (out / name).unlink()


def _written(out: Path, group: list[Built]) -> dict[str, Any] | None:
    """The group's members loaded from their run directories when every one is written."""
    from ..learner import Learner

    found: dict[str, Any] = {}
    for b in group:
        d = out / MEMBERS / b.job.name
        if (d / FAILED).is_file():  # a member that diverged: done, without a model
            found[b.job.name] = None
            continue
        if not (d / "manifest.json").is_file() or not (d / "history.csv").is_file():
            return None
        try:
            learner = Learner.load(d, device=str(b.trainer.runtime.device))
        except Exception:  # a member written halfway is trained again
            return None
        learner.history = _read_history(d / "history.csv")
        found[b.job.name] = learner
    return found


def _read_history(path: Path) -> Any:
    import csv

    from ..callbacks import History

    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows.append({k: _number(v) for k, v in r.items()})
    return History(rows)


def _number(v: str) -> Any:
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def _train_alone(b: Built, out: Path, resume: bool) -> Any:
    """A member that cannot be stacked: its own ``fit`` into its run directory."""
    from dataclasses import replace

    from ..learner import fit

    d = out / MEMBERS / b.job.name
    has_ckpt = resume and (d / "checkpoints").is_dir() and any((d / "checkpoints").iterdir())
    kw = dict(b.job.fit_kwargs)
    cfg = replace(b.job.config, quiet=True, plots=False, report=False)
    record = {**b.job.record, "plots": False} if b.job.record else None
    model = b.job.model
    if callable(model) and not isinstance(model, nn.Module):
        if cfg.seed is not None:  # built as its twin builds it (see build_member)
            torch.manual_seed(cfg.seed)
        model = model()
    try:
        return fit(model, kw.pop("x", None), kw.pop("y", None), config=cfg, run_dir=d,
                   run_config=record, resume=d if has_ckpt else None, overwrite=not has_ckpt, **kw)
    except TrainingError as e:  # a diverging member ends, the sweep goes on
        _mark_failed(d, b.job.name, str(e))
        return None


def _mark_failed(d: Path, name: str, reason: str) -> None:
    """Record that member ``name`` failed (``OUT/members/<name>/failed.json``): a resume
    counts it done, results.csv gives the reason."""
    warn(f"member {name} failed: {reason}")
    _write_json(d / FAILED, {"member": name, "reason": reason})


def _train_group(g: int, n_groups: int, group: list[Built], out: Path, ckpt: tuple | None,
                 quiet: bool) -> dict[str, Any]:
    """Train ``group`` as one stacked model; write each member's run directory."""
    from ..runtime import cpu_threads, step_params
    from . import state
    from .engine import GroupTrainer, Member

    members = []
    for b in group:
        drop = torch.Generator()
        drop.set_state(b.drop_state)
        members.append(Member(b.job.name, b.job.config, b.learner.task, b.train, b.val,
                              b.trainer.generator, drop))
    c, runtime = group[0].job.config, group[0].trainer.runtime
    modules = [b.learner.model for b in group]
    keep = c.keep_checkpoints
    gt = GroupTrainer(members, modules, runtime.device,
                      checkpoint_fn=lambda t: state.save(out, t, g, keep))
    if ckpt is not None:
        state.restore(gt, ckpt[1], ckpt[2], str(ckpt[0]))
    if not quiet:
        gt.on_epoch = lambda t: _say(_progress(t, g, n_groups))
    before = torch.get_num_threads()
    threads = cpu_threads(runtime, step_params(modules[0]) * len(group), c.batch_size, c.threads)
    if threads:
        torch.set_num_threads(threads)
    try:
        gt.fit()
    finally:
        torch.set_num_threads(before)
    learners = {}
    for i, b in enumerate(group):
        m, learner = gt.members[i], b.learner
        learner.model.load_state_dict(gt.member_weights(i))
        learner.model.eval()
        learner.history, learner.stop_reason = m.history, m.stop_reason
        _write_member(out, b, m.failed)
        _score_test(out, b, learner)
        learners[b.job.name] = learner
    return learners


def _score_test(out: Path, b: Built, learner: Any) -> None:
    """The member's test split, scored into its run directory (when the job has one), and its
    report (``report=True``), as ``nnfit train`` ends a run."""
    d = out / MEMBERS / b.job.name
    if not (d / "manifest.json").is_file():
        return
    if b.job.test is not None:
        b.job.test(d, learner)
    if b.job.config.report:
        from ..report import write_report

        write_report(d)


def _progress(gt: Any, g: int, n_groups: int) -> str:
    live = [m for m in gt.members if not m.stop]
    best = [m.best for m in gt.members if m.best is not None]
    monitor = gt.members[0].monitor
    shown = f", best {monitor} {min(best) if monitor.endswith('loss') else max(best):.4g}" if best else ""
    return (f"group {g + 1}/{n_groups}: epoch {gt.epoch}/{gt.config.epochs}, "
            f"{len(live)}/{len(gt.members)} members training{shown}")


def _write_member(out: Path, b: Built, failed: bool) -> None:
    """The member's run directory, as its standalone run leaves it: model, config.json,
    history.csv and metrics.json."""
    from ..checkpoint import atomic_write_text
    from ..guards import first_non_finite
    from ..run import RunWriter

    d = out / MEMBERS / b.job.name
    learner = b.learner
    if first_non_finite(learner.model.named_parameters()) is not None:
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "history.csv", learner.history.to_csv())
        _mark_failed(d, b.job.name, f"its weights are not finite ({learner.stop_reason}); no model written")
        return
    record = dict(b.job.record or {**asdict(b.job.config), "model": learner.spec})
    record["plots"] = False  # a sweep draws no member plots (0.6 s a member)
    writer = RunWriter(d, learner, record)  # no checkpoints here: no fingerprint to keep
    writer.start()
    atomic_write_text(d / "history.csv", learner.history.to_csv())
    writer.finish(b.trainer, b.val)
    if not any((d / "checkpoints").iterdir()):  # the writer's folder: a stacked member has none
        (d / "checkpoints").rmdir()
