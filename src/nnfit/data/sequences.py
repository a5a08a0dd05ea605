"""The ``sequence`` data layout: one label per sequence of steps, for recurrent models.

Sequences come as a long-format table (``sequence_id`` + ``time``), float arrays (N, T, F),
token arrays (N, T) or lists of variable-length sequences (:mod:`.sequence_steps` reads them
all). Training and validation are split by whole sequences (stratified by label for
classification), so the steps of one sequence are never on both sides.

A table's per-step features go through the same column roles as a table of rows
(:func:`nnfit.data.prepare.table_inputs`: every column but the id, time and target, fitted on
the training sequences' rows; numbers standardised, categoricals as per-step codes, gaps
filled). Float arrays are standardised per feature over the training steps; token ids are
kept, and ``vocab_size`` (the largest training token + 1) is saved. The preprocessing's
inputs describe one step: ``x`` (F features, or one int64 token) and ``codes`` (K columns).

Models receive named inputs, ``model(x=..., lengths=..., codes=...)``: ``x`` (N, T, F) float
or (N, T) int64 tokens padded at the end of each row, ``lengths`` (N,) int64 and, with
categorical columns, ``codes`` (N, T, K) int64 (:class:`~nnfit.data.buckets.SequenceData`).
Predictions come one per sequence: in the order of their first row in a table (the id column
names them in a prediction file), in the input order for arrays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from .buckets import SequenceData
from .columns import Columns, write_csv
from .inputs import RawInputs
from .preprocess import Preprocessor
from .schema import warn_filled
from .sequence_steps import (
    SEQUENCE_FLAGS,
    TRAIN_STEPS,
    Steps,
    is_table,
    read_steps,
    read_table_columns,
    step_of,
    table_steps,
)
from .split import holdout, holds_out, split_indices, stratify_labels

if TYPE_CHECKING:
    from ..config import TrainConfig
    from ..tasks import Task
    from .prepare import Prepared

FORMS = ("table", "floats", "tokens")
MODELS = ("lstm", "gru")  # the built-in families that read sequences


@dataclass
class SequenceLayout:
    """How sequences were read and what each step holds, fitted on the training sequences.

    Attributes:
        form: "table" (long format), "floats" (arrays of float steps) or "tokens" (int ids).
        features: float features per step (0 for tokens).
        vocab_size: tokens: the largest training token id + 1 (ids at or above it are
            refused later); 0 otherwise.
        cardinalities: a table's categorical columns' code counts, in order (one embedding
            each in a built-in model).
        sequence_id, time: a table's id and time columns; None for arrays.
    """

    kind: ClassVar[str] = "sequence"
    form: str
    features: int = 0
    vocab_size: int = 0
    cardinalities: list[int] = field(default_factory=list)
    sequence_id: str | None = None
    time: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def model_defaults(self, name: str) -> dict[str, Any]:
        """The sizes an lstm / gru spec takes from the data (``in_features``, tokens'
        ``vocab_size`` and ``embedding_dim``, per-step ``embeddings``).

        Raises:
            ConfigError: any other family, in one line.
        """
        from ..models.tabular import embedding_dim

        if name not in MODELS:
            raise ConfigError(f"model {name!r} cannot read sequences: use 'lstm' or 'gru', or a module "
                              "of your own called as model(x=..., lengths=..., codes=...)")
        if self.form == "tokens":
            return {"in_features": 0, "vocab_size": self.vocab_size,
                    "embedding_dim": embedding_dim(self.vocab_size)}
        out: dict[str, Any] = {"in_features": self.features}
        if self.cardinalities:
            out["embeddings"] = [[c, embedding_dim(c)] for c in self.cardinalities]
        return out

    def sample_inputs(self, pre: Preprocessor, steps: int = 4) -> dict[str, Tensor]:
        """Two sequences of zeros, ``steps`` long, as the model gets them (for a model summary)."""
        x = (torch.zeros(2, steps, dtype=torch.long) if self.form == "tokens"
             else torch.zeros(2, steps, self.features))
        out = {"x": x, "lengths": torch.full((2,), steps, dtype=torch.long)}
        if self.cardinalities:
            out["codes"] = torch.zeros(2, steps, len(self.cardinalities), dtype=torch.long)
        return out

    def inputs(self, pre: Preprocessor, x: Any, source: str,
               target: str | None) -> tuple[SequenceData, str, dict[str, np.ndarray]]:
        """Unlabelled sequences as a source, their name, and (for a table) the id column naming
        each output row, one per sequence in order of first appearance.

        Raises:
            DataError: sequences of another form than the model's, or that do not read as
                fitted (a column, a token id, a feature count), in one line.
        """
        steps = self._read(x, None, target, source, labelled=False)
        keys = {self.sequence_id: steps.ids} if self.form == "table" else {}
        return self.source(pre, steps, None, new_levels=True), steps.source, keys

    def labelled(self, pre: Preprocessor, task: Task, x: Any, y: Any, target: str | None,
                 source: str) -> tuple[SequenceData, str]:
        """Labelled sequences as a source and their name.

        Raises:
            DataError: as :meth:`inputs`, and labels that are missing or not one per sequence.
        """
        steps = self._read(x, y, target, source, labelled=True)
        return self.source(pre, steps, task, new_levels=True), steps.source

    def _read(self, x: Any, y: Any, target: str | None, source: str, labelled: bool) -> Steps:
        if self.form == "table" and not is_table(x):
            raise DataError(f"{source}: this model was trained on a long-format table: pass a file or "
                            f"DataFrame with the columns {self.sequence_id!r} and {self.time!r}")
        if self.form != "table" and is_table(x):
            raise DataError(f"{source}: this model was trained on arrays of sequences, not a table")
        steps = read_steps(x, y, sequence_id=self.sequence_id, time=self.time, target=target,
                           source=source, labelled=labelled)
        if steps.form != self.form:
            raise DataError(f"{source}: this model was trained on {_FORM_WORDS[self.form]}, got "
                            f"{_FORM_WORDS[steps.form]}")
        return steps

    def source(self, pre: Preprocessor, steps: Steps, task: Task | None, filled: dict[str, int] | None = None,
               new_levels: bool = False, flat: tuple[Tensor, Tensor | None] | None = None) -> SequenceData:
        """``steps`` through the fitted preprocessing, stored flat (``flat``: the steps' inputs
        already made, as fitting makes them), with the task's targets when given."""
        x, codes = flat if flat is not None else self.flat_inputs(pre, steps, filled, new_levels)
        inputs = {"x": x} if codes is None else {"x": x, "codes": codes}
        target = None if task is None else task.encode_target(steps.labels, steps.label_source)
        return SequenceData(inputs, steps.lengths, target)

    def flat_inputs(self, pre: Preprocessor, steps: Steps, filled: dict[str, int] | None = None,
                    new_levels: bool = False) -> tuple[Tensor, Tensor | None]:
        """Each step's model inputs, one after another: ``x`` (R, F) or (R,) tokens, and
        ``codes`` (R, K) or None."""
        if isinstance(steps.rows, Columns):
            from .prepare import _warn_unused

            _warn_unused(pre, steps.rows, None)
            return _split(pre.transform_table(steps.rows, steps.source, filled, new_levels))
        if self.form == "tokens":
            big = steps.rows >= self.vocab_size
            if big.any():
                row, step = step_of(int(np.flatnonzero(big)[0]), steps.lengths)
                raise DataError(f"{steps.source}: token {int(steps.rows[big][0])} at row {row + 1}, step "
                                f"{step + 1} is beyond the vocabulary the model was trained on (tokens 0 "
                                f"to {self.vocab_size - 1})")
            return torch.from_numpy(steps.rows), None
        if steps.rows.shape[1] != self.features:
            raise DataError(f"{steps.source}: sequences have {steps.rows.shape[1]} features per step; the "
                            f"model was trained on {self.features}")
        return _split(pre.transform(_raw(steps.rows), steps.source, filled))


