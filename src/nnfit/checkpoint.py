"""Weights and checkpoints: safetensors for tensors, JSON for everything else, never pickle.

* A **weights file** is a safetensors file of a ``state_dict``.
* A **checkpoint** is one safetensors file: model, optimizer and RNG tensors, with every other
  piece of state (epoch, step, history, scheduler, config, task, preprocessing) as JSON in the
  file's header metadata. One file means one atomic rename commits all of it.

Every write goes to a temporary file in the target directory, is flushed and fsynced, then
renamed over the destination, so a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import CheckpointError

FORMAT_VERSION = 1
META_KEY = "nnfit"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _cpu_tensors(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    # safetensors refuses tensors sharing storage (tied weights): give each its own copy.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def save_tensors(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any] | None = None) -> None:
    """Atomically write ``tensors`` (and JSON ``meta`` in the header) as a safetensors file."""
    from safetensors.torch import save

    header = {META_KEY: json.dumps(meta)} if meta is not None else None
    atomic_write_bytes(path, save(_cpu_tensors(tensors), metadata=header))


def load_tensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """Read a safetensors file: its tensors (on CPU) and the JSON meta, if any.

    Raises:
        CheckpointError: a missing file or one that is not a valid safetensors file.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: file not found")
    try:
        with safe_open(str(p), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(header[META_KEY]) if META_KEY in header else None
    except Exception as e:  # any parse failure means "not a readable safetensors file"
        raise CheckpointError(f"{p}: not a readable safetensors file ({type(e).__name__})") from None
    return tensors, meta


def save_weights(model: nn.Module | dict[str, Tensor], path: str | Path) -> None:
    """Save a model's ``state_dict`` (parameters and buffers) as a safetensors file.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_weights(torch.nn.Linear(2, 1), pathlib.Path(d) / "w.safetensors")
    """
    sd = model.state_dict() if isinstance(model, nn.Module) else model
    save_tensors(path, sd, {"format": FORMAT_VERSION, "kind": "weights"})


def load_state_dict_strict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """``model.load_state_dict(state)`` with every mismatch named in one line.

    Raises:
        CheckpointError: missing keys, unexpected keys or shape differences; nothing is
            loaded in that case.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
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

    ``path`` is a safetensors file, or a ``.pt``/``.pth`` state_dict written by
    ``torch.save``, which is read with ``torch.load(weights_only=True)`` and must hold only
    tensors.
    """
    if Path(path).suffix.lower() in (".pt", ".pth"):
        load_state_dict_strict(model, legacy_state_dict(path), str(path))
        return model
    tensors, _ = load_tensors(path)
    load_state_dict_strict(model, tensors, str(path))
    return model


def legacy_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a ``.pt``/``.pth`` state_dict written by ``torch.save`` without unpickling code.

    Uses ``torch.load(weights_only=True)`` passed explicitly, so the environment variable that
    turns the protection off has no effect, and accepts only a flat mapping of tensors.
    """
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
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
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def split_prefix(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def read_json(path: str | Path, what: str = "file") -> Any:
    """Load a JSON file, turning every failure into a CheckpointError naming it."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: {what} not found")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p}: not valid JSON ({e.__class__.__name__})") from None
