"""The schema of the fitted data layouts in ``model.json`` (images, sequences, forecasting
windows: :mod:`nnfit.data.layouts`), the rules that tie each to the preprocessing's inputs and
to the model spec and task. Part of :mod:`nnfit.io.validate`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .schema import Bool, Float, Int, Maybe, Obj, Seq, Str, Tagged, short
from .validate_fields import FLOAT32_MAX, FLOAT32_TINY, MAX_WINDOW, TEXT_NAME
from .validate_spec import image_or_sequence_inputs

# The most values (C*H*W) per image: nnfit.data.image_files.MAX_IMAGE_VALUES (io does not
# import data), so a crafted layout cannot make inspect or predict allocate gigabytes per image.
MAX_IMAGE_VALUES = 2**25


def _image_layout_rule(d: dict) -> tuple[str, str] | None:
    """RGB or greyscale, one statistic per channel, one pixel column per value, at most
    :data:`MAX_IMAGE_VALUES` values per image."""
    c = d["channels"]
    if c not in (1, 3):
        return "channels", f"{c} is not 1 (greyscale) or 3 (RGB)"
    for key in ("mean", "std"):
        if len(d[key]) != c:
            return key, f"{len(d[key])} values for {c} channels"
    size = c * d["height"] * d["width"]
    if size > MAX_IMAGE_VALUES:
        return "height", (f"{c}x{d['height']}x{d['width']} images hold {size} values each, more than "
                          f"{MAX_IMAGE_VALUES} (larger images are trained resized, with --image-size)")
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


def image_inputs_rule(d: dict) -> tuple[str, str] | None:
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
FORECAST_LAYOUT = Obj({"kind": Str(("forecast",)), "time": TEXT_NAME, "target": TEXT_NAME,
                       "window": Int(1, MAX_WINDOW), "horizon": Int(1, MAX_WINDOW),
                       "in_features": Int(0, 10**7), "cardinalities": Seq(Int(2, 10**5 + 2), 0, 10**6),
                       "naive_feature": Maybe(Int(0, 10**7))},
                      optional=frozenset({"naive_feature"}), rules=(_forecast_layout_rule,))


def forecast_inputs_rule(d: dict) -> tuple[str, str] | None:
    """A forecast layout reads its rows through the table's column roles: the time column is
    not one of them, and the layout's sizes are the inputs' (``x`` per row, one code per
    categorical column), its ``naive_feature`` the target's place among ``x``'s features."""
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
    names = d["inputs"][0]["features"] or []
    naive = layout.get("naive_feature")
    if naive is not None and (naive >= len(names) or names[naive] != layout["target"]):
        return "layout.naive_feature", f"{naive} is not the target's feature in input 'x'"
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
                       "sequence_id": Maybe(TEXT_NAME), "time": Maybe(TEXT_NAME)},
                      rules=(_sequence_layout_rule,))


def sequence_inputs_rule(d: dict) -> tuple[str, str] | None:
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


def sequence_spec(spec: Mapping[str, Any], pre: Mapping[str, Any]) -> str | None:
    """How a spec does not fit a sequence layout's preprocessing, if it does not: only an lstm
    / gru reads sequences, its inputs are the steps' with a time axis in front, and its token
    vocabulary and per-step code counts are the layout's (a larger id would index past an
    embedding)."""
    layout = pre["layout"]
    if spec["name"] not in ("lstm", "gru"):
        return f"a {spec['name']} model cannot read sequences (an lstm or gru can)"
    steps = {**pre, "inputs": [{**s, "shape": ["T", *s["shape"]]} for s in pre["inputs"]]}
    problem = image_or_sequence_inputs(spec, steps)
    if problem is not None:
        return problem
    if spec["vocab_size"] != layout["vocab_size"]:
        return f"vocab_size {spec['vocab_size']} does not fit the layout's {layout['vocab_size']} token ids"
    cards = [c for c, _ in spec["embeddings"]]
    if cards != layout["cardinalities"]:
        return f"embeddings of cardinalities {cards} do not fit the layout's {layout['cardinalities']}"
    return None


def per_window(pre: dict) -> dict:
    """A forecast layout's preprocessing as the model sees it: its per-row inputs stacked
    ``window`` rows deep (other preprocessing as it is)."""
    layout = pre.get("layout")
    if layout is None or layout["kind"] != "forecast":
        return pre
    inputs = [{**s, "shape": [layout["window"], *s["shape"]]} for s in pre["inputs"]]
    return {**pre, "inputs": inputs}


def forecast_rule(d: dict) -> tuple[str, str] | None:
    """A forecast task goes with a forecast layout (the layout builds the baselines its
    targets carry), whose target is the model's and whose built-in model is recurrent, its
    highway no longer than a window."""
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
    if d["spec"] is not None and d["spec"].get("highway", 0) > layout["window"]:
        return "spec.highway", f"{d['spec']['highway']} steps, but a window holds {layout['window']}"
    return None
