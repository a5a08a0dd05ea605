"""Tests for categorical embeddings in the built-in models (nnfit.models.tabular, the
``embeddings`` of MLP / ResidualMLP, MultiInput with a codes branch) and their schema."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from helpers import assert_state_shapes_match
from nnfit.errors import CheckpointError, ConfigError
from nnfit.files import FORMAT_VERSION
from nnfit.io.validate import LEARNER, SPEC, validate
from nnfit.io.weights import check_spec_fits
from nnfit.models import MLP, Embeddings, MultiInput, ResidualMLP, build_model, embedding_dim, state_shapes
from nnfit.models.state import param_count
from nnfit.models.tabular import MAX_CARDINALITY, MAX_COLUMNS, MAX_WIDTH


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def codes_for(pairs, n: int = 7, seed: int = 1) -> torch.Tensor:
    """(n, k) int64 codes in range for each (cardinality, width) pair."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, (n,), generator=g) for c, _ in pairs], dim=1)


# ------------------------------------------------------------------------ the width rule
def test_embedding_dim_is_fastais_rule_capped_at_50() -> None:
    assert [embedding_dim(c) for c in (1, 2, 3, 4, 12, 40, 100, 1000)] == [2, 2, 3, 3, 6, 13, 21, 50]
    assert all(embedding_dim(c) == min(50, round(1.6 * c**0.56)) for c in range(1, 3000))
    assert embedding_dim(10**7) == 50
    for bad in (0, -3, 2.5, True, "7"):
        with pytest.raises(ConfigError, match=r"^embedding_dim: cardinality must be a positive int"):
            embedding_dim(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ Embeddings
def test_embeddings_concatenate_one_table_per_column_in_order() -> None:
    embed = Embeddings([(5, 3), (12, 6), (2, 1)])
    codes = torch.tensor([[0, 11, 1], [4, 1, 0], [2, 2, 0]])
    out = embed(codes)
    assert out.shape == (3, 10) and out.dtype == torch.float32 and embed.out_features == 10
    t0, t1, t2 = (t.weight for t in embed.tables)
    assert torch.equal(out, torch.cat([t0[codes[:, 0]], t1[codes[:, 1]], t2[codes[:, 2]]], dim=1))
    assert embed.embeddings == [(5, 3), (12, 6), (2, 1)]


def test_embedding_tables_start_small() -> None:
    # truncated normal, std 0.01 cut at two std (fastai's init): categoricals start near zero
    w = Embeddings([(1000, 50)]).tables[0].weight
    assert w.abs().max() <= 0.02 and 0.007 < w.std() < 0.01


def test_codes_of_the_wrong_shape_or_out_of_range() -> None:
    embed = Embeddings([(5, 3), (4, 2)])
    with pytest.raises(ValueError, match=r"expected codes of shape \(N, 2\), got \(6,\)"):
        embed(torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected codes of shape \(N, 2\), got \(6, 3\)"):
        embed(torch.zeros(6, 3, dtype=torch.long))
    # The preprocessing maps every value into range; the model does not check (a host sync
    # per step), and torch's own IndexError is what an out-of-range code gives on the CPU.
    with pytest.raises(IndexError, match="index out of range"):
        embed(torch.tensor([[5, 0]]))


@pytest.mark.parametrize("pairs, message", [
    ([], "Embeddings: embeddings must have at least one entry, got []"),
    ([(1, 3)], "Embeddings: embeddings[0] cardinality must be an int in [2, 10000000], got 1"),
    ([(5, 3), (4, 0)], "Embeddings: embeddings[1] width must be an int in [1, 4096], got 0"),
    ([(5, MAX_WIDTH + 1)], "Embeddings: embeddings[0] width must be an int in [1, 4096], got 4097"),
    ([(MAX_CARDINALITY + 1, 2)], "Embeddings: embeddings[0] cardinality must be an int in [2, 10000000], "
                                 "got 10000001"),
    ([(5, 2.0)], "Embeddings: embeddings[0] width must be an int in [1, 4096], got 2.0"),
    ([(True, 2)], "Embeddings: embeddings[0] cardinality must be an int in [2, 10000000], got True"),
    ([(5, 3, 1)], "Embeddings: embeddings[0] must be a (cardinality, width) pair, got (5, 3, 1)"),
    ([5], "Embeddings: embeddings[0] must be a (cardinality, width) pair, got 5"),
    ("ab", "Embeddings: embeddings must be a list of (cardinality, width) pairs, got 'ab'"),
    ([(2, 1)] * (MAX_COLUMNS + 1), "Embeddings: embeddings has 10001 entries, at most 10000"),
])
def test_bad_embeddings_are_one_line_config_errors(pairs, message) -> None:
    with pytest.raises(ConfigError) as exc:
        Embeddings(pairs)
    assert str(exc.value) == message
    with pytest.raises(ConfigError) as exc:
        state_shapes({"name": "embeddings", "embeddings": pairs})
    assert str(exc.value) == f"model spec: {message}"


# ----------------------------------------------------------- MLP / ResidualMLP with codes
@pytest.mark.parametrize("cls", [MLP, ResidualMLP])
def test_stack_models_take_numeric_and_embedded_columns(cls) -> None:
    pairs = [(5, 3), (12, 6)]
    model = cls(4, [8, 8], 3, embeddings=pairs)
    x, codes = torch.randn(7, 4), codes_for(pairs)
    out = model(x, codes=codes)
    assert out.shape == (7, 3)
    assert torch.equal(model(x, codes), out)  # positionally too
    first = model.fc1 if cls is MLP else model.blocks[0].fc1
    assert first.in_features == 4 + 9
    # the first layer sees [x, embedded codes]: the output of a model without the lookup fed
    # by hand is the same
    joined = torch.cat([x, model.embed(codes)], dim=1)
    rest = model[1:] if cls is MLP else nn.Sequential(model.blocks, model.head)
    assert torch.allclose(rest(joined), out)
    with pytest.raises(TypeError, match=r"forward\(\) missing input 'codes' \(the model embeds 2 "):
        model(x)


@pytest.mark.parametrize("cls", [MLP, ResidualMLP])
def test_a_table_of_categoricals_only_has_in_features_0(cls) -> None:
    pairs = [(5, 3), (3, 2)]
    model = cls(0, [6], 2, embeddings=pairs, batchnorm=True)
    assert model(torch.empty(7, 0), codes=codes_for(pairs)).shape == (7, 2)
    assert build_model(model.spec()).spec() == model.spec() and model.spec()["in_features"] == 0
    name = cls.__name__
    with pytest.raises(ConfigError, match=rf"^{name}: in_features must be a positive int, got 0$"):
        cls(0, [6], 2)
    with pytest.raises(ConfigError, match=rf"^{name}: in_features must be a non-negative int, got -1$"):
        cls(-1, [6], 2, embeddings=pairs)


@pytest.mark.parametrize("cls", [MLP, ResidualMLP])
def test_codes_given_to_a_model_without_embeddings_is_a_type_error(cls) -> None:
    with pytest.raises(TypeError, match=r"forward\(\) got codes, but the model has no embeddings"):
        cls(4, [8], 2)(torch.randn(3, 4), codes=torch.zeros(3, 1, dtype=torch.long))


@pytest.mark.parametrize("cls", [MLP, ResidualMLP])
def test_gradient_reaches_the_embedding_rows_used(cls) -> None:
    pairs = [(6, 3), (4, 2)]
    model = cls(2, [8], 1, embeddings=pairs)
    codes = torch.tensor([[0, 1], [2, 1], [2, 3]])
    model(torch.randn(3, 2), codes).sum().backward()
    g0, g1 = (t.weight.grad for t in model.embed.tables)
    assert (g0[[0, 2]].abs().sum(1) > 0).all() and (g0[[1, 3, 4, 5]] == 0).all()
    assert (g1[[1, 3]].abs().sum(1) > 0).all() and (g1[[0, 2]] == 0).all()


def test_mlp_with_embeddings_learns_a_categorical_signal() -> None:
    # the label is a function of a 12-level column only: numbers alone are at chance
    g = torch.Generator().manual_seed(3)
    level = torch.randint(2, 12, (512,), generator=g)
    y = (level % 3 == 0).float().unsqueeze(1)
    x = torch.randn(512, 2, generator=g)
    model = MLP(2, [16], 1, embeddings=[(12, embedding_dim(12))])
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x, level[:, None]), y).backward()
        opt.step()
    accuracy = ((model(x, level[:, None]) > 0).float() == y).float().mean().item()
    assert accuracy == 1.0


