"""The CNN, LSTM and GRU model families: shapes, argument checks, specs and analytic state,
variable-length sequences equal to running each alone, no host reads in forward, the saved
spec's schema, summaries, and a CNN that learns the digits."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import nnfit
from helpers import assert_state_shapes_match
from nnfit.errors import CheckpointError, ConfigError
from nnfit.io.schema import SchemaError, check, fields_of
from nnfit.io.validate import LEARNER, SPEC, spec_width, validate
from nnfit.models import CNN, GRU, LSTM, MODELS, build_model, check_size, state_shapes
from test_validation import tamper_model

SPECS = [
    {"name": "cnn", "in_channels": 1, "out_features": 10},
    {"name": "cnn", "in_channels": 3, "out_features": 2, "channels": [4, 8, 8], "blocks": 2,
     "residual": True},
    {"name": "cnn", "in_channels": 3, "out_features": 1, "channels": [4, 4], "blocks": 2,
     "kernel_size": 5, "batchnorm": False, "dropout": 0.2, "activation": "gelu"},
    {"name": "cnn", "in_channels": 2, "out_features": 3, "channels": [4, 4], "residual": True,
     "batchnorm": False},
    {"name": "lstm", "in_features": 3, "out_features": 2},
    {"name": "gru", "in_features": 3, "out_features": 2, "hidden": [5, 5, 5], "bidirectional": True,
     "dropout": 0.1, "readout": "mean"},
    {"name": "lstm", "in_features": 0, "out_features": 4, "hidden": [6], "vocab_size": 50,
     "embedding_dim": 4, "embeddings": [[5, 2], [3, 1]], "bidirectional": True},
    {"name": "gru", "in_features": 0, "out_features": 1, "hidden": [4, 4], "embeddings": [[5, 2]]},
]


# ------------------------------------------------------------------------------------ cnn
@pytest.mark.parametrize("channels, size", [((32, 64), (8, 8)), ((4, 4, 4), (8, 8)),
                                            ((4, 4, 4, 4, 4), (8, 8)), ((4, 4), (7, 5)),
                                            ((4, 4, 4), (1, 9))])
def test_cnn_runs_on_any_image_size_and_pools_down_to_one_pixel(channels, size) -> None:
    model = CNN(1, 10, channels=channels)
    assert model(torch.randn(3, 1, *size)).shape == (3, 10)
    # 8x8 digits: 4, 2, 1, then the 1x1 maps pass the pools unchanged
    with nnfit.capture_activations(model, [f"stages.{i}.pool" for i in range(len(channels))]) as acts:
        model(torch.randn(2, 1, 8, 8))
    sides = [acts[f"stages.{i}.pool"].shape[-1] for i in range(len(channels))]
    assert sides == [max(1, 8 >> (i + 1)) for i in range(len(channels))]


def test_cnn_layers_options_and_residual_blocks() -> None:
    model = CNN(3, 2, channels=[8, 16], blocks=2, dropout=0.1)
    assert [n for n, _ in model.stages[0].named_children()] == [
        "conv1", "bn1", "act1", "conv2", "bn2", "pool", "act2"]
    assert model.stages[0].conv1.bias is None  # the norm's shift replaces it
    assert isinstance(model.drop, torch.nn.Dropout)
    plain = CNN(3, 2, channels=[8], batchnorm=False)
    assert [n for n, _ in plain.stages[0].named_children()] == ["conv1", "pool", "act1"]
    assert plain.stages[0].conv1.bias is not None and plain.drop is None
    res = CNN(3, 2, channels=[8, 8], residual=True)
    assert res.stages[0].block1.proj is not None and res.stages[1].block1.proj is None
    assert res(torch.randn(2, 3, 6, 6)).shape == (2, 2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(channels=[]), "CNN: channels must be a list of 1 to 100 positive ints, got []"),
    (dict(channels=[8, 0]), "CNN: channels[1] must be a positive int, got 0"),
    (dict(channels="32"), "CNN: channels must be a list of 1 to 100 positive ints, got '32'"),
    (dict(kernel_size=4), "CNN: kernel_size must be odd, got 4"),
    (dict(kernel_size=33), "CNN: kernel_size must be an int in [1, 31], got 33"),
    (dict(blocks=0), "CNN: blocks must be an int in [1, 100], got 0"),
    (dict(residual=1), "CNN: residual must be true or false, got 1"),
    (dict(dropout=1.0), "CNN: dropout must be a number in [0, 1), got 1.0"),
    (dict(activation="swish"), "CNN: activation 'swish' is not known"),
])
def test_cnn_invalid_arguments(kwargs, message) -> None:
    for make in (CNN, CNN.state_shapes):
        with pytest.raises(ConfigError) as exc:
            make(1, 10, **kwargs)
        assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


# ------------------------------------------------------------------------------ lstm / gru
@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden=[64, 32]), "LSTM: hidden entries must all be equal (one recurrent layer of that "
                            "size per entry), got [64, 32]"),
    (dict(hidden=[]), "LSTM: hidden must have at least one entry, got []"),
    (dict(hidden=[4] * 101), "LSTM: hidden has 101 entries, at most 100"),
    (dict(vocab_size=10), "LSTM: vocab_size and embedding_dim go together (both 0, or both "
                          "positive), got 10 and 0"),
    (dict(vocab_size=10, embedding_dim=4), "LSTM: in_features must be 0 with vocab_size (the input "
                                           "is one token per step), got 3"),
    (dict(readout="max"), "LSTM: readout must be one of last, mean, got 'max'"),
    (dict(bidirectional="yes"), "LSTM: bidirectional must be true or false, got 'yes'"),
    (dict(embeddings=[[1, 2]]), "LSTM: embeddings[0] cardinality must be an int in [2, 10000000], got 1"),
])
def test_recurrent_invalid_arguments(kwargs, message) -> None:
    for make in (LSTM, LSTM.state_shapes):
        with pytest.raises(ConfigError) as exc:
            make(3, 2, **kwargs)
        assert str(exc.value) == message


def test_in_features_zero_needs_tokens_or_embeddings() -> None:
    with pytest.raises(ConfigError, match=r"^GRU: in_features must be a positive int, got 0$"):
        GRU(0, 2)
    codes_only = GRU(0, 2, embeddings=[(4, 2)])
    assert codes_only(torch.zeros(3, 5, 0), codes=torch.ones(3, 5, 1, dtype=torch.long)).shape == (3, 2)


def test_recurrent_forward_checks_shapes_on_the_host() -> None:
    model = LSTM(3, 2, hidden=[4])
    with pytest.raises(ValueError, match=r"expected input of shape \(N, T, 3\), got \(2, 5, 4\)"):
        model(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"expected lengths of shape \(2,\) int64"):
        model(torch.randn(2, 5, 3), torch.tensor([5.0, 2.0]))
    with pytest.raises(TypeError, match="got codes, but the model has no embeddings"):
        model(torch.randn(2, 5, 3), codes=torch.zeros(2, 5, 1, dtype=torch.long))
    coded = GRU(3, 2, hidden=[4], embeddings=[(4, 2)])
    with pytest.raises(TypeError, match="missing input 'codes'"):
        coded(torch.randn(2, 5, 3))


def _padded_batch(model, n: int, steps: int, gen: torch.Generator):
    """Random sequences of random lengths (one full), padded at the end with random values."""
    lengths = torch.randint(1, steps + 1, (n,), generator=gen)
    lengths[0] = steps
    if model.vocab_size:
        x = torch.randint(0, model.vocab_size, (n, steps), generator=gen)
    else:
        x = torch.randn(n, steps, model.in_features, generator=gen) * 3
    codes = None
    if model.embeddings:
        codes = torch.stack([torch.randint(0, c, (n, steps), generator=gen) for c, _ in model.embeddings], -1)
    return x, lengths, codes


@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("readout", ["last", "mean"])
def test_variable_lengths_equal_running_each_sequence_alone(cls, bidirectional, readout) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    models = [cls(3, 2, hidden=[6, 6], bidirectional=bidirectional, readout=readout, dropout=0.3),
              cls(0, 2, hidden=[5], bidirectional=bidirectional, readout=readout, vocab_size=30,
                  embedding_dim=3, embeddings=[(4, 2)])]
    for model in models:
        model.eval()
        x, lengths, codes = _padded_batch(model, 9, 11, gen)
        batched = model(x, lengths, codes=codes)
        for i in range(len(x)):
            n = int(lengths[i])
            alone = model(x[i:i + 1, :n], codes=None if codes is None else codes[i:i + 1, :n])
            torch.testing.assert_close(batched[i:i + 1], alone, rtol=0, atol=1e-6)
        # lengths=None means every row full
        full = torch.full((len(x),), x.shape[1])
        torch.testing.assert_close(model(x, full, codes=codes), model(x, codes=codes), rtol=0, atol=1e-6)


def test_padding_values_never_reach_the_outputs() -> None:
    model = LSTM(2, 3, hidden=[4, 4], bidirectional=True, readout="mean").eval()
    x, lengths = torch.randn(4, 6, 2), torch.tensor([6, 3, 1, 4])
    poisoned = x.clone()
    for i, n in enumerate(lengths.tolist()):
        poisoned[i, n:] = float("nan")
    torch.testing.assert_close(model(poisoned, lengths), model(x, lengths), rtol=0, atol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_forward_reads_no_tensor_values_on_the_host(bidirectional) -> None:
    # On the meta device tensors hold no values: .item(), .tolist(), .cpu() and
    # pack_padded_sequence (which needs CPU lengths) all raise, so a forward that runs there
    # never synchronises with the device it runs on.
    for readout in ("last", "mean"):
        with torch.device("meta"):
            model = GRU(3, 2, hidden=[4, 4], bidirectional=bidirectional, readout=readout,
                        embeddings=[(5, 2)])
            x, lengths = torch.randn(5, 7, 3), torch.randint(1, 8, (5,))
            codes = torch.zeros(5, 7, 1, dtype=torch.long)
        assert model(x, lengths, codes=codes).shape == (5, 2)
    with torch.device("meta"):
        cnn = CNN(1, 10, channels=[4, 4, 4, 4])
        assert cnn(torch.randn(2, 1, 8, 8)).shape == (2, 10)


# ----------------------------------------------------------------- specs and analytic state
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["name"])
def test_state_shapes_are_the_built_models_and_specs_rebuild_it(spec) -> None:
    assert_state_shapes_match(spec)
    model = build_model(spec).eval()
    rebuilt = build_model(json.loads(json.dumps(model.spec())))
    assert rebuilt.spec() == model.spec()
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    gen = torch.Generator().manual_seed(0)
    if spec["name"] == "cnn":
        args, kwargs = (torch.randn(2, spec["in_channels"], 6, 6, generator=gen),), {}
    else:
        x, lengths, codes = _padded_batch(model, 3, 5, gen)
        args, kwargs = (x, lengths), {"codes": codes}
    torch.testing.assert_close(rebuilt(*args, **kwargs), model(*args, **kwargs), rtol=0, atol=0)
    check(model.spec(), SPEC, "spec")  # what spec() writes, the schema reads
    n_params = sum(p.numel() for p in model.parameters())
    assert check_size(state_shapes(spec)) == n_params


@pytest.mark.parametrize("spec, message", [
    ({"name": "cnn", "in_channels": 1, "out_features": 2, "chanels": [8]},
     "model spec: unknown key 'chanels' for 'cnn' (valid: name, in_channels, out_features, channels, "
     "blocks, kernel_size, activation, dropout, batchnorm, residual)"),
    ({"name": "cnn", "out_features": 2}, "model spec: missing key 'in_channels' for 'cnn'"),
    ({"name": "gru", "in_features": 1, "out_features": 2, "layers": 2},
     "model spec: unknown key 'layers' for 'gru' (valid: name, in_features, out_features, hidden, "
     "bidirectional, dropout, readout, vocab_size, embedding_dim, embeddings, highway, naive_feature)"),
    ({"name": "lstm", "in_features": 1}, "model spec: missing key 'out_features' for 'lstm'"),
    ({"name": "lstm", "in_features": 1, "out_features": 2, "hidden": [8, 4]},
     "model spec: LSTM: hidden entries must all be equal"),
])
def test_spec_keys_are_checked_like_mlp(spec, message) -> None:
    for fn in (build_model, state_shapes):
        with pytest.raises(ConfigError) as exc:
            fn(spec)
        assert str(exc.value).startswith(message)


def test_parameters_are_counted_before_anything_is_allocated() -> None:
    huge_cnn = {"name": "cnn", "in_channels": 3, "out_features": 2, "channels": [100_000, 100_000]}
    huge_rnn = {"name": "lstm", "in_features": 3, "out_features": 2, "hidden": [30_000, 30_000]}
    for spec in (huge_cnn, huge_rnn):
        with pytest.raises(ConfigError, match=r"^model spec: [\d,]+ parameters is more than the limit"):
            build_model(spec)
    assert MODELS.get("cnn") is CNN and MODELS.get("lstm") is LSTM and MODELS.get("gru") is GRU
    assert nnfit.CNN is CNN and nnfit.LSTM is LSTM and nnfit.GRU is GRU


# --------------------------------------------------------------------- saved spec's schema
def _learner_doc(spec: dict, inputs: list[dict] | None, style: str = "single") -> dict:
    def inp(name, shape, dtype="float32"):
        return {"name": name, "features": None, "shape": shape, "dtype": dtype, "mean": None,
                "std": None, "named": style == "named"}

    return {"format": 1, "nnfit_version": "0", "spec": spec, "target": None,
            "task": {"name": "multiclass", "classes": [0, 1, 2], "loss": "auto"},
            "preprocess": None if inputs is None else
            {"style": style, "inputs": [inp(*i) for i in inputs]}}


CNN_SPEC = CNN(1, 3).spec()
LSTM_SPEC = LSTM(4, 3, embeddings=[(5, 2)]).spec()
TOKENS_SPEC = GRU(0, 3, vocab_size=20, embedding_dim=4).spec()


@pytest.mark.parametrize("spec, inputs, style, problem", [
    (CNN_SPEC, [("x", [1, 8, 8])], "single", None),
    (CNN_SPEC, [("x", [3, 8, 8])], "single",
     "spec: in_channels 1 does not fit inputs of per-sample shapes [[3, 8, 8]]"),
    (CNN_SPEC, [("x", [64])], "single", "spec: in_channels 1 does not fit"),
    (LSTM_SPEC, [("x", [0, 4]), ("lengths", [], "int64"), ("codes", [0, 1], "int64")], "named", None),
    (LSTM_SPEC, [("x", [0, 4]), ("lengths", [], "int64")], "named",
     "spec: 1 embeddings do not fit no input 'codes'"),
    (LSTM_SPEC, [("x", [4]), ("codes", [1], "int64")], "named", None),  # one step's inputs
    (LSTM_SPEC, [("x", [9, 5]), ("codes", [9, 1], "int64")], "named",
     "spec: in_features 4 does not fit input 'x' of per-sample shape [9, 5] (float32)"),
    (LSTM_SPEC, [("x", [4]), ("codes", [2], "int64")], "named",
     "spec: 1 embeddings do not fit input 'codes' of per-sample shape [2]"),
    (LSTM_SPEC, [("x", [9, 4]), ("mask", [9], "int64")], "named",
     "spec: an lstm model takes inputs ['x', 'lengths', 'codes'], not ['x', 'mask']"),
    (TOKENS_SPEC, [("x", [12], "int64")], "single", None),
    (TOKENS_SPEC, [("x", [], "int64")], "single", None),
    (TOKENS_SPEC, [("x", [12, 4])], "single", "spec: vocab_size 20 does not fit input 'x'"),
])
def test_the_learner_rule_fits_the_spec_to_the_inputs(spec, inputs, style, problem) -> None:
    doc = _learner_doc(spec, inputs, style)
    if problem is None:
        validate(doc, LEARNER, "model.json")
        return
    with pytest.raises(CheckpointError) as exc:
        validate(doc, LEARNER, "model.json")
    assert str(exc.value).startswith(f"model.json: {problem}") and "\n" not in str(exc.value)


def test_spec_width_of_the_new_families() -> None:
    assert spec_width(CNN_SPEC, "in_features") == 1 and spec_width(CNN_SPEC, "out_features") == 3
    assert spec_width(LSTM_SPEC, "in_features") == 4 and spec_width(LSTM_SPEC, "out_features") == 3
    assert spec_width(TOKENS_SPEC, "in_features") is None


@pytest.mark.parametrize("spec", [CNN_SPEC, LSTM_SPEC, TOKENS_SPEC], ids=lambda s: s["name"])
def test_every_refused_spec_value_is_refused_in_one_line(spec) -> None:
    # the tamper fuzz's "refused" mutations, every one, on each new variant's every field
    doc = _learner_doc(spec, None)
    paths = [(p, f) for p, f in fields_of(doc, LEARNER) if p[:1] == ("spec",) and len(p) > 1]
    assert {p[1] for p, _ in paths} >= set(spec) - {"name"}
    for path, field in paths:
        for value in field.refused():
            bad = json.loads(json.dumps(doc))
            target = bad
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
            with pytest.raises(CheckpointError) as exc:
                validate(bad, LEARNER, "model.json")
            assert "\n" not in str(exc.value) and str(exc.value).startswith("model.json: spec"), (path, value)


@pytest.mark.parametrize("spec, message", [
    ({**CNN_SPEC, "kernel_size": 4}, "spec.kernel_size: 4 is even"),
    ({**LSTM_SPEC, "hidden": [8, 4]}, "spec.hidden: entries must all be equal"),
    ({**TOKENS_SPEC, "embedding_dim": 0}, "spec.embedding_dim: 0 does not go with vocab_size 20"),
    ({**TOKENS_SPEC, "in_features": 2}, "spec.in_features: 2 with vocab_size"),
    ({**LSTM_SPEC, "in_features": 0, "embeddings": []}, "spec.in_features: 0 is out of range"),
])
def test_rules_across_fields_name_the_field(spec, message) -> None:
    with pytest.raises(SchemaError) as exc:
        check(spec, SPEC, "spec")
    assert str(exc.value).startswith(message)


# ---------------------------------------------------------------------------- summaries
def test_summary_and_activation_capture_of_a_cnn_and_an_lstm() -> None:
    cnn = CNN(1, 10, channels=[4, 8])
    s = nnfit.summarize(cnn, torch.randn(2, 1, 8, 8))
    shapes = {r.name: r.output_shape for r in s.layers}
    assert shapes["stages.0.conv1"] == "(2, 4, 8, 8)" and shapes["stages.0.pool"] == "(2, 4, 4, 4)"
    assert shapes["stages.1.pool"] == "(2, 8, 2, 2)" and shapes["gap"] == "(2, 8, 1, 1)"
    assert shapes["head"] == "(2, 10)"
    assert s.total_params == sum(p.numel() for p in cnn.parameters())
    with nnfit.capture_activations(cnn, ["stages.1", "head"]) as acts:
        cnn(torch.randn(3, 1, 8, 8))
    assert acts["stages.1"].shape == (3, 8, 2, 2) and acts["head"].shape == (3, 10)

    lstm = LSTM(3, 2, hidden=[5, 5], bidirectional=True)
    sample = {"x": torch.randn(4, 6, 3), "lengths": torch.tensor([6, 2, 3, 1])}
    s = nnfit.summarize(lstm, sample)
    shapes = {r.name: r.output_shape for r in s.layers}
    assert shapes["layers.0"] == "[(4, 6, 5), [(1, 4, 5), (1, 4, 5)]]"
    assert shapes["reverse_layers.1"] == "[(4, 6, 5), [(1, 4, 5), (1, 4, 5)]]"
    assert shapes["head"] == "(4, 2)"
    with nnfit.capture_activations(lstm, ["layers.1", "head"]) as acts:
        lstm(**sample)
    assert acts["layers.1"][0].shape == (4, 6, 5) and acts["head"].shape == (4, 2)


# ------------------------------------------------------------------------ a cnn that learns
def _digits() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16).astype("float32")[:, None]  # (N, 1, 8, 8)
    return tuple(train_test_split(x, d.target, test_size=0.2, stratify=d.target, random_state=0))


@pytest.fixture(scope="module")
def digits_cnn(tmp_path_factory):
    x_train, x_test, y_train, y_test = _digits()
    run = tmp_path_factory.mktemp("cnn") / "run"
    start = time.perf_counter()
    learner = nnfit.fit(CNN(1, 10), x_train, y_train, epochs=40, batch_size=32, optimizer="adamw",
                        lr=3e-3, weight_decay=0.01, scheduler="onecycle", seed=0, device="cpu",
                        quiet=True, run_dir=run)
    return learner, time.perf_counter() - start, x_test, y_test, run


def test_a_cnn_learns_the_digits(digits_cnn) -> None:
    learner, seconds, x_test, y_test, _ = digits_cnn
    accuracy = float((learner.predict(x_test) == y_test).mean())
    print(f"digits CNN: test accuracy {accuracy:.4f} in {seconds:.1f} s")
    assert accuracy >= 0.97


@pytest.mark.parametrize("key, value, field", [
    ("kernel_size", 2, "spec.kernel_size"), ("channels", [], "spec.channels"),
    ("in_channels", 3, "spec"), ("zz", 1, "spec"),
])
def test_a_tampered_cnn_spec_is_refused_in_one_line(digits_cnn, tmp_path, key, value, field) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_cnn[4], run)
    tamper_model(run, meta_fn=lambda m: m["spec"].__setitem__(key, value))
    with pytest.raises(CheckpointError) as exc:
        nnfit.load(run)
    message = str(exc.value)
    assert "\n" not in message and f"model.json: {field}" in message, message
