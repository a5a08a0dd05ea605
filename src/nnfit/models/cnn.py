"""Convolutional networks for images: stages of conv - batch norm - activation blocks, each
followed by 2x2 max pooling, then global average pooling, dropout and a linear head.

Global average pooling makes the model independent of the image size: the spec records
channels and kernel sizes, never a height or width, and the same model reads 8x8 digits or
32x32 photos.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .activations import make_activation
from .mlp import _check_options, _check_size
from .state import Slot, conv2d, linear, prefixed
from .state import batchnorm as norm
from .tabular import _check_int

# Bounds of a spec: more stages than this pool every map down to one pixel long before they
# end; 100 blocks a stage keep the module count (stages x blocks convs) near what an mlp's
# 10,000 hidden widths allow; a kernel wider than 31 px is a typo on images this family reads.
MAX_STAGES = 100
MAX_BLOCKS = 100
MAX_KERNEL = 31
# Activations that commute with max pooling, gradients included: relu(max(x)) = max(relu(x)),
# and both route the gradient to the same pixel (ties among positives are ties of the input;
# a max <= 0 gets no gradient either way). A stage's last activation then runs after the
# pool, on a quarter of the values: the 16 px digits CNN trained about 1.2x faster per step.
# Not tanh, sigmoid or leaky_relu: rounding can tie their outputs where inputs differ, and
# the gradient would reach another pixel.
POOL_FIRST = frozenset({"relu"})


def _check_flag(owner: str, arg: str, value: Any) -> bool:
    """Return ``value``, or raise ConfigError unless it is a bool (1 and "yes" are not)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}: {arg} must be true or false, got {value!r}")
    return value


def _cnn_args(owner: str, in_channels: Any, out_features: Any, channels: Any, blocks: Any,
              kernel_size: Any, activation: Any, dropout: Any, batchnorm: Any,
              residual: Any) -> tuple[int, int, list[int], int, int, str, float, bool, bool]:
    """The arguments of :class:`CNN`, checked and normalised (ConfigError naming the bad one)."""
    in_channels = _check_size(owner, "in_channels", in_channels)
    out_features = _check_size(owner, "out_features", out_features)
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or not (
            1 <= len(channels) <= MAX_STAGES):
        raise ConfigError(f"{owner}: channels must be a list of 1 to {MAX_STAGES} positive ints, "
                          f"got {channels!r:.100}")
    widths = [_check_size(owner, f"channels[{i}]", c) for i, c in enumerate(channels)]
    blocks = _check_int(owner, "blocks", blocks, 1, MAX_BLOCKS)
    kernel_size = _check_int(owner, "kernel_size", kernel_size, 1, MAX_KERNEL)
    if kernel_size % 2 == 0:  # "same" padding is symmetric only for odd kernels
        raise ConfigError(f"{owner}: kernel_size must be odd, got {kernel_size}")
    activation, dropout, batchnorm = _check_options(
        owner, activation=activation, dropout=dropout, batchnorm=batchnorm)
    residual = _check_flag(owner, "residual", residual)
    return (in_channels, out_features, widths, blocks, kernel_size, activation, dropout,
            batchnorm, residual)


