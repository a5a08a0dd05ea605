"""Tensors read back, checked before anything uses them.

* :func:`read_header` parses a safetensors header (names, dtypes, shapes, byte ranges)
  without materialising a tensor, so a saved model's weights are checked against its spec
  before the model is built (:func:`check_entries`, :func:`check_finite_bytes`).
* :func:`check_resume_tensors` checks a checkpoint's tensors against what they are loaded
  into: the model (``model/``, ``best/``), the optimizer (``optimizer/``, tables in
  :mod:`nnfit.io.optim_state`), the random generators (``rng/``, ``rng_epoch/``) and the loop
  (``loop/``): every key present, no other key, shapes, dtypes, and values (finite parameters
  and optimizer state, non-negative second moments, generator states the generators accept).

Every problem is a :class:`~nnfit.errors.CheckpointError` naming the file and the tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import CheckpointError, printable
from ..files import parse_json

# safetensors dtype names -> torch dtypes (those nnfit or a user's model may save)
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U8": torch.uint8, "BOOL": torch.bool}
MAX_HEADER = 100 << 20  # bytes of JSON header; nnfit's are a few KB per thousand tensors


@dataclass(frozen=True)
class Entry:
    """One tensor as a safetensors header describes it: dtype, shape, byte range in the file."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int


def read_header(data: bytes, source: str) -> dict[str, Entry]:
    """The tensors a safetensors file holds, from its header alone.

    Raises:
        CheckpointError: not a well-formed safetensors file (header, dtypes, shapes, byte
            ranges that do not add up or run past the end).
    """
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{source}: not a readable safetensors file ({why})")

    if len(data) < 8:
        raise bad("too short")
    n = int.from_bytes(data[:8], "little")
    if n > min(MAX_HEADER, len(data) - 8):
        raise bad("header length past the end")
    try:
        header = parse_json(data[8:8 + n], source)
    except CheckpointError:
        raise bad("header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("header is not an object")
    out, base = {}, 8 + n
    for name, e in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(e, dict) and e.get("dtype") in DTYPES and isinstance(e.get("shape"), list)
              and all(type(d) is int and 0 <= d < 2**62 for d in e["shape"])
              and isinstance(e.get("data_offsets"), list) and len(e["data_offsets"]) == 2
              and all(type(o) is int for o in e["data_offsets"]))
        if not ok:
            raise bad(f"tensor {name!r} is described wrongly")
        dtype, (a, b) = DTYPES[e["dtype"]], e["data_offsets"]
        size = math.prod(e["shape"]) * dtype.itemsize
        if not 0 <= a <= b or b - a != size or base + b > len(data):
            raise bad(f"tensor {name!r} has wrong byte offsets")
        out[name] = Entry(dtype, tuple(e["shape"]), base + a, base + b)
    return out


@dataclass(frozen=True)
class Want:
    """What one tensor must be.

    Attributes:
        shape: its shape.
        dtypes: the dtypes it may have.
        finite: no NaN or infinity (parameters, optimizer state, the running loss).
        no_nan: no NaN (a buffer: infinities are legal in an attention mask).
        nonneg: no negative value (second moments and running variances, whose square root
            is taken; counters).
        optional: may be absent (the CUDA generator of a run that trained on a GPU).
        value: a check of the values, returning what is wrong or None (generator states).
    """

    shape: tuple[int, ...]
    dtypes: tuple[torch.dtype, ...]
    finite: bool = False
    no_nan: bool = False
    nonneg: bool = False
    optional: bool = False
    value: Callable[[Tensor], str | None] | None = None


def scalar_dtypes() -> tuple[torch.dtype, ...]:
    """The dtypes of the loop's and the optimizers' scalar state (a step counter, the running
    loss): float32, or float64 too when that is torch's default dtype."""
    return (torch.float32, torch.float64) if torch.get_default_dtype() == torch.float64 else (torch.float32,)


def like(t: Tensor | Any, finite: bool = False, **kw: Any) -> Want:
    """A tensor shaped and typed like ``t`` (a tensor, or a :class:`~nnfit.models.state.Slot`)."""
    return Want(tuple(t.shape), (t.dtype,), finite=finite, **kw)


# Buffers whose values are never negative, by the last part of their name: a variance (its
# square root normalises every later prediction). A later layer with such a buffer adds it here.
NONNEG_BUFFERS = ("running_var",)


def model_wants(state: Mapping[str, Any], params: Iterable[str]) -> dict[str, Want]:
    """The tensors of a model's ``state_dict`` (live tensors or analytic slots): parameters
    finite; buffers never NaN (infinities are legal: an attention mask), variances never
    negative, and a scalar integer buffer is a counter (``num_batches_tracked``): never negative."""
    params = set(params)

    def want(k: str, v: Any) -> Want:
        if k in params:
            return like(v, finite=True)
        counter = not v.dtype.is_floating_point and v.dtype != torch.bool and len(v.shape) == 0
        return like(v, no_nan=True, nonneg=counter or k.rsplit(".", 1)[-1] in NONNEG_BUFFERS)

    return {k: want(k, v) for k, v in state.items()}


