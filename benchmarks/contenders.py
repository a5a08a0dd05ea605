"""One benchmark contender, run in a fresh process: ``python contenders.py NAME SPEC_JSON``.

Every contender trains the same model (Adam, lr 1e-3) on the same preloaded synthetic data for
the same epochs and batch size, then scores the same validation rows (``step_ceiling``, the
step alone on one fixed batch, is the bound a loop can reach: ``run_ceiling``). The spec's ``model``
picks the workload: ``mlp`` (features-128-128-classes, every contender), ``cnn``
(``nnfit.models.CNN`` on random 3 x size x size float images) or ``lstm``
(``nnfit.models.LSTM`` on (N, steps, features) sequences, lengths ``min_len``..``steps``):
those two only nnfit and the minimal loop. It prints one JSON line: training seconds (in
process, after imports and a shared warm-up), samples/s, validation accuracy and peak memory
(sequences: also ``padding_share``, padded steps / all steps the model ran). Imports of the
peers happen inside their functions, so a missing peer only fails its own row.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HIDDEN = 128


def make_data(rows: int, features: int, classes: int, seed: int = 0):
    """Deterministic synthetic classification: a random linear teacher plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features), dtype=np.float32)
    w = rng.standard_normal((features, classes), dtype=np.float32)
    logits = x @ w + 0.5 * rng.standard_normal((rows, classes), dtype=np.float32)
    y = logits.argmax(1).astype(np.int64)
    n_val = rows // 10
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]


@dataclass(frozen=True)
class Padded:
    """Sequences zero-padded to one length ``x`` (N, T, F), with each one's own ``lengths`` (N,)."""

    x: np.ndarray
    lengths: np.ndarray

    def for_nnfit(self) -> np.ndarray | list[np.ndarray]:
        """The form a user hands nnfit: the array when every sequence is full length, else
        a list of each sequence unpadded (nnfit batches them by length)."""
        if (self.lengths == self.x.shape[1]).all():
            return self.x
        return [s[:n] for s, n in zip(self.x, self.lengths, strict=True)]


def make_images(rows: int, classes: int, size: int, seed: int = 0):
    """Random (rows, 3, size, size) float images labelled by a random linear teacher on each
    channel's mean and mean square (standardised), plus noise: statistics a CNN's global
    average pooling can read, wherever in the image they come from."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 3, size, size), dtype=np.float32)
    stats = np.concatenate([x.mean((2, 3)), (x ** 2).mean((2, 3))], axis=1)
    stats = (stats - stats.mean(0)) / stats.std(0)
    logits = stats @ rng.standard_normal((6, classes), dtype=np.float32)
    logits += 0.5 * logits.std() * rng.standard_normal(logits.shape, dtype=np.float32)
    y = logits.argmax(1).astype(np.int64)
    n_val = rows // 10
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]


def make_sequences(rows: int, steps: int, features: int, classes: int, min_len: int, seed: int = 0):
    """Random (rows, steps, features) float sequences of lengths uniform in min_len..steps
    (zero-padded), labelled by a random linear teacher on each one's last step, plus noise: a
    model that reads a padding step instead scores near chance."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, steps + 1, rows)
    x = rng.standard_normal((rows, steps, features), dtype=np.float32)
    x[np.arange(steps) >= lengths[:, None]] = 0
    logits = x[np.arange(rows), lengths - 1] @ rng.standard_normal((features, classes))
    logits += 0.5 * logits.std() * rng.standard_normal(logits.shape)
    y = logits.argmax(1).astype(np.int64)
    n_val = rows // 10
    return (Padded(x[n_val:], lengths[n_val:]), y[n_val:], Padded(x[:n_val], lengths[:n_val]),
            y[:n_val])


def workload_data(spec: dict):
    """The workload's training and validation data: (x_train, y_train, x_val, y_val)."""
    kind = spec.get("model", "mlp")
    if kind == "cnn":
        return make_images(spec["rows"], spec["classes"], spec["size"])
    if kind == "lstm":
        return make_sequences(spec["rows"], spec["steps"], spec["features"], spec["classes"],
                              spec["min_len"])
    return make_data(spec["rows"], spec["features"], spec["classes"])


def mlp(features: int, classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(features, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN),
                         nn.ReLU(), nn.Linear(HIDDEN, classes))


