"""Helpers several test files share: the CLI in-process, a model that turns NaN on cue, a
SIGTERM at a given step, and the check that analytic state shapes are a built model's."""

from __future__ import annotations

import os
import signal
import sys

from torch import nn

import nnfit
from nnfit.cli import main


def cli(capsys, *argv) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (status, stdout, stderr)."""
    capsys.readouterr()
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def one_error(capsys, *argv) -> str:
    """Run the CLI, assert exit status 2 and exactly one stderr line; return that line."""
    status, _, err = cli(capsys, *argv)
    lines = err.splitlines()
    assert status == 2 and len(lines) == 1, (status, err)
    assert lines[0].startswith("nnfit: error: ") and "Traceback" not in err
    return lines[0]


class NanAt(nn.Module):
    """A linear model whose output (and so loss) turns NaN at its n-th training call."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.fc, self.n, self.calls = nn.Linear(4, 2), n, 0

    def forward(self, x):
        self.calls += self.training
        out = self.fc(x)
        return out * float("nan") if self.training and self.calls == self.n else out


class TermAt(nnfit.Callback):
    """Sends this process SIGTERM after a given optimizer step: a graceful stop mid-epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, batch) -> None:
        if trainer.state.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def assert_state_shapes_match(spec: dict) -> None:
    """``state_shapes(spec)`` lists exactly the tensors (shape, dtype, parameter or buffer) of
    ``build_model(spec).state_dict()``, in order."""
    from nnfit.models import build_model, state_shapes

    model = build_model(spec)
    state, analytic = model.state_dict(), state_shapes(spec)
    params = {n for n, _ in model.named_parameters()}
    assert list(state) == list(analytic)
    for k, t in state.items():
        s = analytic[k]
        assert (tuple(t.shape), t.dtype, k in params) == (s.shape, s.dtype, s.parameter), k


HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


def count_host_reads(monkeypatch, run, *, by_name: bool = False) -> dict[str, int]:
    """Run ``run()`` counting tensor-to-Python reads (host syncs on a GPU), keyed by the
    calling file's path (its name only with ``by_name``)."""
    import torch

    calls: dict[str, int] = {}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            caller = sys._getframe(1).f_code.co_filename
            caller = caller.rsplit("/", 1)[-1] if by_name else caller
            calls[caller] = calls.get(caller, 0) + 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    try:
        run()
    finally:
        monkeypatch.undo()
    return calls