# ------------------------------------------------------------- nothing changes without them
PLAIN_MLP_KEYS = ["fc1.weight", "fc1.bias", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                  "bn1.num_batches_tracked", "fc2.weight", "fc2.bias", "bn2.weight", "bn2.bias",
                  "bn2.running_mean", "bn2.running_var", "bn2.num_batches_tracked", "out.weight", "out.bias"]
PLAIN_RESMLP_KEYS = ["blocks.0.fc1.weight", "blocks.0.fc1.bias", "blocks.0.fc2.weight",
                     "blocks.0.fc2.bias", "blocks.0.proj.weight", "blocks.1.fc1.weight", "blocks.1.fc1.bias",
                     "blocks.1.fc2.weight", "blocks.1.fc2.bias", "head.weight", "head.bias"]


def test_without_embeddings_models_are_those_of_the_current_release() -> None:
    mlp = MLP(4, [8, 6], 2, dropout=0.1, batchnorm=True, embeddings=())
    assert list(mlp.state_dict()) == list(state_shapes(mlp.spec())) == PLAIN_MLP_KEYS
    assert [n for n, _ in mlp.named_children()] == ["fc1", "bn1", "act1", "drop1", "fc2", "bn2", "act2",
                                                    "drop2", "out"]
    assert mlp[0] is mlp.fc1 and list(mlp)[-1] is mlp.out and len(mlp) == 9
    assert mlp.spec() == {"name": "mlp", "in_features": 4, "hidden": [8, 6], "out_features": 2,
                          "activation": "relu", "dropout": 0.1, "batchnorm": True}
    res = ResidualMLP(4, [5, 5], 3)
    assert list(res.state_dict()) == list(state_shapes(res.spec())) == PLAIN_RESMLP_KEYS
    assert [n for n, _ in res.named_children()] == ["blocks", "head"]
    assert res.spec() == {"name": "resmlp", "in_features": 4, "hidden": [5, 5], "out_features": 3,
                          "activation": "relu", "dropout": 0.0, "batchnorm": False}
    assert "embeddings" not in repr(mlp) + repr(res)


