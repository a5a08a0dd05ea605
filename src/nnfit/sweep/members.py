"""Who the members of a sweep are: ``--seeds``, ``--grid``, ``--kfold`` and ``--bootstrap``
parsed into :class:`Member` objects, each named by what varies between them.

Only text is parsed here (nothing is read, nothing imported beyond the config schema): every
mistake in a sweep's definition is refused before any data is read or directory made, in one
line naming the flag and the value at fault. The ranges of the values themselves (a dropout of
1.5, a negative learning rate) are the config schema's to check, when each member's config is
built from them.

Example:
    >>> [m.name for m in plan_members(seeds=parse_seeds("0-1"), grid=parse_grid(["lr=1e-3,3e-3"]))]
    ['seed-0_lr-0.001', 'seed-0_lr-0.003', 'seed-1_lr-0.001', 'seed-1_lr-0.003']
"""

from __future__ import annotations

import itertools
import math
import re
import typing
from dataclasses import dataclass, fields
from typing import Any

from ..config import DataConfig, ModelConfig, TrainConfig, coerce
from ..errors import ConfigError

# At most this many members in one sweep: each holds its own copy of the training data.
MAX_MEMBERS = 1024

# Settings that may differ between the members of one vectorized group (besides fold and
# bootstrap, which --kfold and --bootstrap set).
VECTORIZED = ("seed", "lr", "weight_decay", "dropout")

# Settings a grid may vary that split members into separate groups: the architecture (every
# ModelConfig field but dropout), the batch size, the optimizer and the schedule.
GROUPED = ("model", "hidden", "activation", "batchnorm", "channels", "residual", "bidirectional",
           "readout", "batch_size", "optimizer", "momentum", "nesterov", "scheduler", "step_size",
           "gamma", "milestones", "warmup_epochs", "min_lr", "sched_patience")

GRID_KEYS = VECTORIZED + GROUPED

# The settings that --kfold and --bootstrap give each member; never a --grid axis.
SPLIT_KEYS = ("fold", "bootstrap")

# The type of each setting a grid may vary, from the config schema.
_TYPES: dict[str, Any] = {**typing.get_type_hints(ModelConfig), **typing.get_type_hints(TrainConfig)}

_SEED_ITEM = re.compile(r"([0-9]+)(?:-([0-9]+))?")
# What a text value may hold (registry names: relu, adamw, cosine...): safe in a directory name.
_NAME_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
MAX_NAME = 200  # characters of a member's name (a directory name may hold 255 bytes)


@dataclass(frozen=True)
class Member:
    """One member of a sweep.

    Attributes:
        name: what varies between the members, as ``key-value`` joined by ``_`` (``seed-3``,
            ``fold-2``, ``lr-0.003_dropout-0.2``); ``run`` when nothing varies. A safe
            directory name by construction.
        settings: every swept setting of this member (a single-valued axis too), in the order
            seed, fold, bootstrap, then the grid's axes: config keys to values as the config
            takes them (fold and bootstrap as ``"k/K"``, lists for list-valued keys).
    """

    name: str
    settings: dict[str, Any]


