"""Tests for nnfit.summary: counts, output shapes, mode restoration, hooks and error messages."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from nnfit.errors import ConfigError
from nnfit.summary import (
    LayerInfo,
    ModelSummary,
    capture_activations,
    count_parameters,
    parameter_shapes,
    summarize,
)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 64)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(64, 2)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


class WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        return self.out(self.drop(self.bn(self.fc(x))))


class TwoInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 5)
        self.b = nn.Linear(2, 5)
        self.head = nn.Linear(10, 1)

    def forward(self, x1, x2):
        return self.head(torch.cat([self.a(x1), self.b(x2)], dim=1))


class Frozen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 6)
        self.backbone.requires_grad_(False)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.backbone(x))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.emb.weight  # weight tying, as in language models

    def forward(self, idx):
        return self.head(self.emb(idx))


class TwoHeads(nn.Module):
    """Returns a tuple, and owns a parameter directly at the root."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.split = Split()

    def forward(self, x):
        return self.split(self.body(x) * self.scale)


class Split(nn.Module):
    def forward(self, x):
        return x[:, :6], x[:, 6:]


def all_hooks_removed(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def x(n: int = 8, d: int = 4) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "model",
    [
        MLP(),
        nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1)),
        WithBatchNorm(),
        TwoInput(),
        Frozen(),
        Tied(),
        TwoHeads(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_totals_match_torch_and_rows_sum_to_total(model):
    s = summarize(model)
    params = list(model.parameters())
    assert s.total_params == sum(p.numel() for p in params)
    assert s.trainable_params == sum(p.numel() for p in params if p.requires_grad)
    assert sum(r.params for r in s.layers) == s.total_params
    assert sum(r.trainable for r in s.layers) == s.trainable_params
    assert count_parameters(model) == (s.total_params, s.trainable_params)
    assert all(r.output_shape == "-" for r in s.layers)


def test_mlp_rows_and_output_shapes():
    s = summarize(MLP(), x())
    assert s.layers == (
        LayerInfo("fc1", "Linear", "(8, 64)", 4 * 64 + 64, 4 * 64 + 64),
        LayerInfo("relu", "ReLU", "(8, 64)", 0, 0),
        LayerInfo("fc2", "Linear", "(8, 2)", 64 * 2 + 2, 64 * 2 + 2),
    )
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == (450, 450, 0)


def test_rows_include_nested_leaves_but_not_empty_containers():
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), nn.Linear(3, 1))
    s = summarize(model, x(2))
    assert [(r.name, r.type, r.output_shape) for r in s.layers] == [
        ("0.0", "Linear", "(2, 3)"),
        ("0.1", "ReLU", "(2, 3)"),
        ("1", "Linear", "(2, 1)"),
    ]


def test_root_row_tuple_outputs_and_one_dim_shapes():
    s = summarize(TwoHeads(), x(3))
    rows = {r.name: r for r in s.layers}
    assert list(rows) == ["(root)", "body.0", "body.1", "split"]
    assert rows["(root)"] == LayerInfo("(root)", "TwoHeads", "[(3, 6), (3, 2)]", 1, 1)
    assert rows["split"].output_shape == "[(3, 6), (3, 2)]"
    assert summarize(nn.Linear(4, 2), torch.zeros(4)).layers == (
        LayerInfo("(root)", "Linear", "(2,)", 10, 10),
    )


def test_frozen_layer_counts():
    s = summarize(Frozen())
    rows = {r.name: r for r in s.layers}
    assert (rows["backbone"].params, rows["backbone"].trainable) == (30, 0)
    assert (rows["head"].params, rows["head"].trainable) == (14, 14)
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == (44, 14, 30)


def test_tied_parameter_counted_once():
    model = Tied()
    s = summarize(model, torch.tensor([[1, 2, 3]]))
    rows = {r.name: r for r in s.layers}
    assert (rows["emb"].params, rows["head"].params) == (60, 0)
    assert rows["head"].output_shape == "(1, 3, 10)"
    assert s.total_params == 60 == sum(p.numel() for p in model.parameters())


def test_tuple_list_and_dict_sample_inputs():
    model = TwoInput()
    x1, x2 = torch.zeros(7, 3), torch.zeros(7, 2)
    for sample in [(x1, x2), [x1, x2], {"x1": x1, "x2": x2}]:
        rows = {r.name: r.output_shape for r in summarize(model, sample).layers}
        assert rows == {"a": "(7, 5)", "b": "(7, 5)", "head": "(7, 1)"}


def test_batch_size_cuts_the_sample_input():
    rows = summarize(MLP(), x(100), batch_size=8).layers
    assert rows[0].output_shape == "(8, 64)"
    rows = summarize(
        TwoInput(), {"x1": torch.zeros(50, 3), "x2": torch.zeros(50, 2)}, batch_size=4
    ).layers
    assert rows[-1].output_shape == "(4, 1)"


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_batch_size_must_be_positive_int(bad):
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        summarize(MLP(), x(), batch_size=bad)


def test_batch_size_without_input_and_bad_sample_type():
    with pytest.raises(ConfigError, match="batch_size needs a sample_input"):
        summarize(MLP(), batch_size=4)
    with pytest.raises(ConfigError, match="sample_input must be a Tensor.*got ndarray"):
        summarize(MLP(), x().numpy())