def test_without_embeddings_init_and_forward_are_a_plain_stack() -> None:
    # the same random draws as the layers built by hand: seeded runs and recorded losses hold
    torch.manual_seed(5)
    mlp = MLP(4, [8], 2).eval()
    torch.manual_seed(5)
    plain = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(9, 4)
    assert torch.equal(mlp(x), plain(x))
    assert torch.equal(nn.Sequential.forward(mlp, x), mlp(x))


# ---------------------------------------------------------------- specs and analytic state
MLP_EMB = {"name": "mlp", "in_features": 3, "hidden": [8, 4], "out_features": 2, "activation": "gelu",
           "dropout": 0.2, "batchnorm": True, "embeddings": [[5, 3], [40, 13], [2, 1]]}
RES_EMB = {"name": "resmlp", "in_features": 0, "hidden": [6, 6], "out_features": 1, "activation": "relu",
           "dropout": 0.0, "batchnorm": True, "embeddings": [[7, 4]]}
EMB = {"name": "embeddings", "embeddings": [[9, 5], [3, 2]]}
MIXED = {"name": "multi_input",
         "branches": {"x": {"name": "mlp", "in_features": 4, "hidden": [8], "out_features": 6,
                            "activation": "relu", "dropout": 0.0, "batchnorm": False},
                      "codes": EMB},
         "head": {"name": "resmlp", "in_features": 13, "hidden": [8], "out_features": 3, "activation": "relu",
                  "dropout": 0.0, "batchnorm": False}}
SPECS = [MLP_EMB, RES_EMB, EMB, MIXED,
         {**MLP_EMB, "in_features": 0, "hidden": []},
         {"name": "multi_input", "branches": {"tab": MLP_EMB, "codes": EMB},
          "head": {**MIXED["head"], "in_features": 2 + 7}}]