_FORM_WORDS = {"table": "a long-format table", "floats": "float sequences (steps, features)",
               "tokens": "token id sequences"}


def _raw(rows: np.ndarray) -> RawInputs:
    return RawInputs("single", {"x": (rows, None)})


def _split(inputs: Any) -> tuple[Tensor, Tensor | None]:
    """(x, codes or None) of a table's or an array's inputs."""
    if isinstance(inputs, dict):
        return inputs["x"], inputs.get("codes")
    return inputs[0], None


def from_dict(d: dict[str, Any]) -> SequenceLayout:
    """A saved layout (checked already against ``nnfit.io.validate.LAYOUT``)."""
    return SequenceLayout(d["form"], d["features"], d["vocab_size"], list(d["cardinalities"]),
                          d["sequence_id"], d["time"])


# ------------------------------------------------------------------------------ training
def prepare(x: Any, y: Any, *, target: str | None, val: Any, task: str | Task, config: TrainConfig,
            resumed: dict[str, Any] | None) -> Prepared:
    """Read sequences, split them whole into training and validation, fit the task and the
    preprocessing on the training sequences (or keep a resumed run's) and build the sources.

    Raises:
        DataError, ConfigError: bad data or settings, in one line.
    """
    from .prepare import Prepared, _fitted_task

    steps = read_steps(x, y, sequence_id=config.sequence_id, time=config.time, target=target,
                       source="training data", labelled=True, min_steps=TRAIN_STEPS)
    pre = None if resumed is None else Preprocessor.from_dict(resumed["preprocess"])
    tr, va, va_idx = steps, None, None
    if val is None and holds_out(config):
        tr_idx, va_idx = holdout(len(steps), config, stratify_labels(steps.labels, task),
                                 source=steps.label_source)
        tr, va = steps.take(tr_idx), steps.take(va_idx)
    elif val is not None:
        vx, vy = val if isinstance(val, tuple) and len(val) == 2 else (val, None)
        va = read_steps(vx, vy, sequence_id=config.sequence_id, time=config.time, target=target,
                        source="validation data", labelled=True, min_steps=TRAIN_STEPS)
        if va.form != steps.form:
            raise DataError(f"validation data: {_FORM_WORDS[va.form]}, but the training data is "
                            f"{_FORM_WORDS[steps.form]}")
    fitted = _fitted_task(task, tr.labels, config, resumed, steps.label_source)
    filled: dict[str, int] = {}
    if pre is None:
        pre, flat = _fit(tr, steps, config, target, filled)
    else:
        if not isinstance(pre.layout, SequenceLayout) or pre.layout.form != steps.form:
            raise DataError(f"training data: the run resumed was trained on other data than "
                            f"{_FORM_WORDS[steps.form]}")
        flat = pre.layout.flat_inputs(pre, tr, filled)
    layout: SequenceLayout = pre.layout
    train = layout.source(pre, tr, fitted, flat=flat)
    val_src = None if va is None else layout.source(pre, va, fitted, filled)
    if filled and pre.table is not None:  # one line for both splits, in column order
        warn_filled(steps.source, {n: filled[n] for n in pre.table.used if n in filled})
    return Prepared(fitted, pre, train, val_src, target, _val_keys(va, va_idx, config))


