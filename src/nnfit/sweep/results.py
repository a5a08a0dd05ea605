"""What a sweep leaves besides its members' run directories: ``results.csv`` (a row per
member, then mean and std rows per grid point), ``best/`` and ``ensemble/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, warn
from .jobs import FAILED, MEMBERS, Built, SweepResult


def finish(result: SweepResult, built: list[Built], quiet: bool) -> None:
    """results.csv, the best member (``best/``) and the ensemble (``ensemble/``)."""
    from ..metrics import metric_direction

    out = result.out
    rows, best, best_value = [], None, None
    for b in built:
        learner = result.members.get(b.job.name)
        hist = list(learner.history) if learner is not None else []
        monitor = b.job.config.monitor if (b.val is not None or not b.job.config.monitor.startswith("val_")) \
            else "train_loss"
        sign = 1.0 if metric_direction(monitor) == "min" else -1.0
        values = [(r.get(monitor), r.get("epoch")) for r in hist
                  if isinstance(r.get(monitor), (int, float)) and r.get(monitor) == r.get(monitor)]
        top = min(values, key=lambda v: sign * v[0]) if values else (None, None)
        rank = _comparable(b, monitor, out, top[0])
        row: dict[str, Any] = {"member": b.job.name, **{k: _cell(v) for k, v in b.job.settings.items()},
                               "epochs": len(hist), "best_epoch": top[1], f"best_{monitor}": top[0]}
        metrics = read_metrics(out / MEMBERS / b.job.name / "metrics.json")
        row.update({f"val_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        test = read_metrics(out / MEMBERS / b.job.name / "test_metrics.json")
        row.update({f"test_{k}": v for k, v in test.items() if numeric(v)})
        failed = read_metrics(out / MEMBERS / b.job.name / FAILED).get("reason")
        row["stop_reason"] = (f"failed: {failed}" if failed else
                              getattr(learner, "stop_reason", "") if learner is not None else "not trained")
        rows.append(row)
        if rank is not None and (best_value is None or sign * (rank - best_value) < 0):
            best, best_value = b.job.name, rank
    for row in rows:
        row["best"] = row["member"] == best
    rows += _summaries(rows, built)
    _write_csv(out / "results.csv", rows)
    result.rows, result.best = rows, best
    if best is not None and result.members.get(best) is not None and _finite(result.members[best]):
        result.members[best].save(out / "best")
    trained = [(n, lr) for n, lr in result.members.items() if lr is not None and _finite(lr)]
    if len(trained) < 2 and len(built) > 1:
        warn(f"no ensemble written: {len(trained)} of {len(built)} members have a finite model")
    if len(trained) > 1:
        try:
            from .ensemble import Ensemble, write_ensemble

            write_ensemble(out / "ensemble", [lr for _, lr in trained], [n for n, _ in trained])
            result.ensemble = Ensemble([lr for _, lr in trained], [n for n, _ in trained])
        except ConfigError as e:
            warn(f"no ensemble written: {e}")


def _comparable(b: Built, monitor: str, out: Path, value: Any) -> float | None:
    """The value members are ranked by: the monitored one, but for a regression's loss, which
    each member takes on its own standardised target, its error in the target's units (the
    final model's validation mse, or mae for an l1 loss), so members compare."""
    from ..tasks.regression import RegressionTask

    task = b.learner.task
    if monitor != "val_loss" or not isinstance(task, RegressionTask):
        return value
    metrics = read_metrics(out / MEMBERS / b.job.name / "metrics.json")
    found = metrics.get("mae" if task.loss_name == "l1" else "mse")
    return found if numeric(found) else None


def _finite(learner: Any) -> bool:
    from ..guards import first_non_finite

    return first_non_finite(learner.model.named_parameters()) is None


def _cell(v: Any) -> Any:
    return "x".join(str(x) for x in v) if isinstance(v, (list, tuple)) else v


def read_metrics(path: Path) -> dict[str, Any]:
    from ..files import read_json

    try:
        data = read_json(path) if path.is_file() else {}
    except Exception:  # a member without metrics (no validation data) has none to show
        return {}
    return data if isinstance(data, dict) else {}


def _summaries(rows: list[dict[str, Any]], built: list[Built]) -> list[dict[str, Any]]:
    """Mean and std rows of the numeric columns over the members that differ only by seed,
    fold or bootstrap sample (one pair per grid point, labelled as member names label it and
    carrying the point's settings)."""
    import statistics

    repeats = ("seed", "fold", "bootstrap")
    settings = {k for b in built for k in b.job.settings}
    by_point: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for row, b in zip(rows, built, strict=True):
        point = {k: v for k, v in b.job.settings.items() if k not in repeats}
        # the name without its seed/fold/bootstrap parts ("weight_decay-0.01" splits and rejoins)
        label = "_".join(p for p in b.job.name.split("_")
                         if not p.startswith(("seed-", "fold-", "bootstrap-")))
        by_point.setdefault(label or "all", (point, []))[1].append(row)
    out = []
    for label, (point, members) in by_point.items():
        if len(members) < 2:
            continue
        columns = [k for k in members[0] if k not in ("member", "stop_reason", "best", *settings)
                   and all(numeric(m.get(k)) for m in members)]
        shown = {k: _cell(v) for k, v in point.items()}
        out.append({"member": f"mean[{label}]", **shown,
                    **{k: statistics.fmean(m[k] for m in members) for k in columns}})
        out.append({"member": f"std[{label}]", **shown,
                    **{k: statistics.stdev(m[k] for m in members) for k in columns}})
    return out


def numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    from ..checkpoint import atomic_write_text

    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    atomic_write_text(path, buf.getvalue())
