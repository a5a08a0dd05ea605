"""The training loop's numbers: bitwise parity with hand-written PyTorch loops, the models of the
lesson trained unchanged, train/eval modes, reproducibility, gradient accumulation, schedules,
early stopping, callbacks and host syncs. CPU only, tiny data."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import lr_scheduler as lrs
from torch.utils.data import DataLoader, TensorDataset

import nnfit
from helpers import count_host_reads
from nnfit.tasks import make_task

CPU = {"device": "cpu", "quiet": True}
# Trainer settings under which the loop is exactly the hand loop below: no split, no early
# stopping, no weight restore.
PLAIN = {**CPU, "val_split": 0, "patience": 0, "restore_best": False}
SEED = 7

LOSS_FNS = {
    "multiclass": F.cross_entropy,
    "binary": lambda out, t: F.binary_cross_entropy_with_logits(out.reshape(-1), t),
    "regression": F.mse_loss,
}
OUT_FEATURES = {"multiclass": 3, "binary": 1, "regression": 1}


# --- helpers --------------------------------------------------------------------------------


def _problem(task: str, n: int = 150, d: int = 6, seed: int = 0):
    """Inputs, raw labels, the fitted task and its encoded targets of a learnable problem."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    score = x @ torch.randn(d, 3, generator=g)
    if task == "multiclass":
        y = score.argmax(1)
    elif task == "binary":
        y = (score[:, 0] > 0).long()
    else:
        y = score[:, 0] + 0.1 * torch.randn(n, generator=g)
    fitted = make_task(task, y.numpy(), scale_target=False)
    return x, y, fitted, fitted.encode_target(y.numpy())


def _model(kind: str, d: int, out: int, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(1)
    if kind == "mlp":
        return nnfit.MLP(d, [16, 8], out, dropout=dropout)
    drop = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), *drop, nn.Linear(16, 8), nn.ReLU(),
                         nn.Linear(8, out))


def _hand_loop(model, x, target, loss_fn, make_opt, *, seed, epochs=3, batch_size=16,
               make_sched=None, clip=0.0):
    """The textbook loop, with nnfit's seeding and data order written out by hand."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = make_opt(model.parameters())
    sched = make_sched(opt) if make_sched else None
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = loss_fn(model(x[idx]), target[idx])
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if sched is not None:
            sched.step()
    return model


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    assert not unequal, f"tensors differ: {unequal}"


def _differs(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def _without_time(history) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in history]


class _Snapshots(nnfit.Callback):
    """The model's weights at the end of every epoch."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, trainer, logs):
        self.weights.append(_snapshot(trainer.model))