def parse_seeds(text: str) -> list[int]:
    """The seeds of ``--seeds``: ranges (inclusive) and single seeds, comma separated.

    Args:
        text: e.g. ``"0-7"``, ``"0,3,5"`` or ``"0-3,9"``.

    Returns:
        The seeds, in the order given.

    Raises:
        ConfigError: text that is not seeds and ranges, a negative seed, a range that runs
            backwards, a seed given twice, no seeds, or more than :data:`MAX_MEMBERS`.

    Example:
        >>> parse_seeds("0-3,9")
        [0, 1, 2, 3, 9]
    """
    items = [t.strip() for t in str(text).split(",")]
    if not any(items):
        raise ConfigError("--seeds: no seeds given (e.g. --seeds 0-7 or --seeds 0,3,5)")
    ranges, total = [], 0
    for item in items:
        m = _SEED_ITEM.fullmatch(item)
        if m is None:
            if re.fullmatch(r"-[0-9]+(?:-[0-9]+)?", item):
                raise ConfigError(f"--seeds: {item!r:.40} is negative: seeds are >= 0")
            raise ConfigError(f"--seeds: {item!r:.40} is not a seed or a range of seeds "
                              "(e.g. --seeds 0-7 or --seeds 0,3,5)")
        if max(len(g or "") for g in m.groups()) > 19:  # int() of 5000 digits is refused, slowly
            raise ConfigError(f"--seeds: {item:.40} is too large (seeds are below 2**63)")
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else int(m.group(2))
        if hi < lo:
            raise ConfigError(f"--seeds: the range {item} runs backwards (write {hi}-{lo})")
        if hi >= 2**63:
            raise ConfigError(f"--seeds: {hi} is too large (seeds are below 2**63)")
        total += hi - lo + 1
        if total > MAX_MEMBERS:  # counted before the list is made: 0-10**18 makes none
            raise ConfigError(f"--seeds: more than {MAX_MEMBERS} seeds (a sweep holds at most "
                              f"{MAX_MEMBERS} members)")
        ranges.append(range(lo, hi + 1))
    seeds, seen = [], set()
    for s in itertools.chain.from_iterable(ranges):
        if s in seen:
            raise ConfigError(f"--seeds: seed {s} is given twice")
        seen.add(s)
        seeds.append(s)
    return seeds


def parse_grid(tokens: list[str]) -> dict[str, list[Any]]:
    """The axes of ``--grid``: each token ``key=v1,v2`` one axis, the sweep their product.

    A list-valued key (``hidden``, ``channels``, ``milestones``) separates its points with
    ``;``: ``hidden=64,64;128`` is the points ``[64, 64]`` and ``[128]``. Values are read with
    the type their config field has (``true``/``false`` for switches, ``none`` for an unset
    ``batchnorm``). A ``-`` in a key reads as ``_`` (``weight-decay=0,0.01``).

    Args:
        tokens: the tokens after ``--grid``.

    Returns:
        Each key to its values, in the order given (lists for list-valued keys).

    Raises:
        ConfigError: no tokens, a token without ``=``, a key that is not a setting or cannot
            vary between members (naming the keys that can), a key or a value given twice, an
            axis without values or with an empty one, a value of the wrong type, or more than
            :data:`MAX_MEMBERS` points.

    Example:
        >>> parse_grid(["lr=1e-3,3e-3", "hidden=64,64;128"])
        {'lr': [0.001, 0.003], 'hidden': [[64, 64], [128]]}
    """
    if not tokens:
        raise ConfigError("--grid: no settings given (e.g. --grid lr=1e-3,3e-3 dropout=0,0.2)")
    grid: dict[str, list[Any]] = {}
    for token in tokens:
        key, eq, text = str(token).partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise ConfigError(f"--grid: {token!r:.60} is not key=v1,v2 (e.g. --grid lr=1e-3,3e-3; "
                              "DATA and the settings of every member go before --grid)")
        _check_grid_key(key)
        if key in grid:
            raise ConfigError(f"--grid: {key} is given twice (give all its values in one key=v1,v2)")
        grid[key] = _axis_values(key, text)
    if math.prod(len(v) for v in grid.values()) > MAX_MEMBERS:
        raise ConfigError(f"--grid: {' x '.join(str(len(v)) for v in grid.values())} points is more "
                          f"than {MAX_MEMBERS} (a sweep holds at most {MAX_MEMBERS} members)")
    return grid


def _check_grid_key(key: str) -> None:
    """Refuse a ``--grid`` key that is not a setting, or one that cannot vary between members."""
    if key in GRID_KEYS:
        return
    can = ", ".join(GRID_KEYS)
    if key in SPLIT_KEYS:
        flag = "--kfold K" if key == "fold" else "--bootstrap K"
        raise ConfigError(f"--grid: {key} is not a grid setting: {flag} makes the members of each {key}")
    settings = {f.name for cls in (ModelConfig, TrainConfig, DataConfig) for f in fields(cls)}
    if key in settings:
        raise ConfigError(f"--grid: {key} cannot vary between members (settings that can: {can}); "
                          f"to set it for every member, give {key}=VALUE before --grid")
    raise ConfigError(f"--grid: {key!r:.60} is not a setting (settings that can vary: {can})")


