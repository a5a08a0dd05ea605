"""Reading a run directory for its report: every file checked (regular files inside the run
only, validated JSON, bounded PNGs), a bad one refused in one line naming it."""

from __future__ import annotations

import csv
import io
import math
import os
import stat
import struct
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CheckpointError
from ..files import read_json
from ..io.checkpoints import CHECKPOINTS, committed
from ..io.validate import CONFIG, LEARNER, validate

RESUMES_FILE = "resumes.json"  # written by RunWriter at each resume (nnfit.run)
_IMAGE_BUDGET = 700_000  # raw PNG bytes for all plots together (base64 adds a third)
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A plot bigger than these is not one nnfit drew (a 640x400 plot is ~40 KB): refused before it
# is read or decoded, so a stray huge file or a decompression bomb costs nothing.
_MAX_PLOT_BYTES = 20_000_000
_MAX_PLOT_PIXELS = 40_000_000
_WORST_ROWS_SHOWN = 10


def read_run(d: Path) -> dict[str, Any]:
    """What the report shows, read from the run directory ``d``.

    Only regular files inside the run are read: a FIFO, a device, a folder or a link leading
    out of the run where a file belongs is refused (it could hang the report or put a file
    from elsewhere into a page that gets shared). ``model.json`` and ``config.json`` are checked
    against the schemas loading checks them with (:mod:`nnfit.io.validate`).

    Raises:
        CheckpointError: a required file is missing, garbled or not a regular file of the run,
            or the run is of a newer nnfit (the message names the file and the field).
    """
    root = d.resolve()
    model = _json_obj(root, d / "model.json", "the run has not finished: resume it with "
                      f"nnfit train --resume {d}")
    _check_version(model.get("nnfit_version"), d / "model.json")
    validate(model, LEARNER, str(d / "model.json"))
    config = _json_obj(root, d / "config.json")
    validate(config, CONFIG, str(d / "config.json"))
    resumes = _read_resumes(root, d / RESUMES_FILE)
    plots, stale = _read_plots(root, d / "plots", _last_resume_time(resumes))
    return {
        "dir": d, "model": model, "config": config, "history": _read_history(root, d / "history.csv"),
        "validation": _json_obj(root, d / "metrics.json", optional=True),
        "test": _json_obj(root, d / "test_metrics.json", optional=True),
        "state": _latest_state(root, d), "checkpoints": committed(d),
        "damaged": sorted(p.name for p in (d / CHECKPOINTS).glob("damaged-*")),
        "resumes": resumes, "plots": plots, "stale_plots": stale,
        "worst": None if "worst.csv" in stale else _read_worst(root, d / "plots" / "worst.csv"),
    }


def _run_file(root: Path, path: Path, kind: str = "file") -> bool:
    """Whether the run (resolved: ``root``) holds ``path`` as a regular file (``kind``
    "folder": a folder); False when nothing is there.

    Raises:
        CheckpointError: something else is there: a FIFO, a device, a broken link, a link
            leading out of the run, or a folder where a file belongs (or the reverse).
    """
    if not os.path.lexists(path):
        return False
    try:
        real = path.resolve(strict=True)
        mode = real.stat().st_mode
    except (OSError, RuntimeError):
        raise CheckpointError(f"{path}: a link to nothing, not a {kind} of the run") from None
    if not real.is_relative_to(root):
        raise CheckpointError(f"{path}: links outside the run (to {real}); the report reads "
                              "only the run's own files")
    if not (stat.S_ISDIR(mode) if kind == "folder" else stat.S_ISREG(mode)):
        raise CheckpointError(f"{path}: not a regular {kind}")
    return True


def _json_obj(root: Path, path: Path, missing: str = "",
              optional: bool = False) -> dict[str, Any] | None:
    """The JSON object of the run's file ``path``; None for a missing ``optional`` one."""
    if not _run_file(root, path):
        if optional:
            return None
        raise CheckpointError(f"{path}: not found" + (f" ({missing})" if missing else ""))
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not an nnfit file (a JSON object expected)")
    return obj


def _check_version(version: Any, source: Path) -> None:
    """Refuse a run written by a newer major/minor nnfit: its files may mean other things."""
    try:
        run = tuple(int(p) for p in str(version).split(".")[:2])
        mine = tuple(int(p) for p in __version__.split(".")[:2])
    except ValueError:
        raise CheckpointError(f"{source}: nnfit_version {version!r} is not a version") from None
    if len(run) != 2:
        raise CheckpointError(f"{source}: nnfit_version {version!r} is not a version")
    if run > mine:
        raise CheckpointError(f"{source}: written by nnfit {version}, newer than this nnfit "
                              f"{__version__}; upgrade nnfit to report on it")


def _read_history(root: Path, path: Path) -> list[dict[str, Any]]:
    """history.csv as one dict per epoch, numbers as floats (empty cells None); every row's
    epoch a whole number from 1 (NaN or infinite values of the metrics are shown as they are).
    """
    if not _run_file(root, path):
        raise CheckpointError(f"{path}: not found")
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
        history = [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in rows]
    except (ValueError, UnicodeDecodeError, csv.Error, TypeError):
        raise CheckpointError(f"{path}: not a history file (one row of numbers per epoch)") from None
    for i, r in enumerate(history):
        epoch = r.get("epoch")
        if epoch is None or not math.isfinite(epoch) or epoch != int(epoch) or epoch < 1:
            raise CheckpointError(f"{path}: line {i + 2}: epoch {rows[i].get('epoch') or ''!r} is not "
                                  "an epoch number (a whole number from 1)")
    return history


