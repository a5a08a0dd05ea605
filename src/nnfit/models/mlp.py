"""The multilayer perceptron: Linear layers with activation, optional batch norm and dropout.

Also holds the argument checks shared by the other spec-buildable models (``residual.py``), so
that every model rejects a bad size, dropout or activation with the same wording.
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..errors import ConfigError
from .activations import ACTIVATIONS, make_activation
from .state import Slot, linear
from .state import batchnorm as norm


def _check_size(owner: str, arg: str, value: Any) -> int:
    """Return ``value`` as an int, or raise ConfigError unless it is a positive integer."""
    # bool is an int subclass, but True as a layer width is always a mistake
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{owner}: {arg} must be a positive int, got {value!r}")
    return int(value)


def _check_hidden(owner: str, hidden: Any, *, allow_empty: bool) -> list[int]:
    """Return the hidden widths as a list of ints, or raise ConfigError naming the bad entry."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ConfigError(f"{owner}: hidden must be a list of positive ints, got {hidden!r}")
    if not hidden and not allow_empty:
        raise ConfigError(f"{owner}: hidden must have at least one entry, got []")
    return [_check_size(owner, f"hidden[{i}]", h) for i, h in enumerate(hidden)]


def _check_options(
    owner: str, *, activation: Any, dropout: Any, batchnorm: Any
) -> tuple[str, float, bool]:
    """Validate the options every spec-buildable model shares; return them normalised."""
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ConfigError(
            f"{owner}: activation {activation!r} is not known "
            f"(choose from: {', '.join(ACTIVATIONS.names())})"
        )
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, numbers.Real)
        or not 0.0 <= dropout < 1.0  # also rejects NaN
    ):
        raise ConfigError(f"{owner}: dropout must be a number in [0, 1), got {dropout!r}")
    if not isinstance(batchnorm, bool):
        raise ConfigError(f"{owner}: batchnorm must be true or false, got {batchnorm!r}")
    return activation, float(dropout), batchnorm


def _stack_args(
    owner: str,
    in_features: Any,
    hidden: Any,
    out_features: Any,
    activation: Any,
    dropout: Any,
    batchnorm: Any,
    *,
    allow_empty: bool,
) -> tuple[int, list[int], int, str, float, bool]:
    """The arguments of a layer-stack model (MLP, ResidualMLP), checked and normalised."""
    in_features = _check_size(owner, "in_features", in_features)
    widths = _check_hidden(owner, hidden, allow_empty=allow_empty)
    out_features = _check_size(owner, "out_features", out_features)
    activation, dropout, batchnorm = _check_options(
        owner, activation=activation, dropout=dropout, batchnorm=batchnorm
    )
    return in_features, widths, out_features, activation, dropout, batchnorm


class MLP(nn.Sequential):
    """A multilayer perceptron with named layers: ``fc1, bn1, act1, drop1, ..., out``.

    Each hidden layer ``i`` (1-based) is ``fc{i}`` (Linear), then ``bn{i}`` (BatchNorm1d, only
    if ``batchnorm``), ``act{i}`` and ``drop{i}`` (Dropout, only if ``dropout > 0``). A final
    Linear named ``out`` maps to ``out_features`` with no activation, so the output is logits or
    raw regression values. ``hidden=[]`` gives a linear model.

    Args:
        in_features: width of each input row.
        hidden: widths of the hidden layers, in order; may be empty.
        out_features: width of each output row.
        activation: name from ``ACTIVATIONS``. Default: ``"relu"``.
        dropout: probability of zeroing a hidden unit during training, in ``[0, 1)``; ``0``
            adds no Dropout layers. Default: ``0.0``.
        batchnorm: add BatchNorm1d after each hidden Linear, before its activation.
            Default: ``False``.

    Raises:
        ConfigError: a size is not a positive int, ``dropout`` is outside ``[0, 1)``,
            ``batchnorm`` is not a bool, or ``activation`` is not registered.

    Shape:
        - Input: ``(N, in_features)``.
        - Output: ``(N, out_features)``.

    Attributes:
        in_features, hidden, out_features, activation, dropout, batchnorm: the arguments,
            normalised (``hidden`` is a ``list[int]``, ``dropout`` a float).

    Mutating the layer list (``append``, ``del``...) makes :meth:`spec` describe a different
    network than the one that runs; build a new MLP instead.

    Example:
        >>> import torch
        >>> model = MLP(4, [16, 8], 3, dropout=0.1)
        >>> model(torch.randn(5, 4)).shape
        torch.Size([5, 3])
        >>> [name for name, _ in model.named_children()]
        ['fc1', 'act1', 'drop1', 'fc2', 'act2', 'drop2', 'out']
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = False,
    ) -> None:
        in_features, widths, out_features, activation, dropout, batchnorm = _stack_args(
            type(self).__name__, in_features, hidden, out_features, activation, dropout, batchnorm,
            allow_empty=True,
        )

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = in_features
        for i, h in enumerate(widths, start=1):
            layers[f"fc{i}"] = nn.Linear(width, h)
            if batchnorm:
                layers[f"bn{i}"] = nn.BatchNorm1d(h)
            layers[f"act{i}"] = make_activation(activation)
            if dropout > 0:
                layers[f"drop{i}"] = nn.Dropout(dropout)
            width = h
        layers["out"] = nn.Linear(width, out_features)
        super().__init__(layers)

        self.in_features = in_features
        self.hidden = widths
        self.out_features = out_features
        self.activation = activation
        self.dropout = dropout
        self.batchnorm = batchnorm

    @staticmethod
    def state_shapes(
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = False,
    ) -> dict[str, Slot]:
        """The ``state_dict`` that ``MLP(...)`` with these arguments would hold, without building it.

        Raises:
            ConfigError: as the constructor would.

        Example:
            >>> MLP.state_shapes(4, [8], 2)["fc1.weight"].shape
            (8, 4)
        """
        in_features, widths, out_features, _, _, batchnorm = _stack_args(
            "MLP", in_features, hidden, out_features, activation, dropout, batchnorm, allow_empty=True
        )
        state: dict[str, Slot] = {}
        width = in_features
        for i, h in enumerate(widths, start=1):
            state.update(linear(f"fc{i}", width, h))
            if batchnorm:
                state.update(norm(f"bn{i}", h))
            width = h
        state.update(linear("out", width, out_features))
        return state

    def __getitem__(self, idx: int | slice) -> nn.Module:
        # nn.Sequential rebuilds a slice as self.__class__(OrderedDict), which MLP's signature
        # cannot accept; a slice (a feature extractor, say) is a plain stack of layers anyway.
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    def spec(self) -> dict[str, Any]:
        """Return a JSON-serialisable description that ``build_model`` turns back into this model.

        The weights are not included: load them with ``load_state_dict``.

        Example:
            >>> MLP(4, [8], 2).spec()["hidden"]
            [8]
        """
        return stack_spec("mlp", self)

    def extra_repr(self) -> str:
        return stack_repr(self)


def stack_spec(name: str, m: Any) -> dict[str, Any]:
    """The spec shared by the layer-stack models (MLP, ResidualMLP): sizes and options."""
    return {
        "name": name,
        "in_features": m.in_features,
        "hidden": list(m.hidden),
        "out_features": m.out_features,
        "activation": m.activation,
        "dropout": m.dropout,
        "batchnorm": m.batchnorm,
    }


def stack_repr(m: Any) -> str:
    """``extra_repr`` of the layer-stack models."""
    return f"in_features={m.in_features}, hidden={m.hidden}, out_features={m.out_features}"