def _axis_values(key: str, text: str) -> list[Any]:
    """The values of one grid axis, typed as the config field ``key``; refuses none, an empty
    one and a repeated one."""
    listed = typing.get_origin(_TYPES[key]) is tuple
    points = [p.strip() for p in text.split(";" if listed else ",")]
    if not any(points):
        raise ConfigError(f"--grid: {key} has no values (e.g. {_example(key)})")
    if not all(points):
        raise ConfigError(f"--grid: {key}={text!r:.60} has an empty value (e.g. {_example(key)})")
    values = []
    for point in points:
        try:
            value = coerce(key, point, _TYPES[key])
        except ConfigError as e:
            raise ConfigError(f"--grid: {e}") from None
        if listed:
            if not value:
                raise ConfigError(f"--grid: {key}={text!r:.60} has an empty value (e.g. {_example(key)})")
            value = list(value)
        elif isinstance(value, str) and not _NAME_VALUE.fullmatch(value):
            raise ConfigError(f"--grid: {key} value {value!r:.60} is not a name (letters, digits, "
                              "'_', '.', '-')")
        if value in values:
            raise ConfigError(f"--grid: {key} value {point!r:.60} is given twice")
        values.append(value)
    return values


def _example(key: str) -> str:
    """An example of ``key``'s axis for a message."""
    if typing.get_origin(_TYPES[key]) is tuple:
        return f"{key}=64,64;128" if key != "milestones" else "milestones=10,20;30"
    return {"lr": "lr=1e-3,3e-3"}.get(key, f"{key}=V1,V2")


def check_kfold(k: int) -> None:
    """Refuse a ``--kfold`` that is not a whole number of at least 2 folds (or more than
    :data:`MAX_MEMBERS`, before any list of folds is made).

    Raises:
        ConfigError: naming the flag and the value.
    """
    _check_count("--kfold", k, "k-fold needs at least 2 folds", "the number of folds", "--kfold 5")


def check_bootstrap(k: int) -> None:
    """Refuse a ``--bootstrap`` that is not a whole number of at least 2 samples (as
    ``TrainConfig.bootstrap`` does: one sample is a plain run on resampled rows, not a sweep).

    Raises:
        ConfigError: naming the flag and the value.
    """
    _check_count("--bootstrap", k, "a bootstrap needs at least 2 samples", "the number of samples",
                 "--bootstrap 8")