def _latest_state(root: Path, d: Path) -> dict[str, Any] | None:
    """``state.json`` of the newest checkpoint that parses (best epoch, stop reason, samples per
    epoch); None when none does (the report then works from history.csv)."""
    for name in reversed(committed(d)):
        try:
            path = d / CHECKPOINTS / name / "state.json"
            if not _run_file(root, path):
                continue
            state = read_json(path)
        except CheckpointError:  # damaged: a resume would skip it too
            continue
        if isinstance(state, dict):
            return state
    return None


def _read_resumes(root: Path, path: Path) -> list[dict[str, Any]]:
    if not _run_file(root, path):
        return []
    body = read_json(path)
    if not isinstance(body, list) or not all(isinstance(r, dict) for r in body):
        raise CheckpointError(f"{path}: not a list of resumes")
    return body


def _last_resume_time(resumes: list[dict[str, Any]]) -> float | None:
    """When the run was last resumed (seconds since the epoch), from ``resumes.json``'s
    ``at``; None when never, or when the record does not say."""
    try:
        return datetime.strptime(str(resumes[-1].get("at")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except (IndexError, ValueError):
        return None


def _read_plots(root: Path, folder: Path,
                resumed_at: float | None) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The run's PNG plots in :data:`_PLOT_ORDER`, as ``(name, bytes)``, downscaled to fit,
    and the names of nnfit's plot files left out as stale.

    A file nnfit draws (``nnfit.plots.FILES``) older than the run's last resume shows the run
    before it: a resume that drew no plots (``--no-plots``, or stopped before its end) left
    it. The time recorded in ``resumes.json`` travels with the run, unlike modification
    times, so a copied run is judged the same (a copy only makes its files newer).

    Raises:
        CheckpointError: a plot is not a regular file of the run, not a PNG, or too large.
    """
    if not _run_file(root, folder, "folder"):
        return [], []
    from ..plots import FILES, PLOT_ORDER  # names only: matplotlib is not imported

    stems = [k.removesuffix(".png") for k in PLOT_ORDER]

    def rank(p: Path) -> tuple[int, str]:  # a name of the order first, then the rest by name
        hits = [i for i, k in enumerate(stems) if p.stem == k or p.stem.startswith(k + "_")]
        return (hits[0] if hits else len(stems), p.name)

    plots, stale = [], []
    for p in sorted(folder.iterdir(), key=rank):
        if FILES.fullmatch(p.name) and resumed_at is not None and p.lstat().st_mtime < resumed_at:
            stale.append(p.name)
        elif p.suffix == ".png":
            plots.append((p.name, _read_png(root, p)))
    budget = _IMAGE_BUDGET // max(1, len(plots))
    return [(name, data if len(data) <= budget else _shrink(data, budget, folder / name))
            for name, data in plots], stale


def _read_png(root: Path, path: Path) -> bytes:
    """The bytes of the plot ``path``, checked to be a PNG of a plot's size (its header says
    it, before anything is decoded)."""
    _run_file(root, path)
    if path.stat().st_size > _MAX_PLOT_BYTES:
        raise CheckpointError(f"{path}: {path.stat().st_size:,} bytes, too large for a plot "
                              f"(at most {_MAX_PLOT_BYTES:,})")
    data = path.read_bytes()
    if not data.startswith(_PNG_MAGIC) or data[12:16] != b"IHDR":
        raise CheckpointError(f"{path}: not a PNG image")
    width, height = _png_size(data)
    if width * height > _MAX_PLOT_PIXELS:
        raise CheckpointError(f"{path}: {width}x{height} pixels, too large for a plot "
                              f"(at most {_MAX_PLOT_PIXELS:,} pixels)")
    return data


def _png_size(data: bytes) -> tuple[int, int]:
    """A PNG's width and height, from its IHDR chunk (which every PNG opens with)."""
    return struct.unpack(">II", data[16:24])


def _read_worst(root: Path, path: Path) -> list[list[str]] | None:
    """The header and the first :data:`_WORST_ROWS_SHOWN` rows of ``plots/worst.csv``; None
    when the run has none."""
    if not _run_file(root, path):
        return None
    if path.stat().st_size > _MAX_PLOT_BYTES:
        raise CheckpointError(f"{path}: {path.stat().st_size:,} bytes, too large for worst.csv")
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    except (UnicodeDecodeError, csv.Error):
        raise CheckpointError(f"{path}: not a CSV file of the worst examples") from None
    return rows[: _WORST_ROWS_SHOWN + 1] if rows else None


def _shrink(data: bytes, budget: int, source: Path) -> bytes:
    """A smaller PNG of ``data``: halved until it fits ``budget`` bytes (PIL comes with
    matplotlib; only an oversized plot pays for importing it)."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        while len(data) > budget and min(image.size) > 64:
            image = image.resize((image.width // 2, image.height // 2), Image.LANCZOS)
            buf = io.BytesIO()
            image.save(buf, format="PNG", optimize=True)
            data = buf.getvalue()
    except Exception:  # PIL's decoders raise many types for a bad file (SyntaxError, bombs...)
        raise CheckpointError(f"{source}: not a readable PNG image") from None
    return data


# ------------------------------------------------------------------------------ rendering
