"""Second review, findings 2-4: what a run, a resume or a weights file loads is checked first.

* 2: a resume whose settings ask for another model (``hidden`` in ``config.json`` or a flag)
  is refused before that model is built, with or without ``--force-resume`` (then for the real
  cause: the checkpoint's weights do not fit); a new model whose training cannot fit in memory
  is refused up front, naming its parameter count and the estimate.
* 3: ``evaluate`` of a table model whose ``model.json`` says ``"preprocess": null`` is one
  line, as ``predict`` is; so is evaluating a DataLoader-trained model on arrays.
* 4: ``load_weights`` refuses NaN/infinite parameters, NaN buffers, another dtype (no silent
  cast), complex, sparse and meta tensors, naming the tensor, and loads nothing then.

CPU only; the peak-memory test runs the CLI in four short subprocesses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nnfit
from helpers import one_error
from nnfit.config import TrainConfig
from nnfit.errors import CheckpointError, ConfigError, DataError
from nnfit.files import MANIFEST, manifest_bytes
from nnfit.memory import training_bytes
from nnfit.models import state_shapes

SRC = Path(__file__).parent.parent / "src"
HIDE = ["--quiet", "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--hidden", "4"]


def _csv(path: Path, n: int = 96) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] - x[:, 1] > 0).astype(int)
    np.savetxt(path, np.c_[x, y], delimiter=",", header="a,b,c,d,y", comments="", fmt="%.6g")
    return path


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """A finished two-epoch CLI run of an MLP with hidden [4]."""
    d = tmp_path_factory.mktemp("review2")
    run = d / "run"
    assert nnfit.cli.main(["train", str(_csv(d / "d.csv")), "--target", "y", "--out", str(run), *HIDE]) == 0
    return run


def _copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(run, tmp_path / name))


def _set_config(run: Path, **values) -> None:
    """Rewrite the run's config.json and recompute its manifest (as anyone can)."""
    cfg = json.loads((run / "config.json").read_text())
    cfg.update(values)
    (run / "config.json").write_text(json.dumps(cfg))
    listed = json.loads((run / MANIFEST).read_text())["files"]
    (run / MANIFEST).write_bytes(manifest_bytes("model", {n: (run / n).read_bytes() for n in listed}))


# ------------------------------------------------------------------ 2: resume, before building
def test_a_changed_hidden_size_names_the_settings_or_with_force_the_weights(cli_run, tmp_path,
                                                                            capsys) -> None:
    run = _copy(cli_run, tmp_path)
    _set_config(run, hidden=[300, 300])
    line = one_error(capsys, "train", "--resume", run, "--epochs", "3")
    assert "cannot resume with changed settings: hidden ([4] -> [300, 300])" in line
    line = one_error(capsys, "train", "--resume", run, "--epochs", "3", "--force-resume")
    # the real cause, not an optimizer parameter count; and no "resuming despite" warning first
    assert "state.safetensors: weights do not fit the model asked for" in line
    assert "model/fc1.weight (4, 4) vs model (300, 4)" in line and "missing keys: model/fc2.weight" in line


def test_api_resume_checks_the_spec_against_the_weights_before_building(cli_run, tmp_path,
                                                                       monkeypatch) -> None:
    import nnfit.learner
    import nnfit.specs

    run = _copy(cli_run, tmp_path)
    built = []  # the device of every model fit builds (the spec's completion and the model itself)
    real = nnfit.learner.build_model
    for module in (nnfit.learner, nnfit.specs):
        monkeypatch.setattr(module, "build_model",
                            lambda spec, **kw: built.append(torch.empty(0).device.type) or real(spec, **kw))
    data = str(cli_run.parent / "d.csv")
    spec = {"name": "mlp", "hidden": [300]}
    with pytest.raises(ConfigError, match=r"changed settings: .*model"):
        nnfit.fit(spec, data, target="y", run_dir=run, resume=run, epochs=3, quiet=True, device="cpu")
    for kw in ({"run_dir": run, "force_resume": True}, {}):  # forced, and without a run directory
        with pytest.raises(CheckpointError, match=r"weights do not fit the model asked for .*\(300, 4\)"):
            nnfit.fit(spec, data, target="y", resume=run, epochs=3, quiet=True, device="cpu", **kw)
    assert built and set(built) == {"meta"}  # where a model holds no data: never really built


