"""What a sweep trains: one :class:`MemberJob` per member, each the standalone run it equals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig

SWEEP_FILE = "sweep.json"
FAILED = "failed.json"  # in a member's directory: it diverged, no model was written
MEMBERS = "members"


@dataclass
class MemberJob:
    """One member of a sweep: everything a plain ``nnfit.fit`` of its standalone twin gets.

    Attributes:
        name: the member's name (``seed-3``, ``fold-2``, ``lr-0.003_dropout-0.2``): only what
            varies between members, and ``run`` when nothing does.
        settings: the settings of this member that vary (``{"seed": 3}``), as parsed.
        model: a built-in model spec (dict), an ``nn.Module`` (copied per member) or a
            function returning a new module (called after the member's seed is set, so each
            member is initialised as its standalone run would be).
        fit_kwargs: what ``fit`` takes besides the model and config: ``x``, ``y``, ``target``,
            ``val``, ``task``.
        config: the member's TrainConfig (its seed, fold, bootstrap, lr, weight decay...).
        record: what its run directory records as ``config.json`` (the standalone run's).
        test: ``fn(run_dir, learner)`` scoring its test split into its run directory
            (``test.csv``, ``test_metrics.json``, as ``nnfit train`` does), or None.
    """

    name: str
    settings: dict[str, Any]
    model: dict[str, Any] | nn.Module | Callable[[], nn.Module]
    fit_kwargs: dict[str, Any]
    config: TrainConfig
    record: dict[str, Any] = field(default_factory=dict)
    test: Callable[[Any, Any], Any] | None = None


@dataclass
class Built:
    """A member built as its standalone ``fit`` builds it, before any training step."""

    job: MemberJob
    learner: Any
    trainer: Any
    train: Any
    val: Any
    val_keys: dict[str, Any]
    drop_state: torch.Tensor  # the global RNG right after the model was built (dropout's stream)


@dataclass
class SweepResult:
    """What a sweep returns: ``rows`` (results.csv as dicts), ``members`` (name -> Learner),
    ``best`` (the best member's name), ``ensemble`` (or None) and ``out`` (the directory)."""

    out: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    members: dict[str, Any] = field(default_factory=dict)
    best: str | None = None
    ensemble: Any = None
    groups: list[list[str]] = field(default_factory=list)
    stacked: list[bool] = field(default_factory=list)
