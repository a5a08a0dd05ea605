"""Helpers several test files share: the CLI in-process and a model that turns NaN on cue."""

from __future__ import annotations

from torch import nn

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
