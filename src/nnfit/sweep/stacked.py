"""K models of one architecture as one: their parameters and buffers stacked along a new first
dimension, and a forward pass that runs every member on its own batch in the same ops.

Two forms, one interface (:class:`Stacked`):

* the built-in MLP without embeddings runs as batched matrix products (``baddbmm``), batch
  norm as one ``batch_norm`` over K x features channels (the same kernel a single run uses,
  per channel) and activations on the stacked tensor: no per-op dispatch overhead of ``vmap``;
* any other module runs through ``torch.func.functional_call`` under ``torch.func.vmap``.

Dropout is drawn per member from that member's own generator, in the order its standalone run
draws it (layer by layer, the same ``bernoulli_`` on a tensor of the same shape), so a member
with dropout gets the masks its standalone run gets. Every ``nn.Dropout`` of a module is
replaced by :class:`_MaskDropout`, which multiplies by the mask handed to it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..models.mlp import MLP


class _MaskDropout(nn.Module):
    """Stands in for an ``nn.Dropout``: in training it multiplies by the next mask of
    :data:`_MASKS` (drawn outside, per member); it records input shapes while probing."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        if _MASKS.probing:
            _MASKS.shapes.append(tuple(x.shape))
            return x
        return x * _MASKS.queue.pop(0)


class _Masks:
    """The masks of the running forward pass, in call order, and the probe's shapes."""

    def __init__(self) -> None:
        self.queue: list[Tensor] = []
        self.probing = False
        self.shapes: list[tuple[int, ...]] = []


_MASKS = _Masks()


