"""The run directory's writer and checkpoint naming after the simplification review."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nnfit
from nnfit.checkpoint import load_checkpoint, tensors_to_bytes
from nnfit.errors import CheckpointError
from nnfit.files import parse_json, read_json, write_bundle
from nnfit.io.checkpoints import NAME, checkpoint_name, committed
from nnfit.io.layout import FOLDER_ENTRIES
from nnfit.learner import Learner


def test_run_writer_builds_the_learner_meta_once_per_fit(tmp_path: Path, monkeypatch) -> None:
    # The task, preprocessing and spec do not change during a fit: rebuilding them (up to 1e7
    # class labels) at every checkpoint was wasted work.
    calls = []
    meta = Learner.meta
    monkeypatch.setattr(Learner, "meta", lambda self: calls.append(1) or meta(self))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)).astype("float32"), rng.integers(0, 2, 40)
    nnfit.fit("mlp", x, y, epochs=4, checkpoint_every=1, quiet=True, device="cpu", batch_size=16,
              run_dir=tmp_path / "r")
    assert len(committed(tmp_path / "r")) >= 2
    assert len(calls) == 2  # one for every checkpoint, one for the final model.json


def test_one_checkpoint_name_pattern_everywhere() -> None:
    for name in (checkpoint_name(7, None), checkpoint_name(150, 3), checkpoint_name(10**10, 10**6)):
        assert NAME.fullmatch(name) and FOLDER_ENTRIES["checkpoints/"].fullmatch(name)
        assert FOLDER_ENTRIES["checkpoints/"].fullmatch(f"damaged-{name}")
    for bad in ("step-1", "step-000000001-epoch-1", "damaged-", "step-000000001-epoch-"):
        assert not NAME.fullmatch(bad) and not FOLDER_ENTRIES["checkpoints/"].fullmatch(bad)


@pytest.mark.parametrize("data", [b"[" * 100_000, b"\xff", b"{"])
def test_read_json_refuses_any_bad_json_in_one_line(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "x.json").write_bytes(data)
    with pytest.raises(CheckpointError, match=r"x\.json: not valid JSON$"):
        read_json(tmp_path / "x.json")  # a RecursionError escaped before
    with pytest.raises(CheckpointError, match="here: not valid JSON"):
        parse_json(data, "here")


def test_load_checkpoint_refuses_a_state_json_that_is_no_object(tmp_path: Path) -> None:
    files = {"state.safetensors": tensors_to_bytes({"a": torch.zeros(1)}), "state.json": b"[1]"}
    write_bundle(tmp_path / "ck", "checkpoint", files)
    with pytest.raises(CheckpointError, match=r"state\.json: not an nnfit checkpoint"):
        load_checkpoint(tmp_path / "ck")
