"""A saved model's directory, and a run directory's root, which is one: ``model.safetensors``,
``model.json`` and, in a run, ``config.json``, all under one ``manifest.json``.

* :func:`read_model_dir` verifies every file against the manifest, checks ``model.json`` (and
  ``config.json``) against their schemas and the weights' safetensors header against the spec,
  all before the model is built: loading never allocates more than the saved weights' size
  (plus small temporaries) until everything has checked out.
* :func:`write_run_config` writes a run's ``config.json`` with the manifest covering it (and
  the run's model files, when it has them); :func:`run_files` gives what the final save writes.
* :func:`resume_config` is the configuration ``nnfit train --resume`` starts from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoint import FORMAT_VERSION, STATE_JSON, load_state_dict_strict, tensors_from_bytes
from ..errors import CheckpointError
from ..files import (
    MANIFEST,
    atomic_write_bytes,
    manifest_bytes,
    parse_json,
    read_bundle,
    read_manifest,
    sha256_bytes,
)
from .checkpoints import CHECKPOINTS, committed
from .validate import CONFIG, LEARNER, validate
from .weights import check_entries, check_finite_bytes, model_wants, read_header

MODEL_FILE = "model.safetensors"
META_FILE = "model.json"
CONFIG_FILE = "config.json"
KIND = "model"


def config_bytes(config: dict[str, Any]) -> bytes:
    """``config.json``'s bytes."""
    return (json.dumps(config, indent=2) + "\n").encode("utf-8")