def _without_dropout(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose ``nn.Dropout`` children are :class:`_MaskDropout`."""
    module = copy.deepcopy(module)
    for _, child in list(module.named_modules()):
        for cname, c in list(child.named_children()):
            if type(c) is nn.Dropout:
                setattr(child, cname, _MaskDropout(c.p))
    return module


def dropout_rate(module: nn.Module) -> float:
    """The rate of a member's ``nn.Dropout`` layers (one rate per built-in model; 0 without)."""
    rates = {m.p for m in module.modules() if type(m) is nn.Dropout}
    return max(rates) if rates else 0.0


def stack_state(modules: Sequence[nn.Module]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Parameters (leaf tensors that require grad) and buffers of ``modules``, each stacked
    along a new first dimension. Tensors of differing first sizes (embedding tables of
    differing vocabularies) are padded with zeros to the largest: the rows past a member's
    vocabulary are never looked up."""
    params: dict[str, Tensor] = {}
    buffers: dict[str, Tensor] = {}
    for name, _ in modules[0].named_parameters():
        params[name] = _stack([dict(m.named_parameters())[name].detach() for m in modules]).requires_grad_()
    for name, _ in modules[0].named_buffers():
        buffers[name] = _stack([dict(m.named_buffers())[name].detach() for m in modules])
    return params, buffers


def _stack(tensors: list[Tensor]) -> Tensor:
    rows = max(t.shape[0] for t in tensors) if tensors[0].dim() else 0
    if tensors[0].dim() and any(t.shape[0] != rows for t in tensors):
        tensors = [torch.cat([t, t.new_zeros((rows - t.shape[0], *t.shape[1:]))]) for t in tensors]
    return torch.stack(tensors).contiguous()


def member_state(params: dict[str, Tensor], buffers: dict[str, Tensor], k: int,
                 like: nn.Module, transposed: frozenset[str] = frozenset()) -> dict[str, Tensor]:
    """Member ``k``'s state dict, cut back to the shapes of its own module ``like`` (and the
    ``transposed`` weights turned back to torch's (out, in) layout)."""
    own = like.state_dict()
    out = {}
    for name, t in [*params.items(), *buffers.items()]:
        v = t[k].detach()
        if name in transposed:
            v = v.t()
        if v.dim() and v.shape[0] != own[name].shape[0]:
            v = v[: own[name].shape[0]]
        out[name] = v.clone()
    return out


class Stacked:
    """K members of one architecture as stacked tensors and one forward pass.

    Args:
        modules: the members' modules, built as their standalone runs build them.
        device: where the stacked tensors live.

    Attributes:
        params, buffers: name -> (K, ...) tensors; ``params`` are leaves that require grad.
        fast: True when the batched-matmul MLP path runs (else ``vmap``).
    """

    def __init__(self, modules: Sequence[nn.Module], device: torch.device,
                 names: Sequence[str] | None = None) -> None:
        self.k = len(modules)
        self.names = None if names is None else list(names)  # keyword inputs, in this order
        params, buffers = stack_state(modules)
        self.params = {n: p.detach().to(device).requires_grad_() for n, p in params.items()}
        self.buffers = {n: b.to(device) for n, b in buffers.items()}
        self.rates = torch.tensor([dropout_rate(m) for m in modules], dtype=torch.float64)
        self.dropout = bool((self.rates > 0).any())  # masks to draw at all
        # the member with the most dropout: a built-in model has Dropout layers only when its
        # rate is above 0, and the others' layers are a subset of its (the same parameters)
        widest = max(range(self.k), key=lambda i: float(self.rates[i]))
        self.template = _without_dropout(modules[widest]).to("meta")
        self.fast = type(modules[0]) is MLP and not modules[0].embeddings and names is None
        # The fast path keeps Linear weights as (K, in, out): the forward product and both
        # gradient products then need no transposed copy (12% of a K=8 step of the 128-wide MLP)
        self.transposed = frozenset(n for n, m in modules[0].named_modules() if isinstance(m, nn.Linear)
                                    for n in [f"{n}.weight"]) if self.fast else frozenset()
        for n in self.transposed:
            self.params[n] = self.params[n].detach().transpose(1, 2).contiguous().requires_grad_()
        self._shapes: dict[tuple, list[tuple[int, ...]]] = {}
        self._fn = vmap(self._one, randomness="error")

    # ------------------------------------------------------------------ dropout
    def draw_masks(self, inputs: Sequence[Tensor], generators: Sequence[torch.Generator],
                   members: Sequence[int]) -> list[Tensor]:
        """One stacked mask per dropout call of the forward pass, for ``members`` (indices),
        each member's drawn from its own generator as its standalone run draws it."""
        if not bool((self.rates[list(members)] > 0).any()):
            return []
        shapes = self._probe(inputs)
        masks = []
        for shape in shapes:
            per = []
            for k in members:
                p = float(self.rates[k])
                if p > 0:  # the standalone run: empty_like(x).bernoulli_(1 - p).div_(1 - p)
                    per.append(torch.empty(shape).bernoulli_(1 - p, generator=generators[k]).div_(1 - p))
                else:  # no Dropout layer in that member: nothing drawn
                    per.append(torch.ones(shape))
            masks.append(torch.stack(per).to(inputs[0].device))
        return masks

    def _probe(self, inputs: Sequence[Tensor]) -> list[tuple[int, ...]]:
        """The input shape of each dropout call, for inputs shaped like member 0's batch."""
        key = tuple(tuple(t.shape[1:]) for t in inputs)
        if key not in self._shapes:
            if self.fast:  # drop{i} follows hidden layer i
                hidden, drops = self.template.hidden, sum(isinstance(m, _MaskDropout) for m in self.template)
                self._shapes[key] = [(inputs[0].shape[1], hidden[i]) for i in range(drops)]
            else:
                _MASKS.probing, _MASKS.shapes = True, []
                try:
                    self.template.train()
                    sample = tuple(t[0].to("meta") for t in inputs)
                    with torch.no_grad():
                        state = ({n: p[0].to("meta") for n, p in self.params.items()},
                                 {n: b[0].to("meta") for n, b in self.buffers.items()})
                        functional_call(self.template, state, *self._call_args(sample))
                finally:
                    _MASKS.probing = False
                self._shapes[key] = list(_MASKS.shapes)
        return self._shapes[key]

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: Sequence[Tensor], *, train: bool, members: Tensor | None = None,
                masks: Sequence[Tensor] = ()) -> Tensor:
        """Outputs (k, b, ...) of the members (all, or the indices ``members``) on their
        inputs (each (k, b, ...)); in training mode BatchNorm running statistics update."""
        params = self.params if members is None else {n: p[members] for n, p in self.params.items()}
        buffers = (self.buffers if members is None
                   else {n: b[members].clone() for n, b in self.buffers.items()})
        if self.fast:
            out = self._mlp(params, buffers, inputs[0], train, list(masks))
        else:
            self.template.train(train)
            out = self._fn(params, buffers, list(masks), *inputs)
        if members is not None and train:
            for n, b in buffers.items():
                self.buffers[n][members] = b
        return out

    def _one(self, params: dict[str, Tensor], buffers: dict[str, Tensor], masks: list[Tensor],
             *inputs: Tensor) -> Tensor:
        _MASKS.queue = list(masks)
        return functional_call(self.template, (params, buffers), *self._call_args(inputs))

    def _call_args(self, inputs: Sequence[Tensor]) -> tuple[tuple, dict[str, Tensor]]:
        """``(args, kwargs)`` of the module's call: vmap batches positional arguments only, so
        keyword inputs travel positionally and are named here."""
        if self.names is None:
            return tuple(inputs), {}
        return (), dict(zip(self.names, inputs, strict=True))

    def _mlp(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, train: bool,
             masks: list[Tensor]) -> Tensor:
        h = x
        for name, layer in self.template.named_children():
            if isinstance(layer, nn.Linear):
                w, b = params[f"{name}.weight"], params[f"{name}.bias"]  # w: (K, in, out)
                h = torch.baddbmm(b.unsqueeze(1), h, w)
            elif isinstance(layer, nn.BatchNorm1d):
                h = _batch_norm(h, params, buffers, name, layer, train)
            elif isinstance(layer, _MaskDropout):
                if train and masks:
                    h = h * masks.pop(0)
            else:  # an element-wise activation
                h = layer(h)
        return h


def _batch_norm(h: Tensor, params: dict[str, Tensor], buffers: dict[str, Tensor], name: str,
                layer: nn.BatchNorm1d, train: bool) -> Tensor:
    """BatchNorm1d of K members at once: (k, b, f) seen as b rows of k*f channels, so each
    member's channel is normalised by the kernel a single run uses, statistics included."""
    k, b, f = h.shape
    flat = h.transpose(0, 1).reshape(b, k * f)
    rm, rv = buffers[f"{name}.running_mean"], buffers[f"{name}.running_var"]
    out = F.batch_norm(flat, rm.view(-1), rv.view(-1), params[f"{name}.weight"].reshape(-1),
                       params[f"{name}.bias"].reshape(-1), train, layer.momentum, layer.eps)
    if train:
        buffers[f"{name}.num_batches_tracked"].add_(1)
    return out.view(b, k, f).transpose(0, 1)



def member_losses(task: Any) -> Any:
    """``fn(out, target) -> (k,)``: each member's mean batch loss as ``task.loss`` gives it.

    The built-in tasks get a batched form (cross-entropy over (k, C, b): classes off the
    innermost dimension, where the CPU kernel runs 5x faster than over a width of C); any other
    task's loss runs under ``vmap``. Both equal the per-member loss to float32 rounding.
    """
    from ..tasks import ClassificationTask
    from ..tasks.regression import RegressionTask

    general = vmap(task.loss)

    def classification(out: Tensor, target: Tensor) -> Tensor:
        k = out.shape[0]
        if out.dim() == 2 or out.shape[-1] == 1:
            return F.binary_cross_entropy_with_logits(out.reshape(k, -1), target.reshape(k, -1).to(out.dtype),
                                                      reduction="none").mean(1)
        if out.dim() != 3:
            return general(out, target)
        return F.cross_entropy(out.transpose(1, 2), target.long(), reduction="none").mean(1)

    def regression(out: Tensor, target: Tensor) -> Tensor:
        k = out.shape[0]
        if out.dim() == 2:
            out = out.unsqueeze(-1)
        if target.dim() == 2:
            target = target.unsqueeze(-1)
        return task._fn(out, target, reduction="none").reshape(k, -1).mean(1)

    if type(task) is ClassificationTask:
        return classification
    if type(task) is RegressionTask:
        return regression
    return general