def check_entries(found: Mapping[str, Any], wants: Mapping[str, Want], source: str,
                  prefix: str = "", what: str = "tensors do not fit", vs: str = "expected") -> None:
    """Keys, shapes and dtypes of ``found`` (tensors or header entries) against ``wants``.

    Args:
        found, wants: by name, without ``prefix``.
        source: the file, named in the message.
        prefix: of the names as the file holds them (``optimizer/``).
        what, vs: the message's wording (``weights do not fit the model``, ``model``).

    Raises:
        CheckpointError: ``SOURCE: WHAT (missing keys: ...; unexpected keys: ...; shape
            mismatch: NAME (2, 3) vs expected (3, 2); dtype mismatch: ...)``, every kind of
            problem named (the first few of each).
    """
    missing = [prefix + k for k, w in wants.items() if k not in found and not w.optional]
    unexpected = sorted(printable(prefix + k) for k in found if k not in wants)
    both = [(k, found[k], w) for k, w in wants.items() if k in found]  # in the model's order
    shapes = [f"{prefix}{k} {tuple(t.shape)} vs {vs} {w.shape}" for k, t, w in both
              if tuple(t.shape) != w.shape]
    dtypes = [f"{prefix}{k} {_name(t.dtype)} vs {vs} {' or '.join(_name(d) for d in w.dtypes)}"
              for k, t, w in both if t.dtype not in w.dtypes]
    parts = [f"{label}: {', '.join(items[:6])}" for label, items in (
        ("missing keys", missing), ("unexpected keys", unexpected))
        if items] + [f"{label}: {'; '.join(items[:4])}" for label, items in (
            ("shape mismatch", shapes), ("dtype mismatch", dtypes)) if items]
    if parts:
        raise CheckpointError(f"{source}: {what} ({'; '.join(parts)})")


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_values(tensors: Mapping[str, Tensor], wants: Mapping[str, Want], source: str,
                 prefix: str = "") -> None:
    """The values of materialised tensors (already of the right shapes and dtypes)."""
    for name, t in tensors.items():
        want = wants[name]
        problem = None
        if want.finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            problem = "holds NaN or infinite values"
        elif want.no_nan and t.is_floating_point() and bool(torch.isnan(t).any()):
            problem = "holds NaN values"
        elif want.nonneg and t.dtype != torch.bool and bool((t < 0).any()):
            problem = "holds negative values"
        elif want.value is not None:
            problem = want.value(t)
        if problem:
            raise CheckpointError(f"{source}: tensor {prefix}{name} {problem}")


_NUMPY = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16,
          torch.bfloat16: np.uint16, torch.int64: np.int64, torch.int32: np.int32,
          torch.int16: np.int16, torch.int8: np.int8}
CHUNK = 1 << 22  # elements per step: bounded temporaries, whatever the tensor's size


def _chunk_problem(chunk: np.ndarray, dtype: torch.dtype, want: Want) -> str | None:
    """What ``want`` refuses in a chunk of a tensor's values (bfloat16 as raw bits: NumPy has
    no bfloat16; every exponent bit set is NaN or infinite, with a mantissa bit NaN)."""
    bf16 = dtype == torch.bfloat16
    if dtype.is_floating_point and want.finite:
        if ((chunk & 0x7F80) == 0x7F80).any() if bf16 else not np.isfinite(chunk).all():
            return "holds NaN or infinite values"
    elif dtype.is_floating_point and want.no_nan:
        if ((chunk & 0x7FFF) > 0x7F80).any() if bf16 else np.isnan(chunk).any():
            return "holds NaN values"
    if want.nonneg:
        negative = ((chunk & 0x8000) != 0) & ((chunk & 0x7FFF) != 0) if bf16 else chunk < 0
        if negative.any():
            return "holds negative values"
    return None


