"""The multilayer perceptron: Linear layers with activation, optional batch norm and dropout,
and optional embeddings of categorical columns before the first layer.

Also holds the argument checks shared by the other spec-buildable models (``residual.py``), so
that every model rejects a bad size, dropout or activation with the same wording.
"""

from __future__ import annotations

import itertools
import numbers
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .activations import ACTIVATIONS, make_activation
from .state import Slot, linear, prefixed
from .state import batchnorm as norm
from .tabular import Embeddings, check_embeddings, embeddings_state, with_codes


def _check_size(owner: str, arg: str, value: Any, *, allow_zero: bool = False) -> int:
    """Return ``value`` as an int, or raise ConfigError unless it is a positive integer
    (or zero, with ``allow_zero``)."""
    # bool is an int subclass, but True as a layer width is always a mistake
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1 - allow_zero:
        what = "a non-negative" if allow_zero else "a positive"
        raise ConfigError(f"{owner}: {arg} must be {what} int, got {value!r}")
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
    embeddings: Any,
    *,
    allow_empty: bool,
) -> tuple[int, list[int], int, str, float, bool, list[tuple[int, int]]]:
    """The arguments of a layer-stack model (MLP, ResidualMLP), checked and normalised."""
    pairs = check_embeddings(owner, embeddings)
    # With embedded columns there may be no numeric ones: a table of categoricals only.
    in_features = _check_size(owner, "in_features", in_features, allow_zero=bool(pairs))
    widths = _check_hidden(owner, hidden, allow_empty=allow_empty)
    out_features = _check_size(owner, "out_features", out_features)
    activation, dropout, batchnorm = _check_options(
        owner, activation=activation, dropout=dropout, batchnorm=batchnorm
    )
    return in_features, widths, out_features, activation, dropout, batchnorm, pairs


class MLP(nn.Sequential):
    """A multilayer perceptron with named layers: ``fc1, bn1, act1, drop1, ..., out``.

    Each hidden layer ``i`` (1-based) is ``fc{i}`` (Linear), then ``bn{i}`` (BatchNorm1d, only
    if ``batchnorm``), ``act{i}`` and ``drop{i}`` (Dropout, only if ``dropout > 0``). A final
    Linear named ``out`` maps to ``out_features`` with no activation, so the output is logits or
    raw regression values. ``hidden=[]`` gives a linear model.

    With ``embeddings``, an :class:`~nnfit.models.tabular.Embeddings` named ``embed`` comes
    first: it looks up the categorical codes, and ``fc1`` takes the numeric features followed
    by the embedded ones. ``embed`` is a child (its tables are in ``state_dict`` as
    ``embed.tables.{j}.weight``) but not a layer the input flows through: ``forward`` feeds
    it the codes itself. Without embeddings the model is exactly the plain stack above.

    Args:
        in_features: width of each numeric input row; may be 0 when ``embeddings`` is given.
        hidden: widths of the hidden layers, in order; may be empty.
        out_features: width of each output row.
        activation: name from ``ACTIVATIONS``. Default: ``"relu"``.
        dropout: probability of zeroing a hidden unit during training, in ``[0, 1)``; ``0``
            adds no Dropout layers. Default: ``0.0``.
        batchnorm: add BatchNorm1d after each hidden Linear, before its activation.
            Default: ``False``.
        embeddings: ``(cardinality, width)`` per categorical column, in the order of the
            columns of ``codes`` (see :func:`~nnfit.models.tabular.embedding_dim` for a width
            rule). Default: ``()``, no categorical input.

    Raises:
        ConfigError: a size is not a positive int, ``dropout`` is outside ``[0, 1)``,
            ``batchnorm`` is not a bool, ``activation`` is not registered, or an
            ``embeddings`` entry is not a valid pair (named).

    Shape:
        - Input ``x``: ``(N, in_features)``.
        - Input ``codes`` (only with ``embeddings``): ``(N, len(embeddings))`` int64.
        - Output: ``(N, out_features)``.

    Attributes:
        in_features, hidden, out_features, activation, dropout, batchnorm, embeddings: the
            arguments, normalised (``hidden`` is a ``list[int]``, ``dropout`` a float,
            ``embeddings`` a list of int pairs).
        embed: the ``Embeddings`` child, or ``None`` without embeddings.

    Mutating the layer list (``append``, ``del``...) makes :meth:`spec` describe a different
    network than the one that runs; build a new MLP instead.

    Example:
        >>> import torch
        >>> model = MLP(4, [16, 8], 3, dropout=0.1)
        >>> model(torch.randn(5, 4)).shape
        torch.Size([5, 3])
        >>> [name for name, _ in model.named_children()]
        ['fc1', 'act1', 'drop1', 'fc2', 'act2', 'drop2', 'out']
        >>> mixed = MLP(2, [8], 1, embeddings=[(5, 3)])
        >>> mixed(torch.randn(4, 2), codes=torch.tensor([[0], [1], [2], [4]])).shape
        torch.Size([4, 1])
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
        embeddings: Sequence[tuple[int, int]] = (),
    ) -> None:
        in_features, widths, out_features, activation, dropout, batchnorm, pairs = _stack_args(
            type(self).__name__, in_features, hidden, out_features, activation, dropout, batchnorm,
            embeddings, allow_empty=True,
        )

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if pairs:
            layers["embed"] = Embeddings(pairs)
        width = in_features + sum(w for _, w in pairs)
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
        self.embeddings = pairs
        if not pairs:
            self.embed = None  # a plain attribute: no child, the state_dict of a plain stack

    def forward(self, x: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        h = with_codes("MLP", self.embed, x, codes)
        # embed, when there is one, is child 0 and has just taken the codes: the layers follow
        for layer in itertools.islice(self, 1 if self.embeddings else 0, None):
            h = layer(h)
        return h

    @staticmethod
    def state_shapes(
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = False,
        embeddings: Sequence[tuple[int, int]] = (),
    ) -> dict[str, Slot]:
        """The ``state_dict`` that ``MLP(...)`` with these arguments would hold, without building it.

        Raises:
            ConfigError: as the constructor would.

        Example:
            >>> MLP.state_shapes(4, [8], 2)["fc1.weight"].shape
            (8, 4)
        """
        in_features, widths, out_features, _, _, batchnorm, pairs = _stack_args(
            "MLP", in_features, hidden, out_features, activation, dropout, batchnorm, embeddings,
            allow_empty=True,
        )
        state = prefixed("embed", embeddings_state(pairs))
        width = in_features + sum(w for _, w in pairs)
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
    spec = {
        "name": name,
        "in_features": m.in_features,
        "hidden": list(m.hidden),
        "out_features": m.out_features,
        "activation": m.activation,
        "dropout": m.dropout,
        "batchnorm": m.batchnorm,
    }
    if m.embeddings:  # absent otherwise: specs saved before embeddings existed compare equal
        spec["embeddings"] = [[c, w] for c, w in m.embeddings]
    return spec


def stack_repr(m: Any) -> str:
    """``extra_repr`` of the layer-stack models."""
    embedded = f", embeddings={m.embeddings}" if m.embeddings else ""
    return f"in_features={m.in_features}, hidden={m.hidden}, out_features={m.out_features}{embedded}"