def _val_keys(va: Steps | None, va_idx: np.ndarray | None, config: TrainConfig) -> dict[str, np.ndarray]:
    """What names each validation sequence (the plots' worst examples): a table's sequence
    id, else its position among the sequences given (the held-out ones' in the training data)."""
    from .prepare import key_column

    if va is None:
        return {}
    if va.ids is not None:
        return {key_column(config.sequence_id, "sequence_id"): np.asarray(va.ids)}
    return {"row": np.asarray(va_idx) if va_idx is not None else np.arange(len(va))}


def _fit(tr: Steps, whole: Steps, config: TrainConfig, target: str | None,
         filled: dict[str, int]) -> tuple[Preprocessor, tuple[Tensor, Tensor | None]]:
    """The preprocessing fitted on the training sequences ``tr`` (of all of ``whole``), with
    its layout, and the training steps' inputs."""
    from .prepare import table_inputs

    if isinstance(tr.rows, Columns):
        assert isinstance(whole.rows, Columns) and tr.positions is not None
        pre, inputs = table_inputs(tr.rows, tr.positions, whole.rows, config, target, None, filled)
        flat = _split(inputs)
        assert pre.table is not None
        pre.layout = SequenceLayout("table", int(flat[0].shape[1]), 0,
                                    [c.cardinality for c in pre.table.categorical],
                                    config.sequence_id, config.time)
        return pre, flat
    if tr.form == "tokens":
        pre = Preprocessor.fit(_raw(tr.rows), standardize=False, source=tr.source)
        pre.layout = SequenceLayout("tokens", 0, int(tr.rows.max()) + 1)
        return pre, (torch.from_numpy(tr.rows), None)
    pre = Preprocessor.fit(_raw(tr.rows), standardize=config.standardize, source=tr.source)
    pre.layout = SequenceLayout("floats", int(tr.rows.shape[1]))
    return pre, _split(pre.transform(_raw(tr.rows), tr.source))


# ------------------------------------------------------------------------------ test split
def hold_out(data: Any, fraction: float, config: TrainConfig, target: str | None,
             task: str | Task) -> tuple[Any, Columns | None, int]:
    """What ``nnfit train --test-split`` holds out: whole sequences of a long-format table
    (stratified by label for classification), every row of each.

    Returns:
        (the training sequences' rows, the test sequences' rows, the number of test
        sequences); rows keep the table's order and columns.

    Raises:
        ConfigError: data that is not a table with ``--sequence-id``: the flags that make
            sequences.
        DataError: a table that does not hold valid sequences (checked here, before a run
            directory is written).
    """
    if not is_table(data) or config.sequence_id is None or config.time is None:
        raise ConfigError(SEQUENCE_FLAGS)
    cols = read_table_columns(data, str(data) if isinstance(data, (str, Path)) else "training data", target)
    steps = table_steps(cols.copy(), config.sequence_id, config.time, target, labelled=True,
                        min_steps=TRAIN_STEPS)
    if fraction <= 0:
        return cols, None, 0
    keep, held = split_indices(len(steps), fraction, config.seed, stratify_labels(steps.labels, task))
    rows = [np.sort(steps.take(idx).positions) for idx in (keep, held)]
    return cols.take(rows[0]), cols.take(rows[1]), len(held)


def write_test(path: Path, test_part: Columns, config: TrainConfig, target: str | None) -> Path:
    """Write the test sequences' rows as a long-format CSV (the table's own columns), which
    ``nnfit evaluate RUN RUN/test.csv`` reads like the training file."""
    return write_csv(path, test_part)