def check_finite_bytes(data: bytes, header: Mapping[str, Entry], wants: Mapping[str, Want],
                       source: str) -> None:
    """The values ``wants`` asks for (finite, no NaN, non-negative) of every tensor, read
    straight from the file's bytes (nothing materialised: a few MB of temporaries at most)."""
    for name, e in header.items():
        want = wants[name]
        if not (want.finite or want.no_nan or want.nonneg) or e.dtype not in _NUMPY:
            continue
        dt = _NUMPY[e.dtype]
        view = np.frombuffer(data, dt, (e.end - e.start) // np.dtype(dt).itemsize, e.start)
        for i in range(0, len(view), CHUNK):
            problem = _chunk_problem(view[i:i + CHUNK], e.dtype, want)
            if problem:
                raise CheckpointError(f"{source}: tensor {name} {problem}")


# ---------------------------------------------------------------------------- random states
def _generator_state(t: Tensor) -> str | None:
    try:
        torch.Generator().set_state(t)
    except RuntimeError:
        return "is not a valid generator state"
    return None


def _words(t: Tensor, n: int) -> bool:
    return bool(((t[:n] >= 0) & (t[:n] < 2**32)).all())


def _mt_degenerate(key: Tensor) -> bool:
    """An MT19937 key (624 words) whose state bits are all zero: only the top bit of the first
    word counts. The generator then yields zeros forever (its seeding never makes one)."""
    return int(key[0]) & 0x80000000 == 0 and not bool(key[1:624].any())


def _numpy_state(t: Tensor) -> str | None:
    # MT19937: 624 32-bit words, the position (0..624), has_gauss (0/1); NumPy does not check
    # the position, and one past the key reads memory it does not own.
    ok = _words(t, 624) and 0 <= int(t[624]) <= 624 and int(t[625]) in (0, 1) and not _mt_degenerate(t)
    return None if ok else "is not a valid NumPy MT19937 state"


def _python_state(t: Tensor) -> str | None:
    ok = int(t[0]) == 3 and _words(t[1:], 624) and 0 <= int(t[625]) <= 624 and not _mt_degenerate(t[1:])
    return None if ok else "is not a valid Python random state"


def _python_gauss(t: Tensor) -> str | None:
    ok = float(t[0]) in (0.0, 1.0) and math.isfinite(float(t[1]))
    return None if ok else "is not a valid Python gauss state"


def _finite(t: Tensor) -> str | None:
    return None if bool(torch.isfinite(t).all()) else "holds NaN or infinite values"


# Value checks of each generator state rng.capture() saves, by key (loaderN: a user's
# DataLoader generators). A new generator kind adds its check here.
RNG_VALUES: dict[str, Callable[[Tensor], str | None]] = {
    "torch": _generator_state, "data": _generator_state, "loader": _generator_state,
    "numpy": _numpy_state, "numpy_gauss": _finite, "python": _python_state,
    "python_gauss": _python_gauss,
}


def rng_wants(live: Mapping[str, Tensor], cuda: torch.device | None) -> dict[str, Want]:
    """The generator states a checkpoint must hold: shaped like this process's (``live``,
    from :func:`nnfit.rng.capture`), values the generators accept; the CUDA state only
    matters (and is checked) when resuming on CUDA."""
    wants = {k: like(v, value=RNG_VALUES[k.rstrip("0123456789")]) for k, v in live.items() if k != "cuda"}

    def cuda_state(t: Tensor) -> str | None:
        if cuda is None:
            return None
        try:
            torch.Generator(device=cuda).set_state(t)
        except RuntimeError:
            return "is not a valid CUDA generator state"
        return None

    state = torch.cuda.get_rng_state(cuda) if cuda is not None else torch.zeros(16, dtype=torch.uint8)
    wants["cuda"] = like(state, optional=True, value=cuda_state)
    return wants


# ---------------------------------------------------------------------------- a weights file
def check_state_dict(state: Mapping[str, Tensor], model: torch.nn.Module, source: str) -> None:
    """A ``state_dict`` read from a file, against the model it is about to be loaded into.

    Every tensor must be dense and hold data (not sparse, nested or on the meta device), the
    keys, shapes and dtypes must be the model's exactly (nothing is cast silently), and the
    values what :func:`model_wants` asks of a saved model's (``Learner.load`` checks the same):
    parameters finite, buffers free of NaN (infinities are allowed there: an attention mask),
    variances and counters never negative.

    Args:
        state: the tensors read, by name.
        model: the module they are for.
        source: the file, named in messages.

    Raises:
        CheckpointError: naming the file and the tensor.
    """
    for name, t in state.items():
        layout = str(t.layout).removeprefix("torch.")
        kind = ("a nested tensor" if t.is_nested
                else f"not a dense tensor ({layout})" if t.layout != torch.strided
                else "on the meta device, with no data" if t.is_meta else None)
        if kind:
            raise CheckpointError(f"{source}: tensor {printable(name)} is {kind}")
    wants = model_wants(model.state_dict(), (n for n, _ in model.named_parameters()))
    check_entries(state, wants, source, what="weights do not fit the model", vs="model")
    check_values(state, wants, source)


def check_spec_fits(tensors: Mapping[str, Tensor], spec: Mapping[str, Any], source: str) -> None:
    """A checkpoint's ``model/`` tensors against the model ``spec`` asks for (names, shapes,
    dtypes), from the spec's analytic state: a resume asking for another model is refused
    before that model is built.

    Raises:
        ConfigError: an invalid spec (as ``build_model`` would refuse it).
        CheckpointError: ``SOURCE: weights do not fit the model asked for (...)``.
    """
    from ..models import state_shapes

    found = {k.removeprefix("model/"): t for k, t in tensors.items() if k.startswith("model/")}
    check_entries(found, model_wants(state_shapes(spec), ()), source, "model/",
                  "weights do not fit the model asked for", "model")
