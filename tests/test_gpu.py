"""CUDA tier: runs only where a GPU is present (``pytest -m gpu``); skipped elsewhere."""

import json

import numpy as np
import pytest
import torch

import nnfit
from nnfit.cli import main

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _data(n=512, d=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    return x, y


def test_fit_on_cuda_matches_cpu_closely():
    x, y = _data()
    runs = {}
    for dev in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = nnfit.MLP(8, [32], 1)
        learner = nnfit.fit(model, x, y, epochs=5, device=dev, quiet=True, patience=0)
        assert next(learner.model.parameters()).device.type == dev
        runs[dev] = learner.predict_proba(x)
    assert np.allclose(runs["cpu"], runs["cuda"], atol=1e-4)


@pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype")
@pytest.mark.parametrize("graphs", [False, True])
def test_training_loop_has_no_per_step_sync_on_cuda(graphs):
    x, y = _data(n=1000)  # 1000 = 15 x 64 + 40: a short last batch every epoch
    task = nnfit.tasks.make_task("binary", y)
    target = task.encode_target(y)
    inputs = (torch.from_numpy(x),)

    class NoSync(nnfit.Callback):
        """From the second epoch on (after any warm-up and capture), every step runs with CUDA
        sync debugging set to raise; it is reset after the last batch, before the loop's one
        deliberate per-epoch read."""

        def on_epoch_start(self, t):
            if t.state.epoch >= 1:
                torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, t, batch):
            if batch == t.batches_per_epoch - 1:
                torch.cuda.set_sync_debug_mode("default")

    kw = dict(epochs=3, batch_size=64, device="cuda", quiet=True, patience=0, val_split=0,
              cuda_graphs=graphs)
    try:
        trainer = nnfit.Trainer(**kw, callbacks=[NoSync()])
        trainer.fit(nnfit.MLP(8, [32], 1), inputs, task=task, target=target)
        assert (trainer.graphed is not None) == graphs
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_cuda_graph_training_equals_eager_training(optimizer):
    x, y = _data(n=1000)
    task = nnfit.tasks.make_task("binary", y)
    target = task.encode_target(y)
    weights, losses = {}, {}
    for graphs in (False, True):
        torch.manual_seed(0)
        model = nnfit.MLP(8, [32, 32], 1, batchnorm=True)
        trainer = nnfit.Trainer(epochs=3, batch_size=64, device="cuda", quiet=True, patience=0,
                                val_split=0, optimizer=optimizer, lr=1e-2, momentum=0.9,
                                cuda_graphs=graphs)
        hist = trainer.fit(model, (torch.from_numpy(x),), task=task, target=target)
        assert (trainer.graphed is not None and trainer.graphed.graph is not None) == graphs
        weights[graphs] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        losses[graphs] = hist["train_loss"]
    for k, v in weights[False].items():
        torch.testing.assert_close(weights[True][k], v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)


