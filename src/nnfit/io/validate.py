"""The schema of every JSON document nnfit reads back, one table per kind of state.

* :data:`LEARNER` -- ``model.json`` (and the ``learner`` part of a checkpoint): format, spec,
  task, target and preprocessing, checked against each other (the spec's input and output
  widths against the preprocessing and the task).
* :data:`CHECKPOINT` -- a checkpoint's ``state.json``: loop progress, history, early
  stopping, optimizer and scheduler state (their structure; :mod:`nnfit.io.weights` checks
  them against the live optimizer and schedule), config, data fingerprint, best checkpoint.
* :data:`CONFIG` -- a run's ``config.json`` (and the ``config`` of a checkpoint): built from
  the config dataclasses, so a new setting is covered as soon as it exists.

A later feature that saves more state adds its fields here; ``tests/test_tamper_fuzz.py``
rewrites every field these tables list. Everything is checked before anything is used, and
every problem is a :class:`~nnfit.errors.CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import functools
import math
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ..errors import CheckpointError, ConfigError
from ..files import FORMAT_VERSION
from .checkpoints import NAME
from .schema import (
    AnyOf,
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

COUNT = Int(0, 2**53)  # epochs, steps, batches, samples
MAX_WINDOW = 10**6  # forecasting: rows in a window, rows ahead, rows in a season
SIZE = Int(1, 2**40)  # a layer width; the parameter count bounds it far lower
SHA256 = Str(pattern=r"[0-9a-f]{64}")
CHECKPOINT_NAME = Str(pattern=NAME.pattern)  # as nnfit.io.checkpoints names them
LABEL = AnyOf((Str(max_len=10_000), Int(-(2**63)), Float(), Bool()), "a label (string, number or boolean)")
# A regression target's scale is applied to float32 outputs: it must be a float32 number
# (a mean of 1e300 made every prediction and metric infinite), a std a normal positive one.
FLOAT32_MAX, FLOAT32_TINY = 3.4028234663852886e38, 1.1754943508222875e-38


# ------------------------------------------------------------------------------ model spec
def _embeddings(min_len: int = 1) -> Seq:
    """(cardinality, width) pairs, one per categorical column (:mod:`nnfit.models.tabular`);
    each pair's own bounds are :func:`_pairs`'s."""
    from ..models.tabular import MAX_CARDINALITY, MAX_COLUMNS, MAX_WIDTH

    return Seq(Seq(Int(1, max(MAX_CARDINALITY, MAX_WIDTH)), 2, 2), min_len, MAX_COLUMNS)


def _pairs(d: dict) -> tuple[str, str] | None:
    """Each (cardinality, width) pair within its own bounds (the field bounds both at once)."""
    from ..models.tabular import MAX_CARDINALITY, MAX_WIDTH, MIN_CARDINALITY

    for i, (cardinality, width) in enumerate(d.get("embeddings", ())):
        if not MIN_CARDINALITY <= cardinality <= MAX_CARDINALITY:
            return f"embeddings[{i}]", (f"cardinality {cardinality} is out of range "
                                        f"[{MIN_CARDINALITY}, {MAX_CARDINALITY}]")
        if width > MAX_WIDTH:
            return f"embeddings[{i}]", f"width {width} is out of range [1, {MAX_WIDTH}]"
    return None


def _numeric_width(d: dict) -> tuple[str, str] | None:
    """No numeric input is legal only next to embedded categorical ones."""
    if d["in_features"] == 0 and "embeddings" not in d:
        return "in_features", f"0 is out of range [{SIZE.lo}, {SIZE.hi}] without embeddings"
    return None


def _stack(name: str, min_hidden: int) -> Obj:
    """An mlp / resmlp spec: every key ``model.spec()`` writes ("embeddings" only when the
    model has some, so that specs written before they existed are unchanged)."""
    from ..models import ACTIVATIONS

    return Obj({"name": Str((name,)), "in_features": Int(0, SIZE.hi), "hidden": Seq(SIZE, min_hidden, 10_000),
                "out_features": SIZE, "activation": Str(tuple(ACTIVATIONS.names())),
                "dropout": Float(0.0, 1.0, open_hi=True), "batchnorm": Bool(),
                "embeddings": _embeddings()},
               optional=frozenset({"embeddings"}), rules=(_numeric_width, _pairs))


def _odd_kernel(d: dict) -> tuple[str, str] | None:
    """"same" padding is symmetric only for an odd kernel (:class:`nnfit.models.CNN`)."""
    return ("kernel_size", f"{d['kernel_size']} is even") if d["kernel_size"] % 2 == 0 else None


def _cnn() -> Obj:
    """A cnn spec: every key ``CNN.spec()`` writes."""
    from ..models import ACTIVATIONS
    from ..models.cnn import MAX_BLOCKS, MAX_KERNEL, MAX_STAGES

    return Obj({"name": Str(("cnn",)), "in_channels": SIZE, "out_features": SIZE,
                "channels": Seq(SIZE, 1, MAX_STAGES), "blocks": Int(1, MAX_BLOCKS),
                "kernel_size": Int(1, MAX_KERNEL), "activation": Str(tuple(ACTIVATIONS.names())),
                "dropout": Float(0.0, 1.0, open_hi=True), "batchnorm": Bool(), "residual": Bool()},
               rules=(_odd_kernel,))


def _recurrent_rule(d: dict) -> tuple[str, str] | None:
    """Equal layers; tokens (``vocab_size`` with ``embedding_dim``) replace float features;
    no input at all is not a model."""
    if len(set(d["hidden"])) > 1:
        return "hidden", f"entries must all be equal (one recurrent layer each), got {d['hidden']}"
    if (d["vocab_size"] > 0) != (d["embedding_dim"] > 0):
        return "embedding_dim", f"{d['embedding_dim']} does not go with vocab_size {d['vocab_size']}"
    if d["vocab_size"] and d["in_features"]:
        return "in_features", f"{d['in_features']} with vocab_size: the input is one token per step"
    if d["in_features"] == 0 and not d["vocab_size"] and not d["embeddings"]:
        return "in_features", f"0 is out of range [{SIZE.lo}, {SIZE.hi}] without tokens or embeddings"
    return None


def _recurrent(name: str) -> Obj:
    """An lstm / gru spec: every key ``Recurrent.spec()`` writes."""
    from ..models.rnn import MAX_LAYERS, READOUTS
    from ..models.tabular import MAX_CARDINALITY, MAX_WIDTH

    return Obj({"name": Str((name,)), "in_features": Int(0, SIZE.hi), "out_features": SIZE,
                "hidden": Seq(SIZE, 1, MAX_LAYERS), "bidirectional": Bool(),
                "dropout": Float(0.0, 1.0, open_hi=True), "readout": Str(READOUTS),
                "vocab_size": Int(0, MAX_CARDINALITY), "embedding_dim": Int(0, MAX_WIDTH),
                "embeddings": _embeddings(min_len=0)}, rules=(_recurrent_rule, _pairs))


def _spec() -> Field:
    return SPEC


SPEC = Tagged("name", {
    "mlp": _stack("mlp", 0),
    "resmlp": _stack("resmlp", 1),
    "multi_input": Obj({"name": Str(("multi_input",)),
                        "branches": Obj(rest=Lazy(_spec), rest_keys=r"[^.]{1,200}",
                                        rules=(lambda d: None if d else ("", "no branches"),)),
                        "head": Lazy(_spec)}),
    "embeddings": Obj({"name": Str(("embeddings",)), "embeddings": _embeddings()}, rules=(_pairs,)),
    "cnn": _cnn(),
    "lstm": _recurrent("lstm"),
    "gru": _recurrent("gru"),
})


def spec_width(spec: Mapping[str, Any], end: str) -> int | None:
    """A spec's input (``end="in_features"``) or output (``"out_features"``) width, or None
    when it has no single one (the inputs of a multi_input model). An embeddings model takes
    one code per column and gives the concatenated vectors; a cnn's input width is its
    channels, an lstm / gru's the float features of each step (None: it reads tokens)."""
    if end == "in_features" and spec["name"] == "cnn":
        return spec["in_channels"]
    if end == "in_features" and spec["name"] in ("lstm", "gru") and spec["vocab_size"]:
        return None
    if spec["name"] == "multi_input":
        return spec_width(spec["head"], end) if end == "out_features" else None
    if spec["name"] == "embeddings":
        pairs = spec["embeddings"]
        return len(pairs) if end == "in_features" else sum(w for _, w in pairs)
    return spec[end]


