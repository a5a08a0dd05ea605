"""Every loaded byte validated before use: checkpoints and saved models whose manifests are
valid (anyone can recompute one) but whose contents make no sense are refused with one
CheckpointError naming the file and the field; config.json is covered by the run's manifest
and checked like the rest; a model's size is checked before it is built.

The helpers here (rewriting a checkpoint or a model directory with a valid manifest) are also
used by tests/test_tamper_fuzz.py.
"""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import nnfit
from helpers import assert_state_shapes_match
from nnfit.checkpoint import tensors_to_bytes
from nnfit.cli import main
from nnfit.config import DataConfig, ModelConfig, TrainConfig
from nnfit.errors import CheckpointError, ConfigError, NnfitWarning
from nnfit.files import MANIFEST, manifest_bytes, sha256_bytes
from nnfit.io.validate import CONFIG, SPEC
from nnfit.models import MODELS
from nnfit.run import CHECKPOINTS, committed

HERE = Path(__file__).parent
SRC = HERE.parent / "src"
QUICK = dict(quiet=True, device="cpu", batch_size=16, seed=0)
SPEC_8 = {"name": "mlp", "hidden": [8]}


# ------------------------------------------------------------------------------- helpers
def data(n: int = 96, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x, (x[:, 0] - x[:, 1] > 0).astype(int)


def newest(run: Path) -> Path:
    return run / CHECKPOINTS / committed(run)[-1]


def read_checkpoint(ck: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load

    return load((ck / "state.safetensors").read_bytes()), json.loads((ck / "state.json").read_text())


def write_checkpoint(ck: Path, tensors: dict[str, torch.Tensor], meta: dict | None = None,
                     meta_bytes: bytes | None = None) -> None:
    """Replace a checkpoint's files, with a manifest that matches them (no fsync: tests only)."""
    files = {"state.safetensors": tensors_to_bytes(tensors),
             "state.json": meta_bytes if meta_bytes is not None else json.dumps(meta).encode()}
    write_bundle_files(ck, "checkpoint", files)


def write_bundle_files(d: Path, kind: str, files: dict[str, bytes]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, data_ in files.items():
        (d / name).write_bytes(data_)
    (d / MANIFEST).write_bytes(manifest_bytes(kind, files))


def tamper_checkpoint(run: Path, tensors_fn=None, meta_fn=None, meta_bytes: bytes | None = None) -> Path:
    """Rewrite the newest checkpoint of ``run`` through the given functions (in place);
    ``meta_bytes`` replaces state.json's text outright."""
    ck = newest(run)
    tensors, meta = read_checkpoint(ck)
    if tensors_fn is not None:
        tensors_fn(tensors)
    if meta_fn is not None:
        meta_fn(meta)
    write_checkpoint(ck, tensors, meta, meta_bytes=meta_bytes)
    return ck


def root_files(run: Path) -> dict[str, bytes]:
    """The files the run's root manifest lists (model and config.json)."""
    listed = json.loads((run / MANIFEST).read_text())["files"]
    return {name: (run / name).read_bytes() for name in listed}


def tamper_model(run: Path, meta_fn=None, tensors_fn=None, config: bytes | None = None) -> None:
    """Rewrite the run's model.json / model.safetensors / config.json, manifest recomputed."""
    from safetensors.torch import load

    files = root_files(run)
    if meta_fn is not None:
        meta = json.loads(files["model.json"])
        meta_fn(meta)
        files["model.json"] = json.dumps(meta).encode()
    if tensors_fn is not None:
        tensors = load(files["model.safetensors"])
        tensors_fn(tensors)
        files["model.safetensors"] = tensors_to_bytes(tensors)
    if config is not None:
        files["config.json"] = config
    write_bundle_files(run, "model", files)


def copy(src: Path, tmp_path: Path, name: str = "run") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def resume(run: Path, spec=SPEC_8, **kw):
    x, y = data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return nnfit.fit(spec, x, y, resume=run, **{**QUICK, "epochs": 3, **kw})


def write_csv(path: Path, n: int = 120) -> Path:
    x, y = data(n)
    np.savetxt(path, np.c_[x, y], delimiter=",", header="a,b,c,d,y", comments="", fmt="%.6g")
    return path


def one_line_error(capsys, code: int, *named: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("nnfit: error: "), err
    assert "Traceback" not in err
    for word in named:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def api_run(tmp_path_factory) -> Path:
    """A finished API run (binary task, step schedule) whose checkpoints hold best weights."""
    d = tmp_path_factory.mktemp("validation") / "run"
    x, y = data()
    nnfit.fit(SPEC_8, x, y, epochs=3, run_dir=d, scheduler="step", step_size=1, gamma=0.5, **QUICK)
    return d


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """A finished `nnfit train` run on a CSV file (absolute data path in its config)."""
    d = tmp_path_factory.mktemp("validation-cli")
    write_csv(d / "d.csv")
    assert main(["train", str(d / "d.csv"), "--target", "y", "--epochs", "2", "--quiet",
                 "--out", str(d / "run"), "--scheduler", "step"]) == 0
    return d / "run"


# ------------------------------------------------------------------ the schema's coverage
@pytest.mark.parametrize("spec", [
    {"name": "mlp", "in_features": 4, "hidden": [8, 3], "out_features": 2, "batchnorm": True, "dropout": 0.1},
    {"name": "mlp", "in_features": 4, "hidden": [], "out_features": 2},
    {"name": "resmlp", "in_features": 4, "hidden": [4, 6, 6], "out_features": 3, "batchnorm": True},
    {"name": "multi_input", "branches": {
        "a": {"name": "mlp", "in_features": 3, "hidden": [5], "out_features": 2},
        "b": {"name": "resmlp", "in_features": 2, "hidden": [3], "out_features": 2}},
     "head": {"name": "mlp", "in_features": 4, "hidden": [], "out_features": 1}},
])
def test_state_shapes_are_those_of_the_built_model(spec) -> None:
    assert_state_shapes_match(spec)


def test_every_model_and_every_setting_is_in_the_schema() -> None:
    # A new model family or config setting must add itself to the schema (and so to the fuzz).
    assert set(SPEC.variants) == set(MODELS.names())
    for name, variant in SPEC.variants.items():
        params = set(inspect.signature(MODELS.get(name)).parameters)
        assert set(variant.fields) == params | {"name"}, name
    cli = {f for cls in (ModelConfig, TrainConfig, DataConfig) for f in cls.__dataclass_fields__}
    api = set(TrainConfig.__dataclass_fields__) | {"model"}
    assert set(CONFIG.get().options["cli"].fields) == cli
    assert set(CONFIG.get().options["api"].fields) == api


# ------------------------------------------------------------- silently accepted before
def test_a_binary_task_with_three_classes_is_refused(api_run, tmp_path) -> None:
    run = copy(api_run, tmp_path)
    three = lambda m: m["learner"]["task"].__setitem__("classes", [0, 1, 2])  # noqa: E731
    ck = tamper_checkpoint(run, meta_fn=three)
    with pytest.raises(CheckpointError, match=rf"{ck}/state.json: learner.task.classes: .*3 items"):
        resume(run)
    tamper_model(run, meta_fn=lambda m: m["task"].__setitem__("classes", [0, 1, 2]))
    with pytest.raises(CheckpointError, match="model.json: task.classes: .*3 items"):
        nnfit.load(run)


def test_a_multiclass_task_with_two_classes_is_legal(api_run, tmp_path) -> None:
    run = copy(api_run, tmp_path)
    x, _ = data()
    spec = {"name": "mlp", "in_features": 4, "hidden": [8], "out_features": 2}
    learner = nnfit.fit(spec, x, (x[:, 0] > 0).astype(int), task="multiclass", epochs=1, **QUICK)
    learner.save(run)
    meta = json.loads((run / "model.json").read_text())
    tamper_model(run, meta_fn=lambda m: m["task"].__setitem__("name", "multiclass"))
    assert meta["task"]["loss"] == "cross_entropy"
    np.testing.assert_array_equal(nnfit.load(run).predict(x), learner.predict(x))


def test_an_unknown_task_name_is_refused(api_run, tmp_path) -> None:
    run = copy(api_run, tmp_path)
    tamper_checkpoint(run, meta_fn=lambda m: m["learner"]["task"].__setitem__("name", "ranking"))
    with pytest.raises(CheckpointError, match=r"learner.task.name: 'ranking' is not one of"):
        resume(run)


@pytest.mark.parametrize("junk, field", [({"junk": 1}, "scheduler.junk: unexpected key"),
                                         ({"gamma": "x"}, "scheduler.gamma: expected a number"),
                                         ({"last_epoch": None}, "scheduler.last_epoch: expected an integer")])
def test_a_junk_scheduler_state_is_refused(api_run, tmp_path, junk, field) -> None:
    run = copy(api_run, tmp_path)
    tamper_checkpoint(run, meta_fn=lambda m: m["scheduler"].update(junk))
    with pytest.raises(CheckpointError, match=rf"state.json: {field}"):
        resume(run, scheduler="step", step_size=1, gamma=0.5)


def test_a_null_data_fingerprint_is_refused(api_run, tmp_path) -> None:
    run = copy(api_run, tmp_path)
    tamper_checkpoint(run, meta_fn=lambda m: m.__setitem__("data_sha256", None))
    x, y = data()
    with pytest.raises(CheckpointError, match="state.json: data_sha256: expected a string, got null"):
        nnfit.fit(SPEC_8, x + 1, y, run_dir=run, resume=run, scheduler="step", step_size=1, gamma=0.5,
                  **{**QUICK, "epochs": 4})


def test_an_extra_optimizer_tensor_is_refused(api_run, tmp_path) -> None:
    run = copy(api_run, tmp_path)
    tamper_checkpoint(run, lambda t: t.__setitem__("optimizer/99/exp_avg", torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"state.safetensors: tensors do not fit "
                                              r"\(unexpected keys: optimizer/99/exp_avg\)"):
        resume(run, scheduler="step", step_size=1, gamma=0.5)


def test_missing_best_weights_are_refused(api_run, tmp_path) -> None:
    run = copy(api_run, tmp_path)
    tamper_checkpoint(run, lambda t: t.pop("best/out.bias"))
    with pytest.raises(CheckpointError, match=r"the model \(missing keys: best/out.bias\)"):
        resume(run, scheduler="step", step_size=1, gamma=0.5)
    tamper_checkpoint(run, lambda t: [t.pop(k) for k in list(t) if k.startswith("best/")])
    with pytest.raises(CheckpointError, match=r"missing keys: best/fc1.weight, best/fc1.bias"):
        resume(run, scheduler="step", step_size=1, gamma=0.5)


def test_weights_of_another_dtype_are_refused(api_run, tmp_path) -> None:
    run = copy(api_run, tmp_path)

    def double(t):
        t.update({k: v.double() for k, v in t.items() if k.startswith("model/")})

    tamper_checkpoint(run, double)
    with pytest.raises(CheckpointError, match=r"dtype mismatch: model/fc1.weight float64 vs model float32"):
        resume(run, scheduler="step", step_size=1, gamma=0.5)
    tamper_model(run, tensors_fn=lambda t: t.update({k: v.half() for k, v in t.items()}))
    with pytest.raises(CheckpointError, match=r"model.safetensors: .*fc1.weight float16 vs model float32"):
        nnfit.load(run)


def test_a_transposed_optimizer_state_of_the_same_size_is_refused(api_run, tmp_path) -> None:
    run = copy(api_run, tmp_path)
    tamper_checkpoint(run, lambda t: t.__setitem__("optimizer/0/exp_avg", t["optimizer/0/exp_avg"].t()))
    with pytest.raises(CheckpointError, match=r"mismatch: optimizer/0/exp_avg \(4, 8\) vs expected \(8, 4\)"):
        resume(run, scheduler="step", step_size=1, gamma=0.5)


def test_a_wrong_shaped_optimizer_state_ends_cli_resume_in_one_line_not_a_segfault(cli_run, tmp_path):
    # Before: SIGSEGV inside the fused Adam kernel on --resume.
    run = copy(cli_run, tmp_path)
    tamper_checkpoint(run, lambda t: t.__setitem__("optimizer/0/exp_avg", torch.zeros(3, 3)))
    r = subprocess.run([sys.executable, "-m", "nnfit", "train", "--resume", str(run), "--epochs", "3"],
                       capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(SRC),
                                                                         "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnfit: error: "), r.stderr
    assert "state.safetensors" in lines[0] and "optimizer/0/exp_avg (3, 3) vs expected (64, 4)" in lines[0]


@pytest.mark.parametrize("key, value, why", [
    ("rng/numpy", lambda t: t.index_fill(0, torch.tensor([624]), 10**6), "valid NumPy MT19937 state"),
    ("rng/python", lambda t: t.index_fill(0, torch.tensor([625]), -1), "valid Python random state"),
    ("rng/torch", lambda t: torch.zeros_like(t), "not a valid generator state"),
    ("optimizer/1/exp_avg_sq", lambda t: -t - 1, "holds negative values"),
    ("model/fc1.weight", lambda t: t.index_fill(0, torch.tensor([0]), float("nan")), "NaN or infinite"),
])
def test_values_a_resume_cannot_use_are_refused(api_run, tmp_path, key, value, why) -> None:
    run = copy(api_run, tmp_path)
    tamper_checkpoint(run, lambda t: t.__setitem__(key, value(t[key])))
    with pytest.raises(CheckpointError, match=rf"state.safetensors: tensor {key} .*{why}"):
        resume(run, scheduler="step", step_size=1, gamma=0.5)


def test_non_finite_saved_weights_are_refused(api_run, tmp_path) -> None:
    run = copy(api_run, tmp_path)
    tamper_model(run, tensors_fn=lambda t: t["out.weight"].fill_(float("inf")))
    with pytest.raises(CheckpointError, match="model.safetensors: tensor out.weight holds NaN or infinite"):
        nnfit.load(run)


# --------------------------------------------------------------------------- config.json
def test_config_json_is_covered_by_the_run_manifest(cli_run, tmp_path, capsys) -> None:
    run = copy(cli_run, tmp_path)
    assert "config.json" in json.loads((run / MANIFEST).read_text())["files"]
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text.replace('"epochs": 2', '"epochs": 7'))  # manifest kept
    with pytest.raises(CheckpointError, match=r"config.json: damaged \(SHA-256"):
        nnfit.load(run)
    assert main(["predict", str(run), str(run.parent / "d.csv")]) == 2
    one_line_error(capsys, 2, "config.json: damaged")
    # A resume takes the settings of the newest checkpoint instead (a run killed while
    # rewriting config.json resumes too), and the finished run verifies again.
    assert main(["train", "--resume", str(run)]) == 0
    assert nnfit.load(run).history is not None
    assert json.loads((run / "config.json").read_text())["epochs"] == 2


def test_a_run_being_resumed_keeps_its_model_loadable_an_unfinished_one_says_so(api_run, tmp_path):
    run = copy(api_run, tmp_path)
    x, y = data()
    seen = []

    class Probe(nnfit.Callback):
        def on_epoch_end(self, trainer, logs):  # after a mid-epoch checkpoint: config.json and
            seen.append(json.loads((run / "config.json").read_text())["epochs"])  # its manifest
            seen.append(nnfit.load(run).predict(x[:3]).tolist())  # were rewritten (epochs=4)

    nnfit.fit(SPEC_8, x, y, run_dir=run, resume=run, callbacks=[Probe()], scheduler="step", step_size=1,
              gamma=0.5, checkpoint_steps=2, **{**QUICK, "epochs": 4})
    assert len(seen) == 2 and seen[0] == 4
    listed = json.loads((run / MANIFEST).read_text())["files"]
    assert sorted(listed) == ["config.json", "model.json", "model.safetensors"]
    files = root_files(run)
    write_bundle_files(run, "model", {"config.json": files["config.json"]})  # as at a run's start
    with pytest.raises(CheckpointError, match=r"no model saved yet \(the run has not finished"):
        nnfit.load(run)


NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("content, field", [
    (b'[["epochs", 5]]', "config.json: expected an object, got a list"),
    (b'"epochs"', "config.json: expected an object, got a string"),
    (b"null", "config.json: expected an object, got null"),
    (b"{" + b'"a": {' * 40 + b"}" * 41, "config.json: a" + ".a" * 31 + ": nested deeper than 32"),
    (NESTED, "config.json: not valid JSON"),
    (b'{"epochs": 5}', "config.json: batch_size: missing"),
])
def test_a_config_json_that_is_not_a_run_config_is_one_line_exit_2(cli_run, tmp_path, capsys,
                                                                    content, field) -> None:
    run = copy(cli_run, tmp_path)
    tamper_model(run, config=content)
    capsys.readouterr()
    one_line_error(capsys, main(["train", "--resume", str(run), "--epochs", "3"]), field)
    one_line_error(capsys, main(["inspect", str(run)]), field)


def test_a_config_json_setting_of_the_wrong_type_or_range_is_named(cli_run, tmp_path, capsys) -> None:
    run = copy(cli_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    for key, value, message in [("lr", "fast", "config.json: lr: expected a number"),
                                ("epochs", 0, "config.json: epochs must be >= 1"),
                                ("optimizer", "lion", "config.json: optimizer: 'lion' is not one of"),
                                ("colour", "red", "config.json: colour: unexpected key")]:
        tamper_model(run, config=json.dumps({**config, key: value}).encode())
        capsys.readouterr()
        one_line_error(capsys, main(["train", "--resume", str(run), "--epochs", "3"]), message)


# --------------------------------------------------------------------------- model size
def test_a_huge_hidden_size_is_a_config_error_naming_the_count(tmp_path, capsys) -> None:
    x, y = data()
    with pytest.raises(ConfigError, match=r"model spec: 40,001,400,001 parameters is more than the "
                                          r"limit of 1,000,000,000"):
        nnfit.fit({"name": "mlp", "hidden": [200_000, 200_000]}, x, y, **QUICK)
    with pytest.raises(ConfigError, match=r"model spec: .* parameters is more than the limit"):
        nnfit.fit({"name": "resmlp", "hidden": [10**6]}, x, y, **QUICK)
    csv = write_csv(tmp_path / "d.csv")
    capsys.readouterr()
    one_line_error(capsys, main(["train", str(csv), "--target", "y", "--hidden", "200000,200000",
                                 "--out", str(tmp_path / "r"), "--quiet"]), "40,001,400,001 parameters")
    assert not (tmp_path / "r").exists()


_MEASURE = r"""
import contextlib, io, re, sys, warnings
import nnfit
from nnfit.cli import main
from nnfit.errors import CheckpointError
warnings.simplefilter("ignore")
good, bad_model, bad_resume = sys.argv[1:4]
nnfit.load(good).predict(__import__("numpy").zeros((2, 4)))  # imports and first-use costs

def status(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024


def reset_peak():  # Linux: "5" resets the peak resident size (VmHWM) to the current one
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status("VmRSS")


def cli_resume():
    with contextlib.redirect_stderr(io.StringIO()) as err:
        main(["train", "--resume", bad_resume, "--quiet"])
    return err.getvalue().strip()


for what, action in (("load", lambda: nnfit.load(bad_model)), ("resume", cli_resume)):
    for _ in range(2):  # first: what it imports, the CSV reader's buffers are not measured
        try:
            action()
        except CheckpointError:
            pass
    before = reset_peak()
    try:
        outcome = action()
    except CheckpointError as e:
        outcome = str(e)
    print(what, status("VmHWM") - before, repr(outcome))
"""


def test_loading_a_tampered_spec_allocates_nothing_before_it_is_refused(cli_run, tmp_path) -> None:
    # Before: a 25 KB run whose model.json says hidden [20000, 20000] allocated 1.6 GB first.
    # (The resume is of a bundled-dataset run: reading a CSV file costs pyarrow ~30 MB of
    # buffers each time, which is not what is measured here.)
    huge = [20_000, 20_000]
    assert main(["train", "--dataset", "iris", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "resume")]) == 0
    bad_model, bad_resume = copy(cli_run, tmp_path, "model"), tmp_path / "resume"
    tamper_model(bad_model, meta_fn=lambda m: m["spec"].__setitem__("hidden", huge))

    def config(c):
        c["hidden"] = huge

    def meta(m):
        config(m["config"])
        m["learner"]["spec"]["hidden"] = huge

    tamper_checkpoint(bad_resume, meta_fn=meta)
    cfg = json.loads((bad_resume / "config.json").read_text())
    config(cfg)
    tamper_model(bad_resume, config=json.dumps(cfg).encode())
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(cli_run), str(bad_model), str(bad_resume)],
                       capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(SRC)})
    assert r.returncode == 0, r.stderr
    weights = (cli_run / "model.safetensors").stat().st_size
    for line in r.stdout.strip().splitlines():
        what, grown, outcome = line.split(" ", 2)
        print(what, f"peak RSS grew by {int(grown) / 2**20:.1f} MB:", outcome)
        assert "weights do not fit the model" in outcome and "(20000, 4)" in outcome, line
        assert int(grown) < weights + 64 * 2**20, line


# ------------------------------------------------------- nothing legitimate is refused
@pytest.mark.parametrize("kw", [
    dict(optimizer="sgd", momentum=0.9, nesterov=True, scheduler="multistep", milestones=(1, 2)),
    dict(optimizer="rmsprop", momentum=0.5, scheduler="plateau", sched_patience=0),
    dict(optimizer="adamw", scheduler="onecycle", checkpoint_steps=3),
    dict(optimizer="adam", scheduler="cosine", warmup_epochs=1, restore_best=False),
    dict(optimizer="sgd", scheduler="exponential", checkpoint_steps=2, accumulate=2),
])
@pytest.mark.parametrize("spec", [{"name": "mlp", "hidden": [6], "batchnorm": True, "dropout": 0.2},
                                  {"name": "resmlp", "hidden": [6, 5]}])
def test_every_optimizer_and_schedule_resumes_exactly(tmp_path, kw, spec) -> None:
    x, y = data()
    full = nnfit.fit(spec, x, y, epochs=3, run_dir=tmp_path / "r", keep_checkpoints=0, **QUICK, **kw)
    names = committed(tmp_path / "r")
    for name in names[len(names) // 2:]:  # resume from the middle of the run
        shutil.rmtree(tmp_path / "r" / CHECKPOINTS / name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NnfitWarning)
        resumed = nnfit.fit(spec, x, y, epochs=3, run_dir=tmp_path / "r", resume=tmp_path / "r",
                            **QUICK, **kw)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    loaded = nnfit.load(tmp_path / "r")
    np.testing.assert_array_equal(loaded.predict_proba(x), resumed.predict_proba(x))


def test_regression_and_multiclass_models_load_and_checkpoints_resume(tmp_path) -> None:
    x, _ = data()
    targets = {"regression": np.c_[x[:, 0] * 3, x[:, 1] + 5], "multiclass": (x[:, 0] > 0) + (x[:, 1] > 0)}
    for task, y in targets.items():
        run = tmp_path / task
        nnfit.fit(SPEC_8, x, y, task=task, epochs=2, run_dir=run, checkpoint_steps=2, **QUICK)
        for name in committed(run):  # every checkpoint, mid-epoch ones included, passes
            ck = run / CHECKPOINTS / name
            meta = json.loads((ck / "state.json").read_text())
            assert sha256_bytes((ck / "state.json").read_bytes())
            from nnfit.io.resume import check_checkpoint
            check_checkpoint(read_checkpoint(ck)[0], meta, ck)
        learner = nnfit.fit(SPEC_8, x, y, task=task, epochs=3, run_dir=run, resume=run, **QUICK)
        np.testing.assert_array_equal(nnfit.load(run).predict(x), learner.predict(x))
