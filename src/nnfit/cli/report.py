"""``nnfit report RUN``: write ``RUN/report.html``, the one-file page of a finished run."""

from __future__ import annotations

import argparse

from ..errors import printable
from ..report import write_report


def cmd_report(args: argparse.Namespace) -> int:
    """Write the report of ``args.run`` and print where it is.

    Raises:
        CheckpointError: not a run, a run of a newer nnfit, or a missing or garbled file.
        RunDirInUse: a training holds the run's lock.
    """
    out = write_report(args.run)
    print(f"report written to {printable(out)}")
    return 0
