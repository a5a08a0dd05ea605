"""Sequences stored flat (never padded to the longest) and gathered padded batch by batch, and
the sequence inputs refused in one line: token ids past int64, times that are infinite or past
int64."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import nnfit
from nnfit.config import TrainConfig
from nnfit.data.buckets import SequenceData, plan_batches
from nnfit.data.prepare import prepare
from nnfit.data.sequence_steps import read_steps
from nnfit.errors import DataError
from nnfit.run import data_fingerprint

QUICK = dict(quiet=True, device="cpu", seed=0)


def skewed_table(n: int = 200, long: int = 3000) -> pd.DataFrame:
    """``n`` sequences of two rows and one of ``long`` rows, a number and a category per step."""
    ids = np.concatenate([np.repeat(np.arange(n), 2), np.full(long, n)])
    times = np.concatenate([np.tile([0, 1], n), np.arange(long)])
    rng = np.random.default_rng(0)
    return pd.DataFrame({"id": ids, "t": times, "v": rng.normal(size=len(ids)).round(3),
                         "c": rng.choice(["a", "b", "c"], len(ids)), "label": ids % 2})


def padded(flat: torch.Tensor, lengths: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """The reference batch: sequences ``rows`` of ``flat`` padded with zeros to their longest."""
    starts = np.cumsum(lengths) - lengths
    out = flat.new_zeros((len(rows), int(lengths[rows].max()), *flat.shape[1:]))
    for i, r in enumerate(rows):
        out[i, :lengths[r]] = flat[starts[r]:starts[r] + lengths[r]]
    return out


def test_skewed_sequences_are_stored_flat_and_batches_gathered_padded() -> None:
    prep = prepare(skewed_table(), target="label", config=TrainConfig(sequence_id="id", time="t", seed=0,
                                                                     val_split=0.0))
    train = prep.train
    lengths, steps = train.host_lengths, int(train.host_lengths.sum())
    # the data itself, not N x 3,000 cells: numbers and codes per step, lengths per sequence
    assert train.inputs["x"].shape == (steps, 1) and train.inputs["codes"].shape == (steps, 1)
    assert train.inputs["lengths"].tolist() == lengths.tolist() and lengths.max() == 3000
    gen = torch.Generator().manual_seed(1)
    batches = list(train.batches(16, shuffle=True, generator=gen))
    order = plan_batches(lengths, 16, shuffle=True, generator=torch.Generator().manual_seed(1))
    for (inputs, target), rows in zip(batches, order, strict=True):
        assert torch.equal(inputs["x"], padded(train.inputs["x"], lengths, rows))
        assert torch.equal(inputs["codes"], padded(train.inputs["codes"], lengths, rows))
        assert inputs["lengths"].tolist() == lengths[rows].tolist()
        assert torch.equal(target, train.target[torch.from_numpy(rows)])
    assert sorted(np.concatenate(order).tolist()) == list(range(len(lengths)))


def test_subsets_tokens_and_fingerprints_read_the_flat_steps() -> None:
    lengths = np.array([3, 1, 4, 2])
    tokens = torch.arange(1, 11)
    data = SequenceData({"x": tokens}, lengths, torch.arange(4))
    part = data.subset(np.array([2, 0]))
    assert part.inputs["x"].tolist() == [5, 6, 7, 8, 1, 2, 3] and part.target.tolist() == [2, 0]
    (batch, target), = part.batches(2)
    assert batch["x"].tolist() == [[5, 6, 7, 8], [1, 2, 3, 0]] and batch["lengths"].tolist() == [4, 3]
    # in order (prediction): the input order, each batch trimmed to its longest
    assert [b["x"].tolist() for b, _ in data.batches(2)] == [[[1, 2, 3], [4, 0, 0]],
                                                             [[5, 6, 7, 8], [9, 10, 0, 0]]]
    # the fingerprint hashes what is stored: another split of the same steps is other data
    assert data_fingerprint(data) != data_fingerprint(SequenceData({"x": tokens}, np.array([3, 2, 3, 2]),
                                                                   torch.arange(4)))
    with pytest.raises(DataError, match=r"^4 sequences of 10 steps in all, but step inputs of \[9\] rows$"):
        SequenceData({"x": tokens[:9]}, lengths)


def test_token_ids_past_int64_are_refused_in_one_line() -> None:
    tokens = np.array([[1, 2, 3], [4, 2**63 + 1, 0]], dtype=np.uint64)
    with pytest.raises(DataError, match=r"^training data: a negative token id or one past 2\*\*63 - 1 "
                                        r"\(tokens are 0, 1, 2, \.\.\.\) at row 2, step 2$"):
        nnfit.fit("gru", tokens, [0, 1], epochs=1, **QUICK)


@pytest.mark.parametrize("times, shown", [
    (np.array([0.0, 1.0, np.inf, 1.0]), "inf"),
    (np.array([0, 1, 2**63 + 5, 1], dtype=np.uint64), str(2**63 + 5)),
])
def test_infinite_and_out_of_range_times_are_refused_naming_the_row(times: np.ndarray, shown: str) -> None:
    frame = pd.DataFrame({"id": ["a", "a", "b", "b"], "t": times, "v": [1.0, 2.0, 3.0, 4.0],
                          "label": [0, 0, 1, 1]})
    with pytest.raises(DataError, match=rf"^data: --time column 't' has {shown} on row 3: a time must "
                                        r"be a finite number below 2\*\*63 or a date$"):
        read_steps(frame, None, sequence_id="id", time="t", target="label", source="data", labelled=True)
