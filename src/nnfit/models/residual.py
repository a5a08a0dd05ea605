"""Residual MLPs: two-layer blocks with a skip connection, stacked and followed by a head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .activations import make_activation
from .mlp import _check_options, _check_size, _stack_args, stack_repr, stack_spec
from .state import Slot, linear, prefixed
from .state import batchnorm as norm
from .tabular import Embeddings, embeddings_state, with_codes


class ResidualBlock(nn.Module):
    """A two-layer block with a skip connection: ``act(fc2(act(fc1(x))) + skip(x))``.

    The main path is ``fc1 -> [bn1] -> act -> [drop] -> fc2 -> [bn2]``. The skip is the input
    itself when ``in_features == out_features``, otherwise a bias-free Linear named ``proj``
    (the main path's ``fc2`` already carries a bias). One parameter-free ``act`` module serves
    both places the activation is applied.

    Args:
        in_features: width of each input row.
        out_features: width of each output row. Default: ``None``, meaning ``in_features``.
        activation: name from ``ACTIVATIONS``. Default: ``"relu"``.
        dropout: Dropout probability after the first activation, in ``[0, 1)``; ``0`` adds no
            Dropout layer. Default: ``0.0``.
        batchnorm: add BatchNorm1d after ``fc1`` and after ``fc2``. Default: ``False``.

    Raises:
        ConfigError: a size is not a positive int, ``dropout`` is outside ``[0, 1)``,
            ``batchnorm`` is not a bool, or ``activation`` is not registered.

    Shape:
        - Input: ``(N, in_features)``.
        - Output: ``(N, out_features)``.

    Example:
        >>> import torch
        >>> block = ResidualBlock(4, 8)
        >>> block(torch.randn(5, 4)).shape
        torch.Size([5, 8])
        >>> block.proj
        Linear(in_features=4, out_features=8, bias=False)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        in_features = _check_size(owner, "in_features", in_features)
        if out_features is None:
            out_features = in_features
        out_features = _check_size(owner, "out_features", out_features)
        activation, dropout, batchnorm = _check_options(
            owner, activation=activation, dropout=dropout, batchnorm=batchnorm
        )
        self.in_features = in_features
        self.out_features = out_features

        self.fc1 = nn.Linear(in_features, out_features)
        self.bn1 = nn.BatchNorm1d(out_features) if batchnorm else None
        self.act = make_activation(activation)
        self.drop = nn.Dropout(dropout) if dropout > 0 else None
        self.fc2 = nn.Linear(out_features, out_features)
        self.bn2 = nn.BatchNorm1d(out_features) if batchnorm else None
        self.proj = (
            nn.Linear(in_features, out_features, bias=False)
            if in_features != out_features
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.bn1 is not None:
            h = self.bn1(h)
        h = self.act(h)
        if self.drop is not None:
            h = self.drop(h)
        h = self.fc2(h)
        if self.bn2 is not None:
            h = self.bn2(h)
        skip = x if self.proj is None else self.proj(x)
        return self.act(h + skip)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class ResidualMLP(nn.Module):
    """A stack of :class:`ResidualBlock` followed by a Linear ``head``.

    ``blocks[0]`` maps ``in_features -> hidden[0]`` (with a ``proj`` skip if they differ), then
    ``blocks[i]`` maps ``hidden[i-1] -> hidden[i]``; ``head`` maps ``hidden[-1] ->
    out_features`` with no activation, so the output is logits or raw regression values.

    With ``embeddings``, an :class:`~nnfit.models.tabular.Embeddings` named ``embed`` looks
    up the categorical codes and ``blocks[0]`` takes the numeric features followed by the
    embedded ones. Without embeddings the model is exactly the stack above.

    Args:
        in_features: width of each numeric input row; may be 0 when ``embeddings`` is given.
        hidden: output widths of the blocks, in order; at least one.
        out_features: width of each output row.
        activation: name from ``ACTIVATIONS``. Default: ``"relu"``.
        dropout: Dropout probability inside each block, in ``[0, 1)``. Default: ``0.0``.
        batchnorm: add BatchNorm1d inside each block. Default: ``False``.
        embeddings: ``(cardinality, width)`` per categorical column, in the order of the
            columns of ``codes``. Default: ``()``, no categorical input.

    Raises:
        ConfigError: ``hidden`` is empty, a size is not a positive int, ``dropout`` is outside
            ``[0, 1)``, ``batchnorm`` is not a bool, ``activation`` is not registered, or an
            ``embeddings`` entry is not a valid pair (named).

    Shape:
        - Input ``x``: ``(N, in_features)``.
        - Input ``codes`` (only with ``embeddings``): ``(N, len(embeddings))`` int64.
        - Output: ``(N, out_features)``.

    Attributes:
        embed: the ``Embeddings`` child, or ``None`` without embeddings.

    Example:
        >>> import torch
        >>> model = ResidualMLP(4, [16, 16], 3)
        >>> model(torch.randn(5, 4)).shape
        torch.Size([5, 3])
        >>> "blocks.0.proj.weight" in model.state_dict()
        True
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
        super().__init__()
        in_features, widths, out_features, activation, dropout, batchnorm, pairs = _stack_args(
            type(self).__name__, in_features, hidden, out_features, activation, dropout, batchnorm,
            embeddings, allow_empty=False,
        )
        self.in_features = in_features
        self.hidden = widths
        self.out_features = out_features
        self.activation = activation
        self.dropout = dropout
        self.batchnorm = batchnorm
        self.embeddings = pairs
        # registered first when there is one, as its input comes first; None adds no child
        self.embed = Embeddings(pairs) if pairs else None

        options = {"activation": activation, "dropout": dropout, "batchnorm": batchnorm}
        sizes = [in_features + sum(w for _, w in pairs), *widths]
        ends = zip(sizes[:-1], sizes[1:], strict=True)
        self.blocks = nn.Sequential(*(ResidualBlock(a, b, **options) for a, b in ends))
        self.head = nn.Linear(widths[-1], out_features)

    def forward(self, x: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.blocks(with_codes("ResidualMLP", self.embed, x, codes)))

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
        """The ``state_dict`` that ``ResidualMLP(...)`` would hold, without building it.

        Raises:
            ConfigError: as the constructor would.

        Example:
            >>> ResidualMLP.state_shapes(4, [8], 2)["blocks.0.proj.weight"].shape
            (8, 4)
        """
        in_features, widths, out_features, _, _, batchnorm, pairs = _stack_args(
            "ResidualMLP", in_features, hidden, out_features, activation, dropout, batchnorm,
            embeddings, allow_empty=False,
        )
        state = prefixed("embed", embeddings_state(pairs))
        first = in_features + sum(w for _, w in pairs)
        for j, (a, b) in enumerate(zip([first, *widths[:-1]], widths, strict=True)):
            block = {**linear("fc1", a, b), **(norm("bn1", b) if batchnorm else {}),
                     **linear("fc2", b, b), **(norm("bn2", b) if batchnorm else {}),
                     **(linear("proj", a, b, bias=False) if a != b else {})}
            state.update(prefixed(f"blocks.{j}", block))
        state.update(linear("head", widths[-1], out_features))
        return state

    def spec(self) -> dict[str, Any]:
        """Return a JSON-serialisable description that ``build_model`` turns back into this model.

        The weights are not included: load them with ``load_state_dict``.

        Example:
            >>> ResidualMLP(4, [8], 2).spec()["name"]
            'resmlp'
        """
        return stack_spec("resmlp", self)

    def extra_repr(self) -> str:
        return stack_repr(self)
