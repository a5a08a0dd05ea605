"""Convolutions in channels-last memory: the CNN family trains NHWC on CPU, bitwise equal to a
hand loop on the same layout and to rounding of the contiguous one; optimizer state follows
the parameters' strides (a resumed state is saved contiguous); the model comes back
contiguous; user models are left alone unless asked. The CNN's pool-before-relu order gives
the same numbers as relu-then-pool."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnfit
from nnfit.models import CNN
from nnfit.optim import match_state_layout
from nnfit.runtime import make_runtime, memory_format
from nnfit.tasks import make_task

PLAIN = {"device": "cpu", "quiet": True, "val_split": 0, "patience": 0, "restore_best": False}
SEED = 3


def _images(n: int = 70, c: int = 1, side: int = 8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, side, side, generator=g)
    y = (x[:, 0, : side // 2].mean((1, 2)) > 0).long() + (x[:, 0, :, : side // 2].mean((1, 2)) > 0).long()
    task = make_task("multiclass", y.numpy())
    return x, task, task.encode_target(y.numpy())


def _hand_loop(model: nn.Module, x, target, *, layout, epochs: int = 2, batch: int = 16) -> None:
    """nnfit's seeding and order written out, on ``layout`` memory; fused Adam at 1e-2."""
    model.to(memory_format=layout)
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            F.cross_entropy(model(x[idx]), target[idx]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)


def _cnn(c: int = 1, **kw) -> CNN:
    torch.manual_seed(1)
    return CNN(c, 3, channels=[8, 16], **kw)


@pytest.mark.parametrize("channels", [1, 3])
def test_cnn_trains_channels_last_on_cpu_like_a_hand_loop_on_that_layout(channels: int) -> None:
    x, task, target = _images(c=channels)
    ours = _cnn(channels)
    nhwc, nchw = copy.deepcopy(ours), copy.deepcopy(ours)
    seen = []

    class Layout(nnfit.Callback):
        def on_epoch_end(self, trainer, logs):
            seen.append(trainer.model.stages[0].conv1.weight.is_contiguous(memory_format=torch.channels_last))

    nnfit.Trainer(epochs=2, batch_size=16, seed=SEED, optimizer="adam", lr=1e-2, callbacks=[Layout()],
                  **PLAIN).fit(ours, (x,), task=task, target=target)
    _hand_loop(nhwc, x, target, layout=torch.channels_last)
    _hand_loop(nchw, x, target, layout=torch.contiguous_format)

    assert seen == [True, True]  # trained channels-last ...
    assert all(p.is_contiguous() for p in ours.parameters())  # ... returned contiguous
    for k, v in ours.state_dict().items():
        assert torch.equal(v, nhwc.state_dict()[k]), k
        torch.testing.assert_close(v, nchw.state_dict()[k], rtol=1e-3, atol=1e-4)


def test_channels_last_false_is_the_contiguous_hand_loop_bitwise() -> None:
    x, task, target = _images()
    ours = _cnn()
    theirs = copy.deepcopy(ours)
    nnfit.Trainer(epochs=2, batch_size=16, seed=SEED, optimizer="adam", lr=1e-2, channels_last=False,
                  **PLAIN).fit(ours, (x,), task=task, target=target)
    _hand_loop(theirs, x, target, layout=torch.contiguous_format)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, theirs.state_dict()[k]), k


