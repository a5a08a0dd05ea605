"""Training data of unknown length (a DataLoader over an IterableDataset, a generator function):
trains, validates and predicts with no total; checkpoints and resumes exactly at epoch ends
(bitwise equal to an uninterrupted run, a signal inside an epoch included); what needs the
number of batches (checkpoint_steps, per-step schedules) is refused unless the count is given."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

import nnfit
from helpers import TermAt
from nnfit.data import LoaderData, StreamData, as_source
from nnfit.errors import CheckpointError, ConfigError, DataError, Stopped
from nnfit.run import read_latest
from nnfit.tasks import make_task

N, BATCH = 100, 16
KW = dict(task="multiclass", batch_size=BATCH, quiet=True, device="cpu", seed=0)


class Stream(IterableDataset):
    """Rows in an order drawn from torch's global generator at each pass (a resume restores it)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self):
        for i in torch.randperm(len(self.x)).tolist():
            yield self.x[i], self.y[i]


class SizedStream(Stream):
    """The same stream, its length given."""

    def __len__(self) -> int:
        return len(self.x)


def _xy(n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 1).long()


def _loader(n: int = N, cls: type = Stream) -> DataLoader:
    return DataLoader(cls(*_xy(n)), batch_size=BATCH)


def _val() -> DataLoader:
    x, y = _xy(40)
    return DataLoader(Stream(x + 0.1, y), batch_size=BATCH)


def _model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def _no_time(learner: nnfit.Learner) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in learner.history]


def _same(a: nnfit.Learner, b: nnfit.Learner) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa) and _no_time(a) == _no_time(b)



