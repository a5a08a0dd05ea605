"""The report's HTML: one self-contained page from what :func:`read_run` read; every string
from the run escaped."""

from __future__ import annotations

import base64
import json
import math
import platform
import sys
import time
from html import escape
from typing import Any

from .. import __version__
from ..config import effective_settings
from .read import _png_size

_MAX_CLASSES_SHOWN = 50
_WIDE_PX = 700  # a plot wider than this (two panels, worst.png) gets a row of its own

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1100px;padding:16px 24px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:17px;border-bottom:1px solid #d0d7de;
padding-bottom:3px;margin-top:26px}.sub{color:#57606a;margin:0 0 12px}
table{border-collapse:collapse;margin:6px 0 10px}td,th{border:1px solid #d0d7de;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f6f8fa}td.n{text-align:right;
font-variant-numeric:tabular-nums}.plots{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;flex:1 1 480px;max-width:100%}figure.wide{flex-basis:100%}
figure img{max-width:100%;height:auto;border:1px solid #d0d7de}
figcaption{color:#57606a;font-size:12px}.note{color:#57606a}
.kv{columns:3 300px}.kv div{break-inside:avoid;font-family:ui-monospace,monospace;font-size:12px}
"""


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
        _section("Plots", _plots_html([p for p in run["plots"] if p[0] != "worst.png"],
                                      run["stale_plots"])),
        _section("Worst examples", _worst_html(run["worst"], dict(run["plots"]).get("worst.png"))),
        _section("Timings", _timings_html(run["history"], run["state"])),
        _section("Resumes and checkpoints", _resumes_html(run)),
        _section("Data schema", _schema_html(model)),
        _section("Model", _model_html(model)),
        _section("Settings", _settings_html(effective_settings(cfg))),
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


def _plots_html(plots: list[tuple[str, bytes]], stale: list[str]) -> str:
    out = ""
    if stale:
        out += ('<p class="note" id="stale-plots">Not shown: ' + ", ".join(escape(n) for n in stale)
                + ", drawn before the run's last resume (see resumes.json), so they show an older "
                "state than history.csv (the resume ran with --no-plots, or did not finish).</p>")
    if not plots:
        return out + ('<p class="note">No plots in this run (trained with --no-plots, or before '
                      'plots existed).</p>' if not stale else "")
    return out + '<div class="plots">' + "".join(_figure(name, data) for name, data in plots) + "</div>"


def _figure(name: str, data: bytes) -> str:
    """One embedded plot at most its own size; a wide one (two panels) gets a row of its own,
    so its text is not shrunk to half a page."""
    width, height = _png_size(data)
    wide = ' class="wide"' if width > _WIDE_PX else ""
    return (f'<figure{wide}><img alt="{escape(name)}" width="{width}" height="{height}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'
            f"<figcaption>{escape(name)}</figcaption></figure>")


def _worst_html(rows: list[list[str]] | None, image: bytes | None) -> str:
    """The first rows of ``plots/worst.csv`` (the largest validation losses) and ``worst.png``."""
    if rows is None and image is None:
        return ('<p class="note">No worst examples (plots/worst.csv): the run had no validation '
                "data, no per-row loss, or no plots.</p>")
    out = ""
    if rows is not None:
        header, body = rows[0], rows[1:]
        out += (f"<p>The first {len(body)} rows of plots/worst.csv: the validation rows with "
                "the largest losses, largest first.</p>"
                + _table(header, [[_cell(c) for c in r] for r in body],
                         ["n" if _is_number(c) else "" for c in (body[0] if body else header)]))
    if image is not None:
        out += '<div class="plots">' + _figure("worst.png", image) + "</div>"
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _cell(text: str) -> str:
    """A cell of worst.csv: a float to 6 significant digits, anything else escaped and
    shortened."""
    if _is_number(text) and not text.lstrip("-").isdigit():  # a row number stays whole
        return escape(f"{float(text):.6g}")
    return escape(_short(text, 80))


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

    from ..models import build_model
    from ..summary import summarize

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
