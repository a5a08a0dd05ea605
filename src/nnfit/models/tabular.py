"""Entity embeddings of categorical columns: one ``nn.Embedding`` per column, concatenated.

A table's categorical columns reach a model as integer codes, one column per feature, where
for column ``j`` index 0 is the "unknown or rare" level, 1 is "missing" and ``2..`` are the
levels of the vocabulary fitted on the training split (the vocabularies live in the
preprocessing, :mod:`nnfit.data.preprocess`). A model only needs each column's cardinality
(the size of its lookup table) and the width of its vectors: the ``(cardinality, width)``
pairs that specs record. This module holds the width rule, the pairs' checks shared by every
model that embeds codes, and :class:`Embeddings`, the lookup itself.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .state import Slot

# Bounds of a spec's (cardinality, width) pairs. A column with more than ten million levels is
# an id, not a category (the preprocessing drops or refuses those); fastai's rule never goes
# above 50 wide, so 4096 leaves room for a hand-set width without letting a typo allocate
# gigabytes; 10,000 columns is as many as a spec's hidden widths may list.
MAX_CARDINALITY = 10**7
MAX_WIDTH = 4096
MAX_COLUMNS = 10_000
MIN_CARDINALITY = 2  # the "unknown" and "missing" indices every column has


def embedding_dim(cardinality: int) -> int:
    """The default embedding width of a categorical column with ``cardinality`` codes.

    fastai's rule of thumb, ``round(1.6 * cardinality ** 0.56)`` (found by trial and error on
    its tabular benchmarks), at least 1, capped at 50 where fastai caps at 600. The rule grows
    a little slower than the square root, so a 12-level column gets 6 numbers and a 100-level
    one 21. The lower cap (also the cap of fastai's earlier rule, ``min(50, (c + 1) // 2)``)
    keeps a 10,000-level column at 50 numbers per row where fastai's rule gives 278: nnfit's
    default hidden layers are a few dozen wide, and a few hundred numbers per column would
    dwarf them and overfit the small tables these models are for.

    Args:
        cardinality: the number of codes of the column, the "unknown" and "missing" indices
            included.

    Returns:
        The width, an int in ``[1, 50]``.

    Raises:
        ConfigError: ``cardinality`` is not an int of at least 1.

    Example:
        >>> [embedding_dim(c) for c in (2, 4, 12, 100, 10_000)]
        [2, 3, 6, 21, 50]
    """
    if isinstance(cardinality, bool) or not isinstance(cardinality, numbers.Integral) or cardinality < 1:
        raise ConfigError(f"embedding_dim: cardinality must be a positive int, got {cardinality!r}")
    return max(1, min(50, round(1.6 * int(cardinality) ** 0.56)))


def _check_int(owner: str, arg: str, value: Any, lo: int, hi: int) -> int:
    """Return ``value`` as an int, or raise ConfigError unless it is an int in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ConfigError(f"{owner}: {arg} must be an int in [{lo}, {hi}], got {value!r}")
    return int(value)


def check_embeddings(owner: str, embeddings: Any) -> list[tuple[int, int]]:
    """Return ``(cardinality, width)`` pairs as a list of int tuples, or raise ConfigError.

    Args:
        owner: the model named in messages (``"MLP"``).
        embeddings: a sequence of pairs; JSON gives lists, Python callers tuples.

    Raises:
        ConfigError: ``embeddings`` is not a list of at most :data:`MAX_COLUMNS` pairs, or a
            cardinality is outside ``[2, MAX_CARDINALITY]`` or a width outside
            ``[1, MAX_WIDTH]``; the message names the entry, e.g.
            ``MLP: embeddings[1] cardinality must be an int in [2, 10000000], got 1``.
    """
    if isinstance(embeddings, (str, bytes)) or not isinstance(embeddings, Sequence):
        raise ConfigError(f"{owner}: embeddings must be a list of (cardinality, width) pairs, "
                          f"got {embeddings!r:.100}")
    if len(embeddings) > MAX_COLUMNS:
        raise ConfigError(f"{owner}: embeddings has {len(embeddings)} entries, at most {MAX_COLUMNS}")
    pairs = []
    for i, pair in enumerate(embeddings):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ConfigError(f"{owner}: embeddings[{i}] must be a (cardinality, width) pair, "
                              f"got {pair!r:.100}")
        pairs.append((_check_int(owner, f"embeddings[{i}] cardinality", pair[0], MIN_CARDINALITY,
                                 MAX_CARDINALITY),
                      _check_int(owner, f"embeddings[{i}] width", pair[1], 1, MAX_WIDTH)))
    return pairs


def embeddings_state(pairs: Sequence[tuple[int, int]]) -> dict[str, Slot]:
    """The ``state_dict`` of :class:`Embeddings` over checked ``pairs``."""
    return {f"tables.{j}.weight": Slot((c, w)) for j, (c, w) in enumerate(pairs)}


class Embeddings(nn.Module):
    """One ``nn.Embedding`` per categorical column; the vectors concatenated in column order.

    Column ``j`` looks its codes up in ``tables[j]``, a ``(cardinality_j, width_j)`` table.
    The tables start as a truncated normal with standard deviation 0.01 (as fastai's tabular
    models do; Keras draws from a similarly small uniform): the embedded columns then add
    almost nothing to the first layer's input at the start, so training begins from the
    numeric features, and the tables grow where the loss asks for it. ``nn.Embedding``'s own
    N(0, 1) would put ``width`` unit-variance inputs per column next to the standardised
    numerics, so a table of many columns would drown them at the first steps.

    Codes come from the fitted preprocessing, which maps every value into range (unseen and
    rare levels to 0, missing to 1). A code outside ``[0, cardinality_j)`` is not checked
    here, since that would cost a host sync per step: on the CPU torch raises
    ``IndexError: index out of range in self``, on CUDA a device-side assert stops the process.

    Args:
        embeddings: ``(cardinality, width)`` per column, in column order; at least one.
            Cardinality counts every code (the two reserved ones included), in
            ``[2, MAX_CARDINALITY]``; width in ``[1, MAX_WIDTH]``; see :func:`embedding_dim`
            for the default rule.

    Raises:
        ConfigError: ``embeddings`` is empty, has more than ``MAX_COLUMNS`` entries, or holds
            a bad pair (named).

    Shape:
        - Input: ``(N, k)`` integer codes, ``k = len(embeddings)``.
        - Output: ``(N, out_features)`` float, ``out_features`` the sum of the widths.

    Attributes:
        embeddings: the pairs, as a list of ``(int, int)`` tuples.
        out_features: the sum of the widths.
        tables: an ``nn.ModuleList`` of the ``nn.Embedding`` tables, one per column.

    Example:
        >>> import torch
        >>> embed = Embeddings([(5, 3), (12, embedding_dim(12))])
        >>> embed(torch.tensor([[0, 11], [4, 1]])).shape
        torch.Size([2, 9])
        >>> embed.spec()
        {'name': 'embeddings', 'embeddings': [[5, 3], [12, 6]]}
    """

    def __init__(self, embeddings: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        pairs = check_embeddings(type(self).__name__, embeddings)
        if not pairs:
            raise ConfigError(f"{type(self).__name__}: embeddings must have at least one entry, got []")
        self.embeddings = pairs
        self.out_features = sum(w for _, w in pairs)
        # _weight: allocated but not drawn from N(0, 1) first, as reset_parameters draws it
        self.tables = nn.ModuleList(nn.Embedding(c, w, _weight=torch.empty(c, w)) for c, w in pairs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw every table again from the truncated normal (std 0.01, cut at two std)."""
        for table in self.tables:
            nn.init.trunc_normal_(table.weight, std=0.01, a=-0.02, b=0.02)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.ndim != 2 or codes.shape[1] != len(self.tables):
            # a shape is known on the host: checking it costs no sync
            raise ValueError(f"Embeddings: expected codes of shape (N, {len(self.tables)}), "
                             f"got {tuple(codes.shape)}")
        return torch.cat([table(codes[:, j]) for j, table in enumerate(self.tables)], dim=1)

    @staticmethod
    def state_shapes(embeddings: Sequence[tuple[int, int]]) -> dict[str, Slot]:
        """The ``state_dict`` that ``Embeddings(embeddings)`` would hold, without building it.

        Raises:
            ConfigError: as the constructor would.

        Example:
            >>> Embeddings.state_shapes([(5, 3)])["tables.0.weight"].shape
            (5, 3)
        """
        pairs = check_embeddings("Embeddings", embeddings)
        if not pairs:
            raise ConfigError("Embeddings: embeddings must have at least one entry, got []")
        return embeddings_state(pairs)

    def spec(self) -> dict[str, Any]:
        """Return a JSON-serialisable description that ``build_model`` turns back into this model.

        Example:
            >>> Embeddings([(5, 3)]).spec()["embeddings"]
            [[5, 3]]
        """
        return {"name": "embeddings", "embeddings": [[c, w] for c, w in self.embeddings]}

    def extra_repr(self) -> str:
        return f"embeddings={self.embeddings}, out_features={self.out_features}"


def with_codes(owner: str, embed: Embeddings | None, x: torch.Tensor,
               codes: torch.Tensor | None) -> torch.Tensor:
    """The first layer's input of a stack model (MLP, ResidualMLP): ``x``, with ``embed(codes)``
    appended when the model embeds categorical columns.

    Raises:
        TypeError: ``codes`` given to a model without embeddings, or missing for one with
            them (as Python says of a missing or unexpected argument).

    Shape:
        - ``x``: ``(N, in_features)``; ``codes``: ``(N, k)`` integers.
        - Output: ``(N, in_features + embed.out_features)``.
    """
    if not check_codes(owner, embed, codes, "categorical columns"):
        return x
    return torch.cat((x, embed(codes)), dim=1)


def check_codes(owner: str, embed: Embeddings | None, codes: torch.Tensor | None, what: str) -> bool:
    """Whether ``codes`` are to be embedded: TypeError when they are given to a model without
    embeddings or missing for one with them (``what`` says what it embeds, for the message)."""
    if embed is None:
        if codes is not None:
            raise TypeError(f"{owner}.forward() got codes, but the model has no embeddings")
        return False
    if codes is None:
        raise TypeError(f"{owner}.forward() missing input 'codes' (the model embeds "
                        f"{len(embed.embeddings)} {what})")
    return True
