"""A table streamed from files by row groups: the :class:`TableStream` data source.

Each row group (:class:`~nnfit.data.stream_files.TableFiles`) is read, converted and
preprocessed a piece at a time (:class:`PieceEncoder`: the fitted column roles and
standardisation, vectorised over the piece), so memory holds a few pieces and the shuffle
buffer, whatever the file's size.

Training order (``shuffle=True``): the row groups in a random order, and a shuffle buffer of
``shuffle_buffer`` rows. Each piece joins the rows held back; the pool is permuted, the
batches that fit beyond ``shuffle_buffer`` rows go out, and the rest is held for the next
piece; at the end the rest goes out, permuted once more. Every row comes out exactly once an
epoch. A batch mixes rows of about ``shuffle_buffer / rows per row group + 1`` row groups (fewer
early in the epoch), not of the whole file: rows stored near each other (sorted by time or by
class) stay nearer together than in an in-memory shuffle; a buffer of a few row groups or more
(the default 65,536 rows is one of a converted CSV) mixes them well enough for SGD.

Every random choice of an epoch comes from one generator seeded by a single draw from the
trainer's generator when :meth:`TableStream.batches` is called, so the same generator state
gives the same batches (a resume replays its epoch, and every DDP rank sees the same global
batches). ``start=k`` replays the epoch's plan on row numbers only, reading nothing, until the
piece whose batches include batch ``k``; only then are the rows held back read (from the row
groups they came from) and the data converted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from ..tasks import Task, check_target
from .impute import missing_values
from .kinds import arrow_column, missing_mask
from .preprocess import Preprocessor
from .schema import TableSchema
from .sources import Batch, _batch_count
from .stream_files import TableFiles


class PieceEncoder:
    """Pieces of a streamed table as model-ready tensors through the fitted preprocessing:
    ``[x, codes, y]`` (``codes`` only for a model with categorical columns), as
    :meth:`Preprocessor.transform_table` and ``task.encode_target`` make them for a table in
    memory.

    Args:
        files: the table's files.
        pre: the fitted preprocessing (with a ``table`` schema).
        task: the fitted task, which encodes the target.
        target: the target column.
    """

    def __init__(self, files: TableFiles, pre: Preprocessor, task: Task, target: str) -> None:
        assert pre.table is not None
        self.files, self.pre, self.task, self.target = files, pre, task, target
        self.features = list(pre.table.used)
        self.named = pre.style == "named"

    def read(self, unit: int) -> Iterator[list[Tensor]]:
        """The pieces of row group ``unit``, encoded."""
        first = int(self.files.starts[unit])
        for batch in self.files.read(unit, [*self.features, self.target]):
            yield self.encode(batch, first)
            first += batch.num_rows

    def encode(self, batch: Any, first: int) -> list[Tensor]:
        """One piece (an Arrow record batch whose first row is row ``first``) encoded."""
        source = self.files.source
        cols = self.files.columns(batch, self.features, first)
        table = self.pre.table
        filled: dict[str, int] = {}  # gaps were reported once, when the statistics were taken
        fast = numeric_block(table, cols, filled)
        x, codes = fast if fast is not None else table.encode(cols, filled=filled)
        inputs = self.pre.encoded_inputs(x, codes, source)
        y = target_values(batch, self.target, source, first)
        out = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
        return [*out, self.task.encode_target(y, f"{source}: target column {self.target!r}")]


def target_values(batch: Any, target: str, source: str, first: int) -> np.ndarray:
    """The target column of a piece as nnfit keeps it, checked: no gaps, no infinities.

    Raises:
        DataError: a missing or non-finite target value, or one that is no label or number,
            naming the file's 1-based row (``first`` is the piece's first row).
    """
    values, _, codes = arrow_column(batch.column(target), python_dates=True)
    what = f"{source}: target column {target!r}"
    missing = missing_mask(values, codes)
    if missing is not None and missing.any():
        raise DataError(f"{what} is missing on row {first + int(missing.argmax()) + 1}")
    try:
        check_target(values, what)
    except DataError as e:  # it counts rows from the piece's first: the file's row instead
        m = re.compile(r"\(row (\d+)").search(str(e), len(what))
        if m is None:
            raise
        text = str(e)
        raise DataError(f"{text[:m.start(1)]}{first + int(m.group(1))}{text[m.end(1):]}") from None
    return values


def numeric_block(table: TableSchema, cols: Any,
                  filled: dict[str, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """:meth:`TableSchema.encode` of a table whose features are all plain numeric columns of
    the float32 block (no quantile scores, no numbers read from text): the block's columns
    taken as they are (no float64 round trip per column), gaps filled with the training
    medians and ``COL:missing`` indicators added. Equal, value for value, to ``encode``;
    None when the table has other columns.

    Raises:
        DataError: gaps while the schema does not impute (as ``encode``).
    """
    where = {n: j for j, n in enumerate(cols.block_names or [])}
    if cols.block is None or any(c.role != "numeric" or c.quantiles is not None or c.coerce
                                 or c.name not in where for c in table.columns):
        return None
    idx = [where[c.name] for c in table.columns]
    x = cols.block if idx == list(range(cols.block.shape[1])) else cols.block[:, idx]
    gaps = len(x) > 0 and bool(np.isnan(x.max()))  # NaN propagates: one pass in the usual case
    nan = np.isnan(x) if gaps else np.zeros((len(x), len(idx)), dtype=bool)
    counts = nan.sum(axis=0).tolist() if gaps else [0] * len(idx)
    holes = {c.name: n for c, n in zip(table.columns, counts, strict=True) if n}
    if holes and not table.impute:
        raise missing_values(cols.source, holes)
    if holes:
        x = np.where(nan, np.array([c.fill[0] for c in table.columns], dtype=np.float32), x)
    ind = [j for j, c in enumerate(table.columns) if c.indicator]
    if ind:
        x = np.concatenate([x, nan[:, ind].astype(np.float32)], axis=1)
    for k, v in holes.items():
        filled[k] = filled.get(k, 0) + v
    return x, np.empty((len(x), 0), dtype=np.int64)


class _Pool:
    """The rows held back for shuffling: their numbers (column 0, counted across the files)
    and, once read, their tensors (x, [codes], y). Kept in two stores allocated once and used
    in turn: allocating this much afresh for every piece costs more (in page faults) than the
    copies themselves.

    Args:
        capacity: the most rows held at once.
        like: tensors whose dtypes and per-row shapes the columns take.
    """

    def __init__(self, capacity: int, like: list[Tensor]) -> None:
        self.n = 0
        self.cols = [t.new_empty((capacity, *t.shape[1:])) for t in like]
        self.spare = [t.new_empty((capacity, *t.shape[1:])) for t in like]

    def add(self, piece: list[Tensor]) -> None:
        """Hold the rows of ``piece`` (one tensor per column) too."""
        m = len(piece[0])
        for c, t in zip(self.cols, piece, strict=True):
            c[self.n:self.n + m].copy_(t)
        self.n += m

    def draw(self, perm: Tensor, e: int) -> list[Tensor]:
        """Rows ``perm[:e]`` out, as new tensors; rows ``perm[e:]`` held, in that order."""
        out = [torch.index_select(c[:self.n], 0, perm[:e]) for c in self.cols]
        keep = perm[e:]
        for c, s in zip(self.cols, self.spare, strict=True):
            torch.index_select(c[:self.n], 0, keep, out=s[:len(keep)])
        self.cols, self.spare, self.n = self.spare, self.cols, len(keep)
        return out


class TableStream:
    """Rows of a table read from files by row groups and preprocessed piece by piece: a
    :class:`~nnfit.data.sources.DataSource` of known length (per-step checkpoints, per-step
    schedules and exact mid-epoch resumes work as for data in memory).

    Args:
        encoder: reads and encodes a row group's pieces.
        units: the row groups (indices into ``encoder.files.units``) this source holds, in
            file order (the training or the validation row groups).
        shuffle_buffer: rows of the shuffle buffer (see the module's docstring).
        device: where batches are delivered.

    Attributes:
        plot_rows: the rows a run's plots read (the first ones, in file order: validation
            row groups are drawn at random): their outputs are kept in memory to draw them.

    Example:
        >>> import tempfile, pathlib
        >>> from nnfit.data.stream_fit import prepare_stream
        >>> from nnfit.config import TrainConfig
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = pathlib.Path(d) / "t.csv"
        ...     _ = p.write_text("a,y\\n" + "".join(f"{i},{i % 2}\\n" for i in range(10)))
        ...     data = prepare_stream(p, target="y", config=TrainConfig(val_split=0, quiet=True))
        ...     [len(y) for _, y in data.train.batches(4, shuffle=True)]
        [4, 4, 2]
    """

    plot_rows = 100_000

    def __init__(self, encoder: PieceEncoder, units: Sequence[int], *, shuffle_buffer: int = 65536,
                 device: torch.device | None = None) -> None:
        self.encoder, self.files = encoder, encoder.files
        self.units = [int(u) for u in units]
        self.shuffle_buffer = shuffle_buffer
        self.device = device
        self._n = sum(self.files.rows(u) for u in self.units)

    def __len__(self) -> int:
        return self._n

    @property
    def length(self) -> int:
        """Rows (from the files' metadata: known before reading)."""
        return self._n

    def num_batches(self, batch_size: int, drop_single: bool = False) -> int:
        """Batches of :meth:`batches`; ``drop_single`` drops a trailing batch of one row."""
        return _batch_count(self._n, batch_size, drop_single)

    def to(self, device: torch.device) -> TableStream:
        """This source with its batches delivered on ``device``."""
        return TableStream(self.encoder, self.units, shuffle_buffer=self.shuffle_buffer, device=device)

    def fingerprint(self) -> str:
        """What a resume checks: the files' fingerprint and which row groups this source holds."""
        return f"{self.files.fingerprint()}:{','.join(map(str, self.units))}"

    def row_ids(self, limit: int | None = None) -> np.ndarray:
        """The rows (counted across the files) in the order of unshuffled batches: the first
        ``limit`` of them (None: all)."""
        parts, n = [np.zeros(0, dtype=np.int64)], 0
        for u in self.units:
            if limit is not None and n >= limit:
                break
            parts.append(np.arange(self.files.starts[u], self.files.starts[u] + self.files.rows(u)))
            n += self.files.rows(u)
        return np.concatenate(parts)[:limit]

    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None, drop_single: bool = False,
                start: int = 0) -> Iterator[Batch]:
        """Batches from batch ``start`` on: in file order, or shuffled (row groups in a random
        order and a shuffle buffer). Every random choice of the epoch is fixed by one draw
        from ``generator`` made here, when this is called."""
        total = self.num_batches(batch_size, drop_single)
        if not shuffle:
            return self._in_order(batch_size, total, start)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))  # the epoch's one draw
        g = torch.Generator().manual_seed(seed)
        order = [self.units[i] for i in torch.randperm(len(self.units), generator=g).tolist()]
        return self._shuffled(order, g, batch_size, total, start)

    # ------------------------------------------------------------------ in order
    def _in_order(self, bs: int, total: int, start: int) -> Iterator[Batch]:
        skip, held, done = start * bs, None, start
        for u in self.units:
            if skip >= self.files.rows(u):  # before the first batch asked for: not read at all
                skip -= self.files.rows(u)
                continue
            for data in self.encoder.read(u):
                if skip >= len(data[0]):
                    skip -= len(data[0])
                    continue
                if skip:
                    data, skip = [t[skip:] for t in data], 0
                if held is not None:  # the batch the last piece began, finished with this one's rows
                    need = bs - len(held[0])
                    joined = [torch.cat([a, b[:need]]) for a, b in zip(held, data, strict=True)]
                    data, held = [t[need:] for t in data], None
                    if len(joined[0]) < bs:  # this piece was too short to finish it
                        held = joined
                        continue
                    if done < total:
                        yield from self._deliver(joined, bs, 0, 1)
                        done += 1
                k = min(len(data[0]) // bs, total - done)
                yield from self._deliver(data, bs, 0, k)
                done += k
                held = [t[k * bs:] for t in data] if len(data[0]) > k * bs else None
        if held is not None and done < total:
            yield from self._deliver(held, bs, 0, 1)

    # ------------------------------------------------------------------ shuffled
    def _shuffled(self, order: list[int], g: torch.Generator, bs: int, total: int,
                  start: int) -> Iterator[Batch]:
        cap, done, loaded = self.shuffle_buffer, 0, start == 0
        # held: under cap + bs rows after each draw, then one more piece
        capacity = min(cap, self._n) + bs + max((max(self.files.pieces(u)) for u in order), default=0)
        pool: _Pool | None = None
        reader = _Reader(self.encoder)
        for u in order:
            first = int(self.files.starts[u])
            for j, rows in enumerate(self.files.pieces(u)):
                piece = [torch.arange(first, first + rows), *(reader.piece(u, j) if loaded else [])]
                first += rows
                pool = pool or _Pool(capacity, piece)
                pool.add(piece)
                k = (pool.n - cap) // bs
                if k <= 0:  # the buffer is filling
                    continue
                perm = torch.randperm(pool.n, generator=g)
                if not loaded and done + k > start:  # the resume point: read the rows held
                    pool, loaded = self._load(pool, capacity), True
                out = pool.draw(perm, k * bs)
                if loaded:
                    yield from self._deliver(out[1:], bs, max(0, start - done), k)
                done += k
        if pool is not None and pool.n and total > max(done, start):
            perm = torch.randperm(pool.n, generator=g)
            if not loaded:
                pool = self._load(pool, capacity)
            yield from self._deliver(pool.draw(perm, pool.n)[1:], bs, max(0, start - done), total - done)

    def _load(self, pool: _Pool, capacity: int) -> _Pool:
        """A pool of rows known by number only, read: each row group they come from is
        read once and the rows taken from it, in the pool's order."""
        ids = pool.cols[0][:pool.n].numpy()
        units = np.searchsorted(self.files.starts, ids, side="right") - 1
        got_ids, got = [], []
        for u in np.unique(units).tolist():
            first = int(self.files.starts[u])
            for data in self.encoder.read(u):
                keep = np.flatnonzero(np.isin(np.arange(first, first + len(data[0])), ids))
                if len(keep):
                    got_ids.append(first + keep)
                    got.append([d[torch.from_numpy(keep)] for d in data])
                first += len(data[0])
        found = np.concatenate(got_ids)
        sorter = np.argsort(found)
        pos = torch.from_numpy(sorter[np.searchsorted(found, ids, sorter=sorter)])
        data = [torch.cat([g[i] for g in got])[pos] for i in range(len(got[0]))]
        loaded = _Pool(capacity, [torch.from_numpy(ids), *data])
        loaded.add([torch.from_numpy(ids), *data])
        return loaded

    def _deliver(self, data: list[Tensor], bs: int, skip: int, count: int) -> Iterator[Batch]:
        """Batches ``skip`` .. ``count - 1`` of ``data`` (rows in order), on the device."""
        dev = self.device if self.device is not None and self.device.type != "cpu" else None
        named = self.encoder.named
        for i in range(skip, count):
            part = [t[i * bs:(i + 1) * bs] for t in data]
            if dev is not None:
                part = [t.to(dev, non_blocking=True) for t in part]
            inputs = {"x": part[0], "codes": part[1]} if named else (part[0],)
            yield inputs, part[-1]


class _Reader:
    """The pieces of one row group at a time, in order: piece ``j`` of the unit being read
    (reopened when asked for another unit or an earlier piece)."""

    def __init__(self, encoder: PieceEncoder) -> None:
        self.encoder = encoder
        self.unit: int | None = None
        self.it: Iterator[list[Tensor]] | None = None
        self.next = 0

    def piece(self, unit: int, j: int) -> list[Tensor]:
        if self.unit != unit or j < self.next or self.it is None:
            self.unit, self.it, self.next = unit, self.encoder.read(unit), 0
        while self.next < j:  # pieces read by a resume's first load: read again
            next(self.it)
            self.next += 1
        self.next += 1
        return next(self.it)
