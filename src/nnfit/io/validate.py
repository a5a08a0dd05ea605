"""The schema of every JSON document nnfit reads back, one table per kind of state.

* :data:`LEARNER` -- ``model.json`` (and the ``learner`` part of a checkpoint): format, spec,
  task, target and preprocessing, checked against each other (the spec's input and output
  widths against the preprocessing and the task).
* :data:`CHECKPOINT` -- a checkpoint's ``state.json``: loop progress, history, early
  stopping, optimizer and scheduler state (their structure; :mod:`nnfit.io.weights` checks
  them against the live optimizer and schedule), config, data fingerprint, best checkpoint.
* :data:`ENSEMBLE` -- an ensemble's ``model.json`` (:mod:`nnfit.sweep.ensemble`): every
  member's is a :data:`LEARNER` with its name, and the members must agree on the task.
* :data:`CONFIG` -- a run's ``config.json`` (and the ``config`` of a checkpoint): built from
  the config dataclasses, so a new setting is covered as soon as it exists.

The model spec's variants live in :mod:`.validate_spec`, the data layouts' in
:mod:`.validate_layouts`, the shared field types in :mod:`.validate_fields`.
A later feature that saves more state adds its fields here; ``tests/test_tamper_fuzz.py``
rewrites every field these tables list. Everything is checked before anything is used, and
every problem is a :class:`~nnfit.errors.CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import functools
import json
import math
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ..errors import CheckpointError, ConfigError
from ..files import FORMAT_VERSION
from .checkpoints import NAME
from .schema import (
    Bool,
    Field,
    Float,
    Int,
    Json,
    Lazy,
    Maybe,
    Obj,
    Pick,
    SchemaError,
    Seq,
    Str,
    Tagged,
    check,
    short,
)
from .validate_fields import (  # noqa: F401  (re-exported: the field types other modules use)
    CHECKPOINT_NAME,
    COUNT,
    FLOAT32_MAX,
    FLOAT32_TINY,
    LABEL,
    MAX_WINDOW,
    SHA256,
    SIZE,
    TEXT_NAME,
)
from .validate_layouts import (
    LAYOUT,
    forecast_inputs_rule,
    forecast_rule,
    image_inputs_rule,
    per_window,
    sequence_inputs_rule,
    sequence_spec,
)
from .validate_spec import SPEC, embedded_inputs, image_or_sequence_inputs, spec_width  # noqa: F401


# ------------------------------------------------------------------------------------ task
def _scaling(d: dict) -> tuple[str, str] | None:
    mean, std = d["mean"], d["std"]
    if (mean is None) != (std is None):
        return "std" if std is None else "mean", "mean and std go together"
    for key, v in (("mean", mean), ("std", std)):
        if v is not None and len(v) != d["n_targets"]:
            return key, f"{len(v)} values for {d['n_targets']} targets"
    return None


def _distinct_text(d: dict) -> tuple[str, str] | None:
    """Classes that print alike (``"1"`` and ``1``): predictions written as text (a CSV) could
    not tell them apart."""
    seen: dict[str, int] = {}
    for i, c in enumerate(d["classes"]):
        if str(c) in seen:
            return f"classes[{i}]", f"{short(c)} reads the same as classes[{seen[str(c)]}] in text"
        seen[str(c)] = i
    return None


TASK = Tagged("name", {
    "binary": Obj({"name": Str(("binary",)), "classes": Seq(LABEL, 2, 2, unique=True),
                   "loss": Str(("auto", "bce", "cross_entropy"))}, rules=(_distinct_text,)),
    # two classes are legal when asked for as multiclass (two outputs and softmax)
    "multiclass": Obj({"name": Str(("multiclass",)), "classes": Seq(LABEL, 2, 10**7, unique=True),
                       "loss": Str(("auto", "cross_entropy"))}, rules=(_distinct_text,)),
    "regression": Obj({"name": Str(("regression",)), "n_targets": Int(1, 10**6),
                       "loss": Str(("auto", "mse", "l1", "huber")),
                       "mean": Maybe(Seq(Float(-FLOAT32_MAX, FLOAT32_MAX))),
                       "std": Maybe(Seq(Float(FLOAT32_TINY, FLOAT32_MAX)))}, rules=(_scaling,)),
    # a user's loss function (nnfit.tasks.CustomTask), saved by name only: no code is saved
    "custom": Obj({"name": Str(("custom",)), "loss": Str(min_len=1, max_len=1000),
                   "target_shape": Maybe(Seq(Int(0, 2**31), 0, 8))}),
    # nnfit.tasks.ForecastTask: one series, and the seasonal-naive period (None: unknown)
    "forecast": Obj({"name": Str(("forecast",)), "n_targets": Int(1, 1),
                     "loss": Str(("auto", "mse", "l1", "huber")),
                     "mean": Maybe(Seq(Float(-FLOAT32_MAX, FLOAT32_MAX))),
                     "std": Maybe(Seq(Float(FLOAT32_TINY, FLOAT32_MAX))),
                     "season": Maybe(Int(1, MAX_WINDOW))}, rules=(_scaling,)),
})


def task_width(task: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The output widths a model may have for ``task``; None for any (a custom loss)."""
    if task["name"] == "custom":
        return None
    if task["name"] in ("regression", "forecast"):
        return (task["n_targets"],)
    n = len(task["classes"])
    return (1, 2) if n == 2 else (n,)