def test_cli_train_resume_predict_on_cuda(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "wine", "--device", "cuda", "--epochs", "3", "--quiet",
                 "--patience", "0", "--out", "run"]) == 0
    assert main(["train", "--resume", "run", "--epochs", "5", "--quiet"]) == 0
    assert len((tmp_path / "run" / "history.csv").read_text().splitlines()) == 6
    capsys.readouterr()
    assert main(["evaluate", "run", "run/test.csv", "--json", "--device", "cuda"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics["accuracy"] <= 1.0


class _TermAt(nnfit.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, batch):
        if trainer.state.step == self.step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_mid_epoch_resume_equals_uninterrupted(tmp_path, graphs):
    x, y = _data(n=640)
    kw = dict(epochs=3, batch_size=32, device="cuda", quiet=True, lr=3e-3, checkpoint_steps=5,
              cuda_graphs=graphs)
    spec = {"name": "mlp", "hidden": [32, 32], "dropout": 0.2}
    full = nnfit.fit(spec, x, y, **kw)
    with pytest.raises(nnfit.errors.Stopped):
        nnfit.fit(spec, x, y, run_dir=tmp_path / "r", callbacks=[_TermAt(22)], **kw)
    resumed = nnfit.fit(spec, x, y, run_dir=tmp_path / "r", resume=tmp_path / "r", **kw)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    diffs = {k: (a[k].double() - b[k].double()).abs().max().item() for k in a}
    assert all(torch.equal(a[k], b[k]) for k in a), diffs


def test_cuda_non_finite_loss_stops_by_the_epoch_end_and_never_checkpoints_it(tmp_path):
    from nnfit.checkpoint import load_checkpoint
    from nnfit.run import committed

    class NanAt(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.calls = torch.nn.Linear(8, 1), 0

        def forward(self, x):
            self.calls += self.training
            out = self.fc(x)
            return out * float("nan") if self.training and self.calls == 15 else out

    x, y = _data(n=640)
    with pytest.raises(nnfit.errors.TrainingError, match="non-finite"):
        # Eager steps: a replayed CUDA graph does not run the Python forward that counts calls.
        nnfit.fit(NanAt(), x, y, epochs=3, batch_size=32, device="cuda", quiet=True,
                  run_dir=tmp_path / "r", checkpoint_steps=4, cuda_graphs=False)
    for name in committed(tmp_path / "r"):
        tensors, _ = load_checkpoint(tmp_path / "r" / "checkpoints" / name)
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_a_cpu_run_resumes_on_cuda_with_graphs_and_back(tmp_path):
    x, y = _data(n=640)
    kw = dict(batch_size=32, quiet=True, lr=3e-3, optimizer="adamw")
    spec = {"name": "mlp", "hidden": [16]}
    nnfit.fit(spec, x, y, epochs=2, device="cpu", run_dir=tmp_path / "r", **kw)
    on_gpu = nnfit.fit(spec, x, y, epochs=3, device="cuda", run_dir=tmp_path / "r",
                       resume=tmp_path / "r", **kw)
    assert on_gpu.trainer.graphed is not None and len(on_gpu.history) == 3
    back = nnfit.fit(spec, x, y, epochs=4, device="cpu", fused=False, run_dir=tmp_path / "r",
                     resume=tmp_path / "r", **kw)
    assert len(back.history) == 4


def test_a_sweep_on_cuda_equals_its_members_runs_there(tmp_path):
    """The stacked model on the GPU: each member close to its own CUDA run (cuBLAS picks
    other kernels for batched products, so closely, not to CPU's 1e-5)."""
    x, y = _data()
    common = dict(epochs=3, batch_size=64, quiet=True, device="cuda")
    result = nnfit.sweep({"name": "mlp", "hidden": [32, 32]}, x, y, out=tmp_path / "s", seeds="0-3",
                         grid={"lr": [1e-3, 3e-3]}, **common)
    assert all(result.stacked)
    for name, learner in result.members.items():
        seed, lr = int(name.split("_")[0].split("-")[1]), float(name.split("_")[1].split("-")[1])
        alone = nnfit.fit({"name": "mlp", "hidden": [32, 32]}, x, y, seed=seed, lr=lr, **common)
        np.testing.assert_allclose(learner.predict_proba(x), alone.predict_proba(x), atol=1e-3)


# ------------------------------------------------------------------ precision (nnfit.precision)
def _raw_regression():
    """Raw targets in the thousands: fp16 gradients overflow at the scaler's first scales."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 5))
    return x, 3000 * x[:, 0] + 500 * rng.normal(size=240)


def test_fp16_trains_and_resumes_exactly_with_its_scaler_state_on_cuda(tmp_path):
    from nnfit.run import committed
    from test_validation import read_checkpoint

    x, y = _raw_regression()
    kw = dict(task="regression", epochs=3, batch_size=16, device="cuda", precision="fp16", quiet=True,
              scale_target=False, lr=0.05, seed=0, checkpoint_steps=5)
    spec = {"name": "mlp", "hidden": [16]}
    full = nnfit.fit(spec, x, y, **kw)
    assert full.trainer.graphed is None  # fp16 trains eagerly: the scaler is not captured
    assert full.history["train_loss"][-1] < full.history["train_loss"][0]
    assert full.trainer.precision.skipped_steps() > 0
    with pytest.raises(nnfit.errors.Stopped):
        nnfit.fit(spec, x, y, run_dir=tmp_path / "r", callbacks=[_TermAt(21)], **kw)
    tensors, meta = read_checkpoint(tmp_path / "r" / "checkpoints" / committed(tmp_path / "r")[-1])
    assert meta["batch"] > 0 and meta["skipped_steps"] > 0 and float(tensors["scaler/scale"]) < 2 ** 16
    resumed = nnfit.fit(spec, x, y, run_dir=tmp_path / "r", resume=tmp_path / "r", **kw)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("graphs", [False, True])
@pytest.mark.parametrize("precision", ["bf16", "tf32"])
def test_bf16_and_tf32_train_on_cuda_close_to_fp32(precision, graphs):
    x, y = _data(n=1000)
    matmul = torch.backends.cuda.matmul.fp32_precision
    kw = dict(epochs=3, batch_size=64, device="cuda", quiet=True, patience=0, val_split=0.2,
              cuda_graphs=graphs, seed=0)
    fp32 = nnfit.fit({"name": "mlp", "hidden": [64, 64]}, x, y, **kw)
    ours = nnfit.fit({"name": "mlp", "hidden": [64, 64]}, x, y, precision=precision, **kw)
    assert (ours.trainer.graphed is not None and ours.trainer.graphed.graph is not None) == graphs
    assert ours.history["train_loss"][-1] < ours.history["train_loss"][0]
    assert torch.backends.cuda.matmul.fp32_precision == matmul  # tf32 only for the fit
    np.testing.assert_allclose(ours.predict_proba(x), fp32.predict_proba(x), atol=0.05)


@pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_have_no_host_sync_on_cuda(precision):
    x, y = _data(n=1000)
    task = nnfit.tasks.make_task("binary", y)

    class NoSync(nnfit.Callback):  # as test_training_loop_has_no_per_step_sync_on_cuda
        def on_epoch_start(self, t):
            if t.state.epoch >= 1:
                torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, t, batch):
            if batch == t.batches_per_epoch - 1:
                torch.cuda.set_sync_debug_mode("default")

    try:
        trainer = nnfit.Trainer(epochs=3, batch_size=64, device="cuda", quiet=True, patience=0,
                                val_split=0, precision=precision, callbacks=[NoSync()])
        trainer.fit(nnfit.MLP(8, [32], 1), (torch.from_numpy(x),), task=task, target=task.encode_target(y))
    finally:
        torch.cuda.set_sync_debug_mode("default")