class ViewNet(nn.Module):
    """A user's CNN that flattens with ``.view``: it needs contiguous maps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.head(h.view(h.size(0), -1))


def test_user_models_train_contiguous_unless_asked() -> None:
    cpu = make_runtime("cpu")
    assert memory_format(ViewNet(), cpu, None) is None  # a user's model: never by default
    assert memory_format(_cnn(), cpu, None) is torch.channels_last
    assert memory_format(_cnn(), cpu, False) is None
    assert memory_format(ViewNet(), cpu, True) is torch.channels_last
    assert memory_format(nnfit.MLP(4, [8], 2), cpu, True) is None  # no 4-d weight: nothing to do
    x, task, target = _images()
    nnfit.Trainer(epochs=1, batch_size=16, seed=SEED, **PLAIN).fit(ViewNet(), (x,), task=task,
                                                                   target=target)


def test_a_contiguous_optimizer_state_takes_its_parameters_strides() -> None:
    """A fused Adam walks memory flat: a contiguous state next to a channels-last weight would
    pair the wrong elements. After match_state_layout the step is the contiguous one's."""
    g = torch.Generator().manual_seed(0)
    w, grads = torch.randn(8, 4, 3, 3, generator=g), [torch.randn(8, 4, 3, 3, generator=g) for _ in range(2)]

    def two_steps(layout, state_layout):
        p = nn.Parameter(w.clone().contiguous(memory_format=layout))
        opt = torch.optim.Adam([p], lr=0.1, fused=True)
        p.grad = grads[0].contiguous(memory_format=layout)
        opt.step()
        for k in ("exp_avg", "exp_avg_sq"):  # as a checkpoint loads it
            opt.state[p][k] = opt.state[p][k].contiguous(memory_format=state_layout)
        match_state_layout(opt)
        assert all(opt.state[p][k].stride() == p.stride() for k in ("exp_avg", "exp_avg_sq"))
        p.grad = grads[1].contiguous(memory_format=layout)
        opt.step()
        return p.detach().contiguous()

    ref = two_steps(torch.contiguous_format, torch.contiguous_format)
    assert torch.equal(two_steps(torch.channels_last, torch.contiguous_format), ref)
    assert torch.equal(two_steps(torch.contiguous_format, torch.channels_last), ref)


def test_resume_of_a_channels_last_run_is_bitwise_equal(tmp_path) -> None:
    x, task, target = _images(n=66)
    y = task.decode(F.one_hot(target, 3).float())  # the labels back, as a user has them
    common = dict(epochs=3, batch_size=16, seed=SEED, val_split=0, patience=0, quiet=True,
                  device="cpu", augment="none")
    whole = nnfit.fit(_cnn(), x.numpy(), y, run_dir=tmp_path / "whole", **common)
    nnfit.fit(_cnn(), x.numpy(), y, run_dir=tmp_path / "part", **{**common, "epochs": 1})
    resumed = nnfit.fit(_cnn(), x.numpy(), y, run_dir=tmp_path / "part", resume=tmp_path / "part",
                        **common)
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


@pytest.mark.parametrize("blocks", [1, 2])
def test_pool_before_relu_gives_relu_then_pool_bitwise(blocks: int) -> None:
    model = _cnn(blocks=blocks)
    names = [n for n, _ in model.stages[0].named_children()]
    assert names[-2:] == ["pool", f"act{blocks}"]
    reference = copy.deepcopy(model)
    for stage in reference.stages:  # the textbook order: act, then pool
        kids = dict(stage.named_children())
        order = [n for n in kids if n != "pool"] + ["pool"]
        for n in order:
            stage._modules[n] = stage._modules.pop(n)
    assert [n for n, _ in reference.stages[0].named_children()][-2:] == [f"act{blocks}", "pool"]
    # inputs with many ties: whole numbers, and a batch whose maps are mostly negative
    x = torch.randint(-3, 2, (6, 1, 8, 8)).float()
    for m in (model, reference):
        m.train()
        F.cross_entropy(m(x), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    assert torch.equal(model(x), reference(x))
    for (k, a), (_, b) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.equal(a.grad, b.grad), k
    assert [n for n, _ in _cnn(activation="gelu").stages[0].named_children()][-2:] == ["act1", "pool"]


def test_a_model_whose_outputs_do_not_fit_the_task_is_refused_before_training(tmp_path) -> None:
    x, _, _ = _images()
    binary = (x[:, 0].mean((1, 2)) > 0).long().numpy()
    with pytest.raises(nnfit.ConfigError, match="out_features is 3 but the binary task takes 1 or 2"):
        nnfit.fit(_cnn(), x.numpy(), binary, run_dir=tmp_path / "r", epochs=1, quiet=True)
    assert not (tmp_path / "r").exists()