def test_train_modes_restored_and_batchnorm_untouched():
    model = WithBatchNorm()
    model.train()
    model.drop.eval()  # a mixed state must come back exactly, not just model.train()
    stats = {k: v.clone() for k, v in model.bn.state_dict().items()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = summarize(model, x())
    assert out.layers[1].output_shape == "(8, 8)"
    assert model.training and model.fc.training and model.bn.training and model.out.training
    assert not model.drop.training
    for k, v in model.bn.state_dict().items():
        assert torch.equal(v, stats[k]), k  # running_mean, running_var, num_batches_tracked
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all_hooks_removed(model)
    assert all(p.grad is None for p in model.parameters())


def test_eval_mode_also_restored():
    model = MLP().eval()
    summarize(model, x())
    assert not any(m.training for m in model.modules())


def test_failing_forward_is_one_line_config_error_and_cleans_up():
    model = MLP().train()
    with pytest.raises(ConfigError) as info:
        summarize(model, torch.zeros(8, 5))  # fc1 expects 4 features
    message = str(info.value)
    assert message.startswith("summary forward pass failed: RuntimeError: ")
    assert "\n" not in message
    assert isinstance(info.value.__cause__, RuntimeError)
    assert all_hooks_removed(model)
    assert all(m.training for m in model.modules())


def test_multiline_forward_error_becomes_one_line():
    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("first line\nsecond line")

    with pytest.raises(
        ConfigError,
        match=r"^summary forward pass failed: ValueError: "
        r"first line second line$",
    ):
        summarize(Broken(), torch.zeros(1))


def test_str_table_and_to_dict():
    s = summarize(Frozen(), x())
    text = str(s)
    lines = text.splitlines()
    assert lines[0].split() == ["Layer", "Type", "Output", "shape", "Params", "Trainable"]
    assert lines[-1] == "Total params: 44  Trainable: 14  Non-trainable: 30"
    assert "backbone  Linear  (8, 6)" in text
    # numbers are right-aligned, so every data row ends in the same column
    assert len({len(line) for line in lines[2:4]}) == 1
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["layers"][0] == {
        "name": "backbone",
        "type": "Linear",
        "output_shape": "(8, 6)",
        "params": 30,
        "trainable": 0,
    }
    assert (d["total_params"], d["trainable_params"], d["non_trainable_params"]) == (44, 14, 30)


def test_rich_table_renders():
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(summarize(MLP(), x()).table())
    text = console.export_text()
    for expected in [
        "Layer",
        "Output shape",
        "Trainable",
        "fc1",
        "(8, 64)",
        "130",
        "Total params: 450  Trainable: 450  Non-trainable: 0",
    ]:
        assert expected in text


def test_summary_is_frozen():
    s = summarize(MLP())
    assert isinstance(s, ModelSummary)
    with pytest.raises(AttributeError):
        s.total_params = 0  # type: ignore[misc]


def test_parameter_shapes():
    assert parameter_shapes(MLP()) == {
        "fc1.weight": (64, 4),
        "fc1.bias": (64,),
        "fc2.weight": (2, 64),
        "fc2.bias": (2,),
    }
    assert parameter_shapes(Tied()) == {"emb.weight": (10, 6)}


def test_lazy_module_is_a_config_error():
    with pytest.raises(ConfigError, match="'0.weight' is not initialized"):
        count_parameters(nn.Sequential(nn.LazyLinear(3)))


def test_capture_matches_hand_computation():
    model, inp = MLP(), x()
    with capture_activations(model, ["fc1", "fc2"]) as acts:
        out = model(inp)
    assert set(acts) == {"fc1", "fc2"}
    torch.testing.assert_close(acts["fc1"], model.fc1(inp), rtol=0, atol=0)
    torch.testing.assert_close(acts["fc2"], out, rtol=0, atol=0)
    assert not acts["fc1"].requires_grad
    assert all_hooks_removed(model)
    model(inp)  # the dict stays as it was once the hooks are gone
    torch.testing.assert_close(acts["fc2"], out, rtol=0, atol=0)


def test_capture_single_name_root_and_tuple_output():
    model = TwoHeads()
    with capture_activations(model, "split") as acts, capture_activations(model, "(root)") as r:
        a, b = model(x(3))
    assert isinstance(acts["split"], tuple) and len(acts["split"]) == 2
    torch.testing.assert_close(acts["split"][0], a, rtol=0, atol=0)
    torch.testing.assert_close(r["(root)"][1], b, rtol=0, atol=0)
    assert all_hooks_removed(model)


def test_capture_keeps_last_call_and_survives_inplace_ops():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(inplace=True), lin)  # same module runs twice
    inp = x()
    with capture_activations(model, "0") as acts:
        model(inp)
    expected = lin(torch.relu(lin(inp)))
    torch.testing.assert_close(acts["0"], expected, rtol=0, atol=0)
    # the first call's output was overwritten in place by ReLU; a copy keeps negatives visible
    with capture_activations(nn.Sequential(lin, nn.ReLU(inplace=True)), "0") as acts:
        model[:2](inp)
    assert (acts["0"] < 0).any()


def test_capture_removes_hooks_after_exception():
    model = MLP()
    with pytest.raises(RuntimeError, match="boom"):
        with capture_activations(model, ["fc1", "relu"]):
            model(x())
            raise RuntimeError("boom")
    assert all_hooks_removed(model)


def test_capture_unknown_name_registers_nothing():
    model = MLP()
    with pytest.raises(ConfigError) as info:
        with capture_activations(model, ["fc1", "fc3"]):
            pass
    message = str(info.value)
    assert "unknown module name 'fc3'" in message
    assert "did you mean 'fc2', 'fc1'?" in message  # closest first
    assert "valid names include: fc1, relu, fc2" in message
    assert all_hooks_removed(model)
