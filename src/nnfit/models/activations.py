"""Activation functions by name: the closed table that model specs and configs refer to.

A model stores its activation as a name (``"relu"``), never as a module or a callable, so that
its spec stays JSON-serialisable and rebuilds the same architecture.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
# The module classes themselves are the zero-argument factories: none of them has parameters
# or state, so each call returns a fresh, equivalent module.
ACTIVATIONS.register("relu", nn.ReLU, "max(0, x)")
ACTIVATIONS.register("gelu", nn.GELU, "Gaussian error linear unit, x * Phi(x) (exact erf form)")
ACTIVATIONS.register("tanh", nn.Tanh, "hyperbolic tangent, output in (-1, 1)")
ACTIVATIONS.register("sigmoid", nn.Sigmoid, "logistic 1 / (1 + exp(-x)), output in (0, 1)")
ACTIVATIONS.register("leaky_relu", nn.LeakyReLU, "max(0, x) + 0.01 * min(0, x)")
ACTIVATIONS.register("silu", nn.SiLU, "x * sigmoid(x), also called swish")


def make_activation(name: str) -> nn.Module:
    """Return a new activation module for a registered name.

    Args:
        name: one of ``ACTIVATIONS.names()``: relu, gelu, tanh, sigmoid, leaky_relu, silu.

    Returns:
        A fresh ``nn.Module`` without parameters.

    Raises:
        ConfigError: ``name`` is not registered; the message lists the valid names.

    Shape:
        - Input: ``(*)``, any shape.
        - Output: ``(*)``, the same shape as the input.

    Example:
        >>> import torch
        >>> make_activation("relu")(torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """
    return ACTIVATIONS.get(name)()
