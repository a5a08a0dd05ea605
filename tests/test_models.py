"""Tests for nnfit.models: layer names, shapes, spec round-trips and error messages."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from nnfit.errors import ConfigError
from nnfit.models import (
    ACTIVATIONS,
    MLP,
    MODELS,
    MultiInput,
    ResidualBlock,
    ResidualMLP,
    build_model,
    make_activation,
    model_spec,
)

ACTIVATION_NAMES = "relu, gelu, tanh, sigmoid, leaky_relu, silu"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- activations ----------------------------------------------------------------------------


def test_activation_registry_names_and_help() -> None:
    assert ", ".join(ACTIVATIONS.names()) == ACTIVATION_NAMES
    assert all(entry.help for entry in ACTIVATIONS.entries())


@pytest.mark.parametrize(
    "name, cls",
    [
        ("relu", nn.ReLU),
        ("gelu", nn.GELU),
        ("tanh", nn.Tanh),
        ("sigmoid", nn.Sigmoid),
        ("leaky_relu", nn.LeakyReLU),
        ("silu", nn.SiLU),
    ],
)
def test_make_activation_returns_fresh_module(name: str, cls: type) -> None:
    first, second = make_activation(name), make_activation(name)
    assert type(first) is cls
    assert first is not second


def test_make_activation_unknown_name() -> None:
    with pytest.raises(ConfigError) as exc:
        make_activation("swish")
    assert str(exc.value) == f"unknown activation 'swish' (choose from: {ACTIVATION_NAMES})"


# --- MLP ------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [[], [8], [8, 6, 4]])
def test_mlp_output_shape(hidden: list[int]) -> None:
    model = MLP(5, hidden, 3, dropout=0.1, batchnorm=True)
    assert model(torch.randn(7, 5)).shape == (7, 3)


def test_mlp_layer_names_with_batchnorm_and_dropout() -> None:
    model = MLP(4, [8, 6], 3, activation="gelu", dropout=0.2, batchnorm=True)
    names = [name for name, _ in model.named_children()]
    assert names == [
        "fc1", "bn1", "act1", "drop1",
        "fc2", "bn2", "act2", "drop2",
        "out",
    ]  # fmt: skip
    assert isinstance(model.bn1, nn.BatchNorm1d) and model.bn1.num_features == 8
    assert isinstance(model.act2, nn.GELU)
    assert isinstance(model.drop1, nn.Dropout) and model.drop1.p == 0.2
    assert (model.out.in_features, model.out.out_features) == (6, 3)
    keys = set(model.state_dict())
    assert {"fc1.weight", "fc1.bias", "bn1.running_mean", "bn2.running_var", "out.bias"} <= keys
    assert [n for n, _ in model.named_parameters()][:4] == [
        "fc1.weight", "fc1.bias", "bn1.weight", "bn1.bias",
    ]  # fmt: skip


def test_mlp_without_options_has_no_dropout_or_batchnorm() -> None:
    model = MLP(4, [8], 2)
    assert [name for name, _ in model.named_children()] == ["fc1", "act1", "out"]
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm1d)) for m in model.modules())


def test_mlp_empty_hidden_is_linear() -> None:
    model = MLP(4, [], 2)
    assert [name for name, _ in model.named_children()] == ["out"]
    x = torch.randn(3, 4)
    assert torch.equal(model(x), x @ model.out.weight.T + model.out.bias)


def test_mlp_normalises_arguments_and_repr() -> None:
    model = MLP(4, (8, 6), 2, dropout=0)
    assert model.hidden == [8, 6] and isinstance(model.dropout, float)
    assert "in_features=4, hidden=[8, 6], out_features=2" in repr(model)


def test_mlp_slice_is_plain_sequential() -> None:
    model = MLP(4, [8, 6], 2)
    features = model[:-1]
    assert type(features) is nn.Sequential
    assert list(features._modules) == ["fc1", "act1", "fc2", "act2"]
    assert features(torch.randn(3, 4)).shape == (3, 6)
    assert model[0] is model.fc1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dropout": 1.0}, "MLP: dropout must be a number in [0, 1), got 1.0"),
        ({"dropout": -0.1}, "MLP: dropout must be a number in [0, 1), got -0.1"),
        ({"dropout": "0.5"}, "MLP: dropout must be a number in [0, 1), got '0.5'"),
        (
            {"activation": "swish"},
            f"MLP: activation 'swish' is not known (choose from: {ACTIVATION_NAMES})",
        ),
        ({"batchnorm": 1}, "MLP: batchnorm must be true or false, got 1"),
        ({"hidden": [8, 0]}, "MLP: hidden[1] must be a positive int, got 0"),
        ({"hidden": "8"}, "MLP: hidden must be a list of positive ints, got '8'"),
        ({"in_features": True}, "MLP: in_features must be a positive int, got True"),
        ({"out_features": 2.0}, "MLP: out_features must be a positive int, got 2.0"),
    ],
)
def test_mlp_invalid_arguments(kwargs: dict, message: str) -> None:
    args = {"in_features": 4, "hidden": [8], "out_features": 2} | kwargs
    with pytest.raises(ConfigError) as exc:
        MLP(**args)
    assert str(exc.value) == message


# --- residual -------------------------------------------------------------------------------


def test_residual_block_projection_only_when_sizes_differ() -> None:
    same, wider = ResidualBlock(6), ResidualBlock(4, 6)
    assert same.proj is None and same.out_features == 6
    assert isinstance(wider.proj, nn.Linear) and wider.proj.bias is None
    assert "proj.weight" in wider.state_dict() and "proj.bias" not in wider.state_dict()
    assert wider(torch.randn(3, 4)).shape == (3, 6)


def test_residual_block_options() -> None:
    block = ResidualBlock(4, 4, dropout=0.3, batchnorm=True)
    assert [n for n, _ in block.named_children()] == ["fc1", "bn1", "act", "drop", "fc2", "bn2"]
    plain = ResidualBlock(4)
    assert [n for n, _ in plain.named_children()] == ["fc1", "act", "fc2"]


def test_residual_block_zero_main_path_is_activation_of_input() -> None:
    block = ResidualBlock(5, activation="tanh")
    with torch.no_grad():
        block.fc2.weight.zero_()
        block.fc2.bias.zero_()
    x = torch.randn(4, 5)
    assert torch.equal(block(x), torch.tanh(x))


def test_residual_mlp_names_and_shape() -> None:
    model = ResidualMLP(4, [8, 8, 6], 3, batchnorm=True)
    assert model(torch.randn(5, 4)).shape == (5, 3)
    keys = set(model.state_dict())
    assert {"blocks.0.proj.weight", "blocks.2.proj.weight", "head.weight"} <= keys
    assert {"blocks.0.bn1.running_mean", "blocks.1.bn2.running_var"} <= keys
    assert "blocks.1.proj.weight" not in keys  # 8 -> 8: identity skip
    assert [(b.in_features, b.out_features) for b in model.blocks] == [(4, 8), (8, 8), (8, 6)]


def test_residual_mlp_needs_hidden() -> None:
    with pytest.raises(ConfigError) as exc:
        ResidualMLP(4, [], 2)
    assert str(exc.value) == "ResidualMLP: hidden must have at least one entry, got []"


# --- multi input ----------------------------------------------------------------------------


def _two_branch() -> MultiInput:
    return MultiInput({"a": MLP(3, [8], 4), "b": MLP(5, [], 2)}, MLP(6, [8], 1))


def test_multi_input_positional_and_keyword_calls_match() -> None:
    model = _two_branch()
    a, b = torch.randn(10, 3), torch.randn(10, 5)
    out = model(a, b)
    assert out.shape == (10, 1)
    assert torch.equal(out, model(a=a, b=b))
    assert torch.equal(out, model(b=b, a=a))
    assert torch.equal(out, model(a, b=b))
    assert model.input_names == ["a", "b"]
    assert "inputs=['a', 'b']" in repr(model)


def test_multi_input_flattens_branch_outputs_in_order() -> None:
    head = nn.Identity()
    model = MultiInput({"img": nn.Identity(), "vec": nn.Identity()}, head)
    img, vec = torch.randn(2, 2, 3), torch.randn(2, 4)
    assert torch.equal(model(img, vec), torch.cat([img.reshape(2, 6), vec], dim=1))


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((torch.zeros(1, 3),), {}, "missing input 'b' (inputs: a, b)"),
        ((), {}, "missing input 'a', 'b' (inputs: a, b)"),
        ((), {"a": 0, "b": 0, "c": 0}, "got unexpected input 'c' (inputs: a, b)"),
        ((0, 0, 0), {}, "takes 2 inputs (inputs: a, b) but 3 were given positionally"),
        ((0,), {"a": 0}, "got multiple values for input 'a'"),
    ],
)
def test_multi_input_bad_inputs(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(TypeError) as exc:
        _two_branch()(*args, **kwargs)
    assert str(exc.value) == f"MultiInput.forward() {message}"


@pytest.mark.parametrize(
    "branches, message",
    [
        ({}, "MultiInput: branches must be a non-empty mapping of name -> module, got {}"),
        ({"a.b": nn.Identity()}, "MultiInput: branch name 'a.b' must be a non-empty string"),
        ({"a": "relu"}, "MultiInput: branch 'a' must be an nn.Module, got str"),
        ({"keys": nn.Identity()}, "MultiInput: invalid branch name: attribute 'keys'"),
    ],
)
def test_multi_input_invalid_branches(branches: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        MultiInput(branches, nn.Identity())
    assert str(exc.value).startswith(message)


def test_multi_input_spec_names_part_that_is_not_buildable() -> None:
    model = MultiInput({"a": MLP(3, [], 2), "img": nn.Linear(4, 2)}, MLP(4, [], 1))
    with pytest.raises(ConfigError, match=r"branch 'img' \(Linear\) has no spec\(\)"):
        model.spec()
    headless = MultiInput({"a": MLP(3, [], 2)}, nn.Linear(2, 1))
    with pytest.raises(ConfigError, match=r"^MultiInput: head \(Linear\) has no spec\(\)"):
        headless.spec()
    assert model_spec(model) is None and model_spec(headless) is None


# --- specs and build_model ------------------------------------------------------------------


def _nested_multi_input() -> MultiInput:
    inner = MultiInput({"x": MLP(2, [4], 3), "y": ResidualMLP(3, [4], 2)}, MLP(5, [], 4))
    branches = {
        "tab": MLP(6, [8, 8], 5, activation="silu", dropout=0.1, batchnorm=True),
        "seq": ResidualMLP(4, [6, 6], 3, batchnorm=True),
        "pair": inner,
    }
    return MultiInput(branches, ResidualMLP(12, [8], 2, activation="gelu"))


MODEL_CASES = {
    "mlp": (lambda: MLP(4, [8, 6], 3, activation="tanh", dropout=0.2, batchnorm=True), 1),
    "mlp-linear": (lambda: MLP(4, [], 3), 1),
    "resmlp": (lambda: ResidualMLP(4, [8, 8, 6], 3, dropout=0.1, batchnorm=True), 1),
    "multi_input": (_nested_multi_input, 4),
}


def _inputs(n_inputs: int) -> list[torch.Tensor]:
    if n_inputs == 1:
        return [torch.randn(8, 4)]
    return [torch.randn(8, 6), torch.randn(8, 4), torch.randn(8, 2), torch.randn(8, 3)]


def _call(model: nn.Module, xs: list[torch.Tensor]) -> torch.Tensor:
    if isinstance(model, MultiInput) and len(xs) == 4:
        tab, seq, x, y = xs
        return model(tab, seq, pair={"x": x, "y": y})
    return model(*xs)


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_spec_round_trip_rebuilds_identical_model(case: str) -> None:
    make, n_inputs = MODEL_CASES[case]
    model = make()
    xs = _inputs(n_inputs)
    model.train()
    _call(model, xs)  # one training pass moves the batchnorm running statistics off their init

    spec = json.loads(json.dumps(model.spec()))
    assert spec == model.spec()
    rebuilt = build_model(spec)
    assert type(rebuilt) is type(model)
    assert rebuilt.spec() == model.spec()
    assert str(rebuilt) == str(model)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes

    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(_call(rebuilt, xs), _call(model, xs))


def test_multi_input_spec_is_nested_and_ordered() -> None:
    spec = _nested_multi_input().spec()
    assert spec["name"] == "multi_input"
    assert list(spec["branches"]) == ["tab", "seq", "pair"]
    assert spec["branches"]["pair"]["branches"]["y"]["name"] == "resmlp"
    assert spec["head"] == {
        "name": "resmlp",
        "in_features": 12,
        "hidden": [8],
        "out_features": 2,
        "activation": "gelu",
        "dropout": 0.0,
        "batchnorm": False,
    }


def test_build_model_fills_defaults_and_accepts_tuples() -> None:
    model = build_model({"name": "mlp", "in_features": 4, "hidden": (8,), "out_features": 2})
    assert model.spec() == MLP(4, [8], 2).spec()
    assert model.hidden == [8]


def test_model_spec() -> None:
    model = MLP(4, [8], 2)
    assert model_spec(model) == model.spec()
    assert model_spec(nn.Linear(4, 2)) is None


def test_models_registry() -> None:
    assert MODELS.names() == ["mlp", "resmlp", "multi_input", "embeddings", "cnn", "lstm", "gru"]
    assert MODELS.get("resmlp") is ResidualMLP
    assert all(entry.help for entry in MODELS.entries())


MLP_KEYS = "name, in_features, hidden, out_features, activation, dropout, batchnorm, embeddings"


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            {"name": "mlpp"},
            "model spec: unknown model 'mlpp' (choose from: mlp, resmlp, multi_input, embeddings, "
            "cnn, lstm, gru)",
        ),
        (
            {"name": "mlp", "in_features": 4, "hiden": [8], "out_features": 2},
            f"model spec: unknown key 'hiden' for 'mlp' (valid: {MLP_KEYS})",
        ),
        (
            {"name": "mlp", "in_features": 4, "hidden": [8], "out_features": 2, "a": 1, "b": 2},
            f"model spec: unknown keys 'a', 'b' for 'mlp' (valid: {MLP_KEYS})",
        ),
        (
            {"name": "mlp", "in_features": 4},
            "model spec: missing keys 'hidden', 'out_features' for 'mlp'",
        ),
        (
            {"name": "resmlp", "in_features": 4, "hidden": [8], "out_features": 2, "dropout": 1},
            "model spec: ResidualMLP: dropout must be a number in [0, 1), got 1",
        ),
        (
            {"name": "mlp", "in_features": 4, "hidden": [], "out_features": 2, "activation": "x"},
            f"model spec: MLP: activation 'x' is not known (choose from: {ACTIVATION_NAMES})",
        ),
        (
            {"in_features": 4},
            "model spec: missing key 'name' (choose from: mlp, resmlp, multi_input, embeddings, "
            "cnn, lstm, gru)",
        ),
        (["mlp"], "model spec: expected a mapping with a 'name' key, got ['mlp']"),
        (
            {"name": "multi_input", "branches": {}, "head": {"name": "mlp"}},
            "model spec: 'branches' must be a non-empty mapping of name -> model spec, got {}",
        ),
        (
            {
                "name": "multi_input",
                "branches": {
                    "a": {"name": "mlp", "in_features": 3, "hidden": [], "out_features": 2},
                    "b": {"name": "mlp", "in_features": 3, "hiden": [], "out_features": 2},
                },
                "head": {"name": "mlp", "in_features": 4, "hidden": [], "out_features": 1},
            },
            f"model spec at branches.b: unknown key 'hiden' for 'mlp' (valid: {MLP_KEYS})",
        ),
        (
            {
                "name": "multi_input",
                "branches": {
                    "a": {"name": "mlp", "in_features": 3, "hidden": [], "out_features": 2},
                },
                "head": {"name": "transformer"},
            },
            "model spec at head: unknown model 'transformer' (choose from: mlp, resmlp, "
            "multi_input, embeddings, cnn, lstm, gru)",
        ),
    ],
)
def test_build_model_errors(spec: object, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_model(spec)  # type: ignore[arg-type]
    assert str(exc.value) == message
