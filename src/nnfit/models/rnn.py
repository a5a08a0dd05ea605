"""Recurrent networks for sequences: stacked LSTM or GRU layers, uni- or bidirectional, read
out at each sequence's last valid step or averaged over its valid steps, then a linear head.

Sequences of different lengths arrive padded at the end of each row, with their ``lengths``.
``pack_padded_sequence`` would need the lengths on the host (a sync per batch on a GPU), so
the padding is masked instead, with nothing leaving the device:

* a forward direction is causal: its output at a valid step never sees the padding after it,
  so the stack runs over the padded batch and the readout gathers each row's last valid step;
* a backward direction reads each row reversed within its own length (an index gather, per
  layer), so its padding also comes after every valid step, then its outputs are put back in
  order by the same gather.

Outputs therefore equal (to float rounding) running each sequence alone, unpadded, whatever
the padding holds (``tests/test_cnn_rnn_models.py``). Masking computes the padded steps too,
yet on a CPU (batch 128, T=50, 16 features, 64 units, lengths 25..50) a training step was
1.5-3x faster than with packing for an LSTM, whose packed CPU kernel is slow, and as fast
for a GRU; only GRU inference was faster packed (by about a third).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from .cnn import _check_flag
from .mlp import _check_hidden, _check_options, _check_size
from .state import Slot, linear, prefixed, recurrent
from .tabular import (
    MAX_CARDINALITY,
    MAX_WIDTH,
    Embeddings,
    _check_int,
    check_codes,
    check_embeddings,
    embeddings_state,
)

# One recurrent layer per entry of ``hidden``: a hundred is far past where stacking helps, and
# bounds the module count of a spec the way an mlp's 10,000 widths do.
MAX_LAYERS = 100
READOUTS = ("last", "mean")
# The most steps a highway reads: a forecast layout's longest window (MAX_WINDOW in
# nnfit.io.validate_fields; models do not import io).
MAX_HIGHWAY = 10**6


def _recurrent_args(owner: str, in_features: Any, out_features: Any, hidden: Any,
                    bidirectional: Any, dropout: Any, readout: Any, vocab_size: Any,
                    embedding_dim: Any, embeddings: Any, highway: Any, naive_feature: Any) -> tuple:
    """The arguments of :class:`Recurrent`, checked and normalised (ConfigError naming the
    bad one): ``(in_features, out_features, hidden, bidirectional, dropout, readout,
    vocab_size, embedding_dim, pairs, highway, naive_feature)``."""
    pairs = check_embeddings(owner, embeddings)
    vocab_size = _check_int(owner, "vocab_size", vocab_size, 0, MAX_CARDINALITY)
    embedding_dim = _check_int(owner, "embedding_dim", embedding_dim, 0, MAX_WIDTH)
    if (vocab_size > 0) != (embedding_dim > 0):
        raise ConfigError(f"{owner}: vocab_size and embedding_dim go together (both 0, or both "
                          f"positive), got {vocab_size} and {embedding_dim}")
    in_features = _check_size(owner, "in_features", in_features, allow_zero=bool(pairs) or vocab_size > 0)
    if vocab_size and in_features:
        raise ConfigError(f"{owner}: in_features must be 0 with vocab_size (the input is one token "
                          f"per step), got {in_features}")
    out_features = _check_size(owner, "out_features", out_features)
    widths = _check_hidden(owner, hidden, allow_empty=False)
    if len(widths) > MAX_LAYERS:
        raise ConfigError(f"{owner}: hidden has {len(widths)} entries, at most {MAX_LAYERS}")
    if len(set(widths)) > 1:
        raise ConfigError(f"{owner}: hidden entries must all be equal (one recurrent layer of that "
                          f"size per entry), got {widths}")
    bidirectional = _check_flag(owner, "bidirectional", bidirectional)
    # the dropout check every model shares (a recurrent layer has no activation or norm to name)
    _, dropout, _ = _check_options(owner, activation="relu", dropout=dropout, batchnorm=False)
    if readout not in READOUTS:
        raise ConfigError(f"{owner}: readout must be one of {', '.join(READOUTS)}, got {readout!r}")
    highway = _check_int(owner, "highway", highway, 0, MAX_HIGHWAY)
    if highway and not in_features:
        raise ConfigError(f"{owner}: highway reads the float features of the last steps, and the input "
                          f"has none ({'tokens' if vocab_size else 'in_features=0'}): use highway=0")
    if naive_feature is not None:
        if not in_features:
            raise ConfigError(f"{owner}: naive_feature names a float feature, and the input has none "
                              f"({'tokens' if vocab_size else 'in_features=0'}): use None")
        naive_feature = _check_int(owner, "naive_feature", naive_feature, 0, in_features - 1)
    return (in_features, out_features, widths, bidirectional, dropout, readout, vocab_size,
            embedding_dim, pairs, highway, naive_feature)


def _reverse(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """``x`` (N, T, F) with each row's valid steps in reverse order (``index`` from
    :func:`_reversal`), or the whole rows reversed when every row is full (``None``)."""
    if index is None:
        return x.flip(1)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _reversal(lengths: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The valid-step mask (N, T) and the index (N, T) that reverses each row's first
    ``lengths[n]`` steps and leaves its padding in place (its own inverse)."""
    t = torch.arange(steps, device=lengths.device)
    valid = t < lengths.unsqueeze(1)
    return valid, torch.where(valid, lengths.unsqueeze(1) - 1 - t, t)