# --------------------------------------------------------------------------- preprocessing
def _input_rule(d: dict) -> tuple[str, str] | None:
    shape = d["shape"]
    if math.prod(shape) > 2**31:
        return "shape", f"{math.prod(shape)} values per sample"
    flat = len(shape) == 1
    if d["features"] is not None and (not flat or len(d["features"]) != shape[0]):
        return "features", f"{len(d['features'])} feature names for per-sample shape {shape}"
    if (d["mean"] is None) != (d["std"] is None):
        return "std" if d["std"] is None else "mean", "mean and std go together"
    for key in ("mean", "std", "fill"):
        v = d.get(key)
        if v is not None and (not flat or d["dtype"] != "float32" or len(v) != shape[0]):
            return key, f"{len(v)} values for a {d['dtype']} input of per-sample shape {shape}"
    return None


def _inputs_rule(d: dict) -> tuple[str, str] | None:
    names = [s["name"] for s in d["inputs"]]
    # the names nnfit.data.inputs.raw_inputs gives: any for keyword inputs, fixed otherwise
    fixed = {"single": ["x"], "positional": [f"input{i}" for i in range(len(names))]}.get(d["style"])
    if fixed is not None and names != fixed:
        return "inputs", f"inputs {names} of style {d['style']!r} must be named {fixed}"
    if len(set(names)) != len(names):
        return "inputs", "two inputs have the same name"
    return None


INPUT = Obj({"name": Str(min_len=1, max_len=1000),
             # 0 features / a width of 0: a table whose every feature is categorical
             "features": Maybe(Seq(Str(max_len=10_000), 0, 10**7, unique=True)),
             "shape": Seq(Int(0, 2**31), 0, 8), "dtype": Str(("float32", "int64")),
             "mean": Maybe(Seq(Float())), "std": Maybe(Seq(Float(0.0, open_lo=True))),
             "named": Bool(), "fill": Maybe(Seq(Float()))},
            optional=frozenset({"fill"}), rules=(_input_rule,))
def _sorted(key: str) -> Any:
    def rule(d: dict) -> tuple[str, str] | None:
        v = d.get(key)
        if v is not None and any(b < a for a, b in zip(v, v[1:], strict=False)):
            return key, "values must not decrease"
        return None
    return rule