@pytest.mark.parametrize("spec", SPECS)
def test_spec_round_trip(spec) -> None:
    model = build_model(spec)
    assert model.spec() == spec
    assert json.loads(json.dumps(model.spec())) == spec
    assert build_model(model.spec()).spec() == spec
    validate(spec, SPEC, "spec.json")


@pytest.mark.parametrize("spec", SPECS)
def test_state_shapes_are_those_of_the_built_model(spec) -> None:
    assert_state_shapes_match(spec)
    model, analytic = build_model(spec), state_shapes(spec)
    # so the parameter limit and the memory estimate count the tables too
    assert param_count(analytic) == sum(p.numel() for p in model.parameters())


def test_the_parameter_limit_counts_embedding_tables() -> None:
    spec = {**EMB, "embeddings": [[MAX_CARDINALITY, 50]]}
    with pytest.raises(ConfigError, match=r"^model spec: 500,000,000 parameters is more than the limit of "
                                          r"100,000,000"):
        build_model(spec, max_params=10**8)


def test_saved_weights_without_the_tables_do_not_fit_a_spec_with_them() -> None:
    plain = MLP(3, [8], 2).state_dict()
    spec = {**MLP(3, [8], 2, embeddings=[(5, 3)]).spec()}
    with pytest.raises(CheckpointError, match="weights do not fit the model asked for"):
        check_spec_fits({f"model/{k}": t for k, t in plain.items()}, spec, "state.safetensors")
    embedded = build_model(spec).state_dict()
    check_spec_fits({f"model/{k}": t for k, t in embedded.items()}, spec, "state.safetensors")


# ------------------------------------------------------------------------------ MultiInput
def test_multi_input_takes_numeric_and_code_branches_by_name() -> None:
    model = build_model(MIXED)
    assert isinstance(model, MultiInput) and model.input_names == ["x", "codes"]
    x, codes = torch.randn(7, 4), codes_for(EMB["embeddings"])
    out = model(x=x, codes=codes)
    assert out.shape == (7, 3)
    assert torch.equal(model(codes=codes, x=x), out)
    out.sum().backward()
    assert all(t.weight.grad.abs().sum() > 0 for t in model.branches["codes"].tables)


def test_a_branch_with_embeddings_takes_its_x_and_codes_as_one_dict() -> None:
    model = build_model(SPECS[-1]).eval()  # branches: an MLP with embeddings, an Embeddings
    tab = {"x": torch.randn(7, 3), "codes": codes_for(MLP_EMB["embeddings"])}
    codes = codes_for(EMB["embeddings"])
    out = model(tab, codes=codes)
    assert out.shape == (7, 3)
    joined = torch.cat([model.branches["tab"](**tab), model.branches["codes"](codes)], dim=1)
    assert torch.equal(out, model.head(joined))


# ---------------------------------------------------------------------------- the schema
def _input(name: str, width: int, dtype: str) -> dict:
    return {"name": name, "features": [f"{name}{i}" for i in range(width)], "shape": [width],
            "dtype": dtype, "mean": None, "std": None, "named": True}


def learner_doc(spec, inputs, style: str = "named") -> dict:
    return {"format": FORMAT_VERSION, "nnfit_version": "0.0", "spec": spec,
            "task": {"name": "multiclass", "classes": ["a", "b", "c"], "loss": "auto"},
            "target": "y", "preprocess": {"style": style, "inputs": inputs}}


def named_doc(spec=None, x_width: int = 3, k: int = 2, codes_dtype: str = "int64") -> dict:
    spec = spec or {**MLP(3, [8], 3, embeddings=[(5, 3), (4, 2)]).spec()}
    return learner_doc(spec, [_input("x", x_width, "float32"), _input("codes", k, codes_dtype)])


