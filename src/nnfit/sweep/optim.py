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
    """``values`` (K,) shaped to broadcast against a stacked tensor ``like`` (K, ...), on its
    device (the hyperparameters live on the CPU)."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


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
            raise ConfigError(f"optimizer {name!r} has no stacked form "
                              f"(one of {', '.join(STACKED_OPTIMIZERS)})")
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

    def _fused(self, lr: Tensor, wd: Tensor, extra: dict[str, Tensor]) -> bool:
        """Every member steps with the same rate, decay, betas and step count (a seed or fold
        sweep): torch's fused Adam/AdamW kernel over the stacked tensors, the kernel a single
        run's optimizer calls. Returns False where it cannot be used."""
        kernel = getattr(torch, "_fused_adamw_" if self.name == "adamw" else "_fused_adam_", None)
        coefs = [_Coef(t) for t in (lr, wd, extra["beta1"], extra["beta2"], self.steps)]
        grads = [p.grad for p in self.params]
        if kernel is None or not all(c.uniform for c in coefs) or any(g is None for g in grads):
            return False
        lr_, wd_, b1, b2, step = (c.value for c in coefs)
        steps = [torch.tensor(step, dtype=torch.float32, device=p.device) for p in self.params]
        kernel(self.params, grads, self.state["exp_avg"], self.state["exp_avg_sq"], [], steps,
               amsgrad=False, lr=lr_, beta1=b1, beta2=b2, weight_decay=wd_, eps=self.eps,
               maximize=False, grad_scale=None, found_inf=None)
        return True

    def _adam(self, lr: Tensor, wd: Tensor, extra: dict[str, Tensor], active: Tensor | None) -> None:
        if active is None and self._fused(lr, wd, extra):
            return
        beta1, beta2 = extra["beta1"], extra["beta2"]
        steps = torch.clamp(self.steps, min=1)
        # torch computes these in Python floats (double) per member: so do we, as (K,) doubles;
        # a value every member shares is passed as a Python float (torch's own op then)
        b1, b2 = _Coef(1 - beta1), _Coef(beta2)
        one_minus_b2 = _Coef(1 - beta2)
        bc2_sqrt = _Coef((1 - beta2 ** steps).sqrt())
        neg_step = _Coef(-(lr / (1 - beta1 ** steps)))
        decay = _Coef(1 - lr * wd) if self.name == "adamw" else None
        l2 = _Coef(wd) if self.name == "adam" and bool(wd.ne(0).any()) else None
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            m, v = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
            old = (p.clone(), m.clone(), v.clone()) if active is not None else None
            if decay is not None and decay.value != 1.0:
                p.mul_(decay.like(p))
            if l2 is not None:
                g = g.add(p, alpha=l2.value) if l2.uniform else g.add(p * l2.like(p))
            m.lerp_(g, b1.like(m))
            v.mul_(b2.like(v))
            if one_minus_b2.uniform:
                v.addcmul_(g, g, value=one_minus_b2.value)
            else:
                v.add_((g * g).mul_(one_minus_b2.like(v)))
            denom = v.sqrt().div_(bc2_sqrt.like(v)).add_(self.eps)
            if neg_step.uniform:
                p.addcdiv_(m, denom, value=neg_step.value)
            else:
                p.add_(m.div(denom).mul_(neg_step.like(p)))
            if old is not None:
                _keep_inactive(active, (p, m, v), old)

    def _sgd(self, lr: Tensor, wd: Tensor, extra: dict[str, Tensor], active: Tensor | None) -> None:
        momentum, nesterov = extra["momentum"], extra["nesterov"]
        first = self.steps.le(1)  # a member's first step starts its momentum from its gradient
        use_momentum = bool(momentum.ne(0).any())
        l2 = _Coef(wd) if bool(wd.ne(0).any()) else None
        mom, neg_lr = _Coef(momentum), _Coef(-lr)
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            buf = self.state["momentum_buffer"][i]
            old = (p.clone(), buf.clone()) if active is not None else None
            if l2 is not None:
                g = g.add(p, alpha=l2.value) if l2.uniform else g.add(p * l2.like(p))
            if use_momentum:
                grown = buf.mul(mom.like(buf)).add_(g)
                buf.copy_(torch.where(_per_member(first, buf).bool(), g, grown))
                g = torch.where(_per_member(nesterov, g).bool(), g + buf * mom.like(g), buf)
            if neg_lr.uniform:
                p.add_(g, alpha=neg_lr.value)
            else:
                p.add_(g * neg_lr.like(p))
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


class _Coef:
    """A per-member coefficient: a Python float when every member has the same value (torch's
    scalar ops, as a single run's optimizer uses), else float32 views shaped per tensor rank."""

    def __init__(self, values: Tensor) -> None:
        first = float(values[0])  # host values: the hyperparameters live on the CPU
        self.uniform = bool((values == first).all())
        self.value = first
        self._values = values
        self._views: dict[tuple[int, torch.device], Tensor] = {}

    def like(self, t: Tensor) -> float | Tensor:
        if self.uniform:
            return self.value
        key = (t.dim(), t.device)
        if key not in self._views:
            self._views[key] = _per_member(self._values, t)
        return self._views[key]


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
                 "nesterov": torch.tensor([bool(g.get("nesterov", False)) for g in groups],
                                          dtype=torch.float64)}
    else:
        extra = {"beta1": torch.tensor([g["betas"][0] for g in groups], dtype=torch.float64),
                 "beta2": torch.tensor([g["betas"][1] for g in groups], dtype=torch.float64)}
    return {"lr": lr, "weight_decay": wd, **extra}
