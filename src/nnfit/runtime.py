"""Device, ranks and seeding: decided once at start-up and passed to everything else.

Nothing outside this module branches on the device type. Under ``torchrun`` (its environment
names RANK, WORLD_SIZE and LOCAL_RANK) :func:`make_runtime` also joins the process group once,
picks each rank's device, and the trainer only asks the :class:`Runtime` (see
:mod:`nnfit.distributed` for what ranks do together).
"""

from __future__ import annotations

import atexit
import os
import random
import re
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Runtime:
    """Where and how a run executes.

    Attributes:
        device: the torch device tensors and the model live on.
        dtype: floating dtype of features and model parameters.
        seed: the run's seed, or None for a non-deterministic run.
        rank: this process's rank (0 without distribution).
        world_size: number of processes (1 without distribution).
    """

    device: torch.device
    dtype: torch.dtype = torch.float32
    seed: int | None = None
    rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        """True when several processes train together (a process group of more than one)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that logs, prints and writes files."""
        return self.rank == 0

    @property
    def is_cuda(self) -> bool:
        """True when tensors live on a CUDA device."""
        return self.device.type == "cuda"

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on CPU); only for timing, never per step."""
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator for data order, seeded from the run's seed plus ``offset``.

        Shuffling uses its own generator so that user code drawing from torch's global RNG does
        not change the data order, and the order can be checkpointed on its own.
        """
        g = torch.Generator()
        if self.seed is None:
            g.seed()
        else:
            g.manual_seed(self.seed + offset)
        return g


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a device, checking that it exists.

    Raises:
        ConfigError: an unknown device name, or CUDA asked for where none is available.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if isinstance(name, str) and re.fullmatch(r"cuda(:\d{1,4})?", name):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available here")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: there are {torch.cuda.device_count()} CUDA devices")
        return torch.device(name)
    raise ConfigError(f"unknown device {name!r} (choose from: auto, cpu, cuda, cuda:N)")


def memory_bytes(device: torch.device) -> int | None:
    """The total memory of ``device`` in bytes, or None where it cannot be told.

    A CUDA device's memory (``torch.cuda.mem_get_info``); for the CPU, the machine's physical
    memory, or the container's limit (cgroup v2 ``memory.max``) when that is lower.
    """
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that says
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def seed_everything(seed: int) -> None:
    """Seed Python's, and torch's global (CPU and CUDA) random generators."""
    random.seed(seed)
    torch.manual_seed(seed)


