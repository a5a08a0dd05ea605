"""Numeric precision of a fit: ``fp32``, ``tf32``, ``bf16`` or ``fp16``, decided once per trainer.

* ``fp32`` (the default): nothing changes anywhere; the bit-for-bit promises (parity with a
  hand-written loop, exact resume) are made for it.
* ``tf32``: CUDA matmuls and cuDNN convolutions in TensorFloat-32 for the fit (its
  validation included), the previous settings restored when it ends. The CPU has no TF32: a
  warning says so and the fit runs in fp32.
* ``bf16``: forward and loss under ``torch.autocast(dtype=torch.bfloat16)`` in training,
  validation, evaluation and prediction; no loss scaling (bfloat16 has float32's range).
  Works on the CPU and on CUDA.
* ``fp16``: the same with float16, plus a :class:`torch.amp.GradScaler` (CUDA only): the
  backward runs on the scaled loss, gradients are unscaled before clipping, a step whose
  gradients are inf/NaN is skipped by the scaler (the weights stay, the scale halves) and the
  scale grows again after 2000 clean steps. The scaler's state is checkpointed, so a resume is
  exact.

The loop asks this module at fixed places: :meth:`Precision.autocast` around forward and loss,
:meth:`Precision.backward`, :meth:`Precision.step` (fp16 only), :meth:`Precision.fit_scope`
around the fit, :meth:`Precision.infer` for evaluation and prediction, and
:meth:`Precision.check_scale` at the guard's epoch-end check.

The non-finite guard under fp16: a non-finite *gradient* is a skipped step, not an error;
the *loss* is computed before scaling, so a non-finite loss is the model's and stops the run
as under fp32. A run whose steps keep being skipped stops at the end of the epoch in which
the scale fell below :data:`MIN_SCALE` (40 halvings from the start when every step is
skipped): there every gradient below 1 underflows to zero in float16, so no step can succeed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from .errors import ConfigError, TrainingError, warn
from .outputs import map_leaves

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# float16's smallest step (its least subnormal): with a loss scale below it, every gradient
# below 1 flushes to zero in the float16 backward, so the scaler can never step again.
MIN_SCALE = 2.0 ** -24
GROWTH_INTERVAL = 2000  # torch's default: clean steps before the scale doubles
_NO_CONTEXT = contextlib.nullcontext()  # reusable: fp32 and tf32 add nothing to a step


def check_precision(name: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run (at start-up, before any data is read).

    Raises:
        ConfigError: ``fp16`` on a device other than CUDA.
    """
    if name == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision fp16 needs CUDA (its gradient scaler), and the device is "
                          f"{device.type}: use bf16 or fp32 (--precision bf16)")


def resolve_precision(name: str, device: torch.device) -> Precision:
    """The :class:`Precision` of a trainer on ``device``: refused where it cannot run, and
    ``tf32`` on the CPU (which has no TF32) said once, then run as fp32.

    Raises:
        ConfigError: see :func:`check_precision`.

    Example:
        >>> resolve_precision("bf16", torch.device("cpu")).dtype
        torch.bfloat16
    """
    check_precision(name, device)
    if name == "tf32" and device.type != "cuda":
        warn(f"precision tf32 has no effect on the {device.type} (TF32 is a CUDA matmul mode): "
             "training in fp32")
    return Precision(name, device)