class Recurrent(nn.Module):
    """A stack of recurrent layers (``LSTM`` or ``GRU``), read out into a Linear ``head``.

    ``layers[i]`` is a one-layer ``nn.LSTM``/``nn.GRU`` (``batch_first``) reading the
    previous layer's outputs; with ``bidirectional``, ``reverse_layers[i]`` reads them
    backwards and the two directions' outputs are concatenated. ``drop`` (only if
    ``dropout > 0`` and there are several layers) sits between layers. Each sequence's
    outputs are read out as its ``"last"`` valid step (bidirectional: the forward
    direction's last valid step and the backward direction's output at step 0) or the
    ``"mean"`` over its valid steps; ``head`` maps that to ``out_features`` with no
    activation: logits or raw regression values.

    The per-step input is, concatenated in this order: ``x``'s features, or the ``tokens``
    embedding of ``x``'s token ids (``vocab_size > 0``); then, with ``embeddings``, the
    :class:`~nnfit.models.tabular.Embeddings` (``embed``) of ``codes``, one code per
    categorical column per step. Padding is never read into a valid step (see the module's
    docstring), so padded and unpadded sequences give the same outputs.

    For forecasting (:mod:`nnfit.data.forecast` sets both):

    * ``highway`` (an autoregressive highway, as in LSTNet): a Linear layer ``ar`` reads the
      float features of the last ``highway`` steps, flattened, and its output is added to
      the head's, so the network learns what a linear autoregression misses;
    * ``naive_feature`` (the feature holding the forecast's own past values): the model
      forecasts the change from that feature's last value, the naive forecast, which is
      added to the output. The recurrent layers read that feature relative to its last
      value, so a series past the range trained on does not saturate them (on absolute
      values they under-forecast a rising series there); ``ar`` reads the values as they
      are (a linear autoregression can revert to a level, and extrapolates linearly).
      ``ar`` and ``head`` start at zero: an untrained model is the naive forecast.

    Use :class:`LSTM` or :class:`GRU`; this class holds what they share.

    Args:
        in_features: float features per step; 0 with ``vocab_size`` or with only ``embeddings``.
        out_features: width of each output row.
        hidden: units of each recurrent layer, one layer per entry, all equal; 1 to
            ``MAX_LAYERS`` entries. Default: ``(64, 64)``.
        bidirectional: also read each sequence backwards. Default: ``False``.
        dropout: probability of zeroing a unit between recurrent layers, in ``[0, 1)``.
            Default: ``0.0``.
        readout: ``"last"`` or ``"mean"``. Default: ``"last"``.
        vocab_size: token ids per step are in ``[0, vocab_size)``; ``0``: float input.
            Default: ``0``.
        embedding_dim: width of a token's vector (with ``vocab_size``, else 0). Default: ``0``.
        embeddings: ``(cardinality, width)`` per categorical column of ``codes``. Default:
            ``()``, no codes.
        highway: the last steps of ``x`` the ``ar`` layer reads, ``0`` for none; only for
            float features and full-length input (no ``lengths``). Default: ``0``.
        naive_feature: the feature of ``x`` whose last value each output is a change from
            (a forecast's own past values, on the target's scale), or ``None``; only for
            full-length input. Default: ``None``.

    Raises:
        ConfigError: a size out of range, ``hidden`` empty, too long or of unequal entries,
            ``vocab_size`` without ``embedding_dim`` (or the reverse), ``in_features`` with
            ``vocab_size``, ``dropout`` outside ``[0, 1)``, a flag not a bool, an unknown
            ``readout``, a bad ``embeddings`` pair (named), or a ``highway`` or
            ``naive_feature`` without float features (``naive_feature`` in
            ``[0, in_features)``).

    Shape:
        - Input ``x``: ``(N, T, in_features)`` float, or ``(N, T)`` int64 token ids with
          ``vocab_size``.
        - Input ``lengths``: ``(N,)`` int64 on ``x``'s device, each in ``[1, T]``, the valid
          steps of each row (padding comes after them); ``None``: every row has ``T``. Values
          are not checked (that would cost a sync): a length of 0 or above ``T`` fails in the
          gather or gives wrong outputs. Not with ``highway`` or ``naive_feature`` (they
          read the last steps).
        - Input ``codes`` (only with ``embeddings``): ``(N, T, len(embeddings))`` int64.
        - Output: ``(N, out_features)``.

    Attributes:
        in_features, out_features, hidden, bidirectional, dropout, readout, vocab_size,
            embedding_dim, embeddings, highway, naive_feature: the arguments, normalised.
        ar: the highway, ``nn.Linear(highway * in_features, out_features)``, or None.
    """

    name: ClassVar[str]
    cell: ClassVar[type[nn.LSTM] | type[nn.GRU]]
    gates: ClassVar[int]  # weight blocks per layer: 4 for an LSTM, 3 for a GRU

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: Sequence[int] = (64, 64),
        bidirectional: bool = False,
        dropout: float = 0.0,
        readout: str = "last",
        vocab_size: int = 0,
        embedding_dim: int = 0,
        embeddings: Sequence[tuple[int, int]] = (),
        highway: int = 0,
        naive_feature: int | None = None,
    ) -> None:
        super().__init__()
        (self.in_features, self.out_features, self.hidden, self.bidirectional, self.dropout,
         self.readout, self.vocab_size, self.embedding_dim, self.embeddings, self.highway,
         self.naive_feature) = _recurrent_args(
            type(self).__name__, in_features, out_features, hidden, bidirectional, dropout,
            readout, vocab_size, embedding_dim, embeddings, highway, naive_feature)
        self.tokens = nn.Embedding(self.vocab_size, self.embedding_dim) if self.vocab_size else None
        self.embed = Embeddings(self.embeddings) if self.embeddings else None
        units, directions = self.hidden[0], 2 if self.bidirectional else 1
        sizes = [self._step_width(), *[units * directions] * (len(self.hidden) - 1)]
        self.layers = nn.ModuleList(self.cell(n, units, batch_first=True) for n in sizes)
        self.reverse_layers = (nn.ModuleList(self.cell(n, units, batch_first=True) for n in sizes)
                               if self.bidirectional else None)
        self.drop = nn.Dropout(self.dropout) if self.dropout > 0 and len(sizes) > 1 else None
        self.head = nn.Linear(units * directions, self.out_features)
        self.ar = (nn.Linear(self.highway * self.in_features, self.out_features)
                   if self.highway else None)
        if self.naive_feature is not None:  # start as the naive forecast, exactly
            with torch.no_grad():
                for layer in (self.head, self.ar):
                    if layer is not None:
                        layer.weight.zero_()
                        layer.bias.zero_()

    def _step_width(self) -> int:
        return self.in_features + self.embedding_dim + sum(w for _, w in self.embeddings)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                codes: torch.Tensor | None = None) -> torch.Tensor:
        last = None
        if self.ar is not None or self.naive_feature is not None:
            self._check_last_steps(x, lengths)
        steps = x
        if self.naive_feature is not None:
            j = self.naive_feature
            last = x[:, -1, j:j + 1]  # (N, 1): the naive forecast
            # that feature relative to its last value (padded to a row that is 0 elsewhere):
            # level-free, so a series past the training range does not saturate the layers
            steps = x - nn.functional.pad(last, (j, self.in_features - j - 1)).unsqueeze(1)
        h = self._steps(steps, codes)
        valid = index = None
        if lengths is not None:
            if lengths.shape != (h.shape[0],) or lengths.dtype.is_floating_point:
                raise ValueError(f"{type(self).__name__}: expected lengths of shape ({h.shape[0]},) "
                                 f"int64, got {tuple(lengths.shape)} {lengths.dtype}")
            valid, index = _reversal(lengths, h.shape[1])
        for i, layer in enumerate(self.layers):
            if i and self.drop is not None:
                h = self.drop(h)
            out, _ = layer(h)
            if self.reverse_layers is not None:
                back, _ = self.reverse_layers[i](_reverse(h, index))
                out = torch.cat((out, _reverse(back, index)), dim=-1)
            h = out
        out = self.head(self._read_out(h, lengths, valid))
        if self.ar is not None:
            out = out + self.ar(x[:, -self.highway:].flatten(1))  # the values as they are
        return out if last is None else out + last

    def _check_last_steps(self, x: torch.Tensor, lengths: torch.Tensor | None) -> None:
        """Refuse input whose last steps the highway or the naive forecast cannot read:
        another shape, variable lengths, or fewer steps than ``highway``."""
        owner = type(self).__name__
        if x.ndim != 3 or x.shape[2] != self.in_features:
            raise ValueError(f"{owner}: expected input of shape (N, T, {self.in_features}), got "
                             f"{tuple(x.shape)}")
        if lengths is not None:
            what = f"highway={self.highway}" if self.highway else f"naive_feature={self.naive_feature}"
            raise ValueError(f"{owner}: {what} reads the last steps of full-length input: not with "
                             "lengths (variable-length sequences)")
        if x.shape[1] < self.highway:
            raise ValueError(f"{owner}: highway={self.highway} reads more steps than the input's "
                             f"{x.shape[1]}")

    def _steps(self, x: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        """The per-step input of the first layer, (N, T, width): shapes checked on the host."""
        owner = type(self).__name__
        if self.tokens is not None:
            if x.ndim != 2 or x.dtype.is_floating_point:
                raise ValueError(f"{owner}: expected token ids of shape (N, T), got "
                                 f"{tuple(x.shape)} {x.dtype}")
            x = self.tokens(x)
        elif x.ndim != 3 or x.shape[2] != self.in_features:
            raise ValueError(f"{owner}: expected input of shape (N, T, {self.in_features}), got "
                             f"{tuple(x.shape)}")
        if not check_codes(owner, self.embed, codes, "categorical columns per step"):
            return x
        if codes.shape[:2] != x.shape[:2] or codes.ndim != 3:
            raise ValueError(f"{owner}: expected codes of shape ({x.shape[0]}, {x.shape[1]}, "
                             f"{len(self.embeddings)}), got {tuple(codes.shape)}")
        n, t = codes.shape[:2]
        embedded = self.embed(codes.reshape(n * t, codes.shape[2])).reshape(n, t, -1)
        return torch.cat((x, embedded), dim=-1)

    def _read_out(self, h: torch.Tensor, lengths: torch.Tensor | None,
                  valid: torch.Tensor | None) -> torch.Tensor:
        """One vector per sequence from the last layer's outputs ``h`` (N, T, directions*H)."""
        if self.readout == "mean":
            if lengths is None:
                return h.mean(1)
            # where, not a product: padding outputs may be anything, inf and NaN included
            total = torch.where(valid.unsqueeze(-1), h, 0.0).sum(1)
            return total / lengths.unsqueeze(1).to(h.dtype)
        units = self.hidden[0]
        if lengths is None:
            last = h[:, -1, :units]
        else:
            step = (lengths - 1).view(-1, 1, 1).expand(-1, 1, units)
            last = h[..., :units].gather(1, step).squeeze(1)
        if self.reverse_layers is None:
            return last
        # the backward direction ends its reading at step 0
        return torch.cat((last, h[:, 0, units:]), dim=-1)

    @classmethod
    def state_shapes(
        cls,
        in_features: int,
        out_features: int,
        *,
        hidden: Sequence[int] = (64, 64),
        bidirectional: bool = False,
        dropout: float = 0.0,
        readout: str = "last",
        vocab_size: int = 0,
        embedding_dim: int = 0,
        embeddings: Sequence[tuple[int, int]] = (),
        highway: int = 0,
        naive_feature: int | None = None,
    ) -> dict[str, Slot]:
        """The ``state_dict`` that the model with these arguments would hold, without building it.

        Raises:
            ConfigError: as the constructor would.

        Example:
            >>> LSTM.state_shapes(3, 2, hidden=[8])["layers.0.weight_ih_l0"].shape
            (32, 3)
        """
        (in_features, out_features, widths, bidirectional, _, _, vocab_size, embedding_dim,
         pairs, highway, _) = _recurrent_args(cls.__name__, in_features, out_features, hidden,
                                              bidirectional, dropout, readout, vocab_size,
                                              embedding_dim, embeddings, highway, naive_feature)
        state = {"tokens.weight": Slot((vocab_size, embedding_dim))} if vocab_size else {}
        state.update(prefixed("embed", embeddings_state(pairs)))
        units, directions = widths[0], 2 if bidirectional else 1
        first = in_features + embedding_dim + sum(w for _, w in pairs)
        sizes = [first, *[units * directions] * (len(widths) - 1)]
        for name in ("layers", "reverse_layers")[:directions]:
            for i, n in enumerate(sizes):
                state.update(recurrent(f"{name}.{i}", cls.gates, n, units))
        state.update(linear("head", units * directions, out_features))
        if highway:
            state.update(linear("ar", highway * in_features, out_features))
        return state

    def spec(self) -> dict[str, Any]:
        """Return a JSON-serialisable description that ``build_model`` turns back into this model.

        The weights are not included: load them with ``load_state_dict``.

        Example:
            >>> GRU(3, 2).spec()["hidden"]
            [64, 64]
        """
        return {"name": self.name, "in_features": self.in_features, "out_features": self.out_features,
                "hidden": list(self.hidden), "bidirectional": self.bidirectional,
                "dropout": self.dropout, "readout": self.readout, "vocab_size": self.vocab_size,
                "embedding_dim": self.embedding_dim,
                "embeddings": [[c, w] for c, w in self.embeddings], "highway": self.highway,
                "naive_feature": self.naive_feature}

    def extra_repr(self) -> str:
        tokens = f", vocab_size={self.vocab_size}" if self.vocab_size else ""
        highway = f", highway={self.highway}" if self.highway else ""
        return (f"in_features={self.in_features}{tokens}, hidden={self.hidden}, "
                f"bidirectional={self.bidirectional}, readout={self.readout!r}, "
                f"out_features={self.out_features}{highway}")


class LSTM(Recurrent):
    """Stacked ``nn.LSTM`` layers read out into a Linear head: see :class:`Recurrent` for the
    arguments, shapes and errors.

    Example:
        >>> import torch
        >>> model = LSTM(3, 2, hidden=[16, 16], bidirectional=True)
        >>> model(torch.randn(4, 10, 3), lengths=torch.tensor([10, 7, 3, 1])).shape
        torch.Size([4, 2])
        >>> tokens = LSTM(0, 5, vocab_size=100, embedding_dim=8, readout="mean")
        >>> tokens(torch.randint(0, 100, (2, 6))).shape
        torch.Size([2, 5])
        >>> forecaster = LSTM(2, 1, hidden=[8], highway=5, naive_feature=0)
        >>> x = torch.randn(3, 5, 2)
        >>> torch.equal(forecaster(x), x[:, -1, :1])  # untrained: the naive forecast
        True
    """

    name = "lstm"
    cell = nn.LSTM
    gates = 4


class GRU(Recurrent):
    """Stacked ``nn.GRU`` layers read out into a Linear head: see :class:`Recurrent` for the
    arguments, shapes and errors.

    Example:
        >>> import torch
        >>> model = GRU(3, 1, hidden=[8])
        >>> model(torch.randn(4, 10, 3)).shape
        torch.Size([4, 1])
    """

    name = "gru"
    cell = nn.GRU
    gates = 3
