"""Every random number generator a training run draws from, captured as tensors.

A checkpoint holds these states twice: as they are now, and as they were when the running
epoch started (to draw the epoch's data order again on a resume). Covered: torch's global CPU
generator (dropout, initialisation, a DataLoader's base seed), the CUDA generator of the
device in use, nnfit's data-order generator, any generator of a user's DataLoader or sampler,
and the global NumPy and Python ``random`` generators (a Dataset's augmentations).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def capture(data: torch.Generator, extra: Sequence[torch.Generator] = (),
            cuda: torch.device | None = None) -> dict[str, Tensor]:
    """The states of all generators, keyed by name."""
    out = {"torch": torch.get_rng_state(), "data": data.get_state()}
    for i, g in enumerate(extra):
        out[f"loader{i}"] = g.get_state()
    if cuda is not None:
        out["cuda"] = torch.cuda.get_rng_state(cuda)
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    out["numpy"] = torch.from_numpy(np.concatenate([keys.astype(np.int64), [pos, has_gauss]]))
    out["numpy_gauss"] = torch.tensor([gauss], dtype=torch.float64)
    version, internal, gauss_next = random.getstate()
    out["python"] = torch.tensor([version, *internal], dtype=torch.int64)
    out["python_gauss"] = torch.tensor([gauss_next is not None, gauss_next or 0.0], dtype=torch.float64)
    return out


def restore(states: dict[str, Tensor], data: torch.Generator, extra: Sequence[torch.Generator] = (),
            cuda: torch.device | None = None) -> None:
    """Set every generator from :func:`capture`'s states.

    Raises:
        KeyError: a state is missing (the checkpoint is incomplete).
    """
    torch.set_rng_state(states["torch"])
    data.set_state(states["data"])
    for i, g in enumerate(extra):
        g.set_state(states[f"loader{i}"])
    if cuda is not None and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], cuda)
    keys = states["numpy"].numpy()
    np.random.set_state(("MT19937", keys[:-2].astype(np.uint32), int(keys[-2]), int(keys[-1]),
                         float(states["numpy_gauss"][0])))
    py = [int(v) for v in states["python"].tolist()]
    has, value = states["python_gauss"].tolist()
    random.setstate((py[0], tuple(py[1:]), value if has else None))
