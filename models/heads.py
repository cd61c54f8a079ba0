"""YOLOv5's anchor-based detection head.

Outputs follow docs/ARCHITECTURE.md: training → list of raw maps (B, na, ny, nx, 5+nc);
eval → (decoded (B, N, 5+nc) in input pixels with sigmoid scores, raw list);
`export = True` → the decoded tensor alone, so exporters see a single output.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class Detect(nn.Module):
    """One 1x1 conv per level predicting na x (4 box + 1 objectness + nc classes).

    `anchors` is a buffer (nl, na, 2) in grid units (pixels / stride) once the model has set
    `stride`; the builder passes them in pixels and divides after measuring the strides.
    """

    def __init__(self, nc: int = 80, anchors: list[list[float]] = (), ch: list[int] = ()):
        super().__init__()
        if not anchors or any(len(a) % 2 or len(a) != len(anchors[0]) for a in anchors):
            raise ValueError("anchors must be one list of w,h pairs per level, the same count on each level")
        if len(anchors) != len(ch):
            raise ValueError(f"{len(anchors)} anchor levels but {len(ch)} input layers")
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, self.na, 2))
        self.register_buffer("stride", torch.zeros(self.nl))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self.export = False
        self._grids: dict[tuple, torch.Tensor] = {}

    def forward(self, xs: list[torch.Tensor]):
        raw = []
        for i, x in enumerate(xs):
            bs, _, ny, nx = x.shape
            raw.append(self.m[i](x).view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training and not self.export:
            return raw
        pred = torch.cat([self.decode(i, p) for i, p in enumerate(raw)], 1)
        return pred if self.export else (pred, raw)

    def decode(self, i: int, p: torch.Tensor) -> torch.Tensor:
        """Raw map (B, na, ny, nx, no) → (B, na*ny*nx, no): xy=(2σ−0.5+grid)·stride, wh=(2σ)²·anchor."""
        bs, _, ny, nx, _ = p.shape
        grid, anchor_grid = self.grids(i, nx, ny, p.device, p.dtype)
        xy, wh, scores = p.sigmoid().split((2, 2, self.nc + 1), 4)
        xy = (xy * 2 + grid) * self.stride[i]
        wh2 = wh * 2
        wh = wh2 * wh2 * anchor_grid  # a product, not `** 2`: TFLite cannot legalize pow
        return torch.cat((xy, wh, scores), 4).view(bs, self.na * ny * nx, self.no)

    def grids(self, i: int, nx: int, ny: int, device: torch.device, dtype: torch.dtype):
        """(grid − 0.5 shaped (1, 1, ny, nx, 2), anchors in pixels shaped (1, na, 1, 1, 2)).

        The grid depends only on the map size, so it is cached (and becomes a constant when traced);
        the anchors are read from the buffer each call, so in-place anchor updates take effect.
        """
        key = (nx, ny, device, dtype)
        if key not in self._grids:
            yv, xv = torch.meshgrid(torch.arange(ny, device=device, dtype=dtype),
                                    torch.arange(nx, device=device, dtype=dtype), indexing="ij")
            self._grids[key] = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2) - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i]).to(dtype).view(1, self.na, 1, 1, 2)
        return self._grids[key], anchor_grid

    def initialize_biases(self, strides: list[float]) -> None:
        """YOLOv5 priors: ~8 objects per 640² image per level, class probability ~0.6 / (nc − 0.99).

        Strides come as plain floats so a shape-only (meta-device) model can be built too.
        """
        for conv, s in zip(self.m, strides):
            b = conv.bias.data.view(self.na, -1)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            b[:, 5: 5 + self.nc] += math.log(0.6 / (self.nc - 0.99))