def build_model(spec: dict) -> nn.Module:
    """The workload's model, freshly initialised from the global seed."""
    kind = spec.get("model", "mlp")
    if kind == "mlp":
        return mlp(spec["features"], spec["classes"])
    from nnfit.models import CNN, LSTM

    if kind == "cnn":
        return CNN(3, spec["classes"], channels=spec["channels"])
    return LSTM(spec["features"], spec["classes"], hidden=[spec["hidden"]])


def model_inputs(x) -> list[np.ndarray]:
    """The arrays a model is called with: the inputs, and the lengths of padded sequences."""
    return [x.x, x.lengths] if isinstance(x, Padded) else [x]


def warm_up(spec: dict) -> None:
    """Pay torch's one-time costs (lazy imports of the optimizer machinery, first kernels of
    the workload's model) before any contender's clock starts, so no contender is charged
    for them."""
    device, kind = spec["device"], spec.get("model", "mlp")
    if kind == "cnn":
        shape = (3, spec["size"], spec["size"])
    elif kind == "lstm":
        shape = (spec["steps"], spec["features"])
    else:
        shape = (spec["features"],)
    m = build_model(spec).to(device)
    opt = torch.optim.Adam(m.parameters())
    F.cross_entropy(m(torch.zeros(2, *shape, device=device)),
                    torch.zeros(2, dtype=torch.long, device=device)).backward()
    opt.step()


@torch.inference_mode()
def accuracy(model: nn.Module, x, y: np.ndarray, device: str) -> float:
    model.eval()
    ins = [torch.from_numpy(a) for a in model_inputs(x)]
    pred = torch.cat([model(*(t[i:i + 4096].to(device) for t in ins)).argmax(1).cpu()
                      for i in range(0, len(y), 4096)])
    return float((pred.numpy() == y).mean())


def padding_share(model: nn.Module):
    """Count the steps ``model`` runs while training (a forward pre-hook); returns a function
    giving padded steps / all steps. The lengths are kept and summed at the end: no host
    sync per step."""
    cells, real = [0], []

    def hook(module, args, kwargs):
        if module.training:
            x = kwargs["x"] if "x" in kwargs else args[0]
            lengths = kwargs.get("lengths", args[1] if len(args) > 1 else None)
            cells[0] += x.shape[0] * x.shape[1]
            real.append(x.shape[0] * x.shape[1] if lengths is None else lengths)

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return lambda: 1 - sum(int(v.sum()) if torch.is_tensor(v) else v for v in real) / max(cells[0], 1)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------ contenders
def _nnfit_warm_up(fit, spec, xtr, ytr, more: dict) -> None:
    """Pay nnfit's one-time costs before its clock, as ``warm_up`` pays torch's and every peer
    imports its framework before its clock: a fit of two batches, which imports what ``fit``
    imports on first use (its run, memory and plotting modules; numpy.ma, which
    ``numpy.nanmedian`` loads for the imputation medians): ~7 ms on a 2-core CPU, 3% of a
    batch-1024 run. The CLI row (``no_warm_up``) keeps every cost of a fresh process."""
    k = min(len(ytr), 2 * spec["batch"])
    x = Padded(xtr.x[:k], xtr.lengths[:k]).for_nnfit() if isinstance(xtr, Padded) else xtr[:k]
    fit(build_model(spec), x, ytr[:k], epochs=1, batch_size=spec["batch"], val_split=0, patience=0,
        quiet=True, device=spec["device"], **more)


def run_nnfit(spec, xtr, ytr, xva, yva):
    # `import nnfit` is lazy (its names load on first use): resolve fit here, and warm it up,
    # so the timed region holds training only, as for every other contender.
    from nnfit import fit

    # "auto" augmentation flips colour images; the loops it is compared with do not augment
    more = {"augment": "none"} if spec.get("model") == "cnn" else {}
    if not spec.get("no_warm_up"):
        _nnfit_warm_up(fit, spec, xtr, ytr, more)
    torch.manual_seed(0)
    model = build_model(spec)
    padding = padding_share(model) if isinstance(xtr, Padded) else None
    if isinstance(xtr, Padded):
        xtr, xva = xtr.for_nnfit(), xva.for_nnfit()
    t0 = time.perf_counter()
    learner = fit(model, xtr, ytr, epochs=spec["epochs"], batch_size=spec["batch"],
                  val_split=0, patience=0, quiet=True, device=spec["device"], **more)
    _sync(spec["device"])
    seconds = time.perf_counter() - t0
    acc = float((learner.predict(xva) == yva).mean())
    return (seconds, acc) if padding is None else (seconds, acc, {"padding_share": padding()})


