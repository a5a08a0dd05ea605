"""The schema of a model spec in ``model.json`` (one strict variant per built-in family) and
how a spec's input and output widths are read and checked against the saved preprocessing.
Part of :mod:`nnfit.io.validate`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .schema import Bool, Field, Float, Int, Lazy, Maybe, Obj, Seq, Str, Tagged
from .validate_fields import SIZE


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
    no input at all is not a model; a highway and a naive feature read float features."""
    if len(set(d["hidden"])) > 1:
        return "hidden", f"entries must all be equal (one recurrent layer each), got {d['hidden']}"
    if (d["vocab_size"] > 0) != (d["embedding_dim"] > 0):
        return "embedding_dim", f"{d['embedding_dim']} does not go with vocab_size {d['vocab_size']}"
    if d["vocab_size"] and d["in_features"]:
        return "in_features", f"{d['in_features']} with vocab_size: the input is one token per step"
    if d["in_features"] == 0 and not d["vocab_size"] and not d["embeddings"]:
        return "in_features", f"0 is out of range [{SIZE.lo}, {SIZE.hi}] without tokens or embeddings"
    if d.get("highway", 0) and not d["in_features"]:
        return "highway", f"{d['highway']} without float features to read (in_features 0)"
    naive = d.get("naive_feature")
    if naive is not None and naive >= d["in_features"]:
        return "naive_feature", f"{naive} is not one of the {d['in_features']} float features"
    return None


def _recurrent(name: str) -> Obj:
    """An lstm / gru spec: every key ``Recurrent.spec()`` writes ("highway" and
    "naive_feature" optional: specs written before they existed have none)."""
    from ..models.rnn import MAX_HIGHWAY, MAX_LAYERS, READOUTS
    from ..models.tabular import MAX_CARDINALITY, MAX_WIDTH

    return Obj({"name": Str((name,)), "in_features": Int(0, SIZE.hi), "out_features": SIZE,
                "hidden": Seq(SIZE, 1, MAX_LAYERS), "bidirectional": Bool(),
                "dropout": Float(0.0, 1.0, open_hi=True), "readout": Str(READOUTS),
                "vocab_size": Int(0, MAX_CARDINALITY), "embedding_dim": Int(0, MAX_WIDTH),
                "embeddings": _embeddings(min_len=0), "highway": Int(0, MAX_HIGHWAY),
                "naive_feature": Maybe(Int(0, SIZE.hi))},
               optional=frozenset({"highway", "naive_feature"}), rules=(_recurrent_rule, _pairs))


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


def embedded_inputs(spec: Mapping[str, Any], pre: Mapping[str, Any]) -> str | None:
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


def image_or_sequence_inputs(spec: Mapping[str, Any], pre: Mapping[str, Any]) -> str | None:
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
    if "lengths" in given and (spec.get("highway", 0) or spec.get("naive_feature") is not None):
        return ("highway and naive_feature read the last steps of full-length input, not sequences "
                "of varying lengths")
    return None
