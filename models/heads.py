"""Detection heads: YOLOv5's anchor-based Detect and the anchor-free DetectAF (DFL boxes, decoupled).

Outputs follow docs/ARCHITECTURE.md: training → list of raw maps (B, na, ny, nx, 5+nc);
eval → (decoded (B, N, 5+nc) in input pixels with sigmoid scores, raw list);
`export = True` → the decoded tensor alone, so exporters see a single output (DetectAF's channels first, (B, 5+nc, N)).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from models.common import Conv
from models.fasternet import PConv


def cell_grid(ny: int, nx: int, offset: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(ny, nx, 2) cell coordinates (x, y) + `offset`, for both heads' decoding.

    Built in fp32 and cast: the ONNX exporter cannot trace a half-precision arange (fp16 export on CUDA).
    """
    yv, xv = torch.meshgrid(torch.arange(ny, device=device, dtype=torch.float32),
                            torch.arange(nx, device=device, dtype=torch.float32), indexing="ij")
    return (torch.stack((xv, yv), 2) + offset).to(dtype)


class Detect(nn.Module):
    """One 1x1 conv per level predicting na x (4 box + 1 objectness + nc classes).

    `anchors` is a buffer (nl, na, 2) in grid units (pixels / stride) once the model has set
    `stride`; the builder passes them in pixels and divides after measuring the strides.
    """

    anchor_free = False  # what DetectionModel.anchor_free reports: ask the model, not the head
    export_channels_first = False  # export mode returns (B, N, 5 + nc) rows

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
            self._grids[key] = cell_grid(ny, nx, -0.5, device, dtype).view(1, 1, ny, nx, 2)
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