class _BatchLR(nnfit.Callback):
    """The learning rate after every training batch (after the step and any per-step schedule)."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_fit_start(self, trainer):
        self.first = trainer.optimizer.param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, batch):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


# --- 1. parity with a hand-written loop -----------------------------------------------------

# nnfit steps sgd/adam/adamw with torch's fused kernels by default (fused=False for the
# per-tensor implementation); the hand loops ask torch for the same implementation.
OPTIMIZERS = {
    "adam": ({"optimizer": "adam", "lr": 1e-2},
             lambda p: torch.optim.Adam(p, lr=1e-2, fused=True)),
    "adam-unfused": ({"optimizer": "adam", "lr": 1e-2, "fused": False},
                     lambda p: torch.optim.Adam(p, lr=1e-2)),
    "adamw": ({"optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.05},
              lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05, fused=True)),
    "sgd": ({"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, fused=True)),
    "sgd-unfused": ({"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "fused": False},
                    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    "rmsprop": ({"optimizer": "rmsprop", "lr": 1e-3, "momentum": 0.5},
                lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5)),
}


@pytest.mark.parametrize("kind", ["mlp", "sequential"])
@pytest.mark.parametrize("task_name", ["multiclass", "binary", "regression"])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_fit_is_bitwise_equal_to_hand_loop(opt: str, task_name: str, kind: str) -> None:
    x, _, task, target = _problem(task_name)  # 150 rows: the last batch of 16 is partial
    cfg, make_opt = OPTIMIZERS[opt]
    ours = _model(kind, x.shape[1], OUT_FEATURES[task_name])
    theirs, start = copy.deepcopy(ours), _snapshot(ours)

    nnfit.Trainer(epochs=3, batch_size=16, seed=SEED, **cfg, **PLAIN).fit(
        ours, (x,), task=task, target=target)
    _hand_loop(theirs, x, target, LOSS_FNS[task_name], make_opt, seed=SEED)

    _assert_bitwise_equal(ours.state_dict(), theirs.state_dict())
    assert _differs(start, ours.state_dict())


@pytest.mark.parametrize("kind", ["mlp", "sequential"])
def test_dropout_masks_follow_the_global_rng_like_a_hand_loop(kind: str) -> None:
    x, _, task, target = _problem("multiclass")
    ours = _model(kind, x.shape[1], 3, dropout=0.3)
    theirs, other_seed = copy.deepcopy(ours), copy.deepcopy(ours)

    nnfit.Trainer(epochs=3, batch_size=16, seed=SEED, optimizer="adam", lr=1e-2, **PLAIN).fit(
        ours, (x,), task=task, target=target)
    _hand_loop(theirs, x, target, F.cross_entropy, OPTIMIZERS["adam"][1], seed=SEED)
    _assert_bitwise_equal(ours.state_dict(), theirs.state_dict())

    # The comparison is sensitive: other dropout masks and order give other weights.
    _hand_loop(other_seed, x, target, F.cross_entropy, OPTIMIZERS["adam"][1], seed=SEED + 1)
    assert _differs(ours.state_dict(), other_seed.state_dict())


def test_step_schedule_and_grad_clip_match_hand_loop(monkeypatch) -> None:
    x, _, task, target = _problem("multiclass")
    ours = _model("mlp", x.shape[1], 3)
    theirs = copy.deepcopy(ours)
    hist = nnfit.Trainer(epochs=3, batch_size=16, seed=SEED, optimizer="sgd", lr=0.2,
                         momentum=0.9, scheduler="step", step_size=1, gamma=0.5, grad_clip=0.1,
                         **PLAIN).fit(ours, (x,), task=task, target=target)

    clipped, real_clip = [], nn.utils.clip_grad_norm_

    def recording_clip(params, max_norm, *a, **k):
        norm = real_clip(params, max_norm, *a, **k)
        clipped.append(bool(norm > max_norm))
        return norm

    monkeypatch.setattr(nn.utils, "clip_grad_norm_", recording_clip)
    _hand_loop(theirs, x, target, F.cross_entropy, lambda p: torch.optim.SGD(p, lr=0.2,
               momentum=0.9, fused=True), seed=SEED, clip=0.1,
               make_sched=lambda o: lrs.StepLR(o, step_size=1, gamma=0.5))

    _assert_bitwise_equal(ours.state_dict(), theirs.state_dict())
    assert any(clipped), "the clip threshold must be active for this test to mean anything"
    assert hist["lr"] == [0.2, 0.1, 0.05]


# --- 2. the lesson's models, written as a user would, train unchanged -----------------------


class TwoLayerNet(nn.Module):
    def __init__(self, n_in: int, n_hidden: int, n_out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, n_hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(n_hidden, n_out)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.inner = nn.Linear(width, width)
        self.outer = nn.Linear(width, width)

    def forward(self, x):
        return torch.relu(x + self.outer(torch.relu(self.inner(x))))


class ResidualNet(nn.Module):
    def __init__(self, n_in: int, width: int, n_blocks: int, n_out: int) -> None:
        super().__init__()
        self.stem = nn.Linear(n_in, width)
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(n_blocks)])
        self.head = nn.Linear(width, n_out)

    def forward(self, x):
        return self.head(self.blocks(torch.relu(self.stem(x))))


class DropoutNet(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, 32)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(32, n_out)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


class BatchNormNet(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, 32)
        self.bn1 = nn.BatchNorm1d(32)
        self.fc2 = nn.Linear(32, n_out)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn1(self.fc1(x))))


class TwoInputNet(nn.Module):
    def __init__(self, n1: int, n2: int) -> None:
        super().__init__()
        self.branch1 = nn.Linear(n1, 16)
        self.branch2 = nn.Linear(n2, 16)
        self.head = nn.Linear(32, 1)

    def forward(self, x1, x2):
        both = torch.cat([torch.relu(self.branch1(x1)), torch.relu(self.branch2(x2))], dim=1)
        return self.head(both)


class BagOfTokens(nn.Module):
    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, 1)

    def forward(self, tokens):
        return self.head(self.embed(tokens).mean(dim=1))


class SequenceClassifier(nn.Module):
    def __init__(self, n_features: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


TABULAR_MODELS = {
    "custom": lambda: TwoLayerNet(6, 32, 3),
    "residual": lambda: ResidualNet(6, 16, 3, 3),
    "dropout": lambda: DropoutNet(6, 3),
    "batchnorm": lambda: BatchNormNet(6, 3),
    "sequential": lambda: nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3)),
}
LEARN = {**CPU, "epochs": 12, "batch_size": 32, "lr": 1e-2, "val_split": 0, "patience": 0}


def _assert_learned(learner, accuracy: float, floor: float) -> None:
    losses = learner.history["train_loss"]
    assert losses[-1] < 0.6 * losses[0], losses
    assert accuracy > floor


@pytest.mark.parametrize("name", sorted(TABULAR_MODELS))
def test_lesson_models_learn_a_separable_problem(name: str) -> None:
    # 225 training rows in batches of 32 leave a last batch of one row: BatchNorm must cope.
    x, y, _, _ = _problem("multiclass", n=425)
    torch.manual_seed(0)
    model = TABULAR_MODELS[name]()
    learner = nnfit.fit(model, x[:225], y[:225], **LEARN)
    assert learner.model is model  # trained in place, never wrapped
    acc = learner.evaluate(x[225:], y[225:])["accuracy"]  # chance: about 1/3
    _assert_learned(learner, acc, 0.85)


@pytest.mark.parametrize("style", ["tuple", "dict"])
def test_two_input_model_learns_from_tuple_or_dict(style: str) -> None:
    g = torch.Generator().manual_seed(3)
    x1, x2 = torch.randn(400, 5, generator=g), torch.randn(400, 3, generator=g)
    y = (x1[:, 0] - x2[:, 1] > 0).long()
    inputs = (x1, x2) if style == "tuple" else {"x1": x1, "x2": x2}
    head = {k: v[:300] for k, v in inputs.items()} if style == "dict" else (x1[:300], x2[:300])
    tail = {k: v[300:] for k, v in inputs.items()} if style == "dict" else (x1[300:], x2[300:])
    torch.manual_seed(0)
    learner = nnfit.fit(TwoInputNet(5, 3), head, y[:300], **LEARN)
    assert learner.predict(tail).shape == (100,)
    _assert_learned(learner, learner.evaluate(tail, y[300:])["accuracy"], 0.85)


def test_embedding_model_learns_from_long_tokens() -> None:
    g = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, 20, (500, 10), generator=g)
    y = ((tokens < 10).sum(dim=1) > 5).long()
    torch.manual_seed(0)
    learner = nnfit.fit(BagOfTokens(20, 8), tokens[:400], y[:400], **{**LEARN, "epochs": 20})
    assert learner.preprocessor.inputs[0].dtype == "int64"  # token ids stay integers
    _assert_learned(learner, learner.evaluate(tokens[400:], y[400:])["accuracy"], 0.8)


def test_lstm_learns_from_sequences() -> None:
    g = torch.Generator().manual_seed(5)
    seqs = torch.randn(400, 8, 3, generator=g)
    y = (seqs[:, :, 0].sum(dim=1) > 0).long()
    torch.manual_seed(0)
    learner = nnfit.fit(SequenceClassifier(3, 16), seqs[:300], y[:300], **{**LEARN, "epochs": 15})
    _assert_learned(learner, learner.evaluate(seqs[300:], y[300:])["accuracy"], 0.8)


# --- 3. train/eval modes, autograd, gradient clearing ---------------------------------------


class ModeRecorder(nn.Module):
    """A linear model that logs, at every forward, its mode and the autograd state."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)
        self.log: list[tuple[bool, bool, bool]] = []

    def forward(self, x):
        self.log.append((self.training, torch.is_grad_enabled(),
                         torch.is_inference_mode_enabled()))
        return self.fc(x)


