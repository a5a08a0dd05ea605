"""The speed features keep the numbers: thread choice, the direct fused step, compile."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import nnfit
from nnfit.optim import FusedStepper
from nnfit.runtime import SMALL_STEP_WORK, Runtime, cpu_threads
from nnfit.tasks import make_task

PLAIN = dict(quiet=True, device="cpu", val_split=0, patience=0, restore_best=False)


def _problem(n=96, d=5):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    task = make_task("multiclass", y.numpy())
    return x, task, task.encode_target(y.numpy())


def test_small_steps_use_one_thread_and_big_ones_keep_torchs_choice():
    cpu = Runtime(torch.device("cpu"))
    assert cpu_threads(cpu, n_params=1000, batch_size=32) == 1
    assert cpu_threads(cpu, n_params=SMALL_STEP_WORK, batch_size=1) is None
    assert cpu_threads(cpu, n_params=10, batch_size=1, requested=3) == 3
    assert cpu_threads(Runtime(torch.device("cuda")), n_params=10, batch_size=1) is None


def test_fit_restores_the_callers_thread_count():
    x, task, t = _problem()
    torch.set_num_threads(2)
    seen = []
    probe = nnfit.LambdaCallback(on_epoch_end=lambda tr, logs: seen.append(torch.get_num_threads()))
    nnfit.Trainer(epochs=1, callbacks=[probe], **PLAIN).fit(nn.Linear(5, 3), (x,), task=task, target=t)
    assert seen == [1] and torch.get_num_threads() == 2


def test_direct_fused_step_is_taken_and_equals_optimizer_step():
    x, task, t = _problem()
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    b = copy.deepcopy(a)
    trainer = nnfit.Trainer(epochs=2, batch_size=16, optimizer="adamw", weight_decay=0.1, **PLAIN)
    trainer.fit(a, (x,), task=task, target=t)
    assert trainer.stepper._lists is not None  # the direct path ran
    nnfit.Trainer(epochs=2, batch_size=16, optimizer="adamw", weight_decay=0.1, fused=False,
                  **PLAIN).fit(b, (x,), task=task, target=t)
    for k, v in a.state_dict().items():  # fused vs per-tensor: same maths, float rounding apart
        torch.testing.assert_close(v, b.state_dict()[k], rtol=1e-5, atol=1e-6)


def test_hooks_and_amsgrad_take_the_ordinary_step():
    p = nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1, fused=True)
    calls = []
    opt.register_step_post_hook(lambda *a: calls.append(1))
    stepper = FusedStepper(opt)
    for _ in range(3):
        p.grad = torch.ones(3)
        stepper.step()
    assert calls == [1, 1, 1] and stepper._lists is None
    q = nn.Parameter(torch.ones(3))
    ams = FusedStepper(torch.optim.Adam([q], lr=0.1, fused=True, amsgrad=True))
    for _ in range(2):
        q.grad = torch.ones(3)
        ams.step()
    assert ams._lists is None


@pytest.mark.slow
# torch's own compile stack still touches torch.jit.script_method, which warns on import.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_trains_and_reports_compile_time():
    pytest.importorskip("torch._inductor")
    x, task, t = _problem()
    torch.manual_seed(0)
    hist = nnfit.Trainer(epochs=2, batch_size=32, compile=True, **PLAIN).fit(
        nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)), (x,), task=task, target=t)
    assert hist[0]["compile_time"] > 0 and "compile_time" not in hist[1]
    assert np.isfinite(hist["train_loss"]).all()
