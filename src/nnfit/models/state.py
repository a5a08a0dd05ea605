"""What a built-in model's ``state_dict`` holds, computed from its spec without building it.

Building a model allocates its weights: a spec (or a tampered ``model.json``) asking for
``hidden=[200000, 200000]`` would allocate gigabytes before anything could object. Each
family therefore also describes its state analytically (names, shapes, dtypes, which entries
are parameters), so that a spec is checked against :data:`MAX_PARAMS` and a saved model's
weights are checked against the spec before one byte of the model exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Built-in models above this many parameters are refused before they are built: 4 GB of
# float32 weights, 12 GB with Adam's moments, far beyond what a table model needs. Raise it
# (nnfit.models.state.MAX_PARAMS = ...) to build larger ones on purpose.
MAX_PARAMS = 10**9


@dataclass(frozen=True)
class Slot:
    """One entry of a ``state_dict``.

    Attributes:
        shape: the tensor's shape.
        dtype: its dtype.
        parameter: True for a parameter, False for a buffer (e.g. BatchNorm statistics).
    """

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    parameter: bool = True

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def linear(prefix: str, n_in: int, n_out: int, bias: bool = True) -> dict[str, Slot]:
    """The state of ``nn.Linear(n_in, n_out, bias)`` registered as ``prefix``."""
    out = {f"{prefix}.weight": Slot((n_out, n_in))}
    if bias:
        out[f"{prefix}.bias"] = Slot((n_out,))
    return out


def batchnorm(prefix: str, n: int) -> dict[str, Slot]:
    """The state of ``nn.BatchNorm1d(n)`` (or ``BatchNorm2d(n)``) registered as ``prefix``."""
    return {f"{prefix}.weight": Slot((n,)), f"{prefix}.bias": Slot((n,)),
            f"{prefix}.running_mean": Slot((n,), parameter=False),
            f"{prefix}.running_var": Slot((n,), parameter=False),
            f"{prefix}.num_batches_tracked": Slot((), torch.int64, parameter=False)}


def conv2d(prefix: str, c_in: int, c_out: int, kernel_size: int, bias: bool = True) -> dict[str, Slot]:
    """The state of ``nn.Conv2d(c_in, c_out, kernel_size, bias=bias)`` registered as ``prefix``."""
    out = {f"{prefix}.weight": Slot((c_out, c_in, kernel_size, kernel_size))}
    if bias:
        out[f"{prefix}.bias"] = Slot((c_out,))
    return out


def recurrent(prefix: str, gates: int, n_in: int, hidden: int) -> dict[str, Slot]:
    """The state of a one-layer, one-direction ``nn.LSTM`` (``gates=4``) or ``nn.GRU``
    (``gates=3``) of ``n_in`` inputs and ``hidden`` units, registered as ``prefix``."""
    return {f"{prefix}.weight_ih_l0": Slot((gates * hidden, n_in)),
            f"{prefix}.weight_hh_l0": Slot((gates * hidden, hidden)),
            f"{prefix}.bias_ih_l0": Slot((gates * hidden,)),
            f"{prefix}.bias_hh_l0": Slot((gates * hidden,))}


def prefixed(prefix: str, state: dict[str, Slot]) -> dict[str, Slot]:
    """``state`` of a submodule registered as ``prefix``."""
    return {f"{prefix}.{k}": v for k, v in state.items()}


def param_count(state: dict[str, Slot]) -> int:
    """Number of parameter elements in ``state`` (buffers not counted)."""
    return sum(s.numel for s in state.values() if s.parameter)