COLUMN = Tagged("role", {
    "numeric": Obj({"name": TEXT_NAME, "role": Str(("numeric",)), "fill": Seq(Float(), 1, 1),
                    "indicator": Bool(), "quantiles": Seq(Float(), 1, 1000), "coerce": Bool()},
                   optional=frozenset({"quantiles", "coerce"}), rules=(_sorted("quantiles"),)),
    "categorical": Obj({"name": TEXT_NAME, "role": Str(("categorical",)),
                        "levels": Seq(Str(max_len=10_000), 0, 10**5, unique=True), "missing": Bool(),
                        "unknown": Float(0.0, 1.0)}),
    "datetime": Obj({"name": TEXT_NAME, "role": Str(("datetime",)), "fill": Seq(Float(), 0, 6),
                     "indicator": Bool(), "coerce": Bool(),
                     "parts": Seq(Str(("year", "month", "dayofweek", "dayofyear", "days", "hour")),
                                  0, 6, unique=True)}, optional=frozenset({"coerce"}),
                    rules=(lambda d: None if len(d["fill"]) == len(d["parts"])
                           else ("fill", f"{len(d['fill'])} values for {len(d['parts'])} parts"),)),
})


def _table_rule(d: dict) -> tuple[str, str] | None:
    names = [c["name"] for c in d["columns"]]
    if len(set(names)) != len(names):
        return "columns", "two columns have the same name"
    both = sorted(set(names) & set(d["dropped"]))
    if both:
        return "dropped", f"column {short(both[0])} is both used and dropped"
    return None


TABLE = Obj({"columns": Seq(COLUMN, 1, 10**6), "dropped": Obj(rest=Str(max_len=10_000)),
             "numeric_transform": Str(("standard", "quantile")), "impute": Bool()}, rules=(_table_rule,))


def _table_inputs_rule(d: dict) -> tuple[str, str] | None:
    """A table's roles make exactly the inputs the preprocessing lists: ``x`` with the
    schema's feature names, and ``codes`` (named style) when there are categorical columns."""
    from ..data.schema import TableSchema

    if d.get("table") is None:
        return None
    table = TableSchema.from_dict(d["table"])
    cats = [c.name for c in table.categorical]
    want = [("x", table.feature_names, "float32")] + ([("codes", cats, "int64")] if cats else [])
    got = [(s["name"], s["features"], s["dtype"]) for s in d["inputs"]]
    if got != want or d["style"] != ("named" if cats else "single"):
        return "inputs", "the inputs do not match the table's column roles"
    return None


PREPROCESS = Obj({"style": Str(("single", "positional", "named")), "inputs": Seq(INPUT, 1, 1000),
                  "table": TABLE, "layout": LAYOUT}, optional=frozenset({"table", "layout"}),
                 rules=(_inputs_rule, _table_inputs_rule, image_inputs_rule, forecast_inputs_rule,
                        sequence_inputs_rule))


