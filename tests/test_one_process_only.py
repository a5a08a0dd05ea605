"""What runs in one process, in memory and in fp32 only says so in one line: the sweep (its
stacked model has neither streams nor autocast), and sweep and lr-find under torchrun."""

from __future__ import annotations

import pytest

from helpers import one_error


@pytest.mark.parametrize("flag, said", [("--precision=bf16", "drop precision bf16"),
                                        ("--stream", "drop stream")])
def test_a_sweep_refuses_streams_and_mixed_precision(capsys, flag, said) -> None:
    line = one_error(capsys, "sweep", "--seeds", "0-1", flag, "--quiet")
    assert line == f"nnfit: error: nnfit sweep trains in memory and in fp32: {said} (nnfit train takes it)"


def test_the_api_sweep_refuses_them_too() -> None:
    import numpy as np

    import nnfit
    from nnfit.errors import ConfigError

    x, y = np.zeros((20, 2), np.float32), np.arange(20) % 2
    with pytest.raises(ConfigError, match="drop precision bf16"):
        nnfit.sweep("mlp", x, y, out="never", seeds="0-1", precision="bf16", quiet=True)


@pytest.mark.parametrize("command", ["sweep", "lr-find"])
def test_sweep_and_lr_find_refuse_torchrun(capsys, monkeypatch, command) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    line = one_error(capsys, command, "--quiet")
    assert line == (f"nnfit: error: nnfit {command} runs in one process: start it without torchrun "
                    "(nnfit train takes torchrun --nproc-per-node N)")


def test_a_target_beyond_float32_is_refused_before_training(tmp_path, capsys) -> None:
    """A regression target whose spread float32 cannot hold would write a model that cannot be
    loaded again (found by the fuzz test: a label of -1e39 among zeros)."""
    data = tmp_path / "d.csv"
    data.write_text("f0,label\n0,-1e39\n" + "0,0\n" * 6 + "0,1\n")
    line = one_error(capsys, "train", data, "--target", "label", "--epochs", "1", "--quiet",
                     "--out", tmp_path / "run")
    assert "beyond what float32 holds" in line and not (tmp_path / "run").exists()
