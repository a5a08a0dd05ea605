"""The one-file HTML report of a run: ``RUN/report.html`` (``nnfit report RUN``, ``--report``).

Everything the run directory records, on one page that opens anywhere: settings, data schema,
model summary, plots, final and test metrics, the early-stopping story, resumes, timings and
the environment. The file is self-contained (images as base64 ``data:`` URIs, inline CSS, no
scripts, fonts or URLs), kept under :data:`MAX_BYTES` by downscaling large plots, and written
atomically while the run's lock is held. Every string from the run (column names, class
labels, paths) is HTML-escaped.

Example:
    >>> write_report("runs/wine-1")  # doctest: +SKIP
    PosixPath('runs/wine-1/report.html')
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError
from ..files import atomic_write_text
from ..io.layout import holds_run
from ..io.lock import hold_run_dir
from .read import read_run
from .render import render

REPORT_FILE = "report.html"
MAX_BYTES = 1_000_000  # a typical run's report stays under this: plots are downscaled to fit


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN/report.html`` for a finished run and return its path.

    Args:
        run_dir: the run directory (of ``nnfit train`` or ``fit(run_dir=...)``).

    Returns:
        the path of the report.

    Raises:
        CheckpointError: ``run_dir`` is not a run, a run of a newer nnfit, not finished, or one
            of its files is missing or garbled (the message names the file).
        RunDirInUse: another process is writing the run (a training holds its lock).
    """
    d = Path(run_dir)
    if not d.is_dir() or not holds_run(d):
        raise CheckpointError(f"{d}: not an nnfit run directory")
    with hold_run_dir(d, create=False):  # re-entrant: fit(report=True) holds it already
        run = read_run(d)
        page = render(run)
        out = d / REPORT_FILE
        atomic_write_text(out, page)
    return out

