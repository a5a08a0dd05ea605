"""CUDA graphs for the training step: one replay instead of ~30 kernel launches per batch.

On a GPU, a small model's step is bound by kernel launches, not arithmetic. A full-size batch
always has the same shapes, so its whole step (forward, loss, backward, optimizer step) is
captured once as a CUDA graph and replayed with the next batch copied into the captured input
buffers. The epoch's shorter last batch, and everything outside the step, run eagerly.

Used when training on CUDA with ``cuda_graphs=True`` (the default) for in-memory data whose
batches keep their shapes (not sequences trimmed per batch: ``TensorData.fixed_shapes``), a
constant learning rate, no gradient accumulation or clipping, no ``compile``, no fp16 (its
gradient scaler decides whether to step) and the stock step methods; anything else trains
eagerly as before. bf16 and tf32 steps are captured like fp32 ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .data import Inputs, TensorData

if TYPE_CHECKING:
    from .trainer import Trainer

WARMUP_STEPS = 3  # eager steps on a side stream before capture, as CUDA graphs require


def graphs_wanted(trainer: Trainer, train: object) -> bool:
    """Whether this fit can train with a captured step (decided once, before the optimizer)."""
    from .trainer import Trainer

    c, cls = trainer.config, type(trainer)
    return (trainer.runtime.is_cuda and c.cuda_graphs and isinstance(train, TensorData)
            and train.fixed_shapes  # sequences trimmed per batch vary in shape
            and c.accumulate == 1 and c.grad_clip == 0 and c.scheduler == "none" and not c.compile
            and c.precision != "fp16"  # the gradient scaler's skip and scale update stay eager
            and cls.train_step is Trainer.train_step and cls.optimizer_step is Trainer.optimizer_step
            and cls.forward is Trainer.forward and cls.compute_loss is Trainer.compute_loss)


class GraphedStep:
    """Runs full-size training steps: eager warm-up, then one capture, then replays.

    Args:
        trainer: the trainer whose model, optimizer and loss are captured. Its optimizer must
            be capturable (step counters on the device).
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = 0
        self.side = torch.cuda.Stream(device=trainer.runtime.device)

    def __call__(self, inputs: Inputs, target: Tensor) -> Tensor:
        """One optimizer step on this batch; returns the batch loss (a device tensor)."""
        t = self.trainer
        if self.graph is None and self.warm < WARMUP_STEPS:
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                loss = t.train_step(inputs, target, 1.0)
                t.optimizer.step()
                t.optimizer.zero_grad(set_to_none=True)
            torch.cuda.current_stream().wait_stream(self.side)
            self.warm += 1
            return loss
        if self.graph is None:
            self._capture(inputs, target)
            self.graph.replay()  # capture only recorded the step: run it for this batch
            # Eager steps (the epoch's short last batch) must start from no gradients rather
            # than add to the captured buffers, which the graph keeps writing on its own.
            for p in t.model.parameters():
                p.grad = None
            return self.loss
        self._fill(inputs, target)
        self.graph.replay()
        return self.loss

    def _fill(self, inputs: Inputs, target: Tensor) -> None:
        values = inputs.values() if isinstance(inputs, dict) else inputs
        for dst, src in zip(self.inputs, values, strict=True):
            dst.copy_(src, non_blocking=True)
        self.target.copy_(target, non_blocking=True)

    def _capture(self, inputs: Inputs, target: Tensor) -> None:
        t = self.trainer
        names = list(inputs) if isinstance(inputs, dict) else None
        self.inputs = [x.clone() for x in (inputs.values() if names else inputs)]
        self.target = target.clone()
        static: Inputs = dict(zip(names, self.inputs, strict=True)) if names else tuple(self.inputs)
        t.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # records the step; the replay after it runs it
            # bf16: autocast's cast cache must be off inside a capture (torch's AMP notes)
            with t.precision.autocast(cache=False):
                out = t.forward(t.step_model, static)
                loss = t.compute_loss(out, self.target)
            loss.backward()
            t.optimizer.step()
        self.loss = loss.detach()
        # The captured gradient buffers stay referenced for as long as the graph lives.
        self.grads = [p.grad for p in t.model.parameters()]
        self.graph = graph
