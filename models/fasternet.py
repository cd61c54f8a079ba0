"""FasterNet pieces (Chen et al., CVPR 2023): partial convolution and the blocks built on it.

PConv convolves only the first c/n_div channels and passes the rest through, so it does a
fraction of a dense 3x3 conv's FLOPs while touching few bytes — the point of the design is a
higher achieved FLOPS than depthwise convs give.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.common import C3, Conv, activation_from_name

PCONV_MODES = ("auto", "split_cat", "slicing")


def check_pconv_mode(mode: str) -> None:
    """Refuse a PConv path that does not exist (PConv would otherwise fail only at its next forward)."""
    if mode not in PCONV_MODES:
        raise ValueError(f"PConv.forward_mode must be one of {PCONV_MODES}, got {mode!r}")


def set_pconv_mode(module: nn.Module, mode: str) -> nn.Module:
    """Put every PConv in `module` (itself included) on one forward path: the one way to flip them from outside."""
    check_pconv_mode(mode)
    for m in module.modules():
        if isinstance(m, PConv):
            m.forward_mode = mode
    return module


class PConv(nn.Module):
    """Partial 3x3 conv over the first c // n_div channels; the others pass through unchanged.

    `forward_mode`: 'auto' uses split→conv→cat while training or tracing/exporting (autograd- and
    exporter-friendly) and in-place slicing on a clone in eval (no concat copy); 'split_cat' or
    'slicing' force one path. Both give identical outputs.
    """

    def __init__(self, c: int, n_div: int = 4, k: int = 3):
        super().__init__()
        if n_div < 1 or c // n_div < 1:
            raise ValueError(f"PConv needs c // n_div >= 1, got c={c}, n_div={n_div}")
        self.dim_conv = c // n_div
        self.dim_untouched = c - self.dim_conv
        self.conv = nn.Conv2d(self.dim_conv, self.dim_conv, k, 1, k // 2, bias=False)
        self.forward_mode = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_pconv_mode(self.forward_mode)
        if self._uses_split_cat():
            return self.forward_split_cat(x)
        return self.forward_slicing(x)

    def _uses_split_cat(self) -> bool:
        if self.forward_mode != "auto":
            return self.forward_mode == "split_cat"
        return self.training or torch.jit.is_tracing() or torch.compiler.is_compiling()

    def forward_split_cat(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.split(x, [self.dim_conv, self.dim_untouched], dim=1)
        return torch.cat((self.conv(x1), x2), 1)

    def forward_slicing(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()  # keep the caller's tensor (the residual branch) intact
        x[:, : self.dim_conv] = self.conv(x[:, : self.dim_conv])
        return x


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class FasterNetBlock(nn.Module):
    """PConv → 1x1 (c → c·mlp_ratio) + BN + act → 1x1 back to c (+ BN if out_bn) → residual add.

    out_bn normalises the residual branch's output while training, as YOLOv5's Bottleneck does; fuse()
    folds that BN into the 1x1 conv, so the inference graph is the same as without it.
    """

    def __init__(self, c: int, n_div: int = 4, mlp_ratio: float = 2, act: str | nn.Module = "GELU",
                 drop_path: float = 0.0, layer_scale: float = 0.0, out_bn: bool = False):
        super().__init__()
        hidden = int(c * mlp_ratio)
        self.pconv = PConv(c, n_div)
        expand = Conv(c, hidden, 1, act=activation_from_name(act))  # built first: same init as before out_bn
        out = Conv(hidden, c, 1, act=False) if out_bn else nn.Conv2d(hidden, c, 1, bias=False)
        self.mlp = nn.Sequential(expand, out)
        self.drop_path = DropPath(drop_path)
        self.layer_scale = nn.Parameter(layer_scale * torch.ones(c, 1, 1)) if layer_scale > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.pconv(x))
        if self.layer_scale is not None:
            y = self.layer_scale * y
        return x + self.drop_path(y)


class C3Faster(C3):
    """C3 whose bottlenecks are FasterNet blocks (SiLU), so a YAML can swap `C3` → `C3Faster` in place.

    A YAML row may add n_div after C3's arguments ([c2, shortcut, g, e, n_div]): the PConv convolves
    c_/n_div channels of each block (4 by default, as FasterNet does).

    `shortcut` and `g` keep C3's signature; a FasterNet block is always residual and has no groups.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5,
                 n_div: int = 4):
        if not isinstance(n_div, int) or isinstance(n_div, bool) or n_div < 1:
            raise ValueError(f"n_div must be a positive integer, got {n_div!r}")
        self.n_div = n_div  # read by make_blocks, which C3.__init__ calls
        super().__init__(c1, c2, n, shortcut, g, e)

    def make_blocks(self, c: int, n: int, shortcut: bool, g: int) -> nn.Sequential:
        return nn.Sequential(*(FasterNetBlock(c, n_div=self.n_div, mlp_ratio=2, act=nn.SiLU()) for _ in range(n)))


class C3FasterBN(C3Faster):
    """C3Faster whose FasterNet blocks end in BN (folded away by fuse()): same inference graph and speed,
    trained like YOLOv5's Bottleneck, whose branches all end in BN (docs/accuracy.md measures the effect)."""

    def make_blocks(self, c: int, n: int, shortcut: bool, g: int) -> nn.Sequential:
        return nn.Sequential(*(FasterNetBlock(c, n_div=self.n_div, mlp_ratio=2, act=nn.SiLU(), out_bn=True)
                               for _ in range(n)))


class PatchEmbed(Conv):
    """FasterNet stem: non-overlapping patch x patch conv with stride patch, then BN, no activation."""

    def __init__(self, c1: int, c2: int, patch: int = 4):
        super().__init__(c1, c2, k=patch, s=patch, p=0, act=False)


class PatchMerging(Conv):
    """FasterNet downsampler between stages: k x k conv with stride k (default 2), then BN."""

    def __init__(self, c1: int, c2: int, k: int = 2):
        super().__init__(c1, c2, k=k, s=k, p=0, act=False)


class FasterNetStage(nn.Module):
    """`n` FasterNet blocks at constant width — one stage of a FasterNet backbone."""

    def __init__(self, c1: int, c2: int, n: int = 1, act: str = "GELU", n_div: int = 4, mlp_ratio: float = 2,
                 drop_path: float = 0.0, layer_scale: float = 0.0):
        super().__init__()
        if c1 != c2:
            raise ValueError(f"FasterNetStage keeps its width: input has {c1} channels, output asks for {c2}")
        self.m = nn.Sequential(*(FasterNetBlock(c2, n_div, mlp_ratio, act, drop_path, layer_scale)
                                 for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)