# ------------------------------------------------------------------ model.json / learner
def _learner_rule(d: dict) -> tuple[str, str] | None:
    """The spec is buildable and fits the task's outputs and the preprocessing's inputs; a
    table's target goes with its preprocessing (fit saves both or neither)."""
    from ..models import state_shapes

    spec, pre = d["spec"], d["preprocess"]
    if pre is None and d["target"] is not None:
        return "", (f"preprocess is null but the model was trained on the table column "
                    f"{d['target']!r}: the file is damaged")
    if spec is None:
        return None
    try:
        state_shapes(spec)
    except ConfigError as e:
        return "spec", str(e)
    out = spec_width(spec, "out_features")
    if task_width(d["task"]) is not None and out not in task_width(d["task"]):
        return "spec", (f"out_features {out} does not fit a {d['task']['name']} task with "
                        f"{' or '.join(map(str, task_width(d['task'])))} outputs")
    if pre is not None and spec["name"] in ("mlp", "resmlp") and "embeddings" in spec:
        problem = embedded_inputs(spec, pre)
        return None if problem is None else ("spec", problem)
    if pre is not None and (pre.get("layout") or {}).get("kind") == "sequence":
        problem = sequence_spec(spec, pre)
        return None if problem is None else ("spec", problem)
    if pre is not None and spec["name"] in ("cnn", "lstm", "gru"):
        problem = image_or_sequence_inputs(spec, per_window(pre))
        return None if problem is None else ("spec", problem)
    width = spec_width(spec, "in_features")
    if pre is not None and spec["name"] == "embeddings" and pre["inputs"][0]["dtype"] != "int64":
        return "spec", f"an embeddings model takes int64 codes, not {pre['inputs'][0]['dtype']}"
    if pre is not None and width is not None:  # one (rows, features) input: model(x)
        shapes = [s["shape"] for s in pre["inputs"]]
        if pre["style"] == "named" or shapes != [[width]]:
            return "spec", f"in_features {width} does not fit inputs of per-sample shapes {shapes}"
    if pre is not None and spec["name"] == "multi_input":
        names = [s["name"] for s in pre["inputs"]]
        if len(names) != len(spec["branches"]) or (pre["style"] == "named"
                                                   and sorted(names) != sorted(spec["branches"])):
            return "spec", f"branches {sorted(spec['branches'])} do not fit inputs {names}"
    return None


LEARNER = Obj({"format": Int(1, FORMAT_VERSION), "nnfit_version": Str(max_len=100), "spec": Maybe(SPEC),
               "task": TASK, "target": Maybe(Str(max_len=10_000)), "preprocess": Maybe(PREPROCESS)},
              rules=(_learner_rule, forecast_rule))


# ------------------------------------------------------------- an ensemble's model.json
MAX_MEMBERS = 4096  # members of one ensemble; a K=256 sweep on a GPU is the largest measured


def _input_kind(meta: Mapping[str, Any]) -> str:
    """What a member reads: a DataLoader's batches, arrays, a table, or a layout's data."""
    pre = meta["preprocess"]
    if pre is None:
        return "a Dataset/DataLoader"
    if pre.get("layout") is not None:
        return f"{pre['layout']['kind']} data"
    return "a table" if pre.get("table") is not None else "arrays"


def members_disagree(members: list[Mapping[str, Any]]) -> tuple[str, str] | None:
    """Why ``members`` (each a member's ``model.json`` with its ``name``) cannot be averaged,
    as ``(path, message)`` naming the first member that differs from the first, or None.

    Members may differ in everything they fitted (statistics, vocabularies, target scaling,
    weights) but must answer the same question: one task kind, class list (in order), number
    of targets, target column and kind of input; a custom loss has no answer to average.
    """
    first = members[0]
    names, seen = [m["name"] for m in members], set()
    for i, m in enumerate(members):
        where, name = f"members[{i}]", short(m["name"])
        if m["name"] in seen:
            return where, f"the name {name} is taken by members[{names.index(m['name'])}]"
        seen.add(m["name"])
        task, task0 = m["task"], first["task"]
        if task["name"] == "custom":
            return where, f"member {name} has a custom loss: its raw outputs have no mean to take"
        differs = next((k for k in ("name", "classes", "n_targets") if
                        json.dumps(task.get(k)) != json.dumps(task0.get(k))), None)
        if differs is not None:
            what = {"name": "task", "classes": "classes", "n_targets": "number of targets"}[differs]
            return where, (f"member {name} has {what} {short(task.get(differs))} where member "
                           f"{short(first['name'])} has {short(task0.get(differs))}: an ensemble "
                           "averages the answers to one question")
        if m["target"] != first["target"] or _input_kind(m) != _input_kind(first):
            return where, (f"member {name} reads {_input_kind(m)} with target {short(m['target'])}, "
                           f"member {short(first['name'])} {_input_kind(first)} with target "
                           f"{short(first['target'])}")
    return None