def _check_count(flag: str, k: Any, too_few: str, what: str, example: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise ConfigError(f"{flag} {k!r}: {what} is a whole number (e.g. {example})")
    if k < 2:
        raise ConfigError(f"{flag} {k}: {too_few} (e.g. {example})")
    if k > MAX_MEMBERS:
        raise ConfigError(f"{flag} {k}: more than {MAX_MEMBERS} members")


def plan_members(*, seeds: list[int] | None = None, grid: dict[str, list[Any]] | None = None,
                 kfold: int = 0, bootstrap: int = 0) -> list[Member]:
    """The members of a sweep: every combination of seeds, folds, bootstrap samples and grid
    points, in that order (the last varies fastest).

    Args:
        seeds: from :func:`parse_seeds`; None (default) sweeps no seeds.
        grid: from :func:`parse_grid`; None (default) sweeps no grid.
        kfold: K folds: member k validates on fold k (setting ``fold="k/K"``). Default 0: none.
        bootstrap: K bootstrap samples (setting ``bootstrap="b/K"``). Default 0: none.

    Returns:
        The members, named by what varies between them (see :class:`Member`).

    Raises:
        ConfigError: nothing to sweep, 1 fold, 1 bootstrap sample or a negative count,
            kfold together with bootstrap, seeds both by ``seeds`` and in the grid, more than
            :data:`MAX_MEMBERS` members, or a name too long for a directory.

    Example:
        >>> [(m.name, m.settings) for m in plan_members(kfold=2)]
        [('fold-1', {'fold': '1/2'}), ('fold-2', {'fold': '2/2'})]
    """
    grid = dict(grid or {})
    if kfold is not None and kfold != 0:
        check_kfold(kfold)
    if bootstrap is not None and bootstrap != 0:
        check_bootstrap(bootstrap)
    if kfold and bootstrap:
        raise ConfigError("--kfold and --bootstrap: choose one (each member validates on its own "
                          "fold, or on the rows its bootstrap sample left out)")
    if seeds is not None and "seed" in grid:
        raise ConfigError("seeds given both by --seeds and in --grid: give them once")
    if not seeds and not grid and not kfold and not bootstrap:
        raise ConfigError("nothing to sweep: give --seeds 0-7, --grid lr=1e-3,3e-3, --kfold 5 "
                          "or --bootstrap 8")
    axes: dict[str, list[Any]] = {}
    if seeds:
        axes["seed"] = list(seeds)
    if kfold:
        axes["fold"] = [f"{k}/{kfold}" for k in range(1, kfold + 1)]
    if bootstrap:
        axes["bootstrap"] = [f"{b}/{bootstrap}" for b in range(1, bootstrap + 1)]
    axes.update(grid)
    count = math.prod(len(v) for v in axes.values())
    if count > MAX_MEMBERS:  # counted before the product is made
        raise ConfigError(f"a sweep of {count} members is more than {MAX_MEMBERS}: sweep fewer "
                          "seeds, folds or grid points")
    texts = {k: _value_texts(k, v) for k, v in axes.items()}
    varying = [k for k, v in axes.items() if len(v) > 1]
    members = []
    for point in itertools.product(*(range(len(v)) for v in axes.values())):
        at = dict(zip(axes, point, strict=True))
        name = "_".join(f"{k}-{texts[k][at[k]]}" for k in varying) or "run"
        members.append(Member(_checked_name(name), {k: axes[k][i] for k, i in at.items()}))
    return members


def _value_texts(key: str, values: list[Any]) -> list[str]:
    """How each value of an axis reads in a member's name: floats as ``%g`` (or exactly, where
    ``%g`` would give two values one name), lists joined by ``x``, fold/bootstrap by their k."""
    if key in SPLIT_KEYS:
        return [v.split("/")[0] for v in values]
    texts = [_text(v, "%g") for v in values]
    if len(set(texts)) < len(texts):  # lr=0.003,0.0030001: both 0.003 by %g
        texts = [_text(v, None) for v in values]
    return texts


def _text(value: Any, float_format: str | None) -> str:
    """One value as it reads in a member's name."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return float_format % value if float_format else repr(value)
    if isinstance(value, list):
        return "x".join(_text(v, float_format) for v in value)
    return str(value)


def _checked_name(name: str) -> str:
    """``name`` when it is a safe directory name (it always is: values are numbers, switches
    and names checked by :func:`parse_grid`); a ConfigError otherwise."""
    if not _SAFE_NAME.fullmatch(name):
        raise ConfigError(f"member name {name!r:.80} is not a safe directory name")
    if len(name) > MAX_NAME:
        raise ConfigError(f"member name {name[:60]}... is longer than {MAX_NAME} characters: "
                          "sweep fewer settings or shorter lists")
    return name


def group_key(settings: dict[str, Any]) -> tuple:
    """What splits members into separate groups: their settings that cannot vary within one
    vectorized model (everything but seed, fold, bootstrap, lr, weight_decay and dropout).

    Args:
        settings: a member's settings (:attr:`Member.settings`).

    Returns:
        A hashable, sorted tuple of ``(key, value)`` pairs; lists become tuples.

    Example:
        >>> group_key({"seed": 1, "lr": 0.1, "hidden": [64, 64]})
        (('hidden', (64, 64)),)
    """
    within = set(VECTORIZED) | set(SPLIT_KEYS)
    return tuple(sorted(((k, tuple(v) if isinstance(v, list) else v) for k, v in settings.items()
                         if k not in within), key=lambda kv: kv[0]))
