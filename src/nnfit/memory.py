"""Whether training a built-in model fits in memory, estimated from its spec before it is built.

``MAX_PARAMS`` (:mod:`nnfit.models.state`) bounds what a spec may ask for anywhere; this bounds
it by the machine at hand, so a model that cannot train here is refused in one line instead of
being killed by the kernel gigabytes later. The estimate is a lower bound (activations, the
data and torch's temporaries come on top): it refuses only what cannot fit.

Per parameter, in bytes of its dtype (4 for float32):

* training holds the weights, their gradients, the optimizer's state (:func:`optimizer_slots`)
  and, with ``restore_best``, a copy of the best weights;
* writing a checkpoint (a run directory) holds two more copies of everything it saves (all of
  the above but the gradients): a CPU copy and its safetensors bytes.

On CUDA the first part is compared with the device's memory and the second with the host's; on
the CPU their sum with the machine's memory (:func:`nnfit.runtime.memory_bytes`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .config import TrainConfig
from .errors import ConfigError
from .models.state import Slot
from .runtime import Runtime, memory_bytes


def optimizer_slots(config: TrainConfig) -> int:
    """Tensors the optimizer keeps per parameter: Adam/AdamW 2 (moments), RMSprop 1 (+1 with
    momentum), SGD 1 with momentum, else 0."""
    if config.optimizer in ("adam", "adamw"):
        return 2
    return int(config.optimizer == "rmsprop") + int(config.momentum > 0)


def training_bytes(state: Mapping[str, Slot], config: TrainConfig, writes_run: bool) -> tuple[int, int]:
    """``(held, copies)``: bytes training holds where the model lives, and bytes a checkpoint
    write adds on the host (0 without a run directory)."""
    weights = sum(s.numel * s.dtype.itemsize for s in state.values())
    params = sum(s.numel * s.dtype.itemsize for s in state.values() if s.parameter)
    saved = weights * (1 + int(config.restore_best)) + params * optimizer_slots(config)
    return saved + params, 2 * saved if writes_run else 0  # + params: the gradients


def check_training_memory(state: Mapping[str, Slot], config: TrainConfig, runtime: Runtime,
                          writes_run: bool) -> None:
    """Refuse a model whose training cannot fit in memory, before it is built.

    Args:
        state: the model's analytic state (:func:`nnfit.models.state_shapes`).
        config: the training settings (optimizer, ``restore_best``).
        runtime: where it trains.
        writes_run: whether checkpoints are written (a run directory).

    Raises:
        ConfigError: naming the parameter count, the estimate and the memory there is.
    """
    held, copies = training_bytes(state, config, writes_run)
    slots = optimizer_slots(config)
    parts = ["weights", "gradients", f"{slots} {config.optimizer} state tensor{'s' * (slots != 1)}",
             *(["the best weights"] if config.restore_best else [])]
    saving = ["2 copies of the saved state while a checkpoint is written"] if copies else []
    checks = ([(held, runtime.device, parts), (copies, torch.device("cpu"), saving)] if runtime.is_cuda
              else [(held + copies, runtime.device, parts + saving)])
    for need, device, what in checks:
        have = memory_bytes(device)
        if have is None or need <= have:
            continue
        n = sum(s.numel for s in state.values() if s.parameter)
        where = "this machine" if device.type == "cpu" else str(device)
        raise ConfigError(f"model spec: {n:,} parameters need at least {_size(need)} to train "
                          f"({', '.join(what)}) but {where} has {_size(have)} of memory: use smaller "
                          "hidden sizes")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