def test_a_stream_of_unknown_length_trains_validates_and_predicts() -> None:
    src = LoaderData(_loader())
    assert src.length is None and src.num_batches(BATCH) is None
    learner = nnfit.fit(_model(), _loader(), val=_val(), epochs=3, **KW)
    assert learner.trainer.batches_per_epoch is None
    assert learner.trainer.state.step == 3 * math.ceil(N / BATCH)
    assert len(learner.history) == 3 and all(math.isfinite(r["val_loss"]) for r in learner.history)
    assert learner.predict(_loader(20)).shape == (20,)
    assert set(learner.evaluate(_val())) >= {"loss", "accuracy"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[nnfit.Learner, Path]:
    run = tmp_path_factory.mktemp("stream") / "A"
    return nnfit.fit(_model(), _loader(), val=_val(), epochs=4, run_dir=run, scheduler="step",
                     step_size=1, gamma=0.5, **KW), run


def test_resume_at_an_epoch_end_equals_the_uninterrupted_run(tmp_path: Path, uninterrupted) -> None:
    common = dict(val=_val(), run_dir=tmp_path / "B", scheduler="step", step_size=1, gamma=0.5, **KW)
    nnfit.fit(_model(), _loader(), epochs=2, **common)
    resumed = nnfit.fit(_model(), _loader(), epochs=4, resume=tmp_path / "B", **common)
    full, run = uninterrupted
    assert _same(resumed, full)
    assert full.history["lr"] == [1e-3, 5e-4, 2.5e-4, 1.25e-4]
    # The whole last checkpoint, optimizer moments and RNG states included, is identical too.
    ta, _ = read_latest(run)
    tb, mb = read_latest(tmp_path / "B")
    assert sorted(ta) == sorted(tb) and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert mb["epoch"] == 4 and mb["batch"] == 0


def test_a_signal_inside_an_epoch_stops_at_the_last_epoch_end(tmp_path: Path, uninterrupted) -> None:
    common = dict(val=_val(), run_dir=tmp_path / "r", scheduler="step", step_size=1, gamma=0.5, **KW)
    per_epoch = math.ceil(N / BATCH)
    with pytest.raises(Stopped) as e:  # SIGTERM after batch 3 of epoch 2: nothing written there
        nnfit.fit(_model(), _loader(), epochs=4, callbacks=[TermAt(per_epoch + 3)], **common)
    assert re.fullmatch(rf"stopped by SIGTERM in epoch 2 after batch 3 \(step {per_epoch + 3}\); training "
                        r"data of unknown length resumes from epoch ends: the last checkpoint "
                        rf"\(step-0+{per_epoch}-epoch-00001\) is untouched", str(e.value)), str(e.value)
    _, meta = read_latest(tmp_path / "r")
    assert (meta["epoch"], meta["batch"]) == (1, 0)
    resumed = nnfit.fit(_model(), _loader(), epochs=4, resume=tmp_path / "r", **common)
    assert _same(resumed, uninterrupted[0])


@pytest.mark.parametrize(("setting", "message"), [
    (dict(scheduler="onecycle"), r"^scheduler 'onecycle' plans over the total number of steps, and the "
                                 r"training data's length is unknown: give the number of batches an epoch"),
    (dict(scheduler="cosine"), r"^scheduler 'cosine' plans over the total number of steps"),
    (dict(checkpoint_steps=3), r"^checkpoint_steps 3: training data of unknown length is checkpointed at "
                               r"epoch ends only: give the number of batches an epoch \(a __len__ on the "
                               r"dataset, or epoch_batches=N on a LoaderData or StreamData\), or set "
                               r"checkpoint_steps 0$"),
])
def test_what_needs_the_number_of_batches_is_refused(tmp_path: Path, setting: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        nnfit.fit(_model(), _loader(), epochs=2, run_dir=tmp_path / "r", **setting, **KW)
    assert "\n" not in str(e.value)


def test_with_the_count_given_per_step_features_work(tmp_path: Path) -> None:
    sized = nnfit.fit(_model(), _loader(cls=SizedStream), epochs=2, scheduler="onecycle",
                      run_dir=tmp_path / "r", checkpoint_steps=3, **KW)
    assert sized.trainer.batches_per_epoch == math.ceil(N / BATCH)
    task = make_task("multiclass", np.arange(3))
    trainer = nnfit.Trainer(epochs=2, batch_size=BATCH, quiet=True, device="cpu", scheduler="onecycle")
    trainer.fit(_model(), LoaderData(_loader(), epoch_batches=7), task=task)
    assert trainer.state.step == 14 and trainer.schedule.interval == "step"


def test_generator_functions_train_and_generator_objects_are_refused() -> None:
    x, y = _xy()

    def batches():
        for i in range(0, N, BATCH):
            yield x[i:i + BATCH], y[i:i + BATCH]

    task = make_task("multiclass", np.arange(3))
    trainer = nnfit.Trainer(epochs=2, quiet=True, device="cpu")
    history = trainer.fit(_model(), batches, val=batches, task=task)
    assert len(history) == 2 and trainer.state.step == 2 * 7 and isinstance(as_source(batches), StreamData)
    with pytest.raises(DataError, match=r"^a generator can be read only once and every epoch reads the "
                                        r"data again: pass the function that makes it"):
        as_source(batches())


def test_a_last_accumulation_window_cut_short_by_the_stream_is_its_mean() -> None:
    x, y = _xy()

    def batches():  # 7 batches: windows of 3, 3 and 1
        for i in range(0, N, BATCH):
            yield x[i:i + BATCH], y[i:i + BATCH]

    task = make_task("multiclass", np.arange(3))
    runs = []
    for src in (StreamData(batches), StreamData(batches, epoch_batches=7)):
        trainer = nnfit.Trainer(epochs=2, quiet=True, device="cpu", accumulate=3, optimizer="sgd", lr=0.5)
        model = _model()
        trainer.fit(model, src, task=task)
        runs.append((trainer.state.step, model.state_dict()))
    (steps_a, a), (steps_b, b) = runs
    assert steps_a == steps_b == 2 * 3
    for k in a:  # scaled after the fact rather than before: equal up to rounding
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_a_bare_stream_is_batched_without_a_trailing_single_sample() -> None:
    src = LoaderData(Stream(*_xy(33)))
    assert [len(t) for _, t in src.batches(16)] == [16, 16, 1]
    assert [len(t) for _, t in src.batches(16, drop_single=True)] == [16, 16]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    trainer = nnfit.Trainer(epochs=1, batch_size=16, quiet=True, device="cpu")
    trainer.fit(model, src, task=make_task("multiclass", np.arange(3)))  # BatchNorm never sees 1 row
    assert trainer.state.step == 2


def test_an_empty_stream_is_refused() -> None:
    task = make_task("multiclass", np.arange(3))
    trainer = nnfit.Trainer(epochs=1, quiet=True, device="cpu")
    with pytest.raises(ConfigError, match=r"^no training batches: the training data yielded none in epoch 1"):
        trainer.fit(_model(), StreamData(lambda: iter(())), task=task)


def test_a_checkpoint_inside_an_epoch_does_not_resume_onto_a_stream(tmp_path: Path) -> None:
    common = dict(run_dir=tmp_path / "r", **KW)
    with pytest.raises(Stopped):
        nnfit.fit(_model(), _loader(cls=SizedStream), epochs=2, callbacks=[TermAt(3)], **common)
    assert read_latest(tmp_path / "r")[1]["batch"] == 3
    with pytest.raises(CheckpointError, match=r"state.json: batch: 3, but training data of unknown length "
                                              r"resumes from epoch ends only \(batch 0\)$"), \
            pytest.warns(nnfit.errors.NnfitWarning, match="training data"):  # the forced data change
        nnfit.fit(_model(), _loader(), epochs=2, resume=tmp_path / "r", force_resume=True, **common)


def test_the_progress_bar_counts_steps_without_a_total(monkeypatch, capsys) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # a terminal, so the bar is drawn
    nnfit.fit(_model(), _loader(), epochs=1, **{**KW, "quiet": False})
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "7/?" in err  # batches done, of an unknown total
