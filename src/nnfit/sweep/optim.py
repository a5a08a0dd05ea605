"""SGD, Adam and AdamW over stacked parameters: one update for K members, each with its own
learning rate, weight decay, betas or momentum, step count and whether it steps at all.

The formulas are torch's single-tensor ones (``torch.optim.Adam``/``AdamW``/``SGD`` with
``maximize=False``, ``amsgrad=False``, ``dampening=0``); the fused kernels the standalone runs
use evaluate the same expressions, so a member's update matches its run's to float32 rounding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError

STACKED_OPTIMIZERS = ("sgd", "adam", "adamw")


def _per_member(values: Tensor, like: Tensor) -> Tensor:
    """``values`` (K,) shaped to broadcast against a stacked tensor ``like`` (K, ...)."""
    return values.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


class StackedOptimizer:
    """One optimizer for stacked parameters (every tensor's first dimension is the member).

    Args:
        name: "sgd", "adam" or "adamw".
        params: the stacked leaf tensors, in a fixed order (their state follows it).
        eps: Adam's epsilon (torch's default, as the standalone runs use).

    Per-step hyperparameters come as (K,) tensors in :meth:`step`: the schedules give each
    member its own rate, and OneCycle also cycles betas or momentum.
    """

    def __init__(self, name: str, params: list[Tensor], eps: float = 1e-8) -> None:
        if name not in STACKED_OPTIMIZERS:
            raise ConfigError(f"optimizer {name!r} has no stacked form (one of {', '.join(STACKED_OPTIMIZERS)})")
        self.name, self.params, self.eps = name, params, eps
        k = params[0].shape[0]
        self.steps = torch.zeros(k, dtype=torch.float64)  # optimizer steps taken, per member
        self.state: dict[str, list[Tensor]] = {}
        if name == "sgd":
            self.state["momentum_buffer"] = [torch.zeros_like(p) for p in params]
        else:
            self.state["exp_avg"] = [torch.zeros_like(p) for p in params]
            self.state["exp_avg_sq"] = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, lr: Tensor, weight_decay: Tensor, extra: dict[str, Tensor],
             active: Tensor | None) -> None:
        """Update every member (or those ``active``, a (K,) bool mask: the others keep their
        parameters, state and step count bit for bit).

        Args:
            lr, weight_decay: (K,) float64 tensors.
            extra: Adam: ``beta1``, ``beta2``; SGD: ``momentum`` and ``nesterov`` (K,) tensors.
        """
        if active is not None:
            self.steps += active.to(torch.float64)
        else:
            self.steps += 1
        if self.name == "sgd":
            self._sgd(lr, weight_decay, extra, active)
        else:
            self._adam(lr, weight_decay, extra, active)

    def _adam(self, lr: Tensor, wd: Tensor, extra: dict[str, Tensor], active: Tensor | None) -> None:
        beta1, beta2 = extra["beta1"], extra["beta2"]
        steps = torch.clamp(self.steps, min=1)
        # torch computes these in Python floats (double) per member: so do we, as (K,) doubles
        bc1 = 1 - beta1 ** steps
        step_size = lr / bc1
        bc2_sqrt = (1 - beta2 ** steps).sqrt()
        decoupled = self.name == "adamw"
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            m, v = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
            old = (p.clone(), m.clone(), v.clone()) if active is not None else None
            if decoupled:
                p.mul_(1 - _per_member(lr * wd, p))
            elif bool(wd.ne(0).any()):  # host values: the hyperparameters live on the CPU
                g = g.add(p * _per_member(wd, p))
            m.lerp_(g, _per_member(1 - beta1, m))
            v.mul_(_per_member(beta2, v)).add_((g * g) * _per_member(1 - beta2, v))
            denom = (v.sqrt() / _per_member(bc2_sqrt, v)).add_(self.eps)
            p.add_((m / denom) * _per_member(-step_size, p))
            if old is not None:
                _keep_inactive(active, (p, m, v), old)

    def _sgd(self, lr: Tensor, wd: Tensor, extra: dict[str, Tensor], active: Tensor | None) -> None:
        momentum, nesterov = extra["momentum"], extra["nesterov"]
        first = self.steps.le(1)  # a member's first step starts its momentum from its gradient
        use_momentum = bool(momentum.ne(0).any())
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            buf = self.state["momentum_buffer"][i]
            old = (p.clone(), buf.clone()) if active is not None else None
            if bool(wd.ne(0).any()):
                g = g.add(p * _per_member(wd, p))
            if use_momentum:
                grown = buf * _per_member(momentum, buf) + g
                buf.copy_(torch.where(_per_member(first, buf).bool(), g, grown))
                g = torch.where(_per_member(nesterov, g).bool(), g + buf * _per_member(momentum, g), buf)
            p.sub_(g * _per_member(lr, p))
            if old is not None:
                _keep_inactive(active, (p, buf), old)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_tensors(self) -> dict[str, Tensor]:
        """Every state tensor by a stable name, for checkpoints."""
        out = {"steps": self.steps}
        for key, values in self.state.items():
            out.update({f"{key}.{i}": t for i, t in enumerate(values)})
        return out

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.steps.copy_(tensors["steps"])
        for key, values in self.state.items():
            for i, t in enumerate(values):
                t.copy_(tensors[f"{key}.{i}"])


def _keep_inactive(active: Tensor, now: tuple[Tensor, ...], old: tuple[Tensor, ...]) -> None:
    """Put back the old values of the members not ``active``."""
    for new, before in zip(now, old, strict=True):
        new.copy_(torch.where(_per_member(active, new).bool(), new, before))


def hyper(groups: list[dict[str, Any]], name: str) -> dict[str, Tensor]:
    """The per-member hyperparameters of the optimizers' first param groups (the members'
    schedules step their own small optimizers), as (K,) float64 tensors."""
    lr = torch.tensor([g["lr"] for g in groups], dtype=torch.float64)
    wd = torch.tensor([g.get("weight_decay", 0.0) for g in groups], dtype=torch.float64)
    if name == "sgd":
        extra = {"momentum": torch.tensor([g.get("momentum", 0.0) for g in groups], dtype=torch.float64),
                 "nesterov": torch.tensor([bool(g.get("nesterov", False)) for g in groups], dtype=torch.float64)}
    else:
        extra = {"beta1": torch.tensor([g["betas"][0] for g in groups], dtype=torch.float64),
                 "beta2": torch.tensor([g["betas"][1] for g in groups], dtype=torch.float64)}
    return {"lr": lr, "weight_decay": wd, **extra}