def dfl_expectation(dist: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """(..., 4 * reg_max) logits → (..., 4) distances: the expected bin under a softmax over each side's bins.

    Distribution Focal Loss heads predict each side's distance as a distribution over 0..reg_max-1 grid
    cells; its mean is the distance. A matmul with the bin values (no pow, no gather) traces to any exporter.
    It is one 2-D (rows, reg_max) x (reg_max, 1) GEMM: written on the 4-D tensor with a 1-D `bins`, ONNX
    Runtime ran one tiny product per row, 12% of a whole model's time in a per-node profile; as one GEMM every
    anchor-free model at 640 runs ~3 ms faster (docs/accuracy.md).
    """
    reg_max = bins.shape[0]
    expected = dist.reshape(-1, reg_max).softmax(-1).matmul(bins.view(reg_max, 1))
    return expected.view(*dist.shape[:-1], 4)


class DetectAF(nn.Module):
    """Anchor-free decoupled head: per level a DFL box branch (4 x reg_max) and a class branch, no objectness.

    Each cell centre is one anchor point; boxes decode as centre ∓ (left, top, right, bottom) · stride.
    Train mode returns the raw maps, one per level, shaped (B, ny, nx, 4·reg_max + nc) (channels last,
    so `shape[-3]` is the map height as for Detect). Eval returns (B, N, 5 + nc) exactly like Detect —
    cx, cy, w, h pixels, an objectness column fixed at 1.0, class probabilities — so NMS, val, detect and
    the exporters need no special case. `block` picks the branch convs:
    - 'conv': two 3x3 Conv per branch, the usual decoupled head;
    - 'conv_dwcls': 'conv' boxes; classes through depthwise 3x3 + 1x1 Conv, twice (as ultralytics' YOLO11
      head), a tenth of the class branch's FLOPs;
    - 'conv_shared': a dense 3x3 Conv stem per level; boxes add one more 3x3 Conv, classes read the stem;
    - 'conv_pconv': 'conv' with the second 3x3 Conv of each branch a PConv + 1x1 Conv (a FasterNet block's
      mixing pair): the first conv still sees every input channel, the second costs a sixth of a dense one;
    - 'pconv' (PConv + 1x1 Conv, twice), 'pconv_lite' (PConv + 1x1 Conv, once), 'shared' (one 1x1 Conv +
      PConv stem per level feeding both output convs): the PConv forms, cheap but, trained on shapes3, far
      less accurate than the dense ones (docs/accuracy.md).
    `width` sets the branch channels: an int > 0 for both branches, or [box, class]; 0 (either entry) keeps
    the usual max(16, ch[0] / 4, 4 reg_max) for boxes and max(ch[0], min(nc, 100)) for classes. A list with
    one such entry per level, e.g. [[32, 32], 48, 48], sets each level apart: the P3 map has 4x the cells of
    P4, so its branch convs dominate the head's cost.
    """

    anchor_free = True  # what DetectionModel.anchor_free reports: ask the model, not the head
    export_channels_first = True  # export mode returns (B, 5 + nc, N); Detect's is (B, N, 5 + nc)
    BLOCKS = ("conv", "pconv", "pconv_lite", "shared", "conv_shared", "conv_dwcls", "conv_pconv")

    def __init__(self, ch: list[int], nc: int = 80, reg_max: int = 16, block: str = "conv",
                 width: int | list = 0):
        super().__init__()
        if not ch:
            raise ValueError("DetectAF needs at least one input layer")
        if block not in self.BLOCKS:
            raise ValueError(f"block must be one of {self.BLOCKS}, got {block!r}")
        if reg_max < 2:
            raise ValueError(f"reg_max must be at least 2, got {reg_max}")
        self.nc, self.nl, self.reg_max, self.block = nc, len(ch), reg_max, block
        self.no = 4 * reg_max + nc
        usual = (max(16, ch[0] // 4, 4 * reg_max), max(ch[0], min(nc, 100)))
        level_widths = [(b or usual[0], c or usual[1]) for b, c in self._level_widths(width, len(ch))]
        if block == "conv_shared":
            self.stem = nn.ModuleList(Conv(c, cb, 3) for c, (cb, _) in zip(ch, level_widths))
            self.box = nn.ModuleList(nn.Sequential(Conv(cb, cb, 3), nn.Conv2d(cb, 4 * reg_max, 1))
                                     for cb, _ in level_widths)
            self.cls = nn.ModuleList(nn.Sequential(nn.Conv2d(cb, nc, 1)) for cb, _ in level_widths)
        elif block == "shared":  # one stem of the box branch's width; each branch is then its output conv
            self.stem = nn.ModuleList(nn.Sequential(Conv(c, cb, 1), PConv(cb)) for c, (cb, _) in zip(ch, level_widths))
            self.box = nn.ModuleList(nn.Sequential(nn.Conv2d(cb, 4 * reg_max, 1)) for cb, _ in level_widths)
            self.cls = nn.ModuleList(nn.Sequential(nn.Conv2d(cb, nc, 1)) for cb, _ in level_widths)
        else:  # parameter-free stems keep the state-dict keys of the other blocks unchanged
            self.stem = nn.ModuleList(nn.Identity() for _ in ch)
            self.box = nn.ModuleList(self._branch(c, cb, 4 * reg_max) for c, (cb, _) in zip(ch, level_widths))
            self.cls = nn.ModuleList(self._branch(c, cc, nc, cls=True) for c, (_, cc) in zip(ch, level_widths))
        self.register_buffer("stride", torch.zeros(self.nl))
        self.register_buffer("bins", torch.arange(reg_max, dtype=torch.float32))
        self.export = False
        self._grids: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def _level_widths(width: int | list, nl: int) -> list[tuple[int, int]]:
        """`width` as one (box, class) pair per level; a list holding a list is per level, else one setting."""
        def pair(w) -> tuple[int, int]:
            ws = list(w) if isinstance(w, (list, tuple)) else [w, w]
            if len(ws) != 2 or any(not isinstance(x, int) or isinstance(x, bool) or x < 0 for x in ws):
                raise ValueError(f"width must be a non-negative int, [box, class] of them, or one of those per level "
                                 f"(0: the usual), got {width!r}")
            return ws[0], ws[1]

        if isinstance(width, (list, tuple)) and any(isinstance(w, (list, tuple)) for w in width):
            if len(width) != nl:
                raise ValueError(f"per-level width needs one entry per input level ({nl}), got {width!r}")
            return [pair(w) for w in width]
        return [pair(width)] * nl

    def _branch(self, c1: int, c: int, c_out: int, cls: bool = False) -> nn.Sequential:
        if self.block == "conv_dwcls" and cls:
            return nn.Sequential(Conv(c1, c1, 3, g=c1), Conv(c1, c, 1), Conv(c, c, 3, g=c), Conv(c, c, 1),
                                 nn.Conv2d(c, c_out, 1))
        if self.block == "pconv":
            return nn.Sequential(PConv(c1), Conv(c1, c, 1), PConv(c), Conv(c, c, 1), nn.Conv2d(c, c_out, 1))
        if self.block == "pconv_lite":
            return nn.Sequential(PConv(c1), Conv(c1, c, 1), nn.Conv2d(c, c_out, 1))
        if self.block == "conv_pconv":
            return nn.Sequential(Conv(c1, c, 3), PConv(c), Conv(c, c, 1), nn.Conv2d(c, c_out, 1))
        return nn.Sequential(Conv(c1, c, 3), Conv(c, c, 3), nn.Conv2d(c, c_out, 1))

    def forward(self, xs: list[torch.Tensor]):
        stems = [self.stem[i](x) for i, x in enumerate(xs)]
        boxes = [self.box[i](s) for i, s in enumerate(stems)]
        logits = [self.cls[i](s) for i, s in enumerate(stems)]
        if self.export:
            return self.decode_channels_first(boxes, logits)
        raw = [torch.cat((b, c), 1).permute(0, 2, 3, 1) for b, c in zip(boxes, logits)]
        return raw if self.training else (self.decode(raw), raw)

    def decode_channels_first(self, boxes: list[torch.Tensor], logits: list[torch.Tensor]) -> torch.Tensor:
        """decode()'s result from the branch outputs as they leave the convs, in the form exported graphs run
        cheapest: the levels joined along the cell axis with channels first (no per-level permute, no split); the
        DFL expectation as exp(logit - max) through one fixed 1x1 conv giving sum(bin * e) and sum(e), then their
        ratio (a Softmax over a middle axis cost ONNX Runtime 5 ms at 640, over the last axis it cost OpenVINO);
        the result left channels first, (B, 5 + nc, N), as ultralytics' exports leave theirs: every reader of
        exported files takes either layout, and the transpose to rows cost OpenVINO as much as the rest of the
        decode (docs/speed.md)."""
        bs = boxes[0].shape[0]
        points, strides = self.anchor_points([b.shape[2:] for b in boxes], boxes[0].device, boxes[0].dtype,
                                             channels_first=True)  # (2, N), (1, N)
        dist = torch.cat([b.reshape(bs, 4 * self.reg_max, -1) for b in boxes], 2)
        dist = dist.view(bs, 4, self.reg_max, -1).transpose(1, 2)  # (B, reg_max, 4, N)
        e = (dist - dist.amax(1, keepdim=True)).exp()
        weights = torch.stack((self.bins, torch.ones_like(self.bins))).to(dist.dtype).view(2, self.reg_max, 1, 1)
        moments = nn.functional.conv2d(e, weights)  # (B, 2, 4, N): sum of bin * e, sum of e
        ltrb = (moments[:, :1] / moments[:, 1:]).view(bs, 4, -1) * strides  # (B, 4, N) pixels
        lt, rb = ltrb.split((2, 2), 1)
        centre = points * strides + (rb - lt) * 0.5
        scores = torch.cat([c.reshape(bs, self.nc, -1) for c in logits], 2).sigmoid()
        return torch.cat((centre, lt + rb, torch.ones_like(scores[:, :1]), scores), 1)

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """Raw maps → (B, N, 5 + nc): cx, cy, w, h pixels, 1.0, sigmoid class scores."""
        bs = raw[0].shape[0]
        p = torch.cat([r.reshape(bs, -1, self.no) for r in raw], 1)
        dist, logits = p.split((4 * self.reg_max, self.nc), 2)
        points, strides = self.anchor_points([r.shape[1:3] for r in raw], p.device, p.dtype)
        ltrb = dfl_expectation(dist, self.bins.to(p.dtype)) * strides
        lt, rb = ltrb.split((2, 2), 2)
        centre = points * strides + (rb - lt) * 0.5
        scores = logits.sigmoid()
        return torch.cat((centre, lt + rb, torch.ones_like(scores[..., :1]), scores), 2)

    def anchor_points(self, shapes: list, device: torch.device, dtype: torch.dtype, channels_first: bool = False):
        """(cell centres (N, 2) in grid units of their level, strides (N, 1)) for maps of `shapes` [(ny, nx)];
        `channels_first`: shaped (2, N) and (1, N), as the exported decode reads them.

        Cached per size and layout (so a fixed-size trace records constants, not transposes of them);
        `utils.infer.exporters.clear_traced_grid_cache` empties `_grids` when a dynamic-size export must record how
        they are built.
        """
        key = (tuple((int(h), int(w)) for h, w in shapes), device, dtype, channels_first)
        if key not in self._grids:
            points, strides = [], []
            for i, (ny, nx) in enumerate(shapes):
                points.append(cell_grid(ny, nx, 0.5, device, dtype).view(-1, 2))
                strides.append(self.stride[i].to(device, dtype).view(1, 1).expand(ny * nx, 1))
            points, strides = torch.cat(points), torch.cat(strides)
            self._grids[key] = (points.T.contiguous(), strides.T.contiguous()) if channels_first else (points, strides)
        return self._grids[key]

    def initialize_biases(self, strides: list[float]) -> None:
        """Box logits start flat (bias 1.0); class prior ~5 objects per 640² image spread over the classes."""
        for box, cls, s in zip(self.box, self.cls, strides):
            box[-1].bias.data[:] = 1.0
            cls[-1].bias.data[: self.nc] = math.log(5 / self.nc / (640 / s) ** 2)
