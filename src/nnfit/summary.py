"""Model inspection: a per-layer summary table, parameter counts and activation capture.

Everything here looks at a model without changing it: :func:`summarize` runs at most one forward
pass in eval mode under :func:`torch.inference_mode` and restores every submodule's train/eval
flag afterwards; :func:`capture_activations` only adds forward hooks for the length of a
``with`` block. Hooks are removed on every exit path, including errors.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .errors import ConfigError

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "LayerInfo",
    "ModelSummary",
    "capture_activations",
    "count_parameters",
    "parameter_shapes",
    "summarize",
]

ROOT_NAME = "(root)"
NOT_RUN = "-"
_COLUMNS = ("Layer", "Type", "Output shape", "Params", "Trainable")
_NUMERIC = {"Params", "Trainable"}


@dataclass(frozen=True)
class LayerInfo:
    """One row of a :class:`ModelSummary`.

    Attributes:
        name: qualified module name, e.g. ``"fc1"`` or ``"blocks.0.fc2"``; ``"(root)"`` for
            the model itself.
        type: the module's class name, e.g. ``"Linear"``.
        output_shape: e.g. ``"(8, 64)"``; ``"[(8, 64), (8, 2)]"`` for tuple/list outputs;
            ``"-"`` if the module did not run (or no sample input was given).
        params: parameters owned directly by this module (``recurse=False``); a parameter
            shared between modules is counted only at the first module that owns it.
        trainable: of those, the ones with ``requires_grad``.
    """

    name: str
    type: str
    output_shape: str
    params: int
    trainable: int


@dataclass(frozen=True)
class ModelSummary:
    """A model's layers with their output shapes and parameter counts.

    Attributes:
        layers: one :class:`LayerInfo` per module that owns parameters directly or is a leaf,
            in registration order.
        total_params: number of distinct parameter elements in the model.
        trainable_params: of those, the ones with ``requires_grad``.

    Example:
        >>> s = summarize(nn.Sequential(nn.Linear(4, 2), nn.ReLU()), torch.zeros(3, 4))
        >>> [(r.name, r.output_shape, r.params) for r in s.layers]
        [('0', '(3, 2)', 10), ('1', '(3, 2)', 0)]
        >>> s.total_params, s.trainable_params
        (10, 10)
    """

    layers: tuple[LayerInfo, ...]
    total_params: int
    trainable_params: int

    @property
    def non_trainable_params(self) -> int:
        """Parameter elements with ``requires_grad=False`` (frozen)."""
        return self.total_params - self.trainable_params

    def totals_line(self) -> str:
        """The one-line totals, e.g. ``"Total params: 10  Trainable: 10  Non-trainable: 0"``."""
        return (
            f"Total params: {self.total_params}  Trainable: {self.trainable_params}  "
            f"Non-trainable: {self.non_trainable_params}"
        )

    def _rows(self) -> list[tuple[str, str, str, str, str]]:
        return [
            (r.name, r.type, r.output_shape, str(r.params), str(r.trainable)) for r in self.layers
        ]

    def table(self) -> Table:
        """A :class:`rich.table.Table` of the layers, with the totals as its caption.

        Returns:
            a table with columns Layer, Type, Output shape, Params, Trainable.

        Example:
            >>> from rich.console import Console
            >>> s = summarize(nn.Linear(4, 2))
            >>> Console(width=80).print(s.table())  # doctest: +SKIP
        """
        # Imported here so that inspecting a model never pays for rich unless it is displayed.
        from rich.table import Table

        table = Table(caption=self.totals_line(), caption_justify="left")
        for column in _COLUMNS:
            table.add_column(column, justify="right" if column in _NUMERIC else "left")
        for row in self._rows():
            table.add_row(*row)
        return table

    def __str__(self) -> str:
        """A plain-text table, aligned in columns, ending with the totals line."""
        rows = [_COLUMNS, *self._rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]

        def fmt(row: tuple[str, ...]) -> str:
            cells = [
                cell.rjust(w) if col in _NUMERIC else cell.ljust(w)
                for cell, w, col in zip(row, widths, _COLUMNS, strict=True)
            ]
            return "  ".join(cells).rstrip()

        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        lines = [fmt(_COLUMNS), rule, *(fmt(row) for row in rows[1:]), rule, self.totals_line()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: ``layers`` (a list of dicts) and the three totals."""
        return {
            "layers": [asdict(layer) for layer in self.layers],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
        }