@pytest.mark.parametrize("name", ["mlp", "resmlp"])
def test_a_named_x_and_codes_preprocessing_fits_a_stack_with_embeddings(name) -> None:
    spec = {**MLP(3, [8], 3, embeddings=[(5, 3), (4, 2)]).spec(), "name": name}
    validate(named_doc(spec), LEARNER, "model.json")
    doc = named_doc(spec)
    doc["preprocess"]["inputs"].reverse()  # keyword inputs: any order
    validate(doc, LEARNER, "model.json")
    validate(learner_doc(MIXED, [_input("x", 4, "float32"), _input("codes", 2, "int64")]), LEARNER,
             "model.json")


@pytest.mark.parametrize("doc, message", [
    (named_doc(x_width=4), "model.json: spec: in_features 3 does not fit input 'x' of per-sample shape [4] "
                           "(float32)"),
    (named_doc(k=3), "model.json: spec: 2 embeddings do not fit input 'codes' of per-sample shape [3] "
                     "(int64)"),
    (named_doc(codes_dtype="float32"), "model.json: spec: 2 embeddings do not fit input 'codes' of "
                                       "per-sample shape [2] (float32)"),
    (learner_doc(MLP(3, [8], 3, embeddings=[(5, 3)]).spec(), [_input("x", 3, "float32")], "single"),
     "model.json: spec: a model with embeddings takes named inputs ['x', 'codes'], not ['x'] (single)"),
    (learner_doc(MLP(3, [8], 3).spec(), [_input("x", 3, "float32"), _input("codes", 2, "int64")]),
     "model.json: spec: in_features 3 does not fit inputs of per-sample shapes [[3], [2]]"),
    (learner_doc(EMB, [_input("x", 2, "float32")], "single"),
     "model.json: spec: an embeddings model takes int64 codes, not float32"),
])
def test_a_preprocessing_that_does_not_fit_the_embeddings_is_named(doc, message) -> None:
    if doc["spec"]["name"] == "embeddings":
        doc["task"] = {"name": "regression", "n_targets": 7, "loss": "auto", "mean": None, "std": None}
    with pytest.raises(CheckpointError) as exc:
        validate(doc, LEARNER, "model.json")
    assert str(exc.value) == message


@pytest.mark.parametrize("change, message", [
    ({"embeddings": [[1, 3]]}, "spec.embeddings[0]: cardinality 1 is out of range [2, 10000000]"),
    ({"embeddings": [[5, 3], [4, 5000]]}, "spec.embeddings[1]: width 5000 is out of range [1, 4096]"),
    ({"embeddings": [[5, 3, 1]]}, "spec.embeddings[0]: a list of 3 items (expected 2)"),
    ({"embeddings": [[5, 0]]}, "spec.embeddings[0][1]: 0 is out of range [1, 10000000]"),
    ({"embeddings": []}, "spec.embeddings: a list of 0 items (expected 1 to 10000)"),
    ({"embeddings": [[5, 1.5]]}, "spec.embeddings[0][1]: expected an integer, got a number"),
    ({"in_features": 0, "embeddings": None}, "spec.embeddings: expected a list, got null"),
])
def test_the_spec_schema_bounds_embeddings(change, message) -> None:
    spec = {**MLP(3, [8], 3, embeddings=[(5, 3)]).spec(), **change}
    with pytest.raises(CheckpointError) as exc:
        validate(spec, SPEC, "x", "spec")
    assert str(exc.value) == f"x: {message}"


def test_old_specs_validate_as_before() -> None:
    plain = MLP(3, [8], 3).spec()
    validate(plain, SPEC, "x")
    with pytest.raises(CheckpointError, match=r"^x: in_features: 0 is out of range \[1, 1099511627776\] "
                                              r"without embeddings$"):
        validate({**plain, "in_features": 0}, SPEC, "x")
    with pytest.raises(CheckpointError, match=r"^x: zz: unexpected key$"):
        validate({**plain, "zz": 1}, SPEC, "x")
    doc = learner_doc(plain, [_input("x", 3, "float32")], "single")
    validate(doc, LEARNER, "model.json")
    bad = copy.deepcopy(doc)
    bad["preprocess"]["inputs"][0] = _input("x", 4, "float32")
    with pytest.raises(CheckpointError, match=r"spec: in_features 3 does not fit inputs of per-sample"):
        validate(bad, LEARNER, "model.json")
