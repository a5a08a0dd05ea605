"""Models with several named inputs: one branch per input, outputs concatenated into a head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _spec_of(what: str, module: nn.Module) -> dict[str, Any]:
    """Return ``module.spec()``, or raise ConfigError saying ``what`` cannot be rebuilt."""
    spec = getattr(module, "spec", None)
    if not callable(spec):
        raise ConfigError(
            f"MultiInput: {what} ({type(module).__name__}) has no spec() and is not "
            "spec-buildable; rebuild this model in code and load its weights instead"
        )
    return spec()


def check_branch_name(name: Any) -> str:
    """Return ``name`` if it can name a branch: a non-empty string without ``"."`` that is not
    an attribute of ``nn.ModuleDict`` (``keys``, ``items``...).

    Raises:
        ConfigError: naming the bad name.
    """
    if not isinstance(name, str) or not name or "." in name:
        raise ConfigError(f"MultiInput: branch name {name!r} must be a non-empty string without '.'")
    if hasattr(_EMPTY, name):
        raise ConfigError(f"MultiInput: invalid branch name: attribute {name!r} already exists")
    return name


_EMPTY = nn.ModuleDict()  # what a branch name must not shadow


class MultiInput(nn.Module):
    """Run one branch per named input, concatenate their flattened outputs, apply a head.

    Inputs are passed to :meth:`forward` positionally (in branch order), by name, or both, as
    with a Python function whose parameters are the branch names. Each branch output is
    flattened to ``(N, -1)``; the flattened outputs are concatenated along dim 1 in branch
    order and fed to ``head``. A branch with several inputs of its own (a MultiInput, an MLP
    with embeddings) takes them as a dict, ``model(tab, pair={"x": x, "y": y})``; codes alone
    go to an :class:`~nnfit.models.tabular.Embeddings` branch, ``model(x=x, codes=codes)``.

    Args:
        branches: branch name -> module, in the order inputs are matched and outputs
            concatenated; at least one. Names must be non-empty strings without ``"."``.
        head: module applied to the concatenated branch outputs.

    Raises:
        ConfigError: ``branches`` is empty or not a mapping, a name is invalid, or a branch or
            the head is not an ``nn.Module``.

    Shape:
        - Input ``name``: ``(N, *)``, whatever branch ``name`` accepts.
        - Head input: ``(N, F)``, ``F`` the sum of the flattened branch output widths.
        - Output: whatever ``head`` returns, typically ``(N, out_features)``.

    Attributes:
        branches: an ``nn.ModuleDict`` of the branches, in order.
        head: the head module.

    Example:
        >>> import torch
        >>> from nnfit.models import MLP
        >>> model = MultiInput({"a": MLP(3, [8], 4), "b": MLP(5, [], 2)}, MLP(6, [8], 1))
        >>> a, b = torch.randn(10, 3), torch.randn(10, 5)
        >>> model(a, b=b).shape
        torch.Size([10, 1])
        >>> model.input_names
        ['a', 'b']
    """

    def __init__(self, branches: Mapping[str, nn.Module], head: nn.Module) -> None:
        super().__init__()
        if not isinstance(branches, Mapping) or not branches:
            raise ConfigError(
                f"MultiInput: branches must be a non-empty mapping of name -> module, "
                f"got {branches!r}"
            )
        for name, branch in branches.items():
            check_branch_name(name)
            if not isinstance(branch, nn.Module):
                raise ConfigError(
                    f"MultiInput: branch {name!r} must be an nn.Module, got {type(branch).__name__}"
                )
        if not isinstance(head, nn.Module):
            raise ConfigError(f"MultiInput: head must be an nn.Module, got {type(head).__name__}")
        try:
            self.branches = nn.ModuleDict(branches)
        except KeyError as err:  # a name that clashes with a ModuleDict attribute, e.g. 'keys'
            raise ConfigError(f"MultiInput: invalid branch name: {err.args[0]}") from None
        self.head = head

    @property
    def input_names(self) -> list[str]:
        """The branch names, in the order positional inputs are matched."""
        return list(self.branches.keys())

    def _match_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Map positional and keyword inputs to branch names the way Python binds arguments."""
        names = self.input_names
        expected = f"(inputs: {', '.join(names)})"
        if len(args) > len(names):
            raise TypeError(
                f"MultiInput.forward() takes {len(names)} inputs {expected} "
                f"but {len(args)} were given positionally"
            )
        inputs = dict(zip(names[: len(args)], args, strict=True))
        twice = [k for k in kwargs if k in inputs]
        if twice:
            raise TypeError(f"MultiInput.forward() got multiple values for input {_quoted(twice)}")
        unexpected = [k for k in kwargs if k not in self.branches]
        if unexpected:
            raise TypeError(
                f"MultiInput.forward() got unexpected input {_quoted(unexpected)} {expected}"
            )
        inputs.update(kwargs)
        missing = [n for n in names if n not in inputs]
        if missing:
            raise TypeError(f"MultiInput.forward() missing input {_quoted(missing)} {expected}")
        return inputs

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        inputs = self._match_inputs(args, kwargs)
        features = []
        for name, branch in self.branches.items():
            x = inputs[name]
            # A branch with several inputs of its own (a nested MultiInput, an MLP with
            # embeddings taking x and codes) gets them as one dict.
            if isinstance(x, Mapping):
                out = branch(**x)
            else:
                out = branch(x)
            features.append(out.reshape(out.shape[0], -1))
        return self.head(torch.cat(features, dim=1))

    def spec(self) -> dict[str, Any]:
        """Return a JSON-serialisable description that ``build_model`` turns back into this model.

        The weights are not included: load them with ``load_state_dict``.

        Raises:
            ConfigError: a branch or the head has no ``spec()`` method; the message names it.

        Example:
            >>> from nnfit.models import MLP
            >>> MultiInput({"x": MLP(3, [], 2)}, MLP(2, [], 1)).spec()["branches"]["x"]["name"]
            'mlp'
        """
        branches = {name: _spec_of(f"branch {name!r}", b) for name, b in self.branches.items()}
        return {"name": "multi_input", "branches": branches, "head": _spec_of("head", self.head)}

    def extra_repr(self) -> str:
        return f"inputs={self.input_names}"