def _check_materialized(model: nn.Module) -> None:
    """Refuse lazy modules whose parameters have no shape yet: they cannot be counted."""
    for name, p in model.named_parameters():
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise ConfigError(
                f"parameter {name!r} is not initialized yet (lazy module); "
                "run one forward pass before inspecting the model"
            )


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Count a model's parameter elements, each shared (tied) parameter once.

    Args:
        model: the model to count.

    Returns:
        ``(total, trainable)``, where trainable counts parameters with ``requires_grad``.

    Raises:
        ConfigError: the model has lazy parameters that are not initialized yet.

    Example:
        >>> count_parameters(nn.Linear(4, 2))
        (10, 10)
    """
    _check_materialized(model)
    # model.parameters() already yields each shared parameter once.
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def parameter_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Map each name from ``model.named_parameters()`` to that parameter's shape.

    Args:
        model: the model to inspect.

    Returns:
        ``{name: shape}`` in registration order; a shared parameter appears under its first
        name only.

    Example:
        >>> parameter_shapes(nn.Linear(4, 2))
        {'weight': (2, 4), 'bias': (2,)}
    """
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def _format_output(out: Any) -> str:
    """Describe a module output's shape: ``(8, 64)``, ``[(8, 64), (8, 2)]``, ``{k: (8,)}``."""
    if isinstance(out, Tensor):
        return str(tuple(out.shape))
    if isinstance(out, (tuple, list)):
        return "[" + ", ".join(_format_output(o) for o in out) + "]"
    if isinstance(out, Mapping):
        return "{" + ", ".join(f"{k}: {_format_output(v)}" for k, v in out.items()) + "}"
    if out is None:
        return "None"
    return type(out).__name__


def _take_batch(value: Any, batch_size: int | None) -> Any:
    """The first ``batch_size`` rows of a tensor; anything else passes through unchanged."""
    if batch_size is not None and isinstance(value, Tensor) and value.dim() > 0:
        return value[:batch_size]
    return value


def _prepare_call(sample_input: Any, batch_size: int | None) -> tuple[tuple, dict]:
    """Turn ``sample_input`` into the positional and keyword arguments of one model call."""
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(sample_input, Tensor):
        return (_take_batch(sample_input, batch_size),), {}
    if isinstance(sample_input, (tuple, list)):
        return tuple(_take_batch(x, batch_size) for x in sample_input), {}
    if isinstance(sample_input, Mapping):
        bad = [k for k in sample_input if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"sample_input dict keys must be argument names, got {bad!r}")
        return (), {k: _take_batch(v, batch_size) for k, v in sample_input.items()}
    raise ConfigError(
        "sample_input must be a Tensor, a tuple/list of tensors or a dict of tensors, "
        f"got {type(sample_input).__name__}"
    )


def _record_output_shapes(model: nn.Module, args: tuple, kwargs: dict) -> dict[nn.Module, str]:
    """Run ``model(*args, **kwargs)`` once in eval mode and return each module's output shape.

    The model's train/eval flags and hooks are exactly as before when this returns or raises.
    """
    shapes: dict[nn.Module, str] = {}

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        # A module called several times keeps its last output, as capture_activations does.
        shapes[module] = _format_output(output)

    modes = {m: m.training for m in model.modules()}
    handles = []
    try:
        for m in modes:
            handles.append(m.register_forward_hook(hook))
        # Eval mode keeps BatchNorm running stats and dropout untouched; inference_mode keeps
        # autograd from recording anything.
        model.eval()
        with torch.inference_mode():
            model(*args, **kwargs)
    except Exception as e:
        message = " ".join(str(e).split())  # one line, whatever the original error looked like
        raise ConfigError(f"summary forward pass failed: {type(e).__name__}: {message}") from e
    finally:
        for h in handles:
            h.remove()
        # Set flags one by one: model.train(flag) would overwrite submodules' own modes.
        for m, training in modes.items():
            m.training = training
    return shapes


