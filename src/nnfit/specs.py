"""The model a fit builds for its data: a built-in spec completed from the data (input and
output sizes, embeddings, a layout's channels or features per step) and checked against it, or
a given module checked against the data before the loop would fail deep inside torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .data.preprocess import Preprocessor
from .errors import ConfigError, DataError
from .models import BUILT_IN_STACKS, build_model, model_spec
from .tasks import Task


def complete_spec(model: Any, pre: Preprocessor | None, task: Task) -> dict | None:
    """The complete spec of the model to train, checked and counted but not built: a spec dict
    whose input and output sizes default to the data's, or a given module's own (None for a
    user's module)."""
    if isinstance(model, nn.Module):
        spec = model_spec(model)
        _check_module(model, spec, pre)
        _check_outputs(spec, task)
        return spec
    if isinstance(model, str):
        model = {"name": model}
    if not isinstance(model, Mapping):
        raise ConfigError(f"model must be an nn.Module or a spec dict, got {type(model).__name__}")
    spec = dict(model)
    if pre is not None and pre.layout is not None:  # cnn, lstm, gru...: sizes from the layout
        for key, value in pre.layout.model_defaults(spec.get("name")).items():
            spec.setdefault(key, value)
        spec.setdefault("out_features", task.out_features)
    elif spec.get("name") in BUILT_IN_STACKS:
        spec.setdefault("hidden", [64, 64])
        if pre is None:  # a DataLoader: its shapes are not known before training
            if "in_features" not in spec:
                raise ConfigError("give in_features in the model spec when training from a DataLoader")
        else:
            width = _table_width(pre, spec["name"])
            spec.setdefault("in_features", width)
            if spec["in_features"] != width:
                raise ConfigError(f"model spec: in_features is {spec['in_features']!r} but the data "
                                  f"has {width} features per row")
            if pre.table is not None and pre.table.categorical:
                from .models.tabular import embedding_dim

                spec.setdefault("embeddings", [[c.cardinality, embedding_dim(c.cardinality)]
                                               for c in pre.table.categorical])
        spec.setdefault("out_features", task.out_features)
    if "out_features" in spec and spec["out_features"] is None:  # a custom loss on unknown targets
        raise ConfigError(f"model spec: give out_features (the output width of {spec.get('name')!r}): "
                          "the targets do not tell it")
    # On the meta device a model holds no data and draws no random numbers: this fills in the
    # defaults (what a resume compares) whatever its size.
    with torch.device("meta"):
        spec = model_spec(build_model(spec))
    _check_outputs(spec, task)
    return spec


def _check_outputs(spec: dict | None, task: Task) -> None:
    """Refuse a built-in model whose output width does not fit the task, as loading the run
    would (a binary task takes 1 or 2 outputs, n classes take n): training it would write a
    run that no one can load."""
    from .io.validate import task_width
    from .io.validate_spec import spec_width

    widths = task_width(task.to_dict()) if spec is not None else None
    out = None if widths is None else spec_width(spec, "out_features")
    if out is not None and out not in widths:
        raise ConfigError(f"model: out_features is {out} but the {task.to_dict()['name']} task takes "
                          f"{' or '.join(map(str, widths))} outputs per row")


def _check_module(model: nn.Module, spec: dict | None, pre: Preprocessor | None) -> None:
    """Refuse a module that cannot train on the data, before torch fails deep inside the loop.

    Raises:
        ConfigError: a parameter or buffer on the meta device (shapes only, no data).
        DataError: an nnfit MLP/ResidualMLP whose ``in_features`` is not the data's width, or
            data that is not (rows, features).
    """
    meta = next((n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta), None)
    if meta is not None:
        raise ConfigError(f"model: {meta!r} is on the meta device and holds no data: build the model on "
                          "a real device, or call model.to_empty(device='cpu') and initialise it")
    if pre is not None and pre.layout is not None and spec is not None:
        _check_layout_sizes(spec, pre)
        return
    if pre is None or spec is None or spec.get("name") not in BUILT_IN_STACKS:
        return
    width = _table_width(pre, spec["name"])
    if spec.get("in_features") != width:
        raise DataError(f"model {spec['name']!r} takes {spec.get('in_features')} features per row, "
                        f"the data has {width}")
    if pre.table is None:
        return
    sizes, cats = [e[0] for e in spec.get("embeddings", [])], pre.table.categorical
    if sizes != [c.cardinality for c in cats]:
        want = ", ".join(f"{c.name} ({c.cardinality})" for c in cats) or "none"
        raise DataError(f"model {spec['name']!r} embeds categorical columns of sizes {sizes}; the "
                        f"data's are: {want}: build it with embeddings=[(cardinality, width), ...] in "
                        "that order")


def _check_layout_sizes(spec: dict, pre: Preprocessor) -> None:
    """An nnfit CNN/LSTM/GRU built by hand must have the sizes the data's layout gives
    (channels, features per step, vocabulary, embedded columns), named when it does not."""
    want = json.loads(json.dumps(pre.layout.model_defaults(spec["name"])))  # tuples as lists
    want.pop("channels", None)  # a cnn's widths by image size are a default, not a size the data needs
    for key in ("highway", "naive_feature"):  # a forecast's highway: a default too (models/rnn.py)
        want.pop(key, None)
    bad = [k for k, v in want.items() if json.loads(json.dumps(spec.get(k))) != v]
    if bad:
        has = ", ".join(f"{k}={spec.get(k)!r}" for k in bad)
        need = ", ".join(f"{k}={want[k]!r}" for k in bad)
        raise DataError(f"model {spec['name']!r} has {has}; the data needs {need}")


def _table_width(pre: Preprocessor, name: str) -> int:
    """The feature count of one (rows, features) input, the only input an mlp/resmlp takes.

    Raises:
        DataError: several inputs, or samples that are not flat vectors.
    """
    names = [s.name for s in pre.inputs]
    if pre.style == "named" and names == ["x", "codes"] and len(pre.inputs[0].shape) == 1:
        return pre.inputs[0].shape[0]  # model(x=numeric, codes=categorical): a table's inputs
    if pre.style != "single":
        raise DataError(f"model {name!r} takes one input, got {len(pre.inputs)} ({pre.style}): "
                        "pass one array, or a model of your own")
    shape = pre.inputs[0].shape
    if len(shape) != 1:
        raise DataError(f"model {name!r} takes (rows, features) input, got per-sample shape "
                        f"{tuple(shape)}: flatten it (x.reshape(len(x), -1)) or pass a model of your own")
    return shape[0]


def family(model: Any) -> str | None:
    """The built-in family ``model`` names or is (a spec dict or name, or an nnfit model
    instance), None for a user's module."""
    if isinstance(model, nn.Module):
        model = model_spec(model) or {}
    name = model if isinstance(model, str) else model.get("name") if isinstance(model, Mapping) else None
    return name if isinstance(name, str) else None


def built_in(model: Any) -> bool:
    """Whether ``model`` is a built-in model (a spec dict or name, or an nnfit MLP or
    ResidualMLP instance), not a user's module."""
    if isinstance(model, nn.Module):
        model = model_spec(model) or {}
    name = model if isinstance(model, str) else model.get("name") if isinstance(model, Mapping) else None
    return name in BUILT_IN_STACKS