MEMBER = Obj({**LEARNER.fields, "name": Str(min_len=1, max_len=1000)}, rules=LEARNER.rules)
ENSEMBLE = Obj({"format": Int(1, FORMAT_VERSION), "nnfit_version": Str(max_len=100),
                "kind": Str(("ensemble",)), "combine": Str(("mean",)),
                "members": Seq(MEMBER, 1, MAX_MEMBERS)},
               rules=(lambda d: members_disagree(d["members"]),))


# ------------------------------------------------------------------------------ run config
def _setting(name: str, annotation: Any) -> Field:
    """The field of one config setting, from its dataclass annotation (names from registries)."""
    from ..datasets import DATASETS
    from ..models import ACTIVATIONS, CLI_MODELS
    from ..optim import OPTIMIZERS, SCHEDULERS
    from ..tasks import LOSSES, TASKS

    names = {"optimizer": OPTIMIZERS, "scheduler": SCHEDULERS, "loss": LOSSES,
             "activation": ACTIVATIONS, "dataset": DATASETS}
    if name in names:
        return Str(tuple(names[name].names()))
    if name == "task":
        return Str(TASKS)
    if name == "model":
        return Str(CLI_MODELS)  # what `nnfit train` builds from its data
    args = typing.get_args(annotation)
    if type(None) in args:
        return Maybe(_setting(name, next(a for a in args if a is not type(None))))
    if typing.get_origin(annotation) is tuple:
        item = Str(max_len=10_000) if args[0] is str else Int(-(2**63))
        return Seq(item, 0, 10_000)
    return {int: Int(-(2**63)), float: Float(), bool: Bool(), str: Str(max_len=10_000)}[annotation]


def _config_table(sections: tuple[type, ...], **extra: Field) -> Obj:
    table: dict[str, Field] = {}
    for cls in sections:
        hints = typing.get_type_hints(cls)
        table.update({f.name: _setting(f.name, hints[f.name]) for f in fields(cls)})
    from ..config import LATER_SETTINGS

    return Obj({**table, **extra}, optional=frozenset(LATER_SETTINGS) & set(table),
               rules=(lambda d: _config_values(d, sections),))


def _config_values(d: dict, sections: tuple[type, ...]) -> tuple[str, str] | None:
    """The ranges the config dataclasses themselves check (epochs >= 1, ...)."""
    for cls in sections:
        values = {f.name: tuple(d[f.name]) if isinstance(d[f.name], list) else d[f.name]
                  for f in fields(cls) if f.name in d}  # absent: a later setting's default
        try:
            cls(**values)
        except (ConfigError, TypeError, ValueError) as e:
            return "", str(e)
    return None


@functools.cache
def _config() -> Field:
    from ..config import DataConfig, ModelConfig, TrainConfig

    return Pick(lambda d: "cli" if isinstance(d, dict) and "dataset" in d else "api", {
        # `nnfit train`: every setting, flat (RunConfig.to_dict)
        "cli": _config_table((ModelConfig, TrainConfig, DataConfig)),
        # the Python API: the TrainConfig and the model's spec (None for a user's module);
        # loss "custom": a loss function (never a name `nnfit train` or LOSSES takes)
        "api": _config_table((TrainConfig,), model=Maybe(SPEC),
                             loss=Str((*_setting("loss", str).choices, "custom"))),
    })


CONFIG = Lazy(_config)  # built at first use: the registries it names are filled by then


def config_spec_mismatch(config: Mapping[str, Any], spec: Mapping[str, Any] | None) -> str | None:
    """How a run's config and the spec its model was built from disagree, if they do."""
    if "dataset" not in config:  # the API records the spec itself
        return None if config["model"] == spec else "model"
    if spec is None:
        return "model"
    if config["model"] != spec["name"]:
        return "model"
    # the settings of config.json that the family's spec holds (an older config.json lacks
    # the later ones: nnfit.config.LATER_SETTINGS)
    keys = {"cnn": ("activation", "dropout", "batchnorm", "channels", "residual"),
            "lstm": ("hidden", "dropout", "bidirectional", "readout")}.get(
        "lstm" if spec["name"] == "gru" else spec["name"], ("hidden", "activation", "dropout", "batchnorm"))
    for key in keys:
        if key == "channels" and config.get(key) == []:  # from the data: the images' size
            continue
        if key in config and config[key] is not None and config[key] != spec.get(key):
            return key
    return None