def summarize(
    model: nn.Module, sample_input: Any = None, *, batch_size: int | None = None
) -> ModelSummary:
    """Summarize a model layer by layer: output shapes and parameter counts.

    Rows are the modules that own parameters directly or have no children, in registration
    order; the model itself appears (as ``"(root)"``) only if it owns parameters directly.

    Args:
        model: the model to inspect; it is not changed (train/eval flags are restored, and
            parameters and buffers are untouched because the pass runs in eval mode).
        sample_input: what to call the model with: a Tensor (``model(x)``), a tuple/list
            (``model(*xs)``) or a dict (``model(**xs)``). Default None: no forward pass and
            every output shape is ``"-"``.
        batch_size: if given, tensors in ``sample_input`` are cut to their first
            ``batch_size`` rows before the pass, so a whole dataset can be passed cheaply.
            Default None: use ``sample_input`` as it is.

    Returns:
        a :class:`ModelSummary`.

    Raises:
        ConfigError: ``sample_input`` is of an unsupported type, ``batch_size`` is not a
            positive integer or is given without ``sample_input``, the model has uninitialized
            lazy parameters, or the forward pass raised (the message names the original error).

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> s = summarize(model, torch.zeros(5, 4))
        >>> [r.output_shape for r in s.layers]
        ['(5, 8)', '(5, 8)', '(5, 2)']
        >>> print(s.totals_line())
        Total params: 58  Trainable: 58  Non-trainable: 0
    """
    _check_materialized(model)
    shapes: dict[nn.Module, str] = {}
    if sample_input is not None:
        args, kwargs = _prepare_call(sample_input, batch_size)
        shapes = _record_output_shapes(model, args, kwargs)
    elif batch_size is not None:
        raise ConfigError("batch_size needs a sample_input to cut; got sample_input=None")

    total, n_trainable = count_parameters(model)
    return ModelSummary(layers=_layer_rows(model, shapes), total_params=total,
                        trainable_params=n_trainable)


def _layer_rows(model: nn.Module, shapes: dict[nn.Module, str]) -> tuple[LayerInfo, ...]:
    """One row per module that owns parameters or has no children (the root only if it owns
    parameters); tied weights are counted once, at their first owner."""
    seen: set[int] = set()  # ids of parameters already counted
    layers = []
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        is_leaf = next(module.children(), None) is None
        if (module is model and not own) or (not own and not is_leaf):
            continue
        params = trainable = 0
        for p in own:
            if id(p) in seen:
                continue
            seen.add(id(p))
            params += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        layers.append(LayerInfo(name=name or ROOT_NAME, type=type(module).__name__,
                                output_shape=shapes.get(module, NOT_RUN), params=params,
                                trainable=trainable))
    return tuple(layers)


def _detach(out: Any) -> Any:
    """A detached copy of a module output; tuples/lists become tuples, dicts stay dicts."""
    if isinstance(out, Tensor):
        # Cloned, not only detached: a later in-place op (ReLU(inplace=True)) would otherwise
        # overwrite the captured values.
        return out.detach().clone()
    if isinstance(out, (tuple, list)):
        return tuple(_detach(o) for o in out)
    if isinstance(out, Mapping):
        return {k: _detach(v) for k, v in out.items()}
    return out


def _resolve_modules(model: nn.Module, names: Iterable[str] | str) -> dict[str, nn.Module]:
    """Look up every requested name, failing on the first unknown one before any hook exists."""
    if isinstance(names, str):
        names = [names]
    # remove_duplicate=False so that every alias of a shared module can be asked for.
    known = dict(model.named_modules(remove_duplicate=False))
    known[ROOT_NAME] = model
    resolved: dict[str, nn.Module] = {}
    for name in names:
        if name not in known:
            valid = [n for n in known if n and n != ROOT_NAME]
            close = difflib.get_close_matches(str(name), valid, n=3)
            hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
            listing = ", ".join(valid[:8]) + (", ..." if len(valid) > 8 else "")
            raise ConfigError(
                f"unknown module name {name!r} in capture_activations; {hint}"
                f"valid names include: {listing or ROOT_NAME}"
            )
        resolved[name] = known[name]
    return resolved


@contextlib.contextmanager
def capture_activations(
    model: nn.Module, names: Iterable[str] | str
) -> Iterator[dict[str, Tensor]]:
    """Record the outputs of named submodules while the model runs inside a ``with`` block.

    Args:
        model: the model whose submodules to watch.
        names: one qualified module name (``"fc1"``, ``"blocks.0.fc2"``, ``"(root)"`` for the
            model itself) or several.

    Returns:
        a context manager yielding a dict, filled as the model runs, mapping each name to that
        module's output, detached and copied. A module that runs several times keeps its last
        output; tuple/list outputs are stored as tuples. The dict and its tensors stay usable
        after the block; only the hooks are removed (always, even on errors).

    Raises:
        ConfigError: a name is not a submodule of ``model``; no hook is registered then.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
        >>> with capture_activations(model, "0") as acts:
        ...     _ = model(torch.zeros(2, 4))
        >>> acts["0"].shape
        torch.Size([2, 3])
    """
    modules = _resolve_modules(model, names)
    captured: dict[str, Any] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            captured[name] = _detach(output)

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield captured
    finally:
        for h in handles:
            h.remove()