def read_model_dir(path: Path, model: nn.Module | None) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a saved model or run directory (on the CPU) and its checked ``model.json``.

    Args:
        path: the directory.
        model: the user's module for a model without a spec; None builds it from the spec.

    Raises:
        CheckpointError: naming the file and the field or tensor at fault.
    """
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a run or model directory")
    if MODEL_FILE not in read_manifest(path)["files"] and (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path}: no model saved yet (the run has not finished: "
                              f"resume it with nnfit train --resume {path})")
    files = read_bundle(path, KIND, (MODEL_FILE, META_FILE))
    return model_from_files(files, path, model)


def model_from_files(files: dict[str, bytes], path: Path,
                     model: nn.Module | None) -> tuple[nn.Module, dict[str, Any]]:
    """The model (on the CPU) and checked ``model.json`` of a model bundle's bytes, checked as
    :func:`read_model_dir` checks a directory's (which reads them, then calls this); for bytes
    kept elsewhere, e.g. a pickled scikit-learn estimator's state (:mod:`nnfit.sklearn`).

    Args:
        files: ``model.safetensors`` and ``model.json`` (``config.json`` too, in a run), as
            bytes; the weights' entry is taken out of it, so their bytes are freed once loaded.
        path: where they came from, to name in errors (``path / "model.json"``...).
        model: the user's module for a model without a spec; None builds it from the spec.

    Raises:
        CheckpointError: a missing file, or naming the file and the field or tensor at fault.
    """
    from ..models import build_model, state_shapes

    missing = [name for name in (MODEL_FILE, META_FILE) if name not in files]
    if missing:
        raise CheckpointError(f"{path}: no {missing[0]}")
    meta = parse_json(files[META_FILE], path / META_FILE)
    if not isinstance(meta, dict) or "task" not in meta:
        raise CheckpointError(f"{path / META_FILE}: not an nnfit model file")
    fmt = meta.get("format", 0)
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer nnfit (format {fmt!r}); upgrade nnfit")
    validate(meta, LEARNER, str(path / META_FILE))
    if CONFIG_FILE in files:
        validate(parse_json(files[CONFIG_FILE], path / CONFIG_FILE), CONFIG, str(path / CONFIG_FILE))
    if model is None and meta["spec"] is None:
        raise CheckpointError(f"{path}: the model is a user-defined module, which only Python can "
                              "rebuild: nnfit.load(path, model=YourModule(...))")
    source, data = str(path / MODEL_FILE), files.pop(MODEL_FILE)
    header = read_header(data, source)
    if model is None:
        state = state_shapes(meta["spec"])  # checked by the schema: cannot fail
        wants = model_wants(state, (k for k, s in state.items() if s.parameter))
    else:
        wants = model_wants(model.state_dict(), (n for n, _ in model.named_parameters()))
    check_entries(header, wants, source, what="weights do not fit the model", vs="model")
    check_finite_bytes(data, header, wants, source)
    # Everything checked out: only now is the model built, as large as its saved weights.
    if model is None:
        model = build_model(meta["spec"], max_params=sum(w.numel for w in state.values()))
    tensors, _ = tensors_from_bytes(data, source)
    del data
    load_state_dict_strict(model, tensors, source)
    return model, meta


def run_files(model_files: dict[str, bytes], config: dict[str, Any]) -> dict[str, bytes]:
    """The files of a run's root bundle: the model's and ``config.json``."""
    return {**model_files, CONFIG_FILE: config_bytes(config)}


def write_run_config(run_dir: str | Path, config: dict[str, Any]) -> None:
    """Write ``config.json`` into a run and the manifest that covers it, keeping the run's
    model files (of an earlier segment of a resumed run) in the manifest when they verify.

    Nothing is written when ``config.json`` already holds these bytes under a manifest that
    covers it (a resume with the same settings).
    """
    d = Path(run_dir)
    new = config_bytes(config)
    files = _verified(d)
    if files.get(CONFIG_FILE) == new:
        return
    files[CONFIG_FILE] = new
    atomic_write_bytes(d / CONFIG_FILE, new)
    atomic_write_bytes(d / MANIFEST, manifest_bytes(KIND, files))


def _verified(directory: Path) -> dict[str, bytes]:
    """The files of a model bundle that match its manifest (none without a valid one): a
    damaged file drops out, the others stay covered."""
    try:
        body = read_manifest(directory)
    except CheckpointError:
        return {}
    if body.get("kind") != KIND:
        return {}
    out = {}
    for name, entry in body["files"].items():
        if name not in (MODEL_FILE, META_FILE, CONFIG_FILE):  # no other name is a run's
            continue
        try:
            data = (directory / name).read_bytes()
        except OSError:
            continue
        if isinstance(entry, dict) and entry.get("sha256") == sha256_bytes(data):
            out[name] = data
    return out


def resume_config(run_dir: str | Path) -> dict[str, Any]:
    """The settings ``nnfit train --resume RUN`` starts from.

    ``config.json`` when the run's manifest covers it and it matches; otherwise (a run killed
    before its first save completed, a run of an older nnfit) the config saved in the newest
    checkpoint whose ``state.json`` verifies. Either is checked against the config schema.

    Raises:
        CheckpointError: no checkpoint to resume from, or a config that is not valid, naming
            the file and the field.
    """
    d = Path(run_dir)
    if not d.is_dir():
        raise CheckpointError(f"{d}: no such run directory")
    try:
        entry = read_manifest(d)["files"].get(CONFIG_FILE)
    except CheckpointError:
        entry = None
    data = (d / CONFIG_FILE).read_bytes() if entry is not None and (d / CONFIG_FILE).is_file() else None
    if isinstance(entry, dict) and data is not None and entry.get("sha256") == sha256_bytes(data):
        config = parse_json(data, d / CONFIG_FILE)
        _refuse_api_run(config, d)
        validate(config, CONFIG, str(d / CONFIG_FILE))
        return config
    return _checkpoint_config(d)


def _refuse_api_run(config: Any, run_dir: Path) -> None:
    """A run of ``fit(run_dir=...)`` records its TrainConfig and the model's spec, not a data
    source: only the Python call that has the data can go on with it."""
    if isinstance(config, dict) and isinstance(config.get("model"), dict):
        raise CheckpointError(f"{run_dir}: written by the Python API (nnfit.fit), which holds its "
                              "data; resume it there with fit(..., run_dir=RUN, resume=RUN)")


def _checkpoint_config(run_dir: Path) -> dict[str, Any]:
    """The ``config`` of the newest checkpoint whose ``state.json`` verifies (only that file is
    read: the resume reads the whole checkpoint next)."""
    names = committed(run_dir)
    if not names:
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from")
    for name in reversed(names):
        ck = run_dir / CHECKPOINTS / name
        try:
            entry = read_manifest(ck)["files"].get(STATE_JSON)
            data = (ck / STATE_JSON).read_bytes()
        except (CheckpointError, OSError):
            continue
        if not isinstance(entry, dict) or entry.get("sha256") != sha256_bytes(data):
            continue  # damaged: the resume skips it too, with a warning
        # Verified: its content is as written, and refused (as the resume refuses it) when invalid.
        meta = parse_json(data, ck / STATE_JSON)
        if not isinstance(meta, dict) or "config" not in meta:
            raise CheckpointError(f"{ck / STATE_JSON}: not an nnfit checkpoint")
        _refuse_api_run(meta["config"], run_dir)
        validate(meta["config"], CONFIG, str(ck / STATE_JSON), "config")
        return meta["config"]
    raise CheckpointError(f"{run_dir}: no valid checkpoint to resume from")