# ----------------------------------------------------------------------------- checkpoint
def _loop(d: dict) -> tuple[str, str] | None:
    """Loop counters, history and early stopping agree with each other."""
    if d["epoch"] > d["epochs"]:
        return "epoch", f"{d['epoch']} is past epochs={d['epochs']}"
    if len(d["history"]) != d["epoch"]:
        return "history", f"{len(d['history'])} records for {d['epoch']} epochs"
    for i, record in enumerate(d["history"]):
        if record["epoch"] != i + 1:
            return f"history[{i}].epoch", f"{record['epoch']} where {i + 1} was expected"
    if d["best_epoch"] > d["epoch"] or (d["best"] is None) != (d["best_epoch"] == 0):
        return "best_epoch", f"{d['best_epoch']} does not fit best={d['best']} after {d['epoch']} epochs"
    if d["batch"] and d["stop"]:
        return "stop", "true inside an epoch"
    # Every epoch takes at least one optimizer step, every batch at least one sample (the exact
    # relations need the data's batching: nnfit.io.resume.check_counters).
    if d["step"] < d["epoch"] + (d["batch"] > 0):
        return "step", f"{d['step']} steps cannot complete {d['epoch']} epochs and {d['batch']} batches"
    if d["loss_n"] < d["batch"]:
        return "loss_n", f"{d['loss_n']} samples in {d['batch']} batches"
    if d.get("skipped_steps", 0) > d["step"]:  # by an fp16 gradient scaler (nnfit.precision)
        return "skipped_steps", f"{d['skipped_steps']} skipped of {d['step']} steps"
    return None


MAX_WORLD = 65536  # processes of one run


def _ranks(d: dict) -> tuple[str, str] | None:
    """A multi-process checkpoint's per-rank counts: one per rank but rank 0, only inside an
    epoch (between epochs there is no running loss)."""
    world, counts = d.get("world_size", 1), d.get("rank_loss_n")
    if counts is None:
        if world > 1 and d["batch"]:
            return "rank_loss_n", f"missing (a checkpoint of {world} processes inside an epoch holds it)"
        return None
    if not d["batch"] or len(counts) != world - 1:
        return "rank_loss_n", f"{len(counts)} counts for world_size {world} at batch {d['batch']}"
    return None


def _run(d: dict) -> tuple[str, str] | None:
    """The run's record agrees with the loop: its best checkpoint, its config, its model."""
    if (d["best_checkpoint"] is None) != (d["best"] is None):
        return "best_checkpoint", f"{d['best_checkpoint']} does not fit best={d['best']}"
    if d["best_checkpoint"] is not None:  # written at the end of the best epoch, by this run
        m = NAME.fullmatch(d["best_checkpoint"])
        if (m is None or m.group(2) is None or int(m.group(2)) != d["best_epoch"]
                or int(m.group(1)) > d["step"]):
            return "best_checkpoint", (f"{d['best_checkpoint']} is not the end of best_epoch "
                                       f"{d['best_epoch']} at or before step {d['step']}")
    config, spec = d["config"], d["learner"]["spec"]
    if (config["scheduler"] == "none") != (d["scheduler"] is None):
        return "scheduler", f"{short(d['scheduler'])} for scheduler {config['scheduler']!r}"
    if config["epochs"] != d["epochs"]:
        return "config.epochs", f"{config['epochs']} but the loop ran with epochs={d['epochs']}"
    key = config_spec_mismatch(config, spec)
    if key is not None:
        return f"config.{key}", "does not match the model spec (learner.spec)"
    if (config.get("loss") == "custom") != (d["learner"]["task"]["name"] == "custom"):
        return "config.loss", f"{short(config.get('loss'))} for a {d['learner']['task']['name']} task"
    if "dataset" in config and config["target"] is not None and d["learner"]["target"] != config["target"]:
        target = d["learner"]["target"]
        return "learner.target", f"{short(target)} but config.target is {short(config['target'])}"
    return None