def _embedded_inputs(spec: Mapping[str, Any], pre: Mapping[str, Any]) -> str | None:
    """How a named ``{x, codes}`` preprocessing does not fit an mlp / resmlp with embeddings
    (``model(x=numeric, codes=codes)``), if it does not."""
    inputs = {s["name"]: s for s in pre["inputs"]}
    if pre["style"] != "named" or sorted(inputs) != ["codes", "x"]:
        return (f"a model with embeddings takes named inputs ['x', 'codes'], not "
                f"{[s['name'] for s in pre['inputs']]} ({pre['style']})")
    x, codes, k = inputs["x"], inputs["codes"], len(spec["embeddings"])
    if x["shape"] != [spec["in_features"]] or x["dtype"] != "float32":
        return (f"in_features {spec['in_features']} does not fit input 'x' of per-sample shape "
                f"{x['shape']} ({x['dtype']})")
    if codes["shape"] != [k] or codes["dtype"] != "int64":
        return (f"{k} embeddings do not fit input 'codes' of per-sample shape {codes['shape']} "
                f"({codes['dtype']})")
    return None


def _image_or_sequence_inputs(spec: Mapping[str, Any], pre: Mapping[str, Any]) -> str | None:
    """How the preprocessing's inputs do not fit a cnn (``model(x)``, images of
    ``in_channels``) or an lstm / gru (``model(x, lengths, codes)``: steps of
    ``in_features`` floats or int64 tokens, and per-step codes with embeddings), if they do
    not. A sequence input's per-sample shape may describe one step (``[F]``, ``[]`` for a
    token) or a whole sequence (``[T, F]``, ``[T]``): only the step's width is the spec's;
    time and image sizes are the layout's to check (``LAYOUT``)."""
    inputs, shapes = pre["inputs"], [s["shape"] for s in pre["inputs"]]
    if spec["name"] == "cnn":
        if pre["style"] != "single" or len(shapes[0]) != 3 or shapes[0][0] != spec["in_channels"]:
            return f"in_channels {spec['in_channels']} does not fit inputs of per-sample shapes {shapes}"
        return None
    names = ("x", "lengths", "codes")  # forward's arguments, by name or in this order
    given = ({s["name"]: s for s in inputs} if pre["style"] == "named"
             else dict(zip(names, inputs, strict=False)))
    if not set(given) <= set(names) or len(inputs) > len(names) or "x" not in given:
        return f"an {spec['name']} model takes inputs {list(names)}, not {[s['name'] for s in inputs]}"
    x, codes, k = given["x"], given.get("codes"), len(spec["embeddings"])
    if spec["vocab_size"] and (x["dtype"] != "int64" or len(x["shape"]) > 1):  # a token a step
        return (f"vocab_size {spec['vocab_size']} does not fit input 'x' of per-sample shape "
                f"{x['shape']} ({x['dtype']})")
    if not spec["vocab_size"] and (x["dtype"] != "float32" or x["shape"][-1:] != [spec["in_features"]]):
        return (f"in_features {spec['in_features']} does not fit input 'x' of per-sample shape "
                f"{x['shape']} ({x['dtype']})")
    if (codes is None) != (k == 0) or codes is not None and (
            codes["dtype"] != "int64" or codes["shape"][-1:] != [k]):
        got = "no input 'codes'" if codes is None else f"input 'codes' of per-sample shape {codes['shape']}"
        return f"{k} embeddings do not fit {got}"
    return None


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


