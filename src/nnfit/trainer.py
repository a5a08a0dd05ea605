"""The one training loop: fit, evaluate and predict any ``nn.Module`` on any data source.

Read :meth:`Trainer.fit` top to bottom: schedule, forward, loss, backward, clip, step, log,
validate, checkpoint. Every feature is a visible branch in that loop. The step is split into
small methods (:meth:`Trainer.forward`, :meth:`Trainer.compute_loss`,
:meth:`Trainer.train_step`) that a subclass may override one at a time.

Host syncs: none per step. Losses accumulate on the device; the loop reads them once per epoch
(marked ``# sync``), and the progress display reads the running loss at most twice a second.
On the CPU only, the finiteness guard (:mod:`nnfit.guards`) reads the step's loss and one
gradient flag: reads of host memory, not device syncs; on CUDA it checks at epoch ends.

Checkpoints (with a run directory): at epoch ends, every ``checkpoint_steps`` optimizer steps,
and on SIGINT/SIGTERM after the current step; a resume inside an epoch replays its data order
from the RNG states saved at its start (:mod:`nnfit.rng`) and skips the batches already done.

Training data of unknown length (a stream: ``num_batches`` is None) trains with no total: its
last accumulation window closes when it ends, it is checkpointed and resumed at epoch ends only
(a signal stops without a checkpoint inside the epoch), and what needs the number of batches
(``checkpoint_steps``, per-step schedules) is refused unless the source is given it.

When :meth:`Trainer.fit` returns, the model is in eval mode, ready to predict.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from . import distributed, rng
from .callbacks import Callback, History, ProgressBar
from .config import TrainConfig, train_config
from .data import DataSource, Inputs, as_source
from .data.buckets import metric_batches
from .data.sources import epoch_samples
from .errors import ConfigError, Stopped, TrainingError
from .graphs import GraphedStep, graphs_wanted
from .guards import FiniteGuard, all_finite, check_finite_outputs, first_non_finite
from .optim import (
    FusedStepper,
    Schedule,
    build_optimizer,
    build_schedule,
    match_state_layout,
    refuse_without_length,
)
from .outputs import cat_outputs
from .precision import Precision, resolve_precision
from .runtime import Runtime, catch_signals, cpu_threads, make_runtime, memory_format, step_params
from .state import (
    FitState,
    capture_state,
    early_stop_reason,
    improves,
    restore_state,
    resume_ended,
    resume_stopped,
)
from .tasks import Task


def _overrides(cls: type, method: str) -> bool:
    return getattr(cls, method) is not getattr(Callback, method)


class Trainer:
    """Train, evaluate and predict with one loop around a plain ``nn.Module``.

    Args:
        config: the loop's settings; defaults to :class:`~nnfit.config.TrainConfig()`.
        callbacks: extra :class:`~nnfit.callbacks.Callback` objects, called in order after the
            built-in progress display.
        runtime: device and seed, resolved once; built from ``config`` when not given.
        **overrides: any TrainConfig field, e.g. ``epochs=5, lr=3e-4``.

    Attributes:
        model, optimizer, schedule, task: set during :meth:`fit`.
        state: the :class:`FitState` of the current or last fit.

    Example:
        >>> from nnfit.tasks import make_task
        >>> x, y = torch.randn(64, 3), torch.randn(64)
        >>> task = make_task("regression", y.numpy(), scale_target=False)
        >>> t = Trainer(epochs=2, quiet=True, device="cpu")
        >>> hist = t.fit(torch.nn.Linear(3, 1), (x,), task=task, target=task.encode_target(y.numpy()))
        >>> len(hist)
        2
    """

    def __init__(self, config: TrainConfig | None = None, *, callbacks: Sequence[Callback] = (),
                 runtime: Runtime | None = None, **overrides: Any) -> None:
        self.config = train_config(config, **overrides)
        self.runtime = runtime or make_runtime(self.config.device, self.config.seed, self.config.dist_backend)
        # the progress display is rank 0's alone (under torchrun every rank trains)
        shows = not self.config.quiet and self.runtime.is_main
        self.callbacks: list[Callback] = ([ProgressBar()] if shows else []) + list(callbacks)
        self._batch_cbs = [c for c in self.callbacks if _overrides(type(c), "on_train_batch_end")]
        self.state = FitState()
        self.model: nn.Module | None = None
        self.step_model: nn.Module | None = None
        self.compile_time: float | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.schedule: Schedule | None = None
        self.task: Task | None = None
        self.generator = self.runtime.generator()
        self.last_loss: Tensor | None = None
        self.batches_per_epoch: int | None = 0  # None: training data of unknown length
        self.epoch_samples: tuple[int, int] | None = None  # (per batch, per epoch), when uniform
        self.drop_single = False
        self.graphed: GraphedStep | None = None
        self._loss_sum: Tensor | None = None
        self._loss_n = 0
        self._epoch_rng: dict[str, Tensor] | None = None  # RNG states at the epoch's start
        self._loader_rngs: list[torch.Generator] = []  # generators of a user's DataLoader
        self._checkpoint_fn: Any = None
        self._left = ""  # what a failed run leaves to resume from, for its error message
        self._signal = 0  # set by SIGINT/SIGTERM: commit a checkpoint after this step and stop
        self._agreed = 0  # under torchrun: the signal all ranks agreed on at the last agreement point
        self.guard: FiniteGuard | None = None
        # Decided once: fp16 without CUDA is refused here; each fit starts a fresh one (_setup).
        self.precision = resolve_precision(self.config.precision, self.runtime.device)

    # ------------------------------------------------------------------ the step's seams
    def forward(self, model: nn.Module, inputs: Inputs) -> Tensor:
        """Call the model: ``model(*inputs)`` for a tuple, ``model(**inputs)`` for a dict."""
        return model(**inputs) if isinstance(inputs, dict) else model(*inputs)

    def compute_loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The batch's mean loss; the task's loss unless overridden."""
        return self.task.loss(output, target)

    def train_step(self, inputs: Inputs, target: Tensor, scale: float) -> Tensor:
        """Forward, loss and backward for one batch; returns the detached, unscaled loss.

        ``scale`` is ``1 / (batches in this accumulation window)``: gradients of a window add
        up to the gradient of their mean, also for a shorter last window of the epoch.
        """
        with self.precision.autocast():  # bf16/fp16; fp32 and tf32: a no-op context
            output = self.forward(self.step_model, inputs)
            loss = self.compute_loss(output, target)
        self.precision.backward(loss * scale if scale != 1.0 else loss)  # fp16: the scaled loss
        return loss.detach()

    def optimizer_step(self) -> None:
        """Clip (when configured), step the optimizer and clear the gradients; under fp16 the
        gradient scaler skips a step whose gradients are inf/NaN (:mod:`nnfit.precision`)."""
        scaler = self.precision.scaler
        if self.config.grad_clip > 0:
            if scaler is not None:  # clip the true gradients, not the scaled ones
                scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if scaler is None:
            self.stepper.step()
        else:
            self.precision.step(self.optimizer)
        self.stepper.zero_grad()
        self.state.step += 1
        if self.schedule is not None and self.schedule.interval == "step":
            self.schedule.scheduler.step()

    def running_loss(self) -> float:
        """Mean training loss of the epoch so far. Forces a host sync: use sparingly."""
        if self._loss_sum is None or self._loss_n == 0:
            return float("nan")
        return (self._loss_sum / self._loss_n).item()  # sync: called by the display only

    # ------------------------------------------------------------------ fit
    def fit(self, model: nn.Module, train: Any, val: Any = None, *, task: Task,
            target: Tensor | None = None, val_target: Tensor | None = None,
            resume: tuple[dict[str, Tensor], dict[str, Any]] | None = None,
            checkpoint_fn: Any = None) -> History:
        """Train ``model`` on ``train``, validating on ``val`` after every epoch.

        Args:
            model: any ``nn.Module``; moved to the runtime's device and trained in place.
            train: a :class:`~nnfit.data.DataSource`, tensors, a Dataset or a DataLoader.
            val: validation data in the same forms, or None.
            task: the task giving the loss, the metrics and the output conversions.
            target, val_target: targets when ``train``/``val`` are bare input tensors.
            resume: ``(tensors, meta)`` of a checkpoint from :meth:`checkpoint_parts`.
            checkpoint_fn: called as ``fn(trainer, is_best)`` after each epoch, and as
                ``fn(trainer, False, True)`` inside an epoch (every ``checkpoint_steps`` steps or
                on SIGINT/SIGTERM), to persist state. With it, SIGINT/SIGTERM end training
                gracefully: the current step finishes, a checkpoint is committed and
                :class:`~nnfit.errors.Stopped` is raised.

        Returns:
            The :class:`~nnfit.callbacks.History` of all epochs (resumed ones included).
        """
        c, rt = self.config, self.runtime
        self.model, self.task = model.to(rt.device), task
        layout = memory_format(model, rt, c.channels_last)
        if layout is not None:  # before the optimizer exists: its state follows these strides
            model.to(memory_format=layout)
        # under torchrun: this rank's rows of every global batch (nnfit.distributed)
        train = distributed.shard(as_source(train, target).to(rt.device), rt)
        val = None if val is None else as_source(val, val_target).to(rt.device)
        monitor = self._setup(train, val, resume, checkpoint_fn)
        match_state_layout(self.optimizer)  # a resumed state was saved contiguous
        # Decided once per fit: CPU threads for this model size, and the (compiled) step model.
        threads_before = torch.get_num_threads()
        threads = cpu_threads(rt, step_params(model), c.batch_size, c.threads)
        if threads:
            torch.set_num_threads(threads)
        self.step_model = model
        if rt.distributed:  # gradients all-reduced in backward; rank 0's weights given to all
            from torch.nn.parallel import DistributedDataParallel

            ids = [rt.device.index] if rt.is_cuda else None
            # On CUDA, BatchNorm normalises over the global batch, as one process does (torch's
            # SyncBatchNorm runs on GPUs only; on the CPU each rank normalises its own share).
            synced = distributed.sync_batchnorm(model) if rt.is_cuda else model
            self.step_model = DistributedDataParallel(synced, device_ids=ids)
        self.step_model = torch.compile(self.step_model) if c.compile else self.step_model
        self.compile_time = None
        # Taken again here: callbacks may have been added since __init__ (fit adds the --log sinks).
        self._batch_cbs = [c for c in self.callbacks if _overrides(type(c), "on_train_batch_end")]
        for cb in self.callbacks:
            cb.on_fit_start(self)
        previous = self._catch_signals() if checkpoint_fn is not None else {}
        try:
            with self.precision.fit_scope():  # tf32: TF32 on CUDA for this fit only
                while self.state.epoch < c.epochs and not self.state.stop:
                    self._run_epoch(train, val, monitor, checkpoint_fn)
        except TrainingError as e:  # a guard or the checkpoint check: say what is left on disk
            raise TrainingError(self._with_left(str(e))) from None
        except RuntimeError as e:  # under torchrun: another rank died (killed, out of memory)
            if not (rt.distributed and distributed.lost_peer(e)):
                raise
            raise TrainingError(self._with_left("another process of this torchrun run ended (the "
                                                "connection to it was lost)")) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            torch.set_num_threads(threads_before)
            distributed.plain_batchnorm(model)  # the model is returned with its own layers
            if layout is not None:  # the model is returned as it came: contiguous
                model.to(memory_format=torch.contiguous_format)
            for cb in self.callbacks:
                cb.on_fit_end(self)
        if c.restore_best and self.state.best_weights is not None:
            model.load_state_dict(self.state.best_weights)
        model.eval()  # returned ready to predict: dropout off, BatchNorm on its running statistics
        if checkpoint_fn is not None:  # the run writes this model next: never a non-finite one
            bad = first_non_finite(model.named_parameters())
            if bad is not None:
                raise TrainingError(self._with_left(
                    f"parameter {bad!r} of the final model is non-finite: the model is not written"))
        return self.state.history

    def _setup(self, train: DataSource, val: DataSource | None, resume: Any, checkpoint_fn: Any) -> str:
        """Batching, optimizer, schedule, restored state, guard and CUDA graph for a fit;
        returns the monitored metric's name."""
        c, model = self.config, self.model
        self.drop_single = self._drop_single()  # decided once: the model's layers do not change
        self._loader_rngs = getattr(train, "generators", list)()
        self.batches_per_epoch = train.num_batches(c.batch_size, self.drop_single)
        self.epoch_samples = epoch_samples(train, c.batch_size, self.drop_single)
        if self.batches_per_epoch == 0:
            raise ConfigError("no training batches: the training data is empty")
        # Unknown length: 1 stands in, as only epoch schedules (which ignore it) are allowed then.
        steps_per_epoch = math.ceil((self.batches_per_epoch or 1) / c.accumulate)
        monitor = c.monitor if val is not None or not c.monitor.startswith("val_") else "train_loss"
        graphed = graphs_wanted(self, train) and not self.runtime.distributed
        self.optimizer = build_optimizer(model.parameters(), c, capturable=graphed)
        # "plateau" takes its direction from the monitor actually watched (train_loss without
        # validation data), not from a configured val_ metric that is never logged.
        self.schedule = build_schedule(self.optimizer, replace(c, monitor=monitor), steps_per_epoch)
        if self.batches_per_epoch is None:
            refuse_without_length(c, self.schedule, checkpoint_fn is not None)
        self.state = FitState()
        self.precision = Precision(c.precision, self.runtime.device)  # a fresh scaler each fit
        self._checkpoint_fn, self._signal, self._agreed = checkpoint_fn, 0, 0
        self._left = "no checkpoint was written yet"
        if resume is not None:
            restore_state(self, *resume, monitor=monitor, data=(distributed.unwrapped(train), val))
            if self.runtime.distributed:  # each rank's own generators and running loss
                distributed.restore_rank_states(self, *resume[:2])
            self._left = f"the checkpoint resumed from (step {self.state.step}) is untouched"
            resume_ended(self, resume[1])
            resume_stopped(self, resume[1], monitor)
        # With a scaler, inf/NaN gradients are skipped steps: no per-step gradient check.
        per_step = not self.runtime.is_cuda and self.precision.scaler is None
        self.guard = FiniteGuard(model, per_step=per_step) if c.check_finite else None
        self.stepper = FusedStepper(self.optimizer)
        self.graphed = GraphedStep(self) if graphed else None
        self.optimizer.zero_grad(set_to_none=True)
        return monitor

    def _run_epoch(self, train: DataSource, val: DataSource | None, monitor: str,
                   checkpoint_fn: Any) -> None:
        """Train one epoch, validate, step the epoch schedule, log, track the best, checkpoint."""
        t0 = time.perf_counter()
        for cb in self.callbacks:
            cb.on_epoch_start(self)
        train_loss = self._train_epoch(train)
        if self.guard is not None:
            where = f"in epoch {self.state.epoch + 1} (by step {self.state.step})"
            if not math.isfinite(train_loss):
                raise TrainingError(f"non-finite mean training loss ({train_loss}) {where}")
            self.precision.check_scale(where)  # fp16: steps skipped until no step can succeed
            self.guard.check_params(where)
        logs: dict[str, Any] = {"epoch": self.state.epoch + 1, "train_loss": train_loss}
        if val is not None:
            logs.update({f"val_{k}": v for k, v in self.evaluate(self.model, val).items()
                         if not isinstance(v, list)})
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        self._step_epoch_schedule(logs, monitor)
        improved = self._track_best(logs, monitor)
        self.state.epoch += 1
        logs["time"] = time.perf_counter() - t0
        if self.compile_time is not None and self.state.epoch == 1:
            logs["compile_time"] = self.compile_time
        self.state.history.append(logs)
        self._early_stop(monitor)
        for cb in self.callbacks:
            cb.on_epoch_end(self, logs)
        if checkpoint_fn is not None:
            written = checkpoint_fn(self, improved)
            self._note_saved(written)
            if self._stop_signal():
                self._stop_by_signal(written or checkpoint_fn(self, False, True))

    def _catch_signals(self) -> dict[int, Any]:
        return catch_signals(self)

    def _stop_signal(self) -> int:
        """The signal to stop for: this process's, or under torchrun the one all ranks agreed
        on at the last agreement point (a signal to any rank stops all at the same step)."""
        return self._agreed if self.runtime.distributed else self._signal

    def _agree_stop(self) -> int:
        """Under torchrun, agree now whether any rank was signalled (one all-reduce)."""
        self._agreed = int(distributed.agree_max([self._signal], self.runtime)[0])
        return self._agreed

    def _stop_by_signal(self, written: Any) -> None:
        st, name = self.state, signal.Signals(self._stop_signal()).name
        at = f"in epoch {st.epoch + 1} after batch {st.batch}" if st.batch else f"after epoch {st.epoch}"
        raise Stopped(f"stopped by {name} {at} (step {st.step}); checkpoint {written} committed",
                      self._stop_signal())

    def _stop_unsaved(self) -> None:
        """Stop inside an epoch of a stream without a checkpoint: one of unknown length
        resumes at epoch ends only (it cannot be replayed to a batch inside an epoch)."""
        st, name = self.state, signal.Signals(self._stop_signal()).name
        raise Stopped(f"stopped by {name} in epoch {st.epoch + 1} after batch {st.batch} (step {st.step}); "
                      f"training data of unknown length resumes from epoch ends: {self._left}",
                      self._stop_signal())

    def _note_saved(self, written: Any) -> None:
        """Remember the newest checkpoint committed (``checkpoint_fn``'s return value)."""
        if written:
            self._left = f"the last checkpoint ({getattr(written, 'name', written)}) is untouched"

    def _with_left(self, message: str) -> str:
        """``message`` plus what is left to resume from, when the fit writes checkpoints."""
        return message if self._checkpoint_fn is None else f"{message}; {self._left}"

    def _drop_single(self) -> bool:
        # BatchNorm cannot normalise a batch of one sample in training mode.
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules())

    def _train_epoch(self, train: DataSource) -> float:
        """One pass over ``train`` (the rest of it, when resuming inside the epoch); returns
        the epoch's mean training loss."""
        model, c, st = self.model, self.config, self.state
        model.train()
        start = st.batch
        if start == 0:
            self._epoch_rng = self._rng_states(cuda=False)  # CPU-side: no device sync
            self._loss_sum = torch.zeros((), device=self.runtime.device)
            self._loss_n = 0
            batches = train.batches(c.batch_size, shuffle=True, generator=self.generator,
                                    drop_single=self.drop_single)
        else:
            batches = self._replay_order(train, start)
        n_batches = self.batches_per_epoch  # None: a stream, whose end is known when it comes
        # The epoch's last accumulation window may hold fewer batches than ``accumulate``.
        last_start = (n_batches - 1) // c.accumulate * c.accumulate if n_batches else None
        guard = self.guard if self.guard is not None and self.guard.per_step else None
        every = c.checkpoint_steps if self._checkpoint_fn is not None else 0  # 0 for a stream
        shard = train if self.runtime.distributed else None  # a distributed.Sharded
        i, where = start - 1, None
        for i, (inputs, target) in enumerate(batches, start):
            last = last_start is not None and i >= last_start
            scale = 1.0 / (n_batches - last_start if last else c.accumulate)
            if shard is not None:  # this rank's share of the global batch's mean loss
                scale *= shard.weight
            boundary = (i + 1) % c.accumulate == 0 or i + 1 == n_batches
            if self.graphed is not None and len(target) == c.batch_size:
                loss = self.graphed(inputs, target)  # a whole step, replayed as a CUDA graph
                st.step += 1
            else:
                if self.config.compile and st.step == 0 and i == 0:
                    loss = self._timed_first_step(inputs, target, scale)
                elif shard is not None and not boundary:  # accumulating: all-reduce at the window's end
                    with self.step_model.no_sync():
                        loss = self.train_step(inputs, target, scale)
                else:
                    loss = self.train_step(inputs, target, scale)
                if guard is not None:
                    where = self._where(i)  # the text is built only on failure
                    if shard is None:  # a rank's loss is its own: under torchrun the gradients,
                        guard.check_loss(loss, where)  # all-reduced and so alike on every rank, are checked
                if boundary:
                    if guard is not None:
                        guard.check_grads(where)
                    self.optimizer_step()
            n = len(target) if shard is None else shard.rows
            self._loss_sum.add_(loss, alpha=n)  # on device: no sync
            self._loss_n += n
            self.last_loss = loss
            for cb in self._batch_cbs:
                cb.on_train_batch_end(self, i)
            if boundary:
                st.batch = i + 1
                self._window_end(every, n_batches is not None and i + 1 < n_batches, shard is not None)
        if n_batches is None:
            self._end_stream(i + 1 - start, guard, where)
        st.batch = 0
        if shard is not None:  # the ranks' sums and any signal, in one all-reduce
            return distributed.epoch_loss(self)
        return (self._loss_sum / max(1, self._loss_n)).item()  # sync: once per epoch

    def _window_end(self, every: int, more: bool, sharded: bool) -> None:
        """After an accumulation window (``more``: batches follow in this epoch): a checkpoint
        every ``every`` steps, and a stop with one when signalled. Under torchrun the ranks
        agree on a stop at step checkpoints and every AGREE_STEPS steps: never per step."""
        st = self.state
        due = every and st.step % every == 0 and more
        stop = self._signal
        if sharded:
            stop = self._agree_stop() if due or st.step % distributed.AGREE_STEPS == 0 else 0
        if stop and self.batches_per_epoch is None:
            self._stop_unsaved()
        if stop or due:
            written = self._checkpoint_fn(self, False, True)
            self._note_saved(written)
            if stop:
                self._stop_by_signal(written)

    def _end_stream(self, n: int, guard: FiniteGuard | None, where: Any) -> None:
        """The end of an epoch of a stream (``n`` batches): refuse one that yielded nothing,
        and step on a last accumulation window that holds fewer batches than ``accumulate``.
        Its gradients were scaled for ``accumulate`` batches; rescaled here, they are their
        mean, as a source of known length scales them from the start (equal up to rounding).
        """
        if n == 0:
            raise ConfigError(f"no training batches: the training data yielded none in epoch "
                              f"{self.state.epoch + 1}")
        k = n % self.config.accumulate
        if k == 0:
            return
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(self.config.accumulate / k)
        if guard is not None:
            guard.check_grads(where)
        self.optimizer_step()

    def _replay_order(self, train: DataSource, start: int) -> Any:
        """Batches from ``start`` on in the order the interrupted epoch had: the order is drawn
        again from the RNG states saved at the epoch's start, then the current states return."""
        now = self._rng_states(cuda=False)
        if self._epoch_rng is None:  # no saved order (not an nnfit checkpoint): draw a new one
            self._epoch_rng = now
        rng.restore(self._epoch_rng, self.generator, self._loader_rngs)
        batches = train.batches(self.config.batch_size, shuffle=True, generator=self.generator,
                                drop_single=self.drop_single, start=start)
        rng.restore(now, self.generator, self._loader_rngs)
        return batches

    def _rng_states(self, cuda: bool = True) -> dict[str, Tensor]:
        dev = self.runtime.device if cuda and self.runtime.is_cuda else None
        return rng.capture(self.generator, self._loader_rngs, dev)

    def _where(self, i: int) -> Callable[[], str]:
        """Where batch ``i`` of the running epoch is, as a description made when called."""
        st = self.state
        of = "" if self.batches_per_epoch is None else f" of {self.batches_per_epoch}"
        return lambda: f"in epoch {st.epoch + 1}, step {st.step + 1} (batch {i + 1}{of})"

    def _timed_first_step(self, inputs: Inputs, target: Tensor, scale: float) -> Tensor:
        """The first compiled step, timed: its time is almost all compilation."""
        t0 = time.perf_counter()
        loss = self.train_step(inputs, target, scale)
        self.runtime.synchronize()  # sync: once per fit, so the time is the compile's
        self.compile_time = time.perf_counter() - t0
        return loss

    def _step_epoch_schedule(self, logs: dict[str, Any], monitor: str) -> None:
        sched = self.schedule
        if sched is None or sched.interval != "epoch":
            return
        if sched.needs_metric:
            sched.scheduler.step(_monitored(logs, monitor))
        else:
            sched.scheduler.step()

    def _track_best(self, logs: dict[str, Any], monitor: str) -> bool:
        value, st = _monitored(logs, monitor), self.state
        if not improves(value, st.best, monitor, self.config.min_delta):
            return False
        st.best, st.best_epoch = value, st.epoch + 1
        if self.config.restore_best:
            st.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return True

    def _early_stop(self, monitor: str) -> None:
        p, st = self.config.patience, self.state
        if p and monitor.startswith("val_") and st.epoch - st.best_epoch >= p:
            st.stop = True
            st.stop_reason = early_stop_reason(monitor, p, st.best, st.best_epoch)

    # ------------------------------------------------------------------ evaluate / predict
    @torch.inference_mode()
    def evaluate(self, model: nn.Module, data: Any, *, task: Task | None = None,
                 target: Tensor | None = None, finite_outputs: str | None = None) -> dict[str, Any]:
        """Loss and task metrics of ``model`` on labelled ``data``, in eval mode, no autograd.

        Args:
            finite_outputs: the data's name, to refuse a NaN or infinite model output instead
                of returning NaN metrics (validation during ``fit`` lets them through).

        Returns:
            ``{"loss": ..., <metric>: ...}``; one host sync at the end.

        Raises:
            DataError: with ``finite_outputs``, naming it and the first row whose output is
                not finite (found by predicting again: a failure path only).
        """
        task = task or self.task
        if task is None:
            raise ConfigError("evaluate needs a task")
        source = as_source(data, target).to(self.runtime.device)
        was_training = model.training
        model.eval()
        if distributed.active(self.runtime):  # the ranks together: every sample once
            try:
                return distributed.evaluate_together(self, model, source, task, finite_outputs)
            finally:
                model.train(was_training)
        metrics = task.make_metrics()
        loss_sum, n = torch.zeros((), dtype=torch.float64, device=self.runtime.device), 0
        finite = torch.ones((), dtype=torch.bool, device=self.runtime.device)
        try:
            for inputs, tgt in metric_batches(source, self.config.eval_batch_size):  # order-free
                out = self.precision.infer(self.forward, model, inputs)  # bf16/fp16: autocast
                if finite_outputs is not None:  # on the device: no sync per batch
                    finite &= torch.isfinite(out).all() if isinstance(out, Tensor) else all_finite(out)
                loss_sum += task.loss(out, tgt).double() * len(tgt)
                n += len(tgt)
                metrics.update(*task.metric_inputs(out, tgt))
        finally:
            model.train(was_training)
        if n == 0:
            raise ConfigError("evaluate: the data is empty")
        loss, ok = torch.stack([loss_sum / n, finite.double()]).tolist()  # sync: once per evaluation
        if not ok:
            check_finite_outputs(self.predict_outputs(model, source), finite_outputs)
        return {"loss": loss, **metrics.compute()}

    @torch.inference_mode()
    def predict_outputs(self, model: nn.Module, data: Any) -> Any:
        """Raw model outputs for every row of ``data``, in order, on the CPU: one tensor, or
        the structure the model returns (tuples, lists, dicts of tensors), leaf by leaf."""
        source = as_source(data).to(self.runtime.device)
        was_training = model.training
        model.eval()
        try:
            outs = [self.precision.infer(self.forward, model, inputs) for inputs, _ in
                    source.batches(self.config.eval_batch_size)]
        finally:
            model.train(was_training)
        return torch.cat(outs).cpu() if isinstance(outs[0], Tensor) else cat_outputs(outs)

    # ------------------------------------------------------------------ checkpoint state
    def checkpoint_parts(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Tensors and JSON state that let :meth:`fit` resume exactly where it is now, between
        epochs or inside one (see :func:`nnfit.state.capture`).

        Raises:
            TrainingError: a parameter, its optimizer state, the running loss or a buffer holds
                what no checkpoint may hold (NaN or infinite; NaN in a buffer).
        """
        return capture_state(self)


def _monitored(logs: dict[str, Any], monitor: str) -> Any:
    """The monitored value of an epoch's logs; a name that is not logged is a config error."""
    if monitor not in logs:
        raise ConfigError(f"monitor {monitor!r} is not among the logged values: {', '.join(logs)}")
    return logs[monitor]