# One record per epoch, as Trainer._run_epoch logs it: numbers only (a validation metric may be
# undefined, NaN, or overflow; what the loop itself measures is finite).
HISTORY = Seq(Obj({"epoch": Int(1, 2**53), "train_loss": Float(), "lr": Float(0.0), "time": Float(0.0),
                   "compile_time": Float(0.0)}, optional=frozenset({"compile_time"}),
                  rest=Maybe(Float(inf=True, nan=True)), rest_keys=r".{1,200}"), 0, 10**7)
OPTIMIZER_META = Obj({
    "param_groups": Seq(Obj({"params": Seq(Int(0, 10**9), 0, 10**8, unique=True)}, rest=Json(finite=True),
                            rest_keys=r"[A-Za-z_][A-Za-z0-9_]{0,100}"), 1, 1000),
    # non-tensor per-parameter state, by parameter index (none for nnfit's optimizers)
    "scalars": Obj(rest=Obj(rest=Json(finite=True)), rest_keys=r"0|[1-9][0-9]{0,8}"),
})
# What Trainer.checkpoint_parts saves: the loop's own state.
LOOP = {
    "epoch": COUNT, "step": COUNT, "batch": COUNT, "loss_n": COUNT, "epochs": Int(1, 2**53),
    "history": HISTORY, "best": Maybe(Float()), "best_epoch": COUNT, "stop": Bool(),
    "stop_reason": Str(max_len=10_000), "optimizer": OPTIMIZER_META,
    # its type's fields are checked against the schedule it is loaded into (nnfit.io.optim_state)
    "scheduler": Maybe(Obj(rest=Json(), rest_keys=r"[A-Za-z_][A-Za-z0-9_]{0,100}")),
}
# Keys a checkpoint has only when it needs them: a run of several processes (torchrun) records
# its world size and each rank's sample count of the running epoch (rank 0's is ``loss_n``).
LOOP_OPTIONAL = {"world_size": Int(1, MAX_WORLD), "rank_loss_n": Seq(COUNT, 1, MAX_WORLD - 1),
                 "skipped_steps": COUNT}  # steps an fp16 gradient scaler skipped (nnfit.precision)
LOOP_STATE = Obj({**LOOP, **LOOP_OPTIONAL}, optional=frozenset(LOOP_OPTIONAL), rest=Json(),
                 rules=(_loop, _ranks))  # a trainer's resume: run keys checked by fit
# A run's checkpoint (state.json): the loop's state and what RunWriter.checkpoint adds.
CHECKPOINT = Obj({
    **LOOP, **LOOP_OPTIONAL, "format": Int(1, FORMAT_VERSION), "learner": LEARNER, "config": CONFIG,
    # null would turn off the check that a resume continues on the same data
    "data_sha256": SHA256, "best_checkpoint": Maybe(CHECKPOINT_NAME),
}, optional=frozenset(LOOP_OPTIONAL), rules=(_loop, _run, _ranks))


# ------------------------------------------------------------------------------ entry points
def validate(doc: Any, schema: Field, source: str, what: str = "") -> None:
    """Check a parsed document against ``schema``.

    Args:
        doc: the parsed JSON.
        schema: one of the tables above.
        source: the file, named in the message.
        what: a prefix of the field paths (``learner`` for the learner part of a checkpoint).

    Raises:
        CheckpointError: ``SOURCE: FIELD: what is wrong``.
    """
    try:
        check(doc, schema, what)
    except SchemaError as e:
        raise CheckpointError(f"{source}: {e}") from None
