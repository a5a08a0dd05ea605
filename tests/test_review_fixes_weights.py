"""Review finding 10: ``load_weights`` tells the format from the content whatever the name,
and ``save_weights`` to a directory or an impossible place fails in one line naming the path.

CPU only, tiny models.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

import nnfit
from nnfit.errors import CheckpointError


def _pair() -> tuple[nn.Module, nn.Module]:
    return nn.Linear(3, 2), nn.Linear(3, 2)


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["w.safetensors", "W.SAFETENSORS", "w", "w.bin"])
@pytest.mark.parametrize("zipped", [True, False])
def test_a_torch_save_state_dict_loads_whatever_its_name(tmp_path, name, zipped) -> None:
    net, other = _pair()
    torch.save(net.state_dict(), tmp_path / name, _use_new_zipfile_serialization=zipped)
    nnfit.load_weights(other, tmp_path / name)
    assert _same(net, other)


@pytest.mark.parametrize("name", ["w.pt", "w.pth", "w.safetensors", "w.zip"])
def test_safetensors_bytes_load_whatever_their_name(tmp_path, name) -> None:
    net, other = _pair()
    nnfit.save_weights(net, tmp_path / name)
    nnfit.load_weights(other, tmp_path / name)
    assert _same(net, other)


def test_a_torch_save_under_a_safetensors_name_holds_only_tensors(tmp_path) -> None:
    net, other = _pair()
    torch.save({"weight": net.weight.data, "note": {"not": "a tensor"}}, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"w\.safetensors: expected a state_dict of tensors"):
        nnfit.load_weights(other, tmp_path / "w.safetensors")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("force_env", [False, True])
def test_a_pickle_under_a_safetensors_name_is_refused_and_runs_nothing(tmp_path, monkeypatch,
                                                                       force_env) -> None:
    if force_env:  # the variable that turns torch.load's protection off when not passed explicitly
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "PWNED"
    torch.save({"weight": _Payload(marker)}, tmp_path / "z.safetensors")
    (tmp_path / "p.safetensors").write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    for name in ("z.safetensors", "p.safetensors"):
        with pytest.raises(CheckpointError, match=rf"{name}: refused to load"):
            nnfit.load_weights(nn.Linear(3, 2), tmp_path / name)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["w.pt", "w.pth", "w.safetensors", "w"])
@pytest.mark.parametrize("content", [b"", b"hello, not weights\n", b"\x00" * 64],
                         ids=["empty", "text", "zeros"])
def test_anything_else_says_what_it_is_not(tmp_path, name, content) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        nnfit.load_weights(nn.Linear(3, 2), tmp_path / name)
    assert str(e.value) == f"{tmp_path / name}: neither a safetensors file nor a torch.save state_dict"


@pytest.mark.parametrize("target", ["somedir", "somedir/", "."])
def test_save_weights_to_a_directory_says_so_in_one_line(tmp_path, monkeypatch, target) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "somedir").mkdir()
    with pytest.raises(CheckpointError, match=rf"^{target.rstrip('/')}/?: is a directory") as e:
        nnfit.save_weights(nn.Linear(3, 2), target)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["somedir"]  # no temporary left


def test_save_weights_under_a_file_names_the_requested_path(tmp_path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(OSError) as e:
        nnfit.save_weights(nn.Linear(3, 2), tmp_path / "f" / "w.safetensors")
    assert str(tmp_path / "f" / "w.safetensors") in str(e.value) and ".tmp" not in str(e.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_save_weights_in_an_unwritable_directory_names_the_requested_path(tmp_path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OSError) as e:
            nnfit.save_weights(nn.Linear(3, 2), ro / "w.safetensors")
    finally:
        ro.chmod(0o755)
    assert str(ro / "w.safetensors") in str(e.value) and ".tmp" not in str(e.value)