def launched_rank() -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` of this process: from a process group already
    joined, else from ``torchrun``'s environment; ``(0, 1, 0)`` for a single process.

    Raises:
        ConfigError: torchrun's variables hold something other than whole numbers in range.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        return rank, world, _env_int("LOCAL_RANK", rank)
    world = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world or not 0 <= local < world:
        raise ConfigError(f"torchrun environment: RANK={rank}, LOCAL_RANK={local} and WORLD_SIZE={world} "
                          "do not fit together")
    return rank, world, local


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or len(value) > 6:
        raise ConfigError(f"environment variable {name}={value[:20]!r} is not a process count or rank")
    return int(value)


def _backend(name: str, device: torch.device) -> str:
    """The process group's backend: nccl for CUDA devices, gloo for the CPU.

    Raises:
        ConfigError: nccl without CUDA, or for a CPU device.
    """
    if name == "nccl" and not torch.cuda.is_available():
        raise ConfigError("dist_backend nccl needs CUDA, and this machine has no CUDA device: "
                          "use dist_backend gloo (or auto)")
    if name == "nccl" and device.type != "cuda":
        raise ConfigError(f"dist_backend nccl runs on CUDA devices, not on {device}: use dist_backend "
                          "gloo (or auto)")
    if name == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return name


def join_process_group(backend: str, device: torch.device) -> None:
    """Join torchrun's process group once (a no-op when this process already belongs to one)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # While joining, C++ waits for the other ranks and a Python signal handler cannot run: the
    # default actions let torchrun's SIGTERM (another rank failed) or a Ctrl-C end the wait.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    main_thread = threading.current_thread() is threading.main_thread()
    try:
        if main_thread:
            for s in handlers:
                signal.signal(s, signal.SIG_DFL)
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    except (ValueError, RuntimeError) as e:  # e.g. MASTER_ADDR missing: not started by torchrun
        raise ConfigError(f"cannot join the process group ({backend}): {str(e).splitlines()[0]}; "
                          "start several processes with torchrun --nproc-per-node N") from None
    finally:
        if main_thread:
            for s, h in handlers.items():
                signal.signal(s, h if h is not None else signal.SIG_DFL)
    atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def make_runtime(device: str | torch.device = "auto", seed: int | None = 0,
                 dist_backend: str = "auto") -> Runtime:
    """Resolve the device, ranks and seed for a run; call once at start-up.

    Args:
        device: "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N". Under
            torchrun, "auto" and "cuda" mean each rank's own GPU, ``cuda:LOCAL_RANK``.
        seed: seeds torch's global RNG (dropout, init) and the data-order generator. None
            leaves both unseeded. Under torchrun every rank draws the same data order from
            ``seed`` and its own dropout from ``seed + rank`` (rank 0's initial weights are
            those of a one-process run; DDP gives them to every rank).
        dist_backend: "auto" (nccl on CUDA, gloo on CPU), "gloo" or "nccl".

    Raises:
        ConfigError: an unknown or missing device, nccl without CUDA, torchrun's environment
            out of range.

    Example:
        >>> make_runtime("cpu", seed=0).device
        device(type='cpu')
    """
    rank, world, local = launched_rank()
    if world > 1 and str(device) in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{local % torch.cuda.device_count()}"
    dev = resolve_device(device)
    backend = _backend(dist_backend, dev)  # checked in one process too: nccl needs CUDA anyway
    if world > 1:
        join_process_group(backend, dev)
        if rank > 0:  # rank 0 says what the data and settings call for: once, not once per rank
            import warnings

            from .errors import NnfitWarning

            warnings.filterwarnings("ignore", category=NnfitWarning)
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        seed_everything(seed + rank)
    return Runtime(device=dev, seed=seed, rank=rank, world_size=world,
                   backend=backend if world > 1 else None)


# Below this many multiply-adds per op (batch size x the parameters one op multiplies: see
# step_params), a second CPU thread costs more in synchronisation than it saves: measured on 2
# cores with an MLP 32-128-128-10, one thread was faster at batch 32 and slower at batch 128 and
# above.
SMALL_STEP_WORK = 2_000_000


CONV_POSITIONS = 63  # with the weight's own count: 64 uses of each convolution weight per sample


def step_params(model: nn.Module) -> int:
    """The parameters one op of a training step multiplies, which decide whether a second CPU
    thread pays: the model's trainable parameters, or, for a model with recurrent modules
    (``nn.RNNBase``), the largest weights of one layer and direction of one of them.

    A recurrent layer runs one small matmul per time step, one after another, so its ops are
    sized by one layer's weights whatever the model's total: a bidirectional GRU (64, 64) at
    batch 32 trained no faster with 2 threads than with 1 on 2 idle cores, and on 2 busy ones
    took 5-108 s per epoch instead of 0.8-1.6 s. LSTMs of 64 units (1 or 2 layers, uni- or
    bidirectional, T=50) on 2 busy cores: at batch 32 a step took 1.4-9x longer with 2 threads.

    Example:
        >>> step_params(nn.LSTM(4, 8, num_layers=2))  # the second layer: 4 * 8 * (8 + 8 + 2)
        576
    """
    layers = [sum(w.numel() for w in weights) for m in model.modules() if isinstance(m, nn.RNNBase)
              for weights in m.all_weights]
    if layers:
        return max(layers)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # A convolution applies its weights at every output position: counted at 64 positions (an
    # 8x8 map, the smallest image the CNN family reads whole). The digits CNN (32, 64) trained
    # 1.35-1.65x faster with 2 threads than with 1 on 2 idle cores, at 8 and 16 px, batch 32 and 128.
    conv = sum(p.numel() for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)
               for p in m.parameters(recurse=False) if p.requires_grad)
    return total + CONV_POSITIONS * conv


def cpu_threads(runtime: Runtime, n_params: int, batch_size: int, requested: int = 0) -> int | None:
    """The intra-op thread count to train with on CPU, or None to leave torch's setting.

    Args:
        runtime: the run's runtime (nothing is decided for GPU runs).
        n_params: the parameters one op multiplies (:func:`step_params`).
        batch_size: training batch size.
        requested: an explicit thread count; 0 decides from the step's size.
    """
    if runtime.device.type != "cpu":
        return None
    if requested:
        return requested
    return 1 if n_params * batch_size < SMALL_STEP_WORK else None


def memory_format(model: nn.Module, runtime: Runtime, setting: bool | None) -> torch.memory_format | None:
    """``torch.channels_last`` when ``model`` should train in channels-last memory, else None.

    ``setting`` is :attr:`TrainConfig.channels_last`: None decides for models that set a true
    ``cpu_channels_last`` class attribute (the ``cnn`` family: its forward is known to work
    on any strides) when they train on CPU, where oneDNN's NHWC convolutions are the fast
    ones; True asks for it on any device; False never. A model without a 4-d parameter is
    left alone either way: channels-last applies to nothing in it.

    Example:
        >>> memory_format(nn.Linear(2, 1), make_runtime("cpu"), True) is None
        True
    """
    if setting is False or not any(p.ndim == 4 for p in model.parameters()):
        return None
    if setting is None and not (getattr(model, "cpu_channels_last", False) is True
                                and runtime.device.type == "cpu"):
        return None
    return torch.channels_last


def catch_signals(loop: Any) -> dict[int, Any]:
    """Route SIGINT/SIGTERM to ``loop._signal``, a flag the loop checks after each step (main
    thread only); a second signal interrupts at once. Returns the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(signum: int, frame: Any) -> None:
        if loop._signal:
            raise KeyboardInterrupt
        loop._signal = signum

    return {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