_NAME = Str(min_len=1, max_len=10_000)
COLUMN = Tagged("role", {
    "numeric": Obj({"name": _NAME, "role": Str(("numeric",)), "fill": Seq(Float(), 1, 1),
                    "indicator": Bool(), "quantiles": Seq(Float(), 1, 1000), "coerce": Bool()},
                   optional=frozenset({"quantiles", "coerce"}), rules=(_sorted("quantiles"),)),
    "categorical": Obj({"name": _NAME, "role": Str(("categorical",)),
                        "levels": Seq(Str(max_len=10_000), 0, 10**5, unique=True), "missing": Bool(),
                        "unknown": Float(0.0, 1.0)}),
    "datetime": Obj({"name": _NAME, "role": Str(("datetime",)), "fill": Seq(Float(), 0, 6),
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


def _image_layout_rule(d: dict) -> tuple[str, str] | None:
    """RGB or greyscale, one statistic per channel, one pixel column per value."""
    c = d["channels"]
    if c not in (1, 3):
        return "channels", f"{c} is not 1 (greyscale) or 3 (RGB)"
    for key in ("mean", "std"):
        if len(d[key]) != c:
            return key, f"{len(d[key])} values for {c} channels"
    size = c * d["height"] * d["width"]
    if size > 2**31:
        return "height", f"{size} values per image"
    if d["columns"] is not None and len(d["columns"]) != size:
        return "columns", f"{len(d['columns'])} pixel columns for {c}x{d['height']}x{d['width']} images"
    return None


# nnfit.data.images.ImageLayout: what the images are and how they are normalised and augmented
IMAGE_LAYOUT = Obj({"kind": Str(("image",)), "channels": Int(1, 3), "height": Int(1, 65536),
                    "width": Int(1, 65536), "resize": Bool(),
                    "mean": Seq(Float(-FLOAT32_MAX, FLOAT32_MAX), 1, 3),
                    "std": Seq(Float(FLOAT32_TINY, FLOAT32_MAX), 1, 3),
                    "augment": Str(("none", "crop", "flip", "crop,flip")),
                    "columns": Maybe(Seq(Str(max_len=10_000), 1, 3 * 2**20, unique=True))},
                   rules=(_image_layout_rule,))


def _image_inputs_rule(d: dict) -> tuple[str, str] | None:
    """An image layout makes one float32 input ``x`` of per-sample shape (C, H, W), its
    normalisation the layout's own (none in the input's schema), and no table."""
    layout = d.get("layout")
    if layout is None or layout["kind"] != "image":
        return None
    want = {"name": "x", "features": None, "shape": [layout["channels"], layout["height"], layout["width"]],
            "dtype": "float32", "mean": None, "std": None}
    inputs = d["inputs"]
    if (d["style"] != "single" or len(inputs) != 1 or d.get("table") is not None
            or any(inputs[0][k] != v for k, v in want.items()) or inputs[0].get("fill") is not None):
        return "inputs", ("the inputs do not match the image layout: one float32 input x of shape "
                          f"{want['shape']}")
    return None


def _forecast_layout_rule(d: dict) -> tuple[str, str] | None:
    if d["target"] == d["time"]:
        return "target", f"{short(d['target'])} is also the time column"
    return None


# nnfit.data.forecast.ForecastLayout: the columns ordering and filling the windows, their sizes
FORECAST_LAYOUT = Obj({"kind": Str(("forecast",)), "time": _NAME, "target": _NAME,
                       "window": Int(1, MAX_WINDOW), "horizon": Int(1, MAX_WINDOW),
                       "in_features": Int(0, 10**7), "cardinalities": Seq(Int(2, 10**5 + 2), 0, 10**6)},
                      rules=(_forecast_layout_rule,))


def _forecast_inputs_rule(d: dict) -> tuple[str, str] | None:
    """A forecast layout reads its rows through the table's column roles: the time column is
    not one of them, and the layout's sizes are the inputs' (``x`` per row, one code per
    categorical column)."""
    layout = d.get("layout")
    if layout is None or layout["kind"] != "forecast":
        return None
    table = d.get("table")
    if table is None:
        return "table", "missing: a forecast layout reads its rows through column roles"
    columns = table["columns"]
    if layout["time"] in [c["name"] for c in columns]:
        return "layout.time", f"{short(layout['time'])} is also a feature column"
    if d["inputs"][0]["shape"] != [layout["in_features"]]:
        return "layout.in_features", f"{layout['in_features']} but input 'x' is {d['inputs'][0]['shape']}"
    cards = [len(c["levels"]) + 2 for c in columns if c["role"] == "categorical"]
    if layout["cardinalities"] != cards:
        return "layout.cardinalities", f"{short(layout['cardinalities'])} but the columns' are {cards}"
    return None


def _sequence_layout_rule(d: dict) -> tuple[str, str] | None:
    """A table's sequences name their id and time columns, arrays none; tokens have a
    vocabulary and no float features; only a table's steps have categorical codes."""
    form = d["form"]
    for key in ("sequence_id", "time"):
        if d[key] is None and form == "table":
            return key, "null, but a table's sequences name their id and time columns"
        if d[key] is not None and form != "table":
            return key, f"{short(d[key])} for sequences of form {form!r} (arrays have no columns)"
    if form == "table" and d["sequence_id"] == d["time"]:
        return "time", f"{short(d['time'])} is also the sequence id column"
    if (d["vocab_size"] > 0) != (form == "tokens"):
        return "vocab_size", f"{d['vocab_size']} for sequences of form {form!r}"
    if form == "tokens" and d["features"]:
        return "features", f"{d['features']} for token sequences (one id per step)"
    if form != "table" and d["cardinalities"]:
        return "cardinalities", f"{short(d['cardinalities'])}: only a table's steps have categorical codes"
    if form != "tokens" and d["features"] == 0 and not d["cardinalities"]:
        return "features", "0, and no categorical codes: the steps hold nothing"
    return None


# nnfit.data.sequences.SequenceLayout: how the sequences were read, what each step holds
SEQUENCE_LAYOUT = Obj({"kind": Str(("sequence",)), "form": Str(("table", "floats", "tokens")),
                       "features": Int(0, 10**7), "vocab_size": Int(0, 10**7),
                       "cardinalities": Seq(Int(2, 10**5 + 2), 0, 10**6),
                       "sequence_id": Maybe(_NAME), "time": Maybe(_NAME)}, rules=(_sequence_layout_rule,))


def _sequence_inputs_rule(d: dict) -> tuple[str, str] | None:
    """A sequence layout's inputs describe one step: a table's through its column roles (the id
    and time columns are none of them; ``x`` of ``features``, one code per categorical column),
    arrays' as one input ``x`` of ``features`` float32 values or one int64 token id."""
    layout = d.get("layout")
    if layout is None or layout["kind"] != "sequence":
        return None
    table, x = d.get("table"), d["inputs"][0]
    if layout["form"] == "table":
        if table is None:
            return "table", "missing: a table's sequences read their steps through column roles"
        names = [c["name"] for c in table["columns"]]
        for key in ("sequence_id", "time"):
            if layout[key] in names:
                return f"layout.{key}", f"{short(layout[key])} is also a feature column"
        if x["shape"] != [layout["features"]]:
            return "layout.features", f"{layout['features']} but input 'x' has per-step shape {x['shape']}"
        cards = [len(c["levels"]) + 2 for c in table["columns"] if c["role"] == "categorical"]
        if layout["cardinalities"] != cards:
            return "layout.cardinalities", (f"{short(layout['cardinalities'])} but the categorical "
                                            f"columns have {cards}")
        return None
    if table is not None:
        return "table", "arrays of sequences have no column roles"
    shape, dtype = ([layout["features"]], "float32") if layout["form"] == "floats" else ([], "int64")
    if (d["style"] != "single" or len(d["inputs"]) != 1 or x["shape"] != shape or x["dtype"] != dtype
            or dtype == "int64" and (x["mean"] is not None or x.get("fill") is not None)):
        return "inputs", (f"the inputs do not match the sequence layout: one {dtype} input x of "
                          f"per-step shape {shape}")
    return None


# The fitted layout of images, sequences or forecasting windows (nnfit.data.layouts), by kind.
LAYOUT = Tagged("kind", {
    "forecast": FORECAST_LAYOUT,
    "image": IMAGE_LAYOUT,
    "sequence": SEQUENCE_LAYOUT,
})

PREPROCESS = Obj({"style": Str(("single", "positional", "named")), "inputs": Seq(INPUT, 1, 1000),
                  "table": TABLE, "layout": LAYOUT}, optional=frozenset({"table", "layout"}),
                 rules=(_inputs_rule, _table_inputs_rule, _image_inputs_rule, _forecast_inputs_rule,
                        _sequence_inputs_rule))


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
        problem = _embedded_inputs(spec, pre)
        return None if problem is None else ("spec", problem)
    if pre is not None and (pre.get("layout") or {}).get("kind") == "sequence":
        problem = _sequence_spec(spec, pre)
        return None if problem is None else ("spec", problem)
    if pre is not None and spec["name"] in ("cnn", "lstm", "gru"):
        problem = _image_or_sequence_inputs(spec, _per_window(pre))
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


def _sequence_spec(spec: Mapping[str, Any], pre: Mapping[str, Any]) -> str | None:
    """How a spec does not fit a sequence layout's preprocessing, if it does not: only an lstm
    / gru reads sequences, its inputs are the steps' with a time axis in front, and its token
    vocabulary and per-step code counts are the layout's (a larger id would index past an
    embedding)."""
    layout = pre["layout"]
    if spec["name"] not in ("lstm", "gru"):
        return f"a {spec['name']} model cannot read sequences (an lstm or gru can)"
    steps = {**pre, "inputs": [{**s, "shape": ["T", *s["shape"]]} for s in pre["inputs"]]}
    problem = _image_or_sequence_inputs(spec, steps)
    if problem is not None:
        return problem
    if spec["vocab_size"] != layout["vocab_size"]:
        return f"vocab_size {spec['vocab_size']} does not fit the layout's {layout['vocab_size']} token ids"
    cards = [c for c, _ in spec["embeddings"]]
    if cards != layout["cardinalities"]:
        return f"embeddings of cardinalities {cards} do not fit the layout's {layout['cardinalities']}"
    return None


def _per_window(pre: dict) -> dict:
    """A forecast layout's preprocessing as the model sees it: its per-row inputs stacked
    ``window`` rows deep (other preprocessing as it is)."""
    layout = pre.get("layout")
    if layout is None or layout["kind"] != "forecast":
        return pre
    inputs = [{**s, "shape": [layout["window"], *s["shape"]]} for s in pre["inputs"]]
    return {**pre, "inputs": inputs}


def _forecast_rule(d: dict) -> tuple[str, str] | None:
    """A forecast task goes with a forecast layout (the layout builds the baselines its
    targets carry), whose target is the model's and whose built-in model is recurrent."""
    layout = (d["preprocess"] or {}).get("layout")
    forecast = layout is not None and layout["kind"] == "forecast"
    if (d["task"]["name"] == "forecast") != forecast:
        return "task.name", (f"{short(d['task']['name'])} does not go with "
                             f"{'a forecast layout' if forecast else 'data that is not a forecast layout'}")
    if not forecast:
        return None
    if d["target"] != layout["target"]:
        return "target", f"{short(d['target'])} but the layout forecasts {short(layout['target'])}"
    if d["spec"] is not None and d["spec"]["name"] not in ("lstm", "gru"):
        return "spec.name", f"{short(d['spec']['name'])} cannot read forecasting windows (lstm or gru)"
    return None


LEARNER = Obj({"format": Int(1, FORMAT_VERSION), "nnfit_version": Str(max_len=100), "spec": Maybe(SPEC),
               "task": TASK, "target": Maybe(Str(max_len=10_000)), "preprocess": Maybe(PREPROCESS)},
              rules=(_learner_rule, _forecast_rule))


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
LOOP_STATE = Obj(LOOP, rest=Json(), rules=(_loop,))  # a trainer's resume: run keys checked by fit
# A run's checkpoint (state.json): the loop's state and what RunWriter.checkpoint adds.
CHECKPOINT = Obj({
    **LOOP, "format": Int(1, FORMAT_VERSION), "learner": LEARNER, "config": CONFIG,
    # null would turn off the check that a resume continues on the same data
    "data_sha256": SHA256, "best_checkpoint": Maybe(CHECKPOINT_NAME),
}, rules=(_loop, _run))


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