TRAINING = (True, True, False)
EVALUATING = (False, False, True)


def test_train_mode_in_steps_eval_mode_without_autograd_in_validation_and_prediction() -> None:
    x, _, task, target = _problem("binary", n=64, d=4)
    model = ModeRecorder()
    trainer = nnfit.Trainer(epochs=2, batch_size=16, eval_batch_size=16, **PLAIN)
    trainer.fit(model, (x,), (x[:40],), task=task, target=target, val_target=target[:40])
    # per epoch: 4 training batches, then 3 validation batches (40 rows in batches of 16)
    assert model.log == ([TRAINING] * 4 + [EVALUATING] * 3) * 2
    assert not model.training  # fit returns the model in eval mode, ready to predict

    model.train()  # evaluation and prediction put back the mode they found
    model.log.clear()
    trainer.evaluate(model, (x,), target=target)
    out = trainer.predict_outputs(model, (x,))
    assert model.log == [EVALUATING] * 8
    assert not out.requires_grad and model.training

    model.eval()
    trainer.evaluate(model, (x,), target=target)
    assert not model.training  # a model in eval mode stays there


def test_learner_predicts_and_evaluates_in_eval_mode_without_autograd() -> None:
    x, y, _, _ = _problem("binary", n=64, d=4)
    model = ModeRecorder()
    learner = nnfit.fit(model, x, y, epochs=1, batch_size=16, **{**CPU, "val_split": 0.25})
    assert set(model.log[:3]) == {TRAINING} and model.log[-1] == EVALUATING
    model.log.clear()
    learner.predict(x)
    learner.predict_proba(x)
    learner.evaluate(x, y)
    assert model.log and set(model.log) == {EVALUATING}


