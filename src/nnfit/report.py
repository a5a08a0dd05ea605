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

import base64
import csv
import io
import json
import math
import platform
import sys
import time
from html import escape
from pathlib import Path
from typing import Any

from . import __version__
from .errors import CheckpointError
from .files import atomic_write_text, read_json
from .io.checkpoints import CHECKPOINTS, committed
from .io.layout import holds_run
from .io.lock import hold_run_dir

REPORT_FILE = "report.html"
RESUMES_FILE = "resumes.json"  # written by RunWriter at each resume (nnfit.run)
MAX_BYTES = 1_000_000  # a typical run's report stays under this: plots are downscaled to fit
_IMAGE_BUDGET = 700_000  # raw PNG bytes for all plots together (base64 adds a third)
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The order the plots appear in, when nnfit.plots (its PLOT_ORDER) cannot say
_PLOT_ORDER = ("loss.png", "metric.png", "confusion.png", "roc.png", "pr.png", "calibration.png",
               "pred_vs_true.png", "residuals.png", "worst.png")
_MAX_CLASSES_SHOWN = 50

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1100px;padding:16px 24px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:17px;border-bottom:1px solid #d0d7de;
padding-bottom:3px;margin-top:26px}.sub{color:#57606a;margin:0 0 12px}
table{border-collapse:collapse;margin:6px 0 10px}td,th{border:1px solid #d0d7de;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f6f8fa}td.n{text-align:right;
font-variant-numeric:tabular-nums}.plots{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;flex:1 1 480px;max-width:100%}figure img{max-width:100%;height:auto;
border:1px solid #d0d7de}figcaption{color:#57606a;font-size:12px}.note{color:#57606a}
.kv{columns:3 300px}.kv div{break-inside:avoid;font-family:ui-monospace,monospace;font-size:12px}
"""


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


# ------------------------------------------------------------------------------- reading
def read_run(d: Path) -> dict[str, Any]:
    """What the report shows, read from the run directory ``d``.

    Raises:
        CheckpointError: a required file is missing or garbled, or the run is of a newer nnfit.
    """
    model = _json_obj(d / "model.json", "the run has not finished: resume it with "
                      f"nnfit train --resume {d}")
    _check_version(model.get("nnfit_version"), d / "model.json")
    config = _json_obj(d / "config.json")
    return {
        "dir": d, "model": model, "config": config, "history": _read_history(d / "history.csv"),
        "validation": _json_obj(d / "metrics.json") if (d / "metrics.json").exists() else None,
        "test": _json_obj(d / "test_metrics.json") if (d / "test_metrics.json").exists() else None,
        "state": _latest_state(d), "checkpoints": committed(d),
        "damaged": sorted(p.name for p in (d / CHECKPOINTS).glob("damaged-*")),
        "resumes": _read_resumes(d / RESUMES_FILE), "plots": _read_plots(d / "plots"),
    }


def _json_obj(path: Path, missing: str = "") -> dict[str, Any]:
    if not path.is_file():
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


def _read_history(path: Path) -> list[dict[str, Any]]:
    """history.csv as one dict per epoch, numbers as floats (empty cells None)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: not found")
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
        return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in rows]
    except (ValueError, UnicodeDecodeError, csv.Error, TypeError):
        raise CheckpointError(f"{path}: not a history file (one row of numbers per epoch)") from None


def _latest_state(d: Path) -> dict[str, Any] | None:
    """``state.json`` of the newest checkpoint that parses (best epoch, stop reason, samples per
    epoch); None when none does (the report then works from history.csv)."""
    for name in reversed(committed(d)):
        try:
            state = read_json(d / CHECKPOINTS / name / "state.json")
        except CheckpointError:  # damaged: a resume would skip it too
            continue
        if isinstance(state, dict):
            return state
    return None


def _read_resumes(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    body = read_json(path)
    if not isinstance(body, list) or not all(isinstance(r, dict) for r in body):
        raise CheckpointError(f"{path}: not a list of resumes")
    return body


def _read_plots(folder: Path) -> list[tuple[str, bytes]]:
    """The run's PNG plots in :data:`_PLOT_ORDER`, as ``(name, bytes)``, downscaled to fit."""
    if not folder.is_dir():
        return []
    try:
        from .plots import PLOT_ORDER as order  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        order = _PLOT_ORDER
    stems = [str(k).removesuffix(".png") for k in order]

    def rank(p: Path) -> tuple[int, str]:  # a name of the order first, then the rest by name
        hits = [i for i, k in enumerate(stems) if p.stem == k or p.stem.startswith(k + "_")]
        return (hits[0] if hits else len(order), p.name)

    plots = []
    for p in sorted(folder.glob("*.png"), key=rank):
        data = p.read_bytes()
        if not data.startswith(_PNG_MAGIC):
            raise CheckpointError(f"{p}: not a PNG image")
        plots.append((p.name, data))
    budget = _IMAGE_BUDGET // max(1, len(plots))
    return [(name, data if len(data) <= budget else _shrink(data, budget, folder / name))
            for name, data in plots]


def _shrink(data: bytes, budget: int, source: Path) -> bytes:
    """A smaller PNG of ``data``: halved until it fits ``budget`` bytes (PIL comes with
    matplotlib; only an oversized plot pays for importing it)."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError):
        raise CheckpointError(f"{source}: not a readable PNG image") from None
    while len(data) > budget and min(image.size) > 64:
        image = image.resize((image.width // 2, image.height // 2), Image.LANCZOS)
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=True)
        data = buf.getvalue()
    return data


# ------------------------------------------------------------------------------ rendering
def render(run: dict[str, Any]) -> str:
    """The report page of :func:`read_run`'s ``run``, as one HTML string."""
    d, model, cfg = run["dir"], run["model"], run["config"]
    task = model.get("task") or {}
    title = f"nnfit run {d.resolve().name}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">{escape(str(d.resolve()))} &middot; task {escape(str(task.get("name")))}'
        f' &middot; target {escape(str(model.get("target")))} &middot; written by nnfit '
        f'{escape(str(model.get("nnfit_version")))}</p>',
        _section("Final metrics", _metrics_html(run["validation"], run["test"], task.get("classes"))),
        _section("Early stopping", _stopping_html(run["history"], run["state"], cfg)),
        _section("Plots", _plots_html(run["plots"])),
        _section("Timings", _timings_html(run["history"], run["state"])),
        _section("Resumes and checkpoints", _resumes_html(run)),
        _section("Data schema", _schema_html(model)),
        _section("Model", _model_html(model)),
        _section("Settings", _settings_html(cfg)),
        _section("Environment", _environment_html(model, cfg)),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _section(title: str, body: str) -> str:
    slug = title.lower().replace(" ", "-")
    return f'<section id="{slug}"><h2>{escape(title)}</h2>\n{body}</section>'


def _num(v: Any) -> str:
    """A number as the report shows it: floats with 4 decimals, integers whole, missing as a
    dash."""
    if v is None or isinstance(v, bool):
        return "&ndash;" if v is None else escape(str(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return escape(str(v))
        return f"{v:.4f}" if abs(v) < 1e9 else f"{v:.4g}"
    return escape(str(v))


def _table(header: list[str], rows: list[list[str]], cls: list[str] | None = None) -> str:
    """An HTML table; ``header`` is escaped here, ``rows`` hold cells already rendered."""
    cls = cls or [""] * len(header)
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{f" class={c!r}" if c else ""}>{cell}</td>'
                                    for cell, c in zip(row, cls, strict=False)) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _metrics_html(val: dict[str, Any] | None, test: dict[str, Any] | None, classes: Any) -> str:
    splits = [(s, m) for s, m in (("validation", val), ("test", test)) if m is not None]
    if not splits:
        return '<p class="note">No validation or test metrics: the run had no held-out data.</p>'
    names = [k for k in dict.fromkeys(k for _, m in splits for k in m)
             if all(isinstance(m.get(k), (int, float, type(None))) for _, m in splits)]
    rows = [[escape(k)] + [f'<span data-split="{s}" data-metric="{escape(k)}">{_num(m.get(k))}</span>'
                           for s, m in splits] for k in names]
    out = _table(["metric", *[s for s, _ in splits]], rows, ["", *["n"] * len(splits)])
    for s, m in splits:
        cm = m.get("confusion_matrix")
        if isinstance(cm, list) and cm and all(isinstance(r, list) for r in cm) and len(cm) <= 30:
            names = ([str(c) for c in classes] if isinstance(classes, list) and len(classes) == len(cm)
                     else [str(i) for i in range(len(cm))])
            out += (f"<p>Confusion matrix ({s}; rows = true, columns = predicted)</p>"
                    + _table(["", *names], [[escape(names[i])] + [_num(v) for v in r]
                                            for i, r in enumerate(cm)]))
        elif m.get("confusion_matrix_file"):
            out += f'<p class="note">Confusion matrix ({s}): in {escape(str(m["confusion_matrix_file"]))}</p>'
    return out


def _best_from_history(history: list[dict[str, Any]], monitor: str) -> tuple[int | None, Any]:
    """The best epoch of ``monitor`` in the history (lowest loss, else highest value)."""
    seen = [(r.get("epoch"), r.get(monitor)) for r in history if r.get(monitor) is not None
            and not math.isnan(r[monitor])]
    if not seen:
        return None, None
    pick = min if "loss" in monitor else max
    epoch, value = pick(seen, key=lambda e: e[1])
    return (None if epoch is None else int(epoch)), value


def _stopping_html(history: list[dict[str, Any]], state: dict[str, Any] | None,
                   cfg: dict[str, Any]) -> str:
    monitor = str(cfg.get("monitor", "val_loss"))
    last = int(history[-1]["epoch"]) if history and history[-1].get("epoch") is not None else 0
    if state is not None and state.get("best_epoch") is not None:
        best_epoch, best = state.get("best_epoch"), state.get("best")
        reason = str(state.get("stop_reason") or "")
    else:
        best_epoch, best = _best_from_history(history, monitor)
        reason = ""
    epochs = cfg.get("epochs")
    if reason:
        story = reason
    elif isinstance(epochs, int) and last < epochs:
        story = f"stopped at epoch {last} of {epochs}"
    else:
        story = f"ran all {last} epochs: no early stop"
    rows = [["monitored", escape(monitor)],
            ["best epoch", f'<span id="best-epoch">{_num(best_epoch)}</span>'],
            [f"best {escape(monitor)}", _num(best)],
            ["stopped at epoch", f'<span id="stopped-at">{last}</span>'],
            ["epochs asked for", _num(epochs)], ["patience", _num(cfg.get("patience"))],
            ["min_delta", _num(cfg.get("min_delta"))],
            ["best weights restored", escape(str(cfg.get("restore_best")))]]
    return f"<p>{escape(story)}</p>" + _table(["", "value"], rows)


def _plots_html(plots: list[tuple[str, bytes]]) -> str:
    if not plots:
        return '<p class="note">No plots in this run (trained with --no-plots, or before plots existed).</p>'
    figs = [f'<figure><img alt="{escape(name)}" src="data:image/png;base64,'
            f'{base64.b64encode(data).decode("ascii")}"><figcaption>{escape(name)}</figcaption></figure>'
            for name, data in plots]
    return '<div class="plots">' + "".join(figs) + "</div>"


def _timings_html(history: list[dict[str, Any]], state: dict[str, Any] | None) -> str:
    times = [r["time"] for r in history if r.get("time") is not None]
    if not times:
        return '<p class="note">No epoch times recorded.</p>'
    ordered = sorted(times)
    median = ordered[len(ordered) // 2]
    rows = [["epochs", str(len(times))], ["total epoch time (s)", f"{sum(times):.3f}"],
            ["median epoch time (s)", f"{median:.4f}"], ["slowest epoch (s)", f"{ordered[-1]:.4f}"]]
    compile_times = [r["compile_time"] for r in history if r.get("compile_time") is not None]
    if compile_times:
        rows.append(["compile time (s)", f"{compile_times[0]:.3f}"])
    samples = state.get("loss_n") if state else None
    if isinstance(samples, int) and samples > 0 and median > 0:
        rows += [["training samples per epoch", str(samples)],
                 ["samples/s (median epoch, validation included)", f"{samples / median:,.0f}"]]
    return _table(["", "value"], rows, ["", "n"])


def _resumes_html(run: dict[str, Any]) -> str:
    resumes, out = run["resumes"], ""
    if resumes:
        rows = [[escape(str(r.get("at", ""))), _num(r.get("epoch")), _num(r.get("step")),
                 "inside an epoch" if r.get("batch") else "at an epoch end",
                 escape(str(r.get("nnfit_version", "")))] for r in resumes]
        out += (f"<p>Resumed {len(resumes)} time{'s' if len(resumes) > 1 else ''}.</p>"
                + _table(["resumed at", "from epoch", "from step", "checkpoint taken", "nnfit"], rows))
    else:
        out += "<p>Never resumed: trained in one go.</p>"
    if run["damaged"]:
        out += ("<p>Damaged checkpoints set aside by a resume: "
                + ", ".join(escape(n) for n in run["damaged"]) + "</p>")
    best = (run["state"] or {}).get("best_checkpoint")
    rows = [[escape(n), "best" if n == best else ""] for n in run["checkpoints"]]
    out += (_table(["checkpoint kept", ""], rows) if rows
            else '<p class="note">No checkpoints kept.</p>')
    return out


def _schema_html(model: dict[str, Any]) -> str:
    task, pre = model.get("task") or {}, model.get("preprocess") or {}
    out = f"<p>Task {escape(str(task.get('name')))}, target {escape(str(model.get('target')))}</p>"
    classes = task.get("classes")
    if isinstance(classes, list):
        shown = ", ".join(escape(str(c)) for c in classes[:_MAX_CLASSES_SHOWN])
        hidden = len(classes) - _MAX_CLASSES_SHOWN
        more = f" &hellip; and {hidden} more" if hidden > 0 else ""
        out += f"<p>{len(classes)} classes: {shown}{more}</p>"
    table = pre.get("table") if isinstance(pre, dict) else None
    if isinstance(table, dict) and isinstance(table.get("columns"), list):
        rows = [[escape(str(c.get("name"))), escape(str(c.get("role"))), _column_details(c)]
                for c in table["columns"] if isinstance(c, dict)]
        out += _table(["column", "role", "details"], rows)
        dropped = table.get("dropped") or {}
        if isinstance(dropped, dict) and dropped:
            out += _table(["dropped column", "why"],
                          [[escape(str(k)), escape(str(v))] for k, v in dropped.items()])
    layout = pre.get("layout") if isinstance(pre, dict) else None
    if isinstance(layout, dict):
        out += _table(["layout", "value"], [[escape(str(k)), escape(_short(v))] for k, v in layout.items()])
    for spec in (pre.get("inputs") or []) if isinstance(pre, dict) else []:
        if isinstance(spec, dict):
            feats = spec.get("features") or []
            out += (f"<p>Input {escape(str(spec.get('name')))}: shape {escape(_short(spec.get('shape')))}, "
                    f"{escape(str(spec.get('dtype')))}, {len(feats)} features</p>")
    return out


def _column_details(c: dict[str, Any]) -> str:
    if c.get("role") == "categorical":
        levels = c.get("levels") or []
        return escape(f"{len(levels)} levels: {_short(levels)}")
    keep = {k: v for k, v in c.items() if k not in ("name", "role", "quantiles")}
    return escape(", ".join(f"{k} {_short(v)}" for k, v in keep.items()))


def _short(v: Any, limit: int = 120) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _model_html(model: dict[str, Any]) -> str:
    spec = model.get("spec")
    if not isinstance(spec, dict):
        return '<p class="note">A user-defined module: only Python can rebuild it.</p>'
    import torch

    from .models import build_model
    from .summary import summarize

    with torch.device("meta"):  # the layers and counts, never the memory of the weights
        s = summarize(build_model(spec))
    rows = [[escape(r.name), escape(r.type), _num(r.params), _num(r.trainable)] for r in s.layers]
    return (f"<p>{escape(str(spec.get('name')))}: {escape(s.totals_line())}</p>"
            + _table(["layer", "type", "params", "trainable"], rows, ["", "", "n", "n"]))


def _settings_html(cfg: dict[str, Any]) -> str:
    items = "".join(f"<div>{escape(str(k))} = {escape(_short(v))}</div>" for k, v in cfg.items())
    return f'<div class="kv">{items}</div>'


def _environment_html(model: dict[str, Any], cfg: dict[str, Any]) -> str:
    import torch

    if torch.cuda.is_available():
        here = f"cuda ({torch.cuda.get_device_name(0)})"
    else:
        here = "cpu"
    rows = [["run written by nnfit", escape(str(model.get("nnfit_version")))],
            ["device setting of the run", escape(str(cfg.get("device")))],
            ["report made by nnfit", escape(__version__)], ["torch", escape(torch.__version__)],
            ["Python", escape(sys.version.split()[0])], ["platform", escape(platform.platform())],
            ["device available here", escape(here)],
            ["report made at", escape(time.strftime("%Y-%m-%d %H:%M:%S %Z"))]]
    return _table(["", "value"], rows)
