"""Weights and checkpoints: safetensors for tensors, JSON for everything else, never pickle.

* A **weights file** is a safetensors file of a ``state_dict``.
* A **checkpoint** is a bundle directory (see :mod:`nnfit.files`): ``state.safetensors``
  (model, optimizer, RNG and loop tensors), ``state.json`` (epoch, step, history, scheduler,
  config, task, preprocessing) and ``manifest.json`` (SHA-256 of both). The directory is built
  under a temporary name and committed with one rename.

Nothing is ever unpickled: ``.pt``/``.pth`` imports go through ``torch.load`` with
``weights_only=True`` passed explicitly (the environment variable that turns the protection
off has no effect on an explicit argument) and must hold only tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import CheckpointError
from .files import (  # noqa: F401  (re-exported: the writers everyone uses)
    FORMAT_VERSION,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    parse_json,
    read_bundle,
    read_json,
    write_bundle,
)

META_KEY = "nnfit"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


def _cpu_tensors(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    # safetensors refuses tensors sharing storage (tied weights): give each its own copy.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def tensors_to_bytes(tensors: dict[str, Tensor], meta: dict[str, Any] | None = None) -> bytes:
    """``tensors`` (and JSON ``meta`` in the header) as safetensors bytes."""
    from safetensors.torch import save

    header = {META_KEY: json.dumps(meta)} if meta is not None else None
    return save(_cpu_tensors(tensors), metadata=header)


def tensors_from_bytes(data: bytes, source: str) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """Parse safetensors bytes; any failure is a CheckpointError naming ``source``."""
    from safetensors.torch import load

    try:
        tensors = load(data)
        meta = _header_meta(data)
    except Exception as e:  # any parse failure means "not a readable safetensors file"
        raise CheckpointError(f"{source}: not a readable safetensors file ({type(e).__name__})") from None
    return tensors, meta


def _header_meta(data: bytes) -> dict[str, Any] | None:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n]).get("__metadata__") or {}
    return json.loads(header[META_KEY]) if META_KEY in header else None


def save_tensors(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any] | None = None) -> None:
    """Atomically write ``tensors`` (and JSON ``meta`` in the header) as a safetensors file."""
    atomic_write_bytes(path, tensors_to_bytes(tensors, meta))


def load_tensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """Read a safetensors file: its tensors (on CPU) and the JSON meta, if any.

    Raises:
        CheckpointError: a missing file or one that is not a valid safetensors file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: file not found")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{p}: unreadable ({e.strerror})") from None
    return tensors_from_bytes(data, str(p))