class HalvingPool(nn.Module):
    """2x2 max pooling that leaves a side of one pixel alone.

    A map of 1 px in a direction is not pooled in that direction (a 1x1 map passes through),
    so a network of more stages than the image has halvings still runs: digits are 8x8, and
    a fourth stage sees 1x1 maps. Odd sides round up (``ceil_mode``): a 7 px side gives 4,
    keeping its last row. The sizes are known on the host: this costs no sync.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, ceil(H / 2), ceil(W / 2))``, a side of 1 staying 1.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = (min(2, x.shape[-2]), min(2, x.shape[-1]))
        if kernel == (1, 1):
            return x
        return F.max_pool2d(x, kernel, ceil_mode=True)


class ResidualConvBlock(nn.Module):
    """Two conv - batch norm - activation layers with a skip: ``act(bn2(conv2(h)) + skip(x))``
    where ``h = act(bn1(conv1(x)))``.

    The skip is the input itself when the channel counts agree, otherwise a bias-free 1x1
    conv named ``proj``. Convs have a bias only without batch norm (a norm's shift replaces it).

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output map.
        kernel_size: odd side of both convs' kernels; "same" padding keeps the map's size.
        activation: name from ``ACTIVATIONS``.
        batchnorm: BatchNorm2d after each conv.

    Shape:
        - Input: ``(N, in_channels, H, W)``.
        - Output: ``(N, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3,
                 activation: str = "relu", batchnorm: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size, padding="same",
                               bias=not batchnorm)
        self.bn1 = nn.BatchNorm2d(out_channels) if batchnorm else None
        self.act = make_activation(activation)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size, padding="same",
                               bias=not batchnorm)
        self.bn2 = nn.BatchNorm2d(out_channels) if batchnorm else None
        self.proj = (nn.Conv2d(in_channels, out_channels, 1, bias=False)
                     if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        if self.bn1 is not None:
            h = self.bn1(h)
        h = self.conv2(self.act(h))
        if self.bn2 is not None:
            h = self.bn2(h)
        return self.act(h + (x if self.proj is None else self.proj(x)))

    @staticmethod
    def state_shapes(in_channels: int, out_channels: int, kernel_size: int,
                     batchnorm: bool) -> dict[str, Slot]:
        """The ``state_dict`` of a block with these (checked) arguments, without building it."""
        return {**conv2d("conv1", in_channels, out_channels, kernel_size, bias=not batchnorm),
                **(norm("bn1", out_channels) if batchnorm else {}),
                **conv2d("conv2", out_channels, out_channels, kernel_size, bias=not batchnorm),
                **(norm("bn2", out_channels) if batchnorm else {}),
                **(conv2d("proj", in_channels, out_channels, 1, bias=False)
                   if in_channels != out_channels else {})}


class CNN(nn.Module):
    """A convolutional classifier or regressor of images of any size.

    ``stages[i]`` maps ``channels[i-1]`` channels (``in_channels`` for the first) to
    ``channels[i]``: ``blocks`` times ``conv{j} -> [bn{j}] -> act{j}`` (3x3 "same" convs by
    default), or with ``residual`` ``blocks`` :class:`ResidualConvBlock` named ``block{j}``;
    then ``pool``, a :class:`HalvingPool` (placed before the stage's last activation
    when that is relu: :data:`POOL_FIRST`, the same numbers on a quarter of the pixels).
    Global average pooling (``gap``) turns the last map into one vector per image, ``drop``
    (only if ``dropout > 0``) and a Linear ``head`` map it to ``out_features`` with no
    activation: logits or raw regression values.

    Args:
        in_channels: channels of the input images (1 for greyscale, 3 for RGB).
        out_features: width of each output row.
        channels: output channels of each stage, in order; 1 to ``MAX_STAGES`` entries.
            Default: ``(32, 64)``.
        blocks: conv blocks (or residual blocks) per stage, in ``[1, MAX_BLOCKS]``.
            Default: ``1``.
        kernel_size: odd side of every conv's kernel, in ``[1, MAX_KERNEL]``. Default: ``3``.
        activation: name from ``ACTIVATIONS``. Default: ``"relu"``.
        dropout: probability of zeroing a pooled feature before the head, in ``[0, 1)``.
            Default: ``0.0``.
        batchnorm: BatchNorm2d after each conv (convs then have no bias). Default: ``True``.
        residual: stages of residual blocks. Default: ``False``.

    Raises:
        ConfigError: a size is not a positive int, ``channels`` is empty or too long,
            ``blocks`` or ``kernel_size`` is out of range (or the kernel even), ``dropout`` is
            outside ``[0, 1)``, a flag is not a bool, or ``activation`` is not registered.

    Shape:
        - Input: ``(N, in_channels, H, W)`` float.
        - Output: ``(N, out_features)``.

    Attributes:
        in_channels, out_features, channels, blocks, kernel_size, activation, dropout,
            batchnorm, residual: the arguments, normalised (``channels`` a ``list[int]``).

    Example:
        >>> import torch
        >>> model = CNN(1, 10, channels=(8, 16, 32))
        >>> model(torch.randn(4, 1, 8, 8)).shape
        torch.Size([4, 10])
        >>> [name for name, _ in model.stages[0].named_children()]
        ['conv1', 'bn1', 'pool', 'act1']
        >>> CNN(3, 2, residual=True)(torch.randn(2, 3, 5, 7)).shape
        torch.Size([2, 2])
    """

    # The trainer runs this model in channels-last memory on CPU (TrainConfig.channels_last):
    # its forward never views a map's memory, so any strides work.
    cpu_channels_last = True

    def __init__(
        self,
        in_channels: int,
        out_features: int,
        *,
        channels: Sequence[int] = (32, 64),
        blocks: int = 1,
        kernel_size: int = 3,
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = True,
        residual: bool = False,
    ) -> None:
        super().__init__()
        (self.in_channels, self.out_features, self.channels, self.blocks, self.kernel_size,
         self.activation, self.dropout, self.batchnorm, self.residual) = _cnn_args(
            type(self).__name__, in_channels, out_features, channels, blocks, kernel_size,
            activation, dropout, batchnorm, residual)
        ends = zip([self.in_channels, *self.channels[:-1]], self.channels, strict=True)
        self.stages = nn.Sequential(*(self._stage(a, b) for a, b in ends))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(self.dropout) if self.dropout > 0 else None
        self.head = nn.Linear(self.channels[-1], self.out_features)

    def _stage(self, c_in: int, c_out: int) -> nn.Sequential:
        """One stage, ``c_in -> c_out`` channels, then pooling."""
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        k, bn = self.kernel_size, self.batchnorm
        for j in range(1, self.blocks + 1):
            if self.residual:
                layers[f"block{j}"] = ResidualConvBlock(
                    c_in, c_out, kernel_size=k, activation=self.activation, batchnorm=bn)
            else:
                layers[f"conv{j}"] = nn.Conv2d(c_in, c_out, k, padding="same", bias=not bn)
                if bn:
                    layers[f"bn{j}"] = nn.BatchNorm2d(c_out)
                if j == self.blocks and self.activation in POOL_FIRST:
                    layers["pool"] = HalvingPool()
                layers[f"act{j}"] = make_activation(self.activation)
            c_in = c_out
        layers.setdefault("pool", HalvingPool())
        return nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:  # a shape is known on the host: checking it costs no sync
            raise ValueError(f"CNN: expected images of shape (N, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        h = torch.flatten(self.gap(self.stages(x)), 1)
        if self.drop is not None:
            h = self.drop(h)
        return self.head(h)

    @staticmethod
    def state_shapes(
        in_channels: int,
        out_features: int,
        *,
        channels: Sequence[int] = (32, 64),
        blocks: int = 1,
        kernel_size: int = 3,
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = True,
        residual: bool = False,
    ) -> dict[str, Slot]:
        """The ``state_dict`` that ``CNN(...)`` with these arguments would hold, without building it.

        Raises:
            ConfigError: as the constructor would.

        Example:
            >>> CNN.state_shapes(1, 10, channels=[8])["stages.0.conv1.weight"].shape
            (8, 1, 3, 3)
        """
        in_channels, out_features, widths, blocks, k, _, _, bn, residual = _cnn_args(
            "CNN", in_channels, out_features, channels, blocks, kernel_size, activation, dropout,
            batchnorm, residual)
        state: dict[str, Slot] = {}
        for i, (c_in, c_out) in enumerate(zip([in_channels, *widths[:-1]], widths, strict=True)):
            for j in range(1, blocks + 1):
                if residual:
                    block = prefixed(f"block{j}", ResidualConvBlock.state_shapes(c_in, c_out, k, bn))
                else:
                    block = {**conv2d(f"conv{j}", c_in, c_out, k, bias=not bn),
                             **(norm(f"bn{j}", c_out) if bn else {})}
                state.update(prefixed(f"stages.{i}", block))
                c_in = c_out
        state.update(linear("head", widths[-1], out_features))
        return state

    def spec(self) -> dict[str, Any]:
        """Return a JSON-serialisable description that ``build_model`` turns back into this model.

        The weights are not included: load them with ``load_state_dict``.

        Example:
            >>> CNN(1, 10).spec()["channels"]
            [32, 64]
        """
        return {"name": "cnn", "in_channels": self.in_channels, "out_features": self.out_features,
                "channels": list(self.channels), "blocks": self.blocks,
                "kernel_size": self.kernel_size, "activation": self.activation,
                "dropout": self.dropout, "batchnorm": self.batchnorm, "residual": self.residual}

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, channels={self.channels}, "
                f"out_features={self.out_features}")
