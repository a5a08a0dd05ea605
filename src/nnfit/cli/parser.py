"""The ``nnfit`` argument parser: every subcommand and flag (argparse only: importing this
stays cheap, so ``--help`` and a usage error answer before torch loads)."""

from __future__ import annotations

import argparse
import os

from ..errors import printable

EPILOG = "Docs and examples: README.md. Errors exit with status 2."


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # under torchrun every rank parses the same arguments: rank 0 says what is wrong
        line = f"nnfit: error: {printable(message)} (see {self.prog} --help)\n"
        self.exit(2, line if torchrun_env()[0] == 0 else None)


def torchrun_env() -> tuple[int, int]:
    """``(rank, world size)`` as torchrun's environment gives them (``(0, 1)`` without it, or
    for values that are not small whole numbers), read without importing torch so that
    ``--help`` and usage errors stay fast; :func:`nnfit.runtime.launched_rank` checks them."""
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    w = int(world) if world.isdigit() and len(world) < 7 else 1
    return (int(rank) if rank.isdigit() and len(rank) < 7 and w > 1 else 0), w


def _add_train_flags(p: argparse.ArgumentParser, *, run: bool = True) -> None:
    """What to train on and how; with ``run``, also the flags of the run directory it writes
    (``nnfit lr-find`` trains nothing it keeps, so it takes only the first kind)."""
    S = argparse.SUPPRESS  # absent flags stay absent, so a config file's values survive
    add = p.add_argument
    add("items", nargs="*", metavar="DATA | key=value",
        help="a CSV/TSV/Parquet file, or a folder of class folders of images, to train on (omit "
             "for a bundled dataset) and any key=value config overrides (e.g. eval_batch_size=2048)")
    add("--target", default=S, help="target column of DATA")
    add("--dataset", default=S, help="bundled dataset when no DATA is given (default breast_cancer)")
    add("--task", default=S, choices=["auto", "binary", "multiclass", "regression"])
    add("--model", default=S,
        help="mlp or resmlp for tables (default mlp), cnn for images, lstm or gru for sequences")
    add("--hidden", default=S, help="hidden sizes, comma separated (default 64,64)")
    add("--activation", default=S, help="relu, gelu, tanh, sigmoid, leaky_relu, silu")
    add("--dropout", default=S, type=float, help="dropout probability (default 0)")
    add("--batchnorm", default=S, action="store_true",
        help="batch normalisation in hidden layers (on by default for cnn)")
    add("--no-batchnorm", dest="batchnorm", default=S, action="store_false", help="no batch normalisation")
    add("--channels", default=S, metavar="C,...",
        help="cnn channels per stage (default by image size: 32,64 up to 16 px, 32,64,128 up to 32 px, "
             "32,64,128,256 above)")
    add("--residual", default=S, action="store_true", help="cnn stages as residual blocks")
    add("--bidirectional", default=S, action="store_true", help="lstm/gru: read both directions")
    add("--readout", default=S, choices=["last", "mean"],
        help="lstm/gru output: the last state (default) or the mean over time")
    add("--optimizer", default=S, help="sgd, adam, adamw or rmsprop (default adam)")
    add("--lr", default=S, type=float, help="learning rate (default 1e-3; 3e-3 for cnn)")
    add("--momentum", default=S, type=float, help="momentum for sgd/rmsprop (default 0)")
    add("--weight-decay", dest="weight_decay", default=S, type=float, help="weight decay (default 0)")
    add("--scheduler", default=S,
        help="none, step, multistep, exponential, cosine, onecycle or plateau (default none)")
    add("--epochs", default=S, type=int, help="maximum epochs (default 100)")
    add("--batch-size", dest="batch_size", default=S, type=int, help="batch size (default 32)")
    add("--val-split", dest="val_split", default=S, type=float,
        help="fraction held out for validation (default 0.2)")
    add("--test-split", dest="test_split", default=S, type=float,
        help="fraction held out as a test set (default 0.2 for bundled datasets, else 0)")
    add("--patience", default=S, type=int, help="early-stopping patience in epochs, 0 = off (default 10)")
    add("--seed", default=S, type=int, help="random seed (default 0)")
    add("--impute", default=S, action="store_true",
        help="fill missing feature values (the default): numeric gaps with training medians "
             "plus a was-missing feature, categorical gaps with their own index")
    add("--no-impute", dest="impute", default=S, action="store_false",
        help="refuse missing feature values instead of filling them")
    add("--categorical", default=S, metavar="COL,...",
        help="columns to treat as categorical (e.g. integer-coded categories)")
    add("--numeric", default=S, metavar="COL,...", help="columns to treat as numeric")
    add("--drop", default=S, metavar="COL,...", help="columns never to use")
    add("--features", default=S, metavar="COL,...", help="use only these columns")
    add("--numeric-transform", dest="numeric_transform", default=S, choices=["standard", "quantile"],
        help="numeric columns: standardise (default), or quantile-map to normal scores first")
    _add_layout_flags(p)
    add("--device", default=S, help="auto, cpu, cuda or cuda:N (default auto)")
    add("--precision", default=S, choices=["fp32", "tf32", "bf16", "fp16"],
        help="fp32 (default, reproducible), tf32 (CUDA matmuls), bf16 (autocast) or fp16 "
             "(autocast with loss scaling; CUDA only)")
    add("--dist-backend", dest="dist_backend", default=S, choices=["auto", "gloo", "nccl"],
        help="under torchrun: the process group's backend (default auto: nccl on CUDA, gloo on CPU)")
    add("--stream", default=S, action="store_true",
        help="read a Parquet/CSV file by row groups instead of loading it (automatic for large files)")
    add("--no-stream", dest="stream", default=S, action="store_false",
        help="load the data file whole, however large")
    add("--shuffle-buffer", dest="shuffle_buffer", default=S, type=int, metavar="ROWS",
        help="streaming: rows of the shuffle buffer (default 65536)")
    add("--config", default=None, help="YAML or TOML config file; flags override it")
    add("--quiet", default=S, action="store_true", help="no progress display")
    if run:
        _add_run_flags(p)


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the run directory ``nnfit train`` writes, and what goes into it."""
    add = p.add_argument
    add("--out", default=None, help="run directory (default runs/NAME-N)")
    add("--resume", default=None, metavar="RUN_DIR",
        help="continue a run from its newest valid checkpoint (same settings and data)")
    add("--force-resume", dest="force_resume", action="store_true",
        help="with --resume: continue even though settings or data changed (the changes are listed)")
    add("--overwrite", action="store_true",
        help="start over in an existing --out: the earlier run's files are removed, yours stay")
    _add_output_flags(p)


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    """What a run directory holds besides the model: plots, the report, metric logs."""
    S = argparse.SUPPRESS  # absent flags stay absent, so a config file's values survive
    add = p.add_argument
    add("--no-plots", dest="plots", default=S, action="store_false",
        help="draw no plots into the run directory (drawn by default after training)")
    add("--report", default=S, action="store_true", help="write RUN/report.html at the end")
    add("--log", default=S, metavar="SINK,...",
        help="also log metrics to jsonl, tensorboard and/or mlflow (comma separated)")
    add("--log-every", dest="log_every", default=S, type=int, metavar="N",
        help="log the training loss every N steps too (default 50; 0: per epoch only)")


def _add_layout_flags(p: argparse.ArgumentParser) -> None:
    """The flags of data beyond rows of features: images, sequences, time series."""
    S = argparse.SUPPRESS  # absent flags stay absent, so a config file's values survive
    add = p.add_argument
    add("--image-size", dest="image_size", default=S, metavar="H,W",
        help="resize every image to H,W (default: all images must have one size)")
    add("--augment", default=S, choices=["auto", "none", "crop", "flip", "crop,flip"],
        metavar="auto|none|crop|flip|crop,flip",
        help="training-only image augmentation (default auto: random crops and horizontal flips for "
             "colour images, none for greyscale ones)")
    add("--image-cache", dest="image_cache", default=S, action="store_true",
        help="cache decoded images next to the image folder, keyed by content")
    add("--sequence-id", dest="sequence_id", default=S, metavar="COL",
        help="long-format sequences: the column naming each row's sequence (one label per sequence)")
    add("--time", default=S, metavar="COL", help="the column ordering rows in time")
    add("--window", default=S, type=int, metavar="W",
        help="forecast each row from the W rows before it (with --time)")
    add("--horizon", default=S, type=int, metavar="H", help="forecast H rows ahead (default 1)")
    add("--season", default=S, type=int, metavar="P",
        help="seasonal-naive baseline period in rows (default: from the time column's frequency)")


def build_parser() -> argparse.ArgumentParser:
    """The ``nnfit`` argument parser with all subcommands."""
    from .. import __version__

    parser = _Parser(prog="nnfit", description="Train, evaluate, save and inspect PyTorch models.",
                     epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"nnfit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a model on a table, an image folder, sequences, a time "
                       "series or a bundled dataset",
                       description="Train a model and write a run directory.", epilog=EPILOG)
    _add_train_flags(p)
    _add_sweep(sub)

    p = sub.add_parser("evaluate", help="metrics of a trained run on labelled data",
                       description="Print the metrics of RUN on DATA: a table holding the target column (the "
                                   "run's sequence id and time columns too, for sequences and forecasts), "
                                   "or a folder of class folders for an image model.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--target", default=None, help="target column (default: the one trained on)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")

    p = sub.add_parser("predict", help="write predictions for DATA",
                       description="Predict every row of DATA, in order; for a model trained on "
                                   "images every image of a folder or of the image files given (a path "
                                   "column first), on sequences one row per sequence id, on a time series "
                                   "every row with enough rows before it (the time column first).")
    p.add_argument("run", metavar="RUN")
    p.add_argument("data", metavar="DATA", nargs="+", help="a table, or image files or a folder")
    p.add_argument("-o", "--output", default=None, help="output CSV (default, or -: standard output)")
    p.add_argument("--proba", action="store_true", help="add one probability column per class")
    p.add_argument("--overwrite", action="store_true", help="allow -o to name DATA itself")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")

    p = sub.add_parser("inspect", help="layer table and parameter counts of a run's model",
                       description="Print the model summary of RUN.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    sub.add_parser("ls", help="list models, optimizers, schedulers, losses and bundled datasets",
                   description="List everything a config or flag can name.")

    _add_run_tools(sub)
    return parser


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    """``nnfit sweep``: the train flags, what the members are, and the sweep's directory."""
    p = sub.add_parser("sweep", help="train many models at once: over seeds, a grid of settings, "
                       "k folds or bootstrap samples",
                       description="Train one model per member (a seed, a grid point, a fold or a "
                                   "bootstrap sample; their combinations), each equal to its own "
                                   "nnfit train run, and write OUT/results.csv, OUT/members/NAME/ "
                                   "and OUT/ensemble/.", epilog=EPILOG)
    _add_train_flags(p, run=False)  # the sweep's own directory flags below: --force-resume is none
    add = p.add_argument
    add("--seeds", default=None, metavar="SEEDS",
        help="one member per seed: a range 0-7 (inclusive), a list 0,3,5, or both: 0-3,9")
    add("--grid", default=None, nargs="+", metavar="KEY=V1,V2",
        help="one member per grid point: every KEY=V1,V2 up to the next flag is one axis, the "
             "grid their product; list-valued keys separate points with ';' "
             "('hidden=64,64;128', quoted for the shell). "
             "Keys: seed, lr, weight_decay, dropout, and (trained as separate groups) the "
             "architecture, batch_size, the optimizer and the schedule")
    add("--kfold", default=None, type=int, metavar="K",
        help="one member per fold, each validating on its own fold (stratified for classification)")
    add("--bootstrap", default=None, type=int, metavar="K",
        help="one member per bootstrap sample, each validating on the rows its sample left out")
    add("--out", default=None, help="sweep directory (default sweeps/NAME-N)")
    add("--resume", default=None, metavar="OUT",
        help="continue a sweep from its checkpoints: its settings come from OUT/sweep.json "
             "(only the device and how it runs may be given again; epochs and patience are the sweep's)")
    add("--overwrite", action="store_true",
        help="start over in an existing --out: the earlier sweep's files are removed, yours stay")
    _add_output_flags(p)