class _GradProbe(nnfit.Callback):
    """Whether every parameter's gradient is cleared (None) after each training batch."""

    def __init__(self) -> None:
        self.cleared: list[bool] = []

    def on_train_batch_end(self, trainer, batch):
        self.cleared.append(all(p.grad is None for p in trainer.model.parameters()))


def test_gradients_are_cleared_after_every_step_and_stale_ones_ignored() -> None:
    x, _, task, target = _problem("regression", n=64, d=4)
    torch.manual_seed(0)
    ours = nn.Linear(4, 1)
    theirs = copy.deepcopy(ours)
    for p in ours.parameters():  # left over from the user's own experiments
        p.grad = torch.full_like(p, 100.0)

    probe = _GradProbe()
    nnfit.Trainer(epochs=1, batch_size=32, optimizer="sgd", lr=0.1, seed=SEED,
                  callbacks=[probe], **PLAIN).fit(ours, (x,), task=task, target=target)
    assert probe.cleared == [True, True]

    # two plain SGD steps by hand, zeroing before each backward as the lesson does
    opt = torch.optim.SGD(theirs.parameters(), lr=0.1, fused=True)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(SEED))
    for idx in (perm[:32], perm[32:]):
        opt.zero_grad()
        F.mse_loss(theirs(x[idx]), target[idx]).backward()
        opt.step()
    _assert_bitwise_equal(ours.state_dict(), theirs.state_dict())

    probe = _GradProbe()
    nnfit.Trainer(epochs=1, batch_size=16, accumulate=2, callbacks=[probe], **PLAIN).fit(
        nn.Linear(4, 1), (x,), task=task, target=target)
    assert probe.cleared == [False, True, False, True]  # kept inside a window, cleared at its step


# --- 4. reproducibility ---------------------------------------------------------------------