def save_checkpoint(directory: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Commit a checkpoint bundle at ``directory`` (which must not exist yet)."""
    files = {STATE_TENSORS: tensors_to_bytes(tensors),
             STATE_JSON: (json.dumps(meta, indent=1) + "\n").encode("utf-8")}
    return write_bundle(directory, "checkpoint", files)


def load_checkpoint(directory: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Verify and read a checkpoint bundle: ``(tensors, meta)``.

    Raises:
        CheckpointError: naming the damaged, missing or foreign file.
    """
    d = Path(directory)
    return parse_checkpoint(read_bundle(d, "checkpoint", (STATE_TENSORS, STATE_JSON)), d)


def parse_checkpoint(files: dict[str, bytes], directory: Path,
                     required: tuple[str, ...] = ()) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and ``state.json`` of a checkpoint's verified files.

    Args:
        files: what :func:`read_bundle` read from ``directory``.
        directory: the checkpoint, named in messages.
        required: keys ``state.json`` must hold (a run's checkpoint holds ``learner`` and
            ``optimizer``).

    Raises:
        CheckpointError: naming the file that does not parse, or a ``state.json`` that is not
            an nnfit checkpoint's object (null, a list, a number, one without ``required``).
    """
    tensors, _ = tensors_from_bytes(files[STATE_TENSORS], str(directory / STATE_TENSORS))
    meta = parse_json(files[STATE_JSON], directory / STATE_JSON)
    if not isinstance(meta, dict) or any(k not in meta for k in required):
        raise CheckpointError(f"{directory / STATE_JSON}: not an nnfit checkpoint")
    return tensors, meta


def save_weights(model: nn.Module | dict[str, Tensor], path: str | Path) -> None:
    """Save a model's ``state_dict`` (parameters and buffers) as a safetensors file.

    Safetensors whatever the name (``w.pth`` too: no pickle is ever written);
    :func:`load_weights` tells the format from the content, so every name loads back.

    Raises:
        CheckpointError: ``path`` is a directory.
        OSError: naming ``path``: its directory cannot be made or written, a full disk.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_weights(torch.nn.Linear(2, 1), pathlib.Path(d) / "w.safetensors")
    """
    sd = model.state_dict() if isinstance(model, nn.Module) else model
    if Path(path).is_dir():  # else the rename onto it fails with EISDIR/EBUSY ('.', '/')
        raise CheckpointError(f"{path}: is a directory; name the weights file to write "
                              f"(e.g. {Path(path) / 'weights.safetensors'})")
    save_tensors(path, sd, {"format": FORMAT_VERSION, "kind": "weights"})


def load_state_dict_strict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """``model.load_state_dict(state)`` with every mismatch named in one line.

    Raises:
        CheckpointError: missing keys, unexpected keys or shape differences; nothing is
            loaded in that case.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = sorted(k for k in state if k not in own)
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:6])}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:6])}")
        if shapes:
            parts.append(f"shape mismatch: {'; '.join(shapes[:4])}")
        raise CheckpointError(f"{source}: weights do not fit the model ({'; '.join(parts)})")
    model.load_state_dict(state, strict=True)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights into ``model`` (strictly) and return the model.

    The content decides the format, never the name, so whatever :func:`save_weights` wrote
    loads back: a safetensors file, or a state_dict written by ``torch.save`` (a zip archive,
    or torch's older pickle format), which is read with ``torch.load(weights_only=True)`` and
    must hold only tensors.

    Raises:
        CheckpointError: a missing, unreadable or refused file, one in neither format, or
            weights that do not fit (:func:`nnfit.io.weights.check_state_dict`: missing or
            unexpected tensors, other shapes or dtypes, NaN or infinite parameters, NaN
            buffers, sparse, nested or meta tensors), naming the tensor; nothing is loaded then.
    """
    from .io.weights import check_state_dict

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: file not found")
    try:
        with open(p, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise CheckpointError(f"{p}: unreadable ({e.strerror})") from None
    # torch.save: a zip archive, or (older format) a pickle of protocol 2 to 5; safetensors:
    # an 8-byte header length, then the JSON header.
    if head.startswith((b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")):
        tensors = legacy_state_dict(p)
    elif head[8:9] != b"{":
        raise CheckpointError(f"{p}: neither a safetensors file nor a torch.save state_dict")
    else:
        tensors, _ = load_tensors(p)
    check_state_dict(tensors, model, str(p))  # nothing is loaded until every tensor checked out
    model.load_state_dict(tensors, strict=True)
    return model


def legacy_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a ``.pt``/``.pth`` state_dict written by ``torch.save`` without unpickling code.

    Uses ``torch.load(weights_only=True)`` passed explicitly, so the environment variable that
    turns the protection off has no effect, and accepts only a flat mapping of tensors.
    """
    try:
        # An open file, not the name: torch >= 2.10 reads any name ending in .safetensors as
        # safetensors, whatever it holds.
        with open(path, "rb") as f:
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable ({e.strerror})") from None
    except Exception as e:  # a refused pickle, a truncated file, not a torch file at all
        raise CheckpointError(f"{path}: refused to load ({type(e).__name__})") from None
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state_dict of tensors")
    return {str(k): v for k, v in obj.items()}


# ----------------------------------------------------------------------------------------------
# Optimizer state <-> (tensors, JSON)


def optimizer_to_parts(opt: torch.optim.Optimizer, prefix: str = "optimizer/") -> tuple[dict, dict]:
    """Split ``opt.state_dict()`` into tensors and JSON-able values."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{prefix}{idx}/{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_parts(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict,
                         prefix: str = "optimizer/") -> None:
    """Load state split by :func:`optimizer_to_parts` back into ``opt``."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix):
            idx, name = key[len(prefix):].split("/", 1)
            state.setdefault(int(idx), {})[name] = v
    for idx, st in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    # How the steps run (fused, capturable, ...) is this run's choice, e.g. after a resume on
    # another device; the saved groups give the hyperparameters. A key the save lacks (a
    # scheduler's, after a --force-resume that changed it) keeps this run's value.
    how = ("fused", "capturable", "foreach", "differentiable")
    groups = [{**{k: v for k, v in cur.items() if k != "params"}, **saved,
               **{k: cur[k] for k in how if k in cur}}
              for saved, cur in zip(meta["param_groups"], opt.param_groups, strict=False)]
    opt.load_state_dict({"state": state, "param_groups": groups})


def split_prefix(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