class Precision:
    """How one fit computes: autocast dtype, TF32 flags and the fp16 gradient scaler.

    Built without checks (a test may build an fp16 one on the CPU, where torch has a
    GradScaler too); :func:`resolve_precision` is the checked entry.

    Args:
        name: "fp32", "tf32", "bf16" or "fp16".
        device: the device the fit runs on.

    Attributes:
        dtype: the autocast dtype, or None (fp32, tf32).
        scaler: the GradScaler (fp16), or None.
        tf32: whether the fit turns TF32 on (tf32 on CUDA).
        skipped_before: steps skipped by a scaler before the checkpoint this fit resumed from.
    """

    def __init__(self, name: str, device: torch.device) -> None:
        self.name, self.device = name, device
        self.dtype = AUTOCAST_DTYPES.get(name)
        self.scaler = (torch.amp.GradScaler(device.type, growth_interval=GROWTH_INTERVAL)
                       if name == "fp16" else None)
        self.tf32 = name == "tf32" and device.type == "cuda"
        self.skipped_before = 0
        self._skipped: Tensor | None = None  # steps skipped in this fit, counted on the device

    def __repr__(self) -> str:
        return f"Precision({self.name!r}, {str(self.device)!r})"

    # ----------------------------------------------------------------------- the step
    def autocast(self, cache: bool = True) -> contextlib.AbstractContextManager:
        """The context for forward and loss: autocast for bf16/fp16, a no-op otherwise.
        ``cache=False`` inside a CUDA graph capture (autocast's cast cache cannot be captured)."""
        if self.dtype is None:
            return _NO_CONTEXT
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=cache)

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()``, on the scaled loss under fp16."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """fp16: step ``optimizer`` unless a gradient is inf/NaN, count a skipped step on the
        device and update the scale. An optimizer with a fused kernel (Adam, AdamW, SGD with
        ``fused``) skips inside the kernel; any other makes torch read the inf flag: a sync."""
        scaler = self.scaler
        scaler.step(optimizer)  # sync: inside torch, only without a fused kernel (rmsprop, fused=False)
        if self._skipped is None:
            self._skipped = torch.zeros((), device=self.device)
        # The step's inf flags (0-d, one per device) live until update(): added on the device.
        for found in scaler._found_inf_per_device(optimizer).values():
            self._skipped.add_(found.to(self.device, non_blocking=True))
        scaler.update()

    def infer(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` (a forward in evaluation or prediction) under autocast, its
        floating-point outputs returned as float32 (metrics and predictions in full width)."""
        if self.dtype is None:
            return call(*args)
        with self.autocast():
            out = call(*args)
        return map_leaves(lambda t: t.float() if t.dtype == self.dtype else t, out)

    @contextlib.contextmanager
    def fit_scope(self) -> Iterator[None]:
        """TF32 on for the fit (tf32 on CUDA), the previous settings restored after it.

        torch's newer per-backend settings are used (and only they: mixing them with the
        legacy ``allow_tf32`` flags makes torch refuse to read either)."""
        if not self.tf32:
            yield
            return
        matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
        before = matmul.fp32_precision, conv.fp32_precision
        matmul.fp32_precision, conv.fp32_precision = "tf32", "tf32"
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = before

    # ----------------------------------------------------------------------- the guard
    def skipped_steps(self) -> int:
        """Optimizer steps a scaler skipped over the run (this fit and those it resumed).
        Reads a device counter: a sync, at checkpoints and failures only."""
        now = 0 if self._skipped is None else int(self._skipped.item())  # sync: see above
        return self.skipped_before + now

    def check_scale(self, where: str) -> None:
        """Raise when the fp16 scaler's scale fell below :data:`MIN_SCALE`: it has skipped step
        after step for inf/NaN gradients, and no step can succeed any more.

        Raises:
            TrainingError: one line, saying where and how many steps were skipped.
        """
        if self.scaler is None:
            return
        scale = self.scaler.get_scale()  # sync: once per epoch, with the guard's loss read
        if scale >= MIN_SCALE:
            return
        raise TrainingError(f"the fp16 loss scale fell to {scale:.3g} {where}: the gradients were "
                            f"inf/NaN at every scale ({self.skipped_steps()} steps skipped), the model "
                            "overflows float16; use precision bf16 or fp32")

    # ----------------------------------------------------------------------- checkpoints
    def state_tensors(self) -> dict[str, Tensor]:
        """The scaler's state as checkpoint tensors (none without a scaler)."""
        if self.scaler is None:
            return {}
        state = self.scaler.state_dict()  # the scale and growth tracker, read from the device
        return {"scaler/scale": torch.tensor(state["scale"], dtype=torch.float32),
                "scaler/growth_tracker": torch.tensor(state["_growth_tracker"], dtype=torch.int64)}

    def load_state(self, tensors: dict[str, Tensor], skipped: int) -> None:
        """Restore the scaler from checked checkpoint tensors (when this fit has a scaler and
        the checkpoint holds its state; a forced resume from another precision starts one
        fresh) and the run's count of skipped steps."""
        self.skipped_before, self._skipped = skipped, None
        if self.scaler is None or "scaler/scale" not in tensors:
            return
        self.scaler.load_state_dict({**self.scaler.state_dict(), "scale": float(tensors["scaler/scale"]),
                                     "_growth_tracker": int(tensors["scaler/growth_tracker"])})