def _fit_spec(seed: int):
    x, y, _, _ = _problem("multiclass", n=200)
    spec = {"name": "mlp", "hidden": [16], "dropout": 0.3}  # built after the seed is set
    return nnfit.fit(spec, x.numpy(), y.numpy(), epochs=4, batch_size=16, seed=seed,
                     val_split=0.25, patience=0, **CPU)


def test_same_seed_gives_identical_weights_and_history() -> None:
    a, b, c = _fit_spec(3), _fit_spec(3), _fit_spec(4)
    _assert_bitwise_equal(a.model.state_dict(), b.model.state_dict())
    assert _without_time(a.history) == _without_time(b.history)
    assert _differs(a.model.state_dict(), c.model.state_dict())
    assert _without_time(a.history) != _without_time(c.history)


def test_same_initial_weights_other_seed_changes_order_and_dropout() -> None:
    x, _, task, target = _problem("multiclass")
    first = _model("mlp", x.shape[1], 3, dropout=0.3)
    second = copy.deepcopy(first)
    for seed, model in ((0, first), (1, second)):
        nnfit.Trainer(epochs=2, batch_size=16, seed=seed, **PLAIN).fit(
            model, (x,), task=task, target=target)
    assert _differs(first.state_dict(), second.state_dict())


# --- 5. gradient accumulation ---------------------------------------------------------------


def _accumulating_hand_loop(model, x, target, *, lr, batch_size, accumulate, epochs, seed):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        batches = [perm[i:i + batch_size] for i in range(0, len(x), batch_size)]
        for w in range(0, len(batches), accumulate):
            window = batches[w:w + accumulate]
            for idx in window:  # the step follows the mean gradient of its window
                (F.mse_loss(model(x[idx]), target[idx]) / len(window)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return model


@pytest.mark.parametrize("n", [48, 36], ids=["even-windows", "short-last-window"])
def test_accumulation_matches_hand_loop_and_a_bigger_batch(n: int) -> None:
    # n=36, batch 8: batches of 8, 8, 8, 8, 4 and windows (8, 8), (8, 8), (4)
    x, _, task, target = _problem("regression", n=n, d=5)
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
    theirs, big_batch = copy.deepcopy(ours), copy.deepcopy(ours)
    kw = {"optimizer": "sgd", "lr": 0.1, "epochs": 2, "seed": SEED, **PLAIN}
    trainer = nnfit.Trainer(batch_size=8, accumulate=2, **kw)
    trainer.fit(ours, (x,), task=task, target=target)
    _accumulating_hand_loop(theirs, x, target, lr=0.1, batch_size=8, accumulate=2, epochs=2,
                            seed=SEED)
    assert trainer.state.step == 2 * math.ceil(math.ceil(n / 8) / 2)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)

    # Two equal batches of 8 per step are one batch of 16; a short last window is its own
    # batch. Either way the step equals the un-accumulated step on the merged batch.
    nnfit.Trainer(batch_size=16, **kw).fit(big_batch, (x,), task=task, target=target)
    for a, b in zip(ours.parameters(), big_batch.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_a_dataloader_decides_the_batch_count_for_schedules_and_accumulation() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(64, 4, generator=g)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).float()), batch_size=8)
    probe = _GradProbe()
    learner = nnfit.fit(nn.Linear(4, 1), loader, task="binary", epochs=2, accumulate=2,
                        scheduler="onecycle", patience=0, callbacks=[probe], **CPU)
    trainer = learner.trainer  # config batch_size is 32, the loader's 8 wins
    assert trainer.batches_per_epoch == 8 and trainer.state.step == 2 * 4
    assert probe.cleared == [False, True] * 8  # no gradient left over at an epoch's end


def test_batchnorm_on_a_dataset_skips_a_last_batch_of_one() -> None:
    g = torch.Generator().manual_seed(6)
    ds = TensorDataset(torch.randn(33, 4, generator=g), torch.randint(0, 2, (33,), generator=g))
    learner = nnfit.fit(BatchNormNet(4, 1), ds, task="binary", epochs=2, batch_size=16,
                        patience=0, **CPU)
    assert learner.trainer.batches_per_epoch == 2 and learner.trainer.state.step == 4


