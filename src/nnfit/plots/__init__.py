"""The plots every run directory holds: ``RUN/plots/``, drawn once after training from the
saved history and the validation outputs (the loop never plots).

Files, in the order a report shows them (:data:`PLOT_ORDER`)::

    loss.png           training and validation loss per epoch, the learning rate on a second axis
    metric.png         the monitored metric per epoch, the best epoch marked
    confusion.png      classification: counts and normalised by true class
    roc.png, pr.png    classification: ROC and precision-recall (one-vs-rest for multiclass)
    calibration.png    classification: observed frequency against predicted probability
    pred_vs_true.png   regression: predicted against true, per target
    residuals.png      regression: residuals against the prediction, and their distribution
    worst.png          image data: the validation images with the largest losses

and ``worst.csv`` for every task whose loss can be taken per row: the validation rows with
the largest losses (their rows in the data the user gave, true value, prediction, loss).

Only what applies is drawn: without validation data only the history's plots; a custom
model's outputs get no task plots. matplotlib (Agg, no pyplot) is imported only when a plot is
drawn. A plot that fails is skipped with a warning: the run's model is already written.

Example:
    >>> PLOT_ORDER[:2]
    ('loss.png', 'metric.png')
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .outputs import ValidationOutputs

PLOTS_DIR = "plots"
PLOT_ORDER = ("loss.png", "metric.png", "confusion.png", "roc.png", "pr.png", "calibration.png",
              "pred_vs_true.png", "residuals.png", "worst.png")
WORST_CSV = "worst.csv"
# What nnfit writes in RUN/plots/ (nnfit.io.layout removes only these with the run).
FILES = re.compile("|".join(re.escape(n) for n in (*PLOT_ORDER, WORST_CSV)))


def write_plots(run_dir: str | Path, records: list[dict[str, Any]], monitor: str,
                outputs: ValidationOutputs | None = None, say: Any = None) -> list[str]:
    """Draw the plots that apply into ``RUN/plots/``; returns the names written, in
    :data:`PLOT_ORDER` (then ``worst.csv``).

    A file of an earlier drawing that does not apply now is removed, so the folder always
    shows this run as it ended.

    Args:
        run_dir: the run directory.
        records: the history, one dict per epoch (``History.records``).
        monitor: the monitored metric (``train_loss`` is drawn when it was never logged).
        outputs: the validation outputs (:func:`nnfit.plots.outputs.collect`), or None.
        say: called with a one-line note for the user (what was not drawn and why), or None.
    """
    from ..errors import warn

    folder = Path(run_dir) / PLOTS_DIR
    folder.mkdir(exist_ok=True)
    if not any(monitor in r for r in records):
        monitor = "train_loss"
    written = []
    with _heap_frozen():
        for name, draw in _drawings(records, monitor, outputs, _target_name(run_dir),
                                    _loss_label(run_dir, records)):
            try:
                draw(folder / name)
                written.append(name)
            except Exception as e:  # a bug in one plot must not lose the others or fail a finished run
                warn(f"{PLOTS_DIR}/{name} was not drawn: {type(e).__name__}: {e}")
    for stale in folder.iterdir():
        if FILES.fullmatch(stale.name) and stale.name not in written:
            stale.unlink()
    if say is not None and outputs is None:
        say("plots: no validation data, so only loss.png and metric.png are drawn")
    return [n for n in (*PLOT_ORDER, WORST_CSV) if n in written]


@contextmanager
def _heap_frozen() -> Iterator[None]:
    """The objects alive now (torch's, the data's: some 400k after a fit) left out of the
    garbage collector's full passes while the figures are drawn: matplotlib makes enough
    objects to start one or two, each walking that whole heap (0.2 s of a wine run's 0.6 s
    of plotting). They are handed back after; a caller's own frozen objects are left alone.
    """
    import gc

    if gc.get_freeze_count():  # someone froze the heap already: theirs to undo
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def remove_plots(run_dir: str | Path, say: Any = None) -> list[str]:
    """Remove the plots an earlier fit drew into ``RUN/plots/`` (a fit without plots: they
    would show an older state than history.csv), and the folder when nothing else is left in
    it; a user's own files stay. Returns the names removed.

    Args:
        run_dir: the run directory.
        say: called with a one-line note when something was removed, or None.
    """
    folder = Path(run_dir) / PLOTS_DIR
    if not folder.is_dir():
        return []
    removed = sorted(p.name for p in folder.iterdir() if FILES.fullmatch(p.name) and p.is_file())
    for name in removed:
        (folder / name).unlink()
    if not any(folder.iterdir()):
        folder.rmdir()
    if removed and say is not None:
        say(f"plots: removed the {len(removed)} earlier files of {PLOTS_DIR}/ (this fit draws none: "
            "they would show an older state than history.csv)")
    return removed


def _run_settings(run_dir: str | Path) -> dict[str, Any]:
    """The run's config.json as a dict; empty when it cannot be read (the plots then use
    their plain labels)."""
    from ..errors import CheckpointError
    from ..files import read_json

    try:
        cfg = read_json(Path(run_dir) / "config.json")
    except (CheckpointError, OSError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _target_name(run_dir: str | Path) -> str | None:
    """The run's one target column (config.json's ``target``), for the regression plots' titles;
    None when it has none, several, or the file does not say (the plots then say "target")."""
    target = _run_settings(run_dir).get("target")
    return target if isinstance(target, str) and target else None


def _loss_label(run_dir: str | Path, records: list[dict[str, Any]]) -> str:
    """The loss axis' label: a regression trained on standardised targets (scale_target, the
    default) has its losses in those units, not the target's (its metrics are in the target's)."""
    regression = any("val_r2" in r or "val_mse" in r for r in records)
    if regression and _run_settings(run_dir).get("scale_target", True) is True:
        return "loss (standardised target)"
    return "loss"


def _drawings(records: list[dict[str, Any]], monitor: str, v: ValidationOutputs | None,
              target: str | None = None, loss_label: str = "loss") -> list[tuple[str, Any]]:
    """``(file name, draw(path))`` for every plot that applies, in :data:`PLOT_ORDER`."""
    from . import classification as cls
    from . import examples, history, regression
    from .outputs import worst_order

    out: list[tuple[str, Any]] = [("loss.png", lambda p: history.draw_loss(records, p, loss_label)),
                                  ("metric.png", lambda p: history.draw_metric(records, monitor, p))]
    if v is None or len(v) == 0:
        return out
    answers = _task_answers(v)
    if answers is not None and answers[0] == "classification":
        _, true, proba, classes = answers
        out += [("confusion.png", lambda p: cls.draw_confusion(true, proba.argmax(axis=1), classes, p)),
                ("roc.png", lambda p: cls.draw_roc(true, proba, classes, p)),
                ("pr.png", lambda p: cls.draw_pr(true, proba, classes, p)),
                ("calibration.png", lambda p: cls.draw_calibration(true, proba, p))]
    elif answers is not None:
        _, true, pred, _ = answers
        out += [("pred_vs_true.png", lambda p: regression.draw_pred_vs_true(true, pred, p, target)),
                ("residuals.png", lambda p: regression.draw_residuals(true, pred, p, target))]
    found = examples.worst_losses(v)
    if found is not None:
        if v.pixels is not None:
            out.append(("worst.png", lambda p: examples.draw_worst_images(
                v, worst_order(found[1], examples.WORST_IMAGES).tolist(), p)))
        out.append((WORST_CSV, lambda p: examples.write_worst_csv(v, p)))
    return out


def _task_answers(v: ValidationOutputs) -> tuple[str, Any, Any, Any] | None:
    """``("classification", true indices, probabilities (n, C), classes)`` or
    ``("regression", true (n, k), predicted (n, k), None)`` in the target's units, as NumPy;
    None for a custom model (no task plots)."""
    import numpy as np
    import torch

    from ..tasks import ClassificationTask, RegressionTask

    task = v.task
    if not isinstance(v.outputs, torch.Tensor):
        return None
    if isinstance(task, ClassificationTask):
        proba = task.proba(v.outputs.float()).double().numpy()
        return "classification", v.target.long().numpy(), proba, list(task.labels.classes)
    if isinstance(task, RegressionTask):
        from .outputs import user_target

        pred, true = (t.numpy() for t in task.metric_inputs(v.outputs, v.target))
        true = user_target(v, true[:, :pred.shape[1]])  # a forecast's target holds baselines
        return "regression", true.astype(np.float64), pred, None
    return None


def plot_run(run_dir: str | Path, trainer: Any, model: Any, task: Any, val: Any,
             keys: dict[str, Any] | None = None) -> list[str]:
    """The plots of a finished fit: its validation outputs computed once (one ordered pass,
    after training), then :func:`write_plots`; returns the names written.

    Args:
        run_dir: the run directory.
        trainer: the trainer that trained ``model`` (its history, config and device).
        model: the final model.
        task: the fitted task.
        val: the validation source, or None.
        keys: the validation rows' names in the user's data (``Prepared.val_keys``).
    """
    from ..errors import warn
    from .outputs import collect

    outputs = None
    try:
        outputs = None if val is None else collect(trainer, model, task, val, keys)
    except Exception as e:  # outputs of a shape no plot knows: the history's plots still come
        warn(f"{PLOTS_DIR}: the validation outputs were not read ({type(e).__name__}: {e}); "
             "only loss.png and metric.png are drawn")
    say = None if trainer.config.quiet else _say
    return write_plots(run_dir, trainer.state.history.records, trainer.config.monitor, outputs, say)


def _say(text: str) -> None:
    """A note on standard error, beside the progress display."""
    import sys

    print(text, file=sys.stderr, flush=True)
