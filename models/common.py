"""Standard YOLOv5 building blocks, as the YAML builder instantiates them.

Every block that pairs a convolution with a BatchNorm keeps them as `.conv` and `.bn`, so
`DetectionModel.fuse()` can fold any of them by attribute name without knowing the block type.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn


def autopad(k: int, p: int | None = None, d: int = 1) -> int:
    """Padding that keeps the spatial size ('same') for an odd kernel `k` with dilation `d`."""
    if p is not None:
        return p
    k = d * (k - 1) + 1 if d > 1 else k
    return k // 2


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "GELU": nn.GELU, "ReLU": nn.ReLU, "SiLU": nn.SiLU, "LeakyReLU": lambda: nn.LeakyReLU(0.1)}


def activation_from_name(act: str | nn.Module) -> nn.Module:
    """YAML names an activation by string (a key of ACTIVATIONS); resolve it without eval."""
    if isinstance(act, nn.Module):
        return act
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}, expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[act]()


def replace_activation(model: nn.Module, name: str) -> None:
    """Swap every SiLU in `model` (YOLOv5's default activation) for `name`'s.

    ReLU and LeakyReLU fold into the preceding conv in ONNX Runtime and TFLite, while SiLU runs as an op of
    its own (9% of a nano model's ONNX Runtime time on our CPU).
    """
    activation_from_name(name)  # fail before touching the model
    swaps = [(parent, child_name) for parent in model.modules()
             for child_name, child in parent.named_children() if type(child) is nn.SiLU]
    for parent, child_name in swaps:
        setattr(parent, child_name, activation_from_name(name))


def make_activation(act: bool | nn.Module | None) -> nn.Module:
    """True → SiLU (YOLOv5's default), a module → itself, False/None → identity."""
    if act is True:
        return nn.SiLU()
    if isinstance(act, nn.Module):
        return act
    return nn.Identity()


class Conv(nn.Module):
    """Conv2d (no bias) → BatchNorm2d → activation. After fusion `bn` is an Identity."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, d: int = 1,
                 act: bool | nn.Module = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1x1 reduce → 3x3, with a residual add when shapes allow and `shortcut` is set."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with 3 convs: one branch through `n` bottlenecks, one straight, concatenated."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = self.make_blocks(c_, n, shortcut, g)

    def make_blocks(self, c: int, n: int, shortcut: bool, g: int) -> nn.Sequential:
        """The inner stack; subclasses (C3Faster) swap the block type here."""
        return nn.Sequential(*(Bottleneck(c, c, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained max-pools equal SPP's 5/9/13 kernels."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along `dimension` (channels for YAML routing)."""

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)