def _add_run_tools(sub: argparse._SubParsersAction) -> None:
    """The subcommands that look at runs or help start one: report, lr-find, runs compare."""
    p = sub.add_parser("report", help="write RUN/report.html: one self-contained page of the run",
                       description="Write RUN/report.html: settings, data, model, plots, metrics, "
                                   "timings and environment of RUN, in one file that opens anywhere.")
    p.add_argument("run", metavar="RUN")

    p = sub.add_parser("lr-find", help="suggest a learning rate with a range test (changes nothing)",
                       description="Train a copy of the model for a bounded number of steps while the "
                                   "learning rate grows exponentially; print the suggested rate.",
                       epilog=EPILOG)
    _add_train_flags(p, run=False)
    p.add_argument("--out", default=None, metavar="DIR", help="write lr_find.png and lr_find.csv here")
    p.add_argument("--overwrite", action="store_true", help="replace lr_find.png and lr_find.csv in --out")
    p.add_argument("--steps", default=200, type=int,
                   help="optimizer steps at most, 5 to 10000 (default 200; at least 20 a decade of rate)")
    p.add_argument("--start-lr", dest="start_lr", default=1e-7, type=float,
                   help="the first learning rate, 1e-12 to 1e3 (default 1e-7)")
    p.add_argument("--end-lr", dest="end_lr", default=10.0, type=float,
                   help="the last learning rate, 1e-12 to 1e3 (default 10)")

    p = sub.add_parser("runs", help="work with several runs: compare",
                       description="Commands over several run directories.")
    runs = p.add_subparsers(dest="runs_command", required=True, parser_class=_Parser)
    q = runs.add_parser("compare", help="settings that differ, final metrics and validation curves",
                        description="Print one table of the settings that differ between RUNs and "
                                    "their final metrics; draw their validation curves in one plot.")
    q.add_argument("runs", metavar="RUN", nargs="+")
    q.add_argument("--out", default=None, metavar="FILE.png", help="write the overlay plot here")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