# --- 6. learning-rate schedules -------------------------------------------------------------


def _fit_lrs(**cfg):
    """Fit 150 rows in batches of 16 (10 steps an epoch); return the history and batch lrs."""
    x, _, task, target = _problem("multiclass")
    probe = _BatchLR()
    hist = nnfit.Trainer(batch_size=16, callbacks=[probe], **{**PLAIN, **cfg}).fit(
        _model("mlp", x.shape[1], 3), (x,), task=task, target=target)
    return hist, probe


def _torch_epoch_lrs(make_sched, epochs: int, lr: float) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched, out = make_sched(opt), []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("cfg, make_sched", [
    ({"scheduler": "step", "step_size": 2, "gamma": 0.5},
     lambda o: lrs.StepLR(o, step_size=2, gamma=0.5)),
    ({"scheduler": "exponential", "gamma": 0.7}, lambda o: lrs.ExponentialLR(o, gamma=0.7)),
    ({"scheduler": "multistep", "milestones": (2, 5), "gamma": 0.1},
     lambda o: lrs.MultiStepLR(o, milestones=[2, 5], gamma=0.1)),
], ids=["step", "exponential", "multistep"])
def test_epoch_schedules_log_torch_lr_sequence(cfg, make_sched) -> None:
    hist, probe = _fit_lrs(epochs=7, optimizer="sgd", lr=0.1, **cfg)
    expected = _torch_epoch_lrs(make_sched, 7, 0.1)
    assert hist["lr"] == expected  # the rate each epoch trained with
    assert probe.lrs[::10] == expected  # constant within an epoch


def test_onecycle_steps_per_optimizer_step_like_torch() -> None:
    hist, probe = _fit_lrs(epochs=3, optimizer="adam", lr=0.05, scheduler="onecycle")
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=0.05)
    sched = lrs.OneCycleLR(opt, max_lr=0.05, epochs=3, steps_per_epoch=10)
    expected_first, expected = opt.param_groups[0]["lr"], []
    for _ in range(30):
        opt.step()
        sched.step()
        expected.append(opt.param_groups[0]["lr"])
    assert probe.first == expected_first
    assert probe.lrs == expected
    assert hist["lr"] == expected[9::10] and hist[-1]["lr"] == expected[-1]


def test_cosine_warms_up_to_lr_then_decays_to_min_lr() -> None:
    lr, min_lr, warmup, total = 0.05, 1e-4, 10, 40  # 1 warm-up epoch of 4, 10 steps each
    hist, probe = _fit_lrs(epochs=4, warmup_epochs=1, optimizer="adam", lr=lr,
                           scheduler="cosine", min_lr=min_lr)
    used = [probe.first, *probe.lrs[:-1]]  # the rate of each of the 40 steps
    assert used[:warmup] == pytest.approx([lr * (k + 1) / warmup for k in range(warmup)])
    assert used[warmup - 1] == pytest.approx(lr) and max(used) == pytest.approx(lr)
    progress = [(k - warmup) / (total - warmup) for k in range(warmup, total)]
    cosine = [min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * t)) for t in progress]
    assert used[warmup:] == pytest.approx(cosine, rel=1e-9)
    assert hist[-1]["lr"] == pytest.approx(min_lr, rel=1e-9)  # the floor after the last step


