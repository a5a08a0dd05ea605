"""Many models at once: seeds, grids, k-fold and bootstrap members trained as one vectorized
model (:mod:`nnfit.sweep.engine`), each equal to its own standalone run.

``nnfit.sweep(...)`` here, ``nnfit sweep DATA ...`` on the command line (:mod:`nnfit.cli.sweep`).
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..config import ModelConfig, TrainConfig, train_config
from ..errors import ConfigError
from .jobs import MemberJob
from .members import Member, parse_grid, parse_seeds, plan_members
from .runner import SweepResult, run_sweep

MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)}
# settings whose value is a list (a grid point of them is a list: hidden=[64, 64])
LIST_KEYS = {f.name for cls in (ModelConfig, TrainConfig) for f in dataclasses.fields(cls)
             if str(f.type).startswith("tuple")}


def sweep(model: Mapping | str | nn.Module | Callable[[], nn.Module], x: Any, y: Any = None, *,
          out: str | Path, target: str | None = None, val: Any = None, task: Any = "auto",
          seeds: str | Iterable[int] | None = None,
          grid: Mapping[str, Iterable] | Iterable[str] | None = None,
          kfold: int = 0, bootstrap: int = 0, resume: bool = False, overwrite: bool = False,
          config: TrainConfig | None = None, **overrides: Any) -> SweepResult:
    """Train many members of one model at once; each equals its standalone ``nnfit.fit``.

    Args:
        model: a built-in spec (``{"name": "mlp", "hidden": [64]}``) or name, an ``nn.Module``
            (copied per member: every member starts from its weights) or a function returning
            a new module (called per member after its seed is set).
        x, y, target, val, task: the data, as :func:`nnfit.fit` takes it.
        out: the sweep directory (``results.csv``, ``members/``, ``ensemble/``, ``best/``).
        seeds: ``"0-7"``, ``"0,3,5"`` or a list of ints.
        grid: ``{"lr": [1e-3, 3e-3], "dropout": [0, 0.2]}`` or ``["lr=1e-3,3e-3", ...]``
            tokens as the CLI takes them: the cartesian product of the axes.
        kfold: K: member k validates on fold k of K (stratified for classification).
        bootstrap: K: member b trains on bootstrap sample b, the out-of-bag rows validate.
        resume: go on from ``out``'s newest checkpoint.
        overwrite: start over in an ``out`` that holds an earlier sweep.
        config, overrides: the settings every member shares (TrainConfig fields).

    Returns:
        A :class:`SweepResult`: ``rows``, ``members`` (name -> Learner), ``best``, ``ensemble``.

    Raises:
        ConfigError: an empty grid, a key that is not a setting or cannot vary between
            members (named), ``kfold=1``, more folds than rows of a class.

    Example:
        >>> result = nnfit.sweep("mlp", x, y, out="sweeps/s", seeds="0-7", epochs=20)  # doctest: +SKIP
        >>> result.best, result.ensemble.predict(x[:3])  # doctest: +SKIP
    """
    members = plan_members(seeds=_seeds(seeds), grid=_grid(grid), kfold=kfold, bootstrap=bootstrap)
    base = train_config(config, **overrides)
    jobs = [_job(model, m, base, {"x": x, "y": y, "target": target, "val": val, "task": task})
            for m in members]
    return run_sweep(jobs, out, resume=resume, overwrite=overwrite, quiet=base.quiet)


def _seeds(seeds: Any) -> list[int] | None:
    if seeds is None or isinstance(seeds, str):
        return None if seeds is None else parse_seeds(seeds)
    seeds = list(seeds) if isinstance(seeds, Iterable) else [seeds]
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int)]
    if bad:
        raise ConfigError(f"seeds: {bad[0]!r} is not a whole number (seeds=[0, 1, 2] or seeds=\"0-7\")")
    return parse_seeds(",".join(str(s) for s in seeds))


def _grid(grid: Any) -> dict[str, list[Any]] | None:
    if grid is None:
        return None
    if isinstance(grid, Mapping):
        tokens = []
        for k, values in grid.items():
            many = isinstance(values, Iterable) and not isinstance(values, str)
            values = list(values) if many else [values]
            listed = k in LIST_KEYS
            if listed and not all(isinstance(v, (list, tuple)) for v in values):
                raise ConfigError(f"grid {k}: give each point as a list, e.g. {{{k!r}: [[64, 64], [128]]}}")
            if not listed and any(isinstance(v, str) and ("," in v or ";" in v) for v in values):
                raise ConfigError(f"grid {k}: a value holds ',' or ';': give each point as its own "
                                  "list item")
            sep = ";" if listed else ","
            text = sep.join(",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)
                            for v in values)
            tokens.append(f"{k}={text}")
        return parse_grid(tokens)
    return parse_grid(list(grid))


def check_sweepable(cfg: TrainConfig) -> None:
    """A sweep's members train in memory and in fp32 (the stacked model has neither streams
    nor autocast).

    Raises:
        ConfigError: ``stream`` on, or a precision other than fp32, naming it.
    """
    if cfg.precision != "fp32" or cfg.stream:
        what = f"precision {cfg.precision}" if cfg.precision != "fp32" else "stream"
        raise ConfigError(f"nnfit sweep trains in memory and in fp32: drop {what} (nnfit train takes it)")


def in_memory(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` to read a sweep's data with: ``stream=None`` (automatic) made False, so a
    directory of Parquet files or a file over the streaming threshold is read whole, as
    ``--no-stream`` reads it (the members train on tensors in memory), never streamed. The
    members' recorded configs keep the setting as given, as their standalone runs'."""
    return dataclasses.replace(cfg, stream=False) if cfg.stream is None else cfg


def _job(model: Any, member: Member, base: TrainConfig, fit_kwargs: dict[str, Any]) -> MemberJob:
    """The member's standalone run: the shared settings with its own on top."""
    model_keys = {k: v for k, v in member.settings.items() if k in MODEL_KEYS}
    train_keys = {k: v for k, v in member.settings.items() if k not in MODEL_KEYS}
    cfg = dataclasses.replace(base, **train_keys) if train_keys else base
    cfg = train_config(cfg)  # checked as any config
    check_sweepable(cfg)
    if model_keys:
        if not isinstance(model, (Mapping, str)):
            raise ConfigError(f"{', '.join(model_keys)} can vary only for a built-in model (a spec or "
                              "its name), not for a module of your own")
        spec = {"name": model} if isinstance(model, str) else dict(model)
        if "model" in model_keys:
            spec["name"] = model_keys.pop("model")
        spec.update({k: list(v) if isinstance(v, tuple) else v for k, v in model_keys.items()})
        model = spec
    return MemberJob(member.name, dict(member.settings), model, dict(fit_kwargs), cfg)


class _CallableModule(types.ModuleType):
    """``nnfit.sweep(...)`` calls :func:`sweep` while ``nnfit.sweep`` stays this package (its
    modules import as ``nnfit.sweep.engine``), whichever of the two was imported first."""

    def __call__(self, *args: Any, **kwargs: Any) -> SweepResult:
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["MemberJob", "SweepResult", "run_sweep", "sweep"]
