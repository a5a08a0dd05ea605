"""Model families, and building a model from its JSON-serialisable spec.

Every built-in model has a ``spec()`` method returning a plain dict such as
``{"name": "mlp", "in_features": 4, "hidden": [16], "out_features": 3, ...}``;
:func:`build_model` turns that dict back into the same architecture. Names resolve through the
closed :data:`MODELS` registry, never through import strings, and every key is checked against
the model's constructor.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from . import state as model_state
from .activations import ACTIVATIONS, make_activation
from .cnn import CNN
from .mlp import MLP
from .multi_input import MultiInput, check_branch_name
from .residual import ResidualBlock, ResidualMLP
from .rnn import GRU, LSTM, Recurrent
from .state import Slot, param_count, prefixed
from .tabular import Embeddings, embedding_dim

__all__ = [
    "ACTIVATIONS",
    "BUILT_IN_STACKS",
    "CLI_MODELS",
    "CNN",
    "GRU",
    "LSTM",
    "MLP",
    "Embeddings",
    "MODELS",
    "MultiInput",
    "Recurrent",
    "ResidualBlock",
    "ResidualMLP",
    "build_model",
    "check_size",
    "embedding_dim",
    "make_activation",
    "model_spec",
    "state_shapes",
]

MAX_SPEC_DEPTH = 16  # models nested in multi_input models: a spec is a tree, never a deep chain

MODELS: Registry[type[nn.Module]] = Registry("model")
MODELS.register("mlp", MLP, "multilayer perceptron: Linear layers with optional batchnorm/dropout")
MODELS.register("resmlp", ResidualMLP, "residual MLP: two-layer skip-connection blocks + head")
MODELS.register("multi_input", MultiInput, "one branch per named input, concatenated into a head")
MODELS.register("embeddings", Embeddings, "one nn.Embedding per categorical column, concatenated")
MODELS.register("cnn", CNN, "convolutional network: conv-batchnorm-activation stages, pooling, head")
MODELS.register("lstm", LSTM, "stacked LSTM layers over sequences, last-step or mean readout + head")
MODELS.register("gru", GRU, "stacked GRU layers over sequences, last-step or mean readout + head")
# The models of one (rows, features) input: what `nnfit train` builds from a table, and the
# specs fit completes from the data (in_features, out_features).
BUILT_IN_STACKS: tuple[str, ...] = ("mlp", "resmlp")
# The families `nnfit train` builds from its data: rows (the stacks), images, sequences.
CLI_MODELS: tuple[str, ...] = (*BUILT_IN_STACKS, "cnn", "lstm", "gru")


def _check_keys(cls: type, name: str, kwargs: Mapping[str, Any], where: str) -> None:
    """Raise ConfigError for keys ``cls`` does not accept and required keys that are absent."""
    params = [
        p
        for p in inspect.signature(cls).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    valid = [p.name for p in params]
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        s = "s" if len(unknown) > 1 else ""
        raise ConfigError(
            f"{where}: unknown key{s} {', '.join(repr(k) for k in unknown)} for {name!r} "
            f"(valid: name, {', '.join(valid)})"
        )
    missing = [p.name for p in params if p.default is p.empty and p.name not in kwargs]
    if missing:
        s = "s" if len(missing) > 1 else ""
        raise ConfigError(
            f"{where}: missing key{s} {', '.join(repr(k) for k in missing)} for {name!r}"
        )


def _resolve(spec: Any, path: str) -> tuple[type, dict[str, Any], str]:
    """The class, constructor arguments and location (for messages) of one model of a spec;
    ``path`` locates it inside the top-level spec. Keys are checked, values are not yet."""
    where = f"model spec at {path}" if path else "model spec"
    if path.count(".") > 2 * MAX_SPEC_DEPTH:
        raise ConfigError(f"{where}: nested deeper than {MAX_SPEC_DEPTH} models")
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping with a 'name' key, got {_short(spec)}")
    if "name" not in spec:
        raise ConfigError(f"{where}: missing key 'name' (choose from: {', '.join(MODELS.names())})")
    name = spec["name"]
    try:
        cls = MODELS.get(name)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    _check_keys(cls, name, kwargs, where)
    if cls is MultiInput:
        branches = kwargs["branches"]
        if not isinstance(branches, Mapping) or not branches:
            raise ConfigError(
                f"{where}: 'branches' must be a non-empty mapping of name -> model spec, "
                f"got {_short(branches)}"
            )
    return cls, kwargs, where


def _short(value: Any) -> str:
    from ..config import _short as short

    return short(value)


def state_shapes(spec: Mapping[str, Any]) -> dict[str, Slot]:
    """The ``state_dict`` that ``build_model(spec)`` would hold, computed without building it.

    Args:
        spec: a model spec, as for :func:`build_model`.

    Returns:
        ``state_dict`` key -> :class:`~nnfit.models.state.Slot` (shape, dtype, parameter or buffer).

    Raises:
        ConfigError: whatever :func:`build_model` would refuse, named the same way.

    Example:
        >>> state_shapes({"name": "mlp", "in_features": 4, "hidden": [8], "out_features": 1})["out.weight"]
        Slot(shape=(1, 8), dtype=torch.float32, parameter=True)
    """
    return _shapes(spec, "")


def _shapes(spec: Any, path: str) -> dict[str, Slot]:
    cls, kwargs, where = _resolve(spec, path)
    prefix = f"{path}." if path else ""
    try:
        if cls is not MultiInput:
            return cls.state_shapes(**kwargs)
        state: dict[str, Slot] = {}
        for b, s in kwargs["branches"].items():
            check_branch_name(b)
            state.update(prefixed(f"branches.{b}", _shapes(s, f"{prefix}branches.{b}")))
        state.update(prefixed("head", _shapes(kwargs["head"], f"{prefix}head")))
        return state
    except ConfigError as err:
        msg = str(err)
        raise ConfigError(msg if msg.startswith("model spec") else f"{where}: {msg}") from None


def _build(spec: Any, path: str) -> nn.Module:
    """Build one model from ``spec``; ``path`` locates it inside the top-level spec."""
    cls, kwargs, where = _resolve(spec, path)
    if cls is MultiInput:
        # Branches and head are themselves specs: build them first, each with its own path so
        # an error deep inside says where it is.
        branches = kwargs["branches"]
        prefix = f"{path}." if path else ""
        kwargs["branches"] = {b: _build(s, f"{prefix}branches.{b}") for b, s in branches.items()}
        kwargs["head"] = _build(kwargs["head"], f"{prefix}head")
    if isinstance(kwargs.get("hidden"), (list, tuple)):
        # The constructor checks each entry; JSON/YAML give lists, Python callers tuples.
        kwargs["hidden"] = list(kwargs["hidden"])

    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def build_model(spec: Mapping[str, Any], *, max_params: int | None = None) -> nn.Module:
    """Build a freshly initialised model from a spec dict such as ``model.spec()`` returns.

    The spec is checked whole, and its parameters counted, before anything is allocated.

    Args:
        spec: a mapping with ``"name"`` (a key of :data:`MODELS`) and that model's constructor
            arguments. For ``"multi_input"``, ``"branches"`` maps names to specs and
            ``"head"`` is a spec; they are built recursively.
        max_params: refuse a model with more parameters. Default:
            ``nnfit.models.state.MAX_PARAMS`` (10**9).

    Returns:
        The model, with new random weights: load trained ones with ``load_state_dict``.

    Raises:
        ConfigError: ``spec`` is not a mapping, lacks ``"name"``, names an unknown model, has
            an unknown or a missing key, or holds an invalid value. The message starts with
            ``model spec`` and the location of the offending part, e.g.
            ``model spec: unknown key 'hiden' for 'mlp' (valid: ...)``; or the model would have
            more than ``max_params`` parameters (the message gives the count).

    Example:
        >>> model = build_model({"name": "mlp", "in_features": 4, "hidden": [8], "out_features": 2})
        >>> type(model).__name__, model.spec()["activation"]
        ('MLP', 'relu')
        >>> build_model(model.spec()).spec() == model.spec()
        True
    """
    check_size(state_shapes(spec), max_params)
    return _build(spec, "")


def check_size(state: dict[str, Slot], max_params: int | None = None) -> int:
    """The parameter count of ``state``; ConfigError above ``max_params``
    (default ``nnfit.models.state.MAX_PARAMS``)."""
    limit = model_state.MAX_PARAMS if max_params is None else max_params
    n = param_count(state)
    if n > limit:
        raise ConfigError(f"model spec: {n:,} parameters is more than the limit of {limit:,} "
                          "(nnfit.models.state.MAX_PARAMS): use smaller hidden sizes")
    return n


def model_spec(model: nn.Module) -> dict[str, Any] | None:
    """Return ``model.spec()``, or ``None`` when the model cannot be described by a spec.

    ``None`` means "rebuild this model in code": the model has no callable ``spec``, or its
    ``spec()`` raises ConfigError because a part is not spec-buildable (a :class:`MultiInput`
    with a hand-written branch, say).

    Args:
        model: any module.

    Example:
        >>> model_spec(MLP(4, [], 2))["name"]
        'mlp'
        >>> model_spec(nn.Linear(4, 2)) is None
        True
    """
    spec = getattr(model, "spec", None)
    if not callable(spec):
        return None
    try:
        return spec()
    except ConfigError:
        return None