def _minimal(spec, xtr, ytr, loader: bool):
    dev, bs = spec["device"], spec["batch"]
    torch.manual_seed(0)
    model = build_model(spec).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    # Padded sequences: every batch is run at the full length, the model given the lengths.
    arrays = [*model_inputs(xtr), ytr]
    tensors = [torch.from_numpy(a).to(dev) for a in arrays]
    # The same data order as nnfit's (a generator seeded with the run's seed), so final
    # accuracies are comparable run for run.
    g = torch.Generator().manual_seed(0)
    if loader:
        from torch.utils.data import DataLoader, TensorDataset

        dl = DataLoader(TensorDataset(*(torch.from_numpy(a) for a in arrays)),
                        batch_size=bs, shuffle=True, generator=g)
    model.train()
    for _ in range(spec["epochs"]):
        if loader:
            batches = ([t.to(dev) for t in b] for b in dl)
        else:
            perm = torch.randperm(len(ytr), generator=g).to(dev)
            batches = ([t[perm[i:i + bs]] for t in tensors] for i in range(0, len(ytr), bs))
        for *xb, yb in batches:
            loss = F.cross_entropy(model(*xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    _sync(dev)
    return time.perf_counter() - t0, model


def run_minimal(spec, xtr, ytr, xva, yva):
    seconds, model = _minimal(spec, xtr, ytr, loader=False)
    acc = accuracy(model, xva, yva, spec["device"])
    if not isinstance(xtr, Padded):
        return seconds, acc
    # every batch runs all its sequences at the full length
    return seconds, acc, {"padding_share": 1 - float(xtr.lengths.sum()) / (len(ytr) * xtr.x.shape[1])}


def run_ceiling(spec, xtr, ytr, xva, yva):
    """The step-only ceiling: nnfit's own training step on one fixed batch, no data movement.

    The same model, optimizer (``nnfit.optim.build_optimizer``: fused Adam, lr 1e-3) stepped
    the way nnfit steps it (``FusedStepper``), the same loss and the same CPU thread count
    (``nnfit.runtime.cpu_threads`` for this model and batch; the ratio would otherwise
    measure threads, not the loop), for as many steps of the same sizes as nnfit takes (a
    shorter last batch each epoch). What it leaves out is what a loop adds: the data order,
    gathering the batches, preparation, checks and bookkeeping. Its accuracy is that of a
    model fitted to one batch: not comparable.
    """
    from nnfit.config import TrainConfig
    from nnfit.optim import FusedStepper, build_optimizer
    from nnfit.runtime import cpu_threads, make_runtime, step_params

    dev, bs = spec["device"], spec["batch"]
    torch.manual_seed(0)
    model = build_model(spec).to(dev)
    threads_before = torch.get_num_threads()
    threads = cpu_threads(make_runtime(dev, seed=None), step_params(model), bs)
    if threads:
        torch.set_num_threads(threads)
    stepper = FusedStepper(build_optimizer(model.parameters(), TrainConfig()))
    xb, yb = torch.from_numpy(xtr[:bs]).to(dev), torch.from_numpy(ytr[:bs]).to(dev)
    sizes = [bs] * (len(ytr) // bs) + ([len(ytr) % bs] if len(ytr) % bs else [])
    model.train()
    t0 = time.perf_counter()
    for _ in range(spec["epochs"]):
        for n in sizes:
            F.cross_entropy(model(xb[:n]), yb[:n]).backward()
            stepper.step()
            stepper.zero_grad()
    _sync(dev)
    seconds = time.perf_counter() - t0
    used = torch.get_num_threads()
    torch.set_num_threads(threads_before)
    return seconds, accuracy(model, xva, yva, dev), {"threads": used}


def run_dataloader(spec, xtr, ytr, xva, yva):
    seconds, model = _minimal(spec, xtr, ytr, loader=True)
    return seconds, accuracy(model, xva, yva, spec["device"])


def run_lightning(spec, xtr, ytr, xva, yva):
    import logging
    import warnings

    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    class Module(L.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def training_step(self, batch, _):
            xb, yb = batch
            return F.cross_entropy(self.net(xb), yb)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    torch.manual_seed(0)
    module = Module(mlp(xtr.shape[1], spec["classes"]))
    dl = DataLoader(TensorDataset(torch.from_numpy(xtr), torch.from_numpy(ytr)),
                    batch_size=spec["batch"], shuffle=True)
    trainer = L.Trainer(max_epochs=spec["epochs"], accelerator="gpu" if spec["device"] == "cuda" else "cpu",
                        devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    t0 = time.perf_counter()
    trainer.fit(module, dl)
    _sync(spec["device"])
    seconds = time.perf_counter() - t0
    return seconds, accuracy(module.net.to(spec["device"]), xva, yva, spec["device"])


def run_skorch(spec, xtr, ytr, xva, yva):
    from skorch import NeuralNetClassifier

    torch.manual_seed(0)
    net = NeuralNetClassifier(mlp(xtr.shape[1], spec["classes"]), criterion=nn.CrossEntropyLoss,
                              optimizer=torch.optim.Adam, lr=1e-3, max_epochs=spec["epochs"],
                              batch_size=spec["batch"], train_split=None, verbose=0,
                              iterator_train__shuffle=True, device=spec["device"])
    t0 = time.perf_counter()
    net.fit(xtr, ytr)
    _sync(spec["device"])
    seconds = time.perf_counter() - t0
    return seconds, float((net.predict(xva) == yva).mean())


def run_keras(spec, xtr, ytr, xva, yva):
    os.environ["KERAS_BACKEND"] = "torch"
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((xtr.shape[1],)),
                              keras.layers.Dense(HIDDEN, activation="relu"),
                              keras.layers.Dense(HIDDEN, activation="relu"),
                              keras.layers.Dense(spec["classes"])])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    t0 = time.perf_counter()
    model.fit(xtr, ytr, batch_size=spec["batch"], epochs=spec["epochs"], verbose=0, shuffle=True)
    seconds = time.perf_counter() - t0
    pred = model.predict(xva, batch_size=4096, verbose=0).argmax(1)
    return seconds, float((pred == yva).mean())


CONTENDERS = {
    "nnfit": run_nnfit, "step_ceiling": run_ceiling, "minimal_loop": run_minimal,
    "dataloader_loop": run_dataloader,
    "lightning": run_lightning, "skorch": run_skorch, "keras": run_keras,
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def ingest(name: str, path: str) -> None:
    """A CSV read, timed, with the peak memory it added beyond the imports: a numeric CSV to a
    float32 tensor (``nnfit_ingest``, ``pandas_ingest``), or a mixed CSV (numbers, text, gaps)
    to columns (``nnfit_mixed_ingest``: numbers in a float32 block, text as codes and strings;
    ``pandas_mixed_ingest``: a DataFrame)."""
    import pandas as pd  # imported up front for both readers, so neither pays the other's import

    import nnfit.data.read

    # Reset the kernel's peak-RSS mark (VmHWM) so the peak is this read's, not the imports'.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    if name == "nnfit_ingest":
        x = torch.from_numpy(nnfit.data.read.read_table(path).block)
    elif name == "pandas_ingest":
        x = torch.tensor(pd.read_csv(path).to_numpy(), dtype=torch.float32)
    elif name == "nnfit_mixed_ingest":
        x = torch.from_numpy(nnfit.data.read.read_table(path, allow_missing=True).block)
    else:
        x = torch.empty(pd.read_csv(path).shape[0], 0)
    seconds = time.perf_counter() - t0
    print("RESULT " + json.dumps({"seconds": seconds, "extra_rss_mb": _status_mb("VmHWM") - base,
                                  "tensor_mb": x.numel() * 4 / 2**20, "shape": list(x.shape)}))


def main() -> None:
    name, spec = sys.argv[1], json.loads(sys.argv[2])
    if name.endswith("_ingest"):
        return ingest(name, spec["path"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    xtr, ytr, xva, yva = workload_data(spec)
    if not spec.get("no_warm_up"):
        warm_up(spec)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds, acc, *more = CONTENDERS[name](spec, xtr, ytr, xva, yva)
    out = {
        "seconds": seconds, "samples_per_s": len(ytr) * spec["epochs"] / seconds, "val_acc": acc,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": base_rss / 1024, **(more[0] if more else {}),
    }
    if spec["device"] == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