class Stuck(nn.Module):
    """A regressor whose loss can never change: the output ignores the only parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x[:, :1] * self.w * 0.0 + 0.5


def test_plateau_reduces_lr_after_sched_patience_epochs_without_improvement() -> None:
    x, _, task, target = _problem("regression", n=32, d=3)
    hist = nnfit.Trainer(epochs=8, batch_size=16, optimizer="sgd", lr=0.1, scheduler="plateau",
                         sched_patience=2, gamma=0.5, **PLAIN).fit(
        Stuck(), (x,), (x,), task=task, target=target, val_target=target)
    assert len(set(hist["val_loss"])) == 1
    # epoch 1 sets the best; epochs 2-4 are 3 > 2 bad epochs -> halve for epoch 5, and again
    assert hist["lr"] == [0.1] * 4 + [0.05] * 3 + [0.025]
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched, expected = lrs.ReduceLROnPlateau(opt, factor=0.5, patience=2), []
    for v in hist["val_loss"]:
        expected.append(opt.param_groups[0]["lr"])
        sched.step(v)
    assert hist["lr"] == expected


def test_plateau_follows_train_loss_direction_without_validation() -> None:
    # monitor=val_accuracy cannot be watched without validation data: the loop watches
    # train_loss, which improves every epoch here, so the rate must stay.
    hist, _ = _fit_lrs(epochs=6, optimizer="sgd", lr=0.05, scheduler="plateau",
                       sched_patience=0, monitor="val_accuracy")
    losses = hist["train_loss"]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))
    assert hist["lr"] == [0.05] * 6


# --- 7. early stopping ----------------------------------------------------------------------


def _overfit(restore_best: bool, snaps: _Snapshots):
    g = torch.Generator().manual_seed(11)
    x, xv = torch.randn(32, 10, generator=g), torch.randn(200, 10, generator=g)
    y, yv = torch.randint(0, 2, (32,), generator=g), torch.randint(0, 2, (200,), generator=g)
    task = make_task("binary", y.numpy())
    torch.manual_seed(0)
    model = nnfit.MLP(10, [64, 64], 1)
    trainer = nnfit.Trainer(epochs=40, batch_size=8, lr=1e-2, seed=SEED, patience=2,
                            restore_best=restore_best, callbacks=[snaps], **CPU)
    hist = trainer.fit(model, (x,), (xv,), task=task, target=task.encode_target(y.numpy()),
                       val_target=task.encode_target(yv.numpy()))
    return trainer, hist, model


def test_early_stopping_restores_the_best_epoch_weights() -> None:
    snaps = _Snapshots()
    trainer, hist, model = _overfit(True, snaps)
    st = trainer.state
    val = hist["val_loss"]
    assert st.stop and len(hist) < 40
    assert st.best_epoch == val.index(min(val)) + 1 and st.best == min(val)
    assert len(hist) == st.best_epoch + 2
    assert "early stopping" in st.stop_reason and "val_loss" in st.stop_reason
    assert f"epoch {st.best_epoch}" in st.stop_reason
    _assert_bitwise_equal(model.state_dict(), snaps.weights[st.best_epoch - 1])
    assert _differs(model.state_dict(), snaps.weights[-1])

    last = _Snapshots()
    trainer2, hist2, model2 = _overfit(False, last)
    assert hist2["val_loss"] == val  # restore_best does not change the trajectory
    _assert_bitwise_equal(model2.state_dict(), last.weights[-1])


def test_early_stopping_when_the_monitor_is_nan_from_the_start() -> None:
    x, _, task, target = _problem("regression", n=32, d=3)

    class Diverged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 1)

        def forward(self, inp):
            return self.fc(inp) * float("nan")

    trainer = nnfit.Trainer(epochs=6, batch_size=16, patience=2, check_finite=False, **CPU)
    hist = trainer.fit(Diverged(), (x,), (x,), task=task, target=target, val_target=target)
    assert len(hist) == 2 and trainer.state.best is None
    assert trainer.state.stop_reason.startswith("early stopping: val_loss did not improve")


# --- 8. callbacks ---------------------------------------------------------------------------


class _Events(nnfit.Callback):
    def __init__(self, stop_after: int = 0) -> None:
        self.events: list = []
        self.stop_after = stop_after

    def on_fit_start(self, trainer):
        self.events.append("fit_start")

    def on_epoch_start(self, trainer):
        self.events.append(("epoch_start", trainer.state.epoch))

    def on_train_batch_end(self, trainer, batch):
        self.events.append(("batch", batch))

    def on_epoch_end(self, trainer, logs):
        self.events.append(("epoch_end", logs["epoch"]))
        if logs["epoch"] == self.stop_after:
            trainer.state.stop = True

    def on_fit_end(self, trainer):
        self.events.append("fit_end")


def _epoch_events(epoch: int, n_batches: int) -> list:
    return [("epoch_start", epoch), *[("batch", i) for i in range(n_batches)],
            ("epoch_end", epoch + 1)]


def test_hooks_run_in_order() -> None:
    x, _, task, target = _problem("binary", n=40, d=4)
    ev = _Events()
    nnfit.Trainer(epochs=2, batch_size=16, callbacks=[ev], **PLAIN).fit(
        nn.Linear(4, 1), (x,), task=task, target=target)
    assert ev.events == ["fit_start", *_epoch_events(0, 3), *_epoch_events(1, 3), "fit_end"]


def test_callback_stops_training_after_its_epoch() -> None:
    x, _, task, target = _problem("binary", n=40, d=4)
    ev = _Events(stop_after=2)
    hist = nnfit.Trainer(epochs=10, batch_size=16, callbacks=[ev], **PLAIN).fit(
        nn.Linear(4, 1), (x,), task=task, target=target)
    assert len(hist) == 2
    assert ev.events == ["fit_start", *_epoch_events(0, 3), *_epoch_events(1, 3), "fit_end"]


def test_fit_end_runs_when_the_model_raises() -> None:
    x, _, task, target = _problem("binary", n=40, d=4)

    class Breaks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 1)
            self.calls = 0

        def forward(self, inp):
            self.calls += 1
            if self.calls == 5:  # the second batch of the second epoch
                raise RuntimeError("boom")
            return self.fc(inp)

    ev = _Events()
    with pytest.raises(RuntimeError, match="boom"):
        nnfit.Trainer(epochs=3, batch_size=16, callbacks=[ev], **PLAIN).fit(
            Breaks(), (x,), task=task, target=target)
    assert ev.events == ["fit_start", *_epoch_events(0, 3), ("epoch_start", 1), ("batch", 0),
                         "fit_end"]


# --- 9. host syncs --------------------------------------------------------------------------


def _count_syncs(monkeypatch, run) -> dict[str, int]:
    """Run ``run()`` counting tensor-to-Python reads (tests/helpers.count_host_reads)."""
    return count_host_reads(monkeypatch, run)


@pytest.mark.parametrize("check_finite", [False, True])
def test_one_host_sync_per_epoch(monkeypatch, check_finite) -> None:
    x, _, task, target = _problem("multiclass")
    model = _model("mlp", x.shape[1], 3, dropout=0.2)
    trainer = nnfit.Trainer(epochs=3, batch_size=16, optimizer="sgd", momentum=0.9, lr=0.05,
                            grad_clip=1.0, accumulate=2, scheduler="onecycle", check_finite=check_finite,
                            **PLAIN)
    calls = _count_syncs(monkeypatch, lambda: trainer.fit(model, (x,), task=task, target=target))
    loop = {f: c for f, c in calls.items() if not f.endswith("guards.py")}
    assert sum(loop.values()) == 3, calls  # the epoch's mean training loss, nothing per step
    assert all(f.endswith("trainer.py") for f in loop)
    # The finiteness guard reads CPU values (memory reads, not device syncs) per step; on
    # CUDA it does not run per step (tests/test_gpu.py runs the loop in sync-error mode).
    assert bool(calls.get(next((f for f in calls if f.endswith("guards.py")), ""), 0)) == check_finite


def test_adam_syncs_only_on_its_cpu_step_counters(monkeypatch) -> None:
    # torch's single-tensor Adam reads its CPU step counter with .item() each step; that is a
    # CPU scalar (no device sync) and inside torch, not the loop. The loop itself syncs once.
    x, _, task, target = _problem("multiclass")
    trainer = nnfit.Trainer(epochs=3, batch_size=16, optimizer="adam", **PLAIN)
    calls = _count_syncs(monkeypatch, lambda: trainer.fit(
        _model("mlp", x.shape[1], 3), (x,), task=task, target=target))
    outside_optim = {f: c for f, c in calls.items() if "torch/optim" not in f.replace("\\", "/")
                     and not f.endswith("guards.py")}
    assert sum(outside_optim.values()) == 3, calls
