"""k-fold and bootstrap validation splits of a single run (TrainConfig.fold, .bootstrap): the K
folds partition the rows, stratified per class; bootstrap samples and their out-of-bag rows;
seeded; the default split unchanged; every data layout's split site; bad input in one line."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

import nnfit
from helpers import cli, one_error
from nnfit.config import TrainConfig, train_config
from nnfit.data.prepare import prepare
from nnfit.data.split import fold_of, holdout, split_indices
from nnfit.errors import ConfigError, DataError, NnfitWarning
from test_sequences import order_table

QUICK = dict(quiet=True, device="cpu", seed=0, epochs=1, plots=False)


def labels(counts: dict[str, int], seed: int = 0) -> np.ndarray:
    """Class labels with ``counts`` rows each, shuffled."""
    y = np.concatenate([np.full(c, k) for k, c in counts.items()])
    return np.random.default_rng(seed).permutation(y)


# ---------------------------------------------------------------------------------- folds
@pytest.mark.parametrize("stratify", [False, True])
def test_the_folds_partition_the_rows_each_validating_once(stratify) -> None:
    y = labels({"a": 23, "b": 11, "c": 7})
    seen = np.zeros(len(y), dtype=int)
    for k in range(1, 6):
        tr, va = holdout(len(y), TrainConfig(fold=f"{k}/5", seed=3), y if stratify else None)
        assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(y)))
        assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)  # sorted, no repeats
        assert len(va) in (8, 9)  # 41 rows over 5 folds
        seen[va] += 1
    assert (seen == 1).all()


def test_stratified_folds_spread_every_class_within_one_row_of_its_share() -> None:
    y = labels({"a": 23, "b": 11, "c": 7, "d": 5})
    fold = fold_of(len(y), 5, seed=1, stratify=y)
    for c in "abcd":
        per_fold = np.bincount(fold[y == c], minlength=5)
        assert np.abs(per_fold - (y == c).sum() / 5).max() < 1, (c, per_fold)
    sizes = np.bincount(fold, minlength=5)
    assert sizes.max() - sizes.min() <= 1


def test_folds_and_bootstraps_are_drawn_by_the_seed() -> None:
    y = labels({"a": 30, "b": 20})
    for part in ({"fold": "2/5"}, {"bootstrap": "2/5"}):
        a = holdout(len(y), TrainConfig(seed=7, **part), y)
        b = holdout(len(y), TrainConfig(seed=7, **part), y)
        c = holdout(len(y), TrainConfig(seed=8, **part), y)
        assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
        assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("seed", [0, 5, None])
@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.35])
@pytest.mark.parametrize("stratify", [False, True])
def test_without_fold_or_bootstrap_the_split_is_split_indices(seed, fraction, stratify) -> None:
    y = labels({"x": 17, "y": 9, "z": 4}) if stratify else None
    cfg = TrainConfig(val_split=fraction, seed=seed)
    if seed is None:  # drawn fresh each time: only the sizes can agree
        assert [len(a) for a in holdout(30, cfg, y)] == [len(a) for a in split_indices(30, fraction, None, y)]
        return
    got, want = holdout(30, cfg, y), split_indices(30, fraction, seed, y)
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


# ------------------------------------------------------------------------------ bootstrap
def test_a_bootstrap_draws_n_rows_with_replacement_and_validates_on_the_rest() -> None:
    n = 200
    tr, va = holdout(n, TrainConfig(bootstrap="3/10", seed=0))
    assert len(tr) == n and np.all(np.diff(tr) >= 0) and len(np.unique(tr)) < n  # repeats
    assert np.array_equal(va, np.setdiff1d(np.arange(n), tr))  # exactly the out-of-bag rows
    assert 0.3 < len(va) / n < 0.45  # about 1/e of the rows are never drawn
    rng = np.random.default_rng((0, 3))  # the documented generator: seeded by (seed, b)
    assert np.array_equal(tr, np.sort(rng.integers(0, n, size=n)))
    other, _ = holdout(n, TrainConfig(bootstrap="4/10", seed=0))
    assert not np.array_equal(tr, other)


def test_a_bootstrap_that_leaves_no_row_out_of_bag_is_refused() -> None:
    with pytest.raises(DataError, match=r"^t: bootstrap 1/2 drew every one of its 1 rows"):
        holdout(1, TrainConfig(bootstrap="1/2"), source="t")


# ------------------------------------------------------------------------- the split sites
def test_every_layout_trains_on_the_bootstrap_and_validates_out_of_bag(tmp_path) -> None:
    rng = np.random.default_rng(0)
    cfg = TrainConfig(bootstrap="2/4", seed=0)
    x, y = rng.normal(size=(60, 3)).astype(np.float32), rng.integers(0, 2, 60)
    _, oob = holdout(60, cfg, y)  # classification: a stratified bootstrap
    rows = prepare(x, y, config=cfg)
    assert len(rows.train) == 60 and len(rows.val) == len(oob)
    images = prepare(rng.integers(0, 255, (60, 1, 6, 6)).astype(np.uint8), y, config=cfg, family="cnn")
    assert len(images.train) == 60 and len(images.val) == len(oob)
    path = order_table(tmp_path / "seq.csv", n=40)
    seqs = prepare(str(path), target="first", config=TrainConfig(bootstrap="2/4", sequence_id="id", time="t"),
                   family="lstm")
    assert len(seqs.train) == 40 and 0 < len(seqs.val) < 40


def test_a_bootstrap_judges_an_id_column_on_the_distinct_rows_drawn() -> None:
    """Repeated rows would make a distinct id look repeated: it is dropped as in a plain split."""
    rng = np.random.default_rng(0)
    n = 80
    table = {"PassengerId": rng.permutation(n) + 1000, "v": rng.normal(size=n), "y": rng.integers(0, 2, n)}
    for part in ({}, {"bootstrap": "1/5"}):
        with pytest.warns(NnfitWarning, match="PassengerId"):
            p = prepare(pd.DataFrame(table), target="y", config=TrainConfig(**part))
        assert "PassengerId" in p.preprocessor.table.dropped, part


def test_fold_validates_on_one_fifth_through_the_cli(tmp_path, capsys) -> None:
    status, _, err = cli(capsys, "train", "--dataset", "iris", "fold=2/5", "--epochs", "2", "--out",
                         tmp_path / "run", "--quiet", "--no-plots")
    assert status == 0, err
    confusion = np.array(json.loads((tmp_path / "run" / "metrics.json").read_text())["confusion_matrix"])
    # iris: 150 rows, 30 held out as the test split, 120 dealt into 5 folds of 8 per class
    assert confusion.sum() == 120 // 5 and confusion.sum(axis=1).tolist() == [8, 8, 8]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["fold"] == "2/5"


@pytest.mark.parametrize("items, message", [
    (["fold=1/1"], "fold 1/1: k-fold needs at least 2 folds"),
    (["fold=0/5"], r"fold 0/5: k must be in 1\.\.5"),
    (["fold=6/5"], r"fold 6/5: k must be in 1\.\.5"),
    (["fold=a/b"], "fold must be k/K with whole numbers, such as 2/5; got 'a/b'"),
    (["bootstrap=3"], "bootstrap must be k/K with whole numbers, such as 2/5; got '3'"),
    (["fold=1/5", "bootstrap=1/5"], "fold and bootstrap cannot both be set"),
    (["fold=1/41"], "dataset iris: target column 'species': class 'setosa' has 40 rows, fewer than 41 folds"),
])
def test_bad_folds_are_one_line_through_the_cli(tmp_path, capsys, items, message) -> None:
    line = one_error(capsys, "train", "--dataset", "iris", *items, "--epochs", "1", "--out", tmp_path / "r",
                     "--quiet", "--no-plots")
    assert re.search(message, line), line


def test_fit_refuses_folds_with_its_own_validation_data_a_stream_or_a_forecast() -> None:
    x, y = np.zeros((20, 2), np.float32), np.arange(20) % 2
    with pytest.raises(ConfigError, match=r"^fold=2/5 holds out its own validation rows: pass no validation"):
        nnfit.fit("mlp", x, y, val=(x, y), fold="2/5", **QUICK)
    with pytest.raises(ConfigError, match=r"^bootstrap=1/3: a Dataset, DataLoader or stream is never split"):
        nnfit.fit("mlp", TensorDataset(torch.zeros(20, 2), torch.zeros(20)), bootstrap="1/3", **QUICK)
    series = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=60), "v": np.arange(60.0)})
    with pytest.raises(ConfigError, match=r"^fold=1/3: a forecast validates on the end of its series"):
        nnfit.fit("lstm", series, target="v", time="t", window=5, fold="1/3", **QUICK)
    with pytest.raises(ConfigError, match=r"^fold: expected str, got \(2, 5\)"):
        train_config(fold=(2, 5))
    with pytest.raises(ConfigError, match=r"^fold must be a string k/K such as '2/5', got \(2, 5\)"):
        TrainConfig(fold=(2, 5))


def test_a_classification_bootstrap_draws_every_class_from_its_own_rows() -> None:
    """A class of 3 rows in 120: a plain draw misses it in about one sample of 20; the
    stratified draw keeps each class's count in every sample."""
    y = np.array([0] * 60 + [1] * 57 + [2] * 3)
    for b in range(1, 41):
        train, oob = holdout(120, TrainConfig(bootstrap=f"{b}/40", seed=0), y)
        assert np.bincount(y[train], minlength=3).tolist() == [60, 57, 3]
        assert len(np.intersect1d(train, oob)) == 0 and len(np.union1d(train, oob)) == 120