_PEAK = """import resource, sys
from nnfit.cli import main
code = main(sys.argv[1:])
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def _peak(*argv) -> tuple[int, int, str]:
    """Run the CLI in a fresh process: (exit status, peak RSS in MB, stderr)."""
    env = {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-c", _PEAK, *map(str, argv)], capture_output=True, text=True,
                       timeout=300, env=env)
    peak = next(int(line.split()[1]) for line in p.stderr.splitlines() if line.startswith("PEAK"))
    return p.returncode, peak // 1024, p.stderr


def test_a_resume_asking_for_a_huge_model_never_allocates_it(cli_run, tmp_path) -> None:
    # hidden [20000, 20000]: 400M parameters, 1.6 GB of weights if it were ever built
    code, normal, err = _peak("train", "--resume", _copy(cli_run, tmp_path, "a"), "--epochs", "3")
    assert code == 0, err
    run = _copy(cli_run, tmp_path, "b")
    _set_config(run, hidden=[20000, 20000])
    cases = [(run, "--epochs", "3"), (run, "--epochs", "3", "--force-resume"),
             (_copy(cli_run, tmp_path, "c"), "--hidden", "20000,20000", "--force-resume")]
    for args in cases:
        code, peak, err = _peak("train", "--resume", *args)
        assert code == 2 and "nnfit: error:" in err, err
        assert peak < normal + 64, (args, peak, normal)


# ------------------------------------------------------------------ 2: new models and memory
def test_the_training_memory_estimate() -> None:
    state = state_shapes({"name": "mlp", "in_features": 9, "hidden": [10], "out_features": 1})
    p = 4 * (9 * 10 + 10 + 10 + 1)  # float32 parameters, no buffers
    # weights + gradients + 2 moments + best weights; a checkpoint: 2 copies of all but gradients
    assert training_bytes(state, TrainConfig(), writes_run=True) == (5 * p, 8 * p)
    sgd = TrainConfig(optimizer="sgd", restore_best=False)
    assert training_bytes(state, sgd, writes_run=False) == (2 * p, 0)
    assert training_bytes(state, TrainConfig(optimizer="rmsprop", momentum=0.9), writes_run=False)[0] == 5 * p


def test_a_model_that_cannot_train_in_memory_is_refused_before_it_is_built(tmp_path, capsys,
                                                                           monkeypatch) -> None:
    import nnfit.memory

    monkeypatch.setattr(nnfit.memory, "memory_bytes", lambda device: 16 << 20)  # a 16 MiB machine
    data = _csv(tmp_path / "d.csv")
    args = ["train", data, "--target", "y", "--out", tmp_path / "run", *HIDE, "--hidden", "1000,1000"]
    line = one_error(capsys, *args)
    # 4 bytes x 1,007,001 x 13: weights, gradients, 2 moments, best weights, 2 checkpoint copies
    assert "model spec: 1,007,001 parameters need at least 49.9 MiB to train (weights, gradients, " \
           "2 adam state tensors, the best weights, 2 copies of the saved state while a checkpoint " \
           "is written) but this machine has 16.0 MiB of memory: use smaller hidden sizes" in line
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"1,007,001 parameters need at least"):
        nnfit.fit({"name": "mlp", "hidden": [1000, 1000]}, str(data), target="y", quiet=True, device="cpu")


# ------------------------------------------------------------------ 3: evaluate without preprocessing
def test_evaluate_a_table_model_whose_preprocessing_is_null(cli_run, tmp_path, capsys) -> None:
    run = _copy(cli_run, tmp_path)
    meta = json.loads((run / "model.json").read_text())
    meta["preprocess"] = None
    (run / "model.json").write_text(json.dumps(meta))
    listed = json.loads((run / MANIFEST).read_text())["files"]
    (run / MANIFEST).write_bytes(manifest_bytes("model", {n: (run / n).read_bytes() for n in listed}))
    data = cli_run.parent / "d.csv"
    line = one_error(capsys, "evaluate", run, data, "--target", "y")
    assert "model.json: preprocess is null but the model was trained on the table column 'y'" in line
    with pytest.raises(CheckpointError, match="preprocess is null"):
        nnfit.load(run)


def test_evaluate_a_dataloader_model_on_arrays_is_one_line() -> None:
    x = torch.randn(32, 4)
    y = (x[:, 0] > 0).float()
    ds = torch.utils.data.TensorDataset(x, y)
    learner = nnfit.fit(nn.Linear(4, 1), ds, task="binary", epochs=1, quiet=True, device="cpu")
    with pytest.raises(ConfigError, match="trained from a DataLoader"):
        learner.evaluate(x.numpy(), y.numpy())


# ------------------------------------------------------------------ 4: load_weights checks values
def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def _nan(d, k):
    d[k][0] = float("nan")


def _inf(d, k):
    d[k][0] = float("inf")


CASES = {  # name: (change, tensor, message)
    "nan_weight": (lambda d: _nan(d, "0.weight"), "0.weight", "holds NaN or infinite values"),
    "inf_bias": (lambda d: _inf(d, "0.bias"), "0.bias", "holds NaN or infinite values"),
    "nan_buffer": (lambda d: _nan(d, "1.running_var"), "1.running_var", "holds NaN values"),
    "float64": (lambda d: d.update({"0.weight": d["0.weight"].double()}), "0.weight",
                "float64 vs model float32"),
    "complex": (lambda d: d.update({"0.weight": d["0.weight"].to(torch.complex64)}), "0.weight",
                "complex64 vs model float32"),
    "sparse": (lambda d: d.update({"0.weight": d["0.weight"].to_sparse()}), "0.weight", "not a dense tensor"),
    "meta": (lambda d: d.update({"0.weight": d["0.weight"].to("meta")}), "0.weight", "on the meta device"),
    # what Learner.load refuses too (nnfit.io.weights.model_wants): a variance, a counter < 0
    "negative_var": (lambda d: d["1.running_var"].fill_(-1.0), "1.running_var", "holds negative values"),
    "negative_count": (lambda d: d["1.num_batches_tracked"].fill_(-3), "1.num_batches_tracked",
                       "holds negative values"),
}


@pytest.mark.parametrize(("case", "fmt"), [(c, f) for c in sorted(CASES) for f in ("pt", "safetensors")
                                           if f == "pt" or c not in ("sparse", "meta")])  # torch only
def test_load_weights_refuses_bad_values_naming_the_tensor(tmp_path, case, fmt) -> None:
    change, tensor, message = CASES[case]
    state = {k: v.clone() for k, v in _model().state_dict().items()}
    change(state)
    path = tmp_path / f"w.{fmt}"
    if fmt == "pt":
        torch.save(state, path)
    else:
        nnfit.save_weights(state, path)
    target = _model()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        nnfit.load_weights(target, path)
    assert str(e.value).startswith(f"{path}: ") and tensor in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing loaded


def test_load_weights_allows_an_infinite_buffer(tmp_path) -> None:
    state = _model().state_dict()
    state["1.running_var"][0] = float("inf")  # a buffer may be a mask of infinities
    nnfit.save_weights(state, tmp_path / "w.safetensors")
    assert nnfit.load_weights(_model(), tmp_path / "w.safetensors")[1].running_var[0] == float("inf")


# ------------------------------------------------------------------ one wording for float32's range
def test_a_value_beyond_float32_is_worded_alike_from_a_file_or_a_table(tmp_path) -> None:
    from nnfit.data.columns import Columns, feature_matrix
    from nnfit.data.read import read_table

    (tmp_path / "big.csv").write_text("a\n1\n1e39\n")
    table = Columns("t", {"a": np.array([1.0, 1e39])})  # no float32 block: checked column by column
    for read in (lambda: feature_matrix(table, ["a"]), lambda: read_table(tmp_path / "big.csv")):
        with pytest.raises(DataError, match=r"column 'a' has a value beyond float32 range "
                                            r"\(row 2: 1e\+39; float32 holds at most 3\.4e38 in size\)$"):
            read()
