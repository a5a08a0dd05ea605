"""DDP on CUDA with NCCL (the GPU tier: skipped without CUDA): every GPU of the machine under
torchrun (with SyncBatchNorm), or the single-GPU path under torchrun where there is one."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from test_ddp import FAST, _one, _torchrun, table  # noqa: F401  (the fixture)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
GPU = [a for a in FAST if a not in ("--device", "cpu")] + ["--device", "cuda"]


@pytest.mark.parametrize("batchnorm", [False, True])
def test_nccl_on_every_gpu_trains_as_one_gpu(table, batchnorm) -> None:  # noqa: F811
    work, procs = table.parent, torch.cuda.device_count()
    args = ["train", table, "--target", "y", "--epochs", "3", "--batch-size", "32", "cuda_graphs=false", *GPU]
    if batchnorm:
        args.append("--batchnorm")
    assert _one(work, *args, "--out", "one") == 0
    done = _torchrun(work, *args, "--out", "many", procs=procs)
    assert done.returncode == 0, done.stderr[-3000:]
    one, many = load_file(work / "one" / "model.safetensors"), load_file(work / "many" / "model.safetensors")
    # TF32 is off by default (fp32): GPU kernels may still sum in another order per batch size
    assert max((one[k].float() - many[k].float()).abs().max().item() for k in one) < 1e-4
