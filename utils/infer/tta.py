"""Test-time augmentation (yolov5's --augment): predict on rescaled and flipped copies, merge before NMS.

More views of each image find objects one scale misses, at ~3x the inference cost; NMS afterwards
merges the overlapping boxes. Only models that accept any stride-multiple input size can do this.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

VIEWS = ((1.0, False), (0.83, True), (0.67, False))  # (scale, left-right flip), yolov5's choice
PAD_VALUE = 0.447  # yolov5's grey (114/255) for the padding added to reach a stride multiple


def rescale_batch(im: torch.Tensor, scale: float, stride: int) -> torch.Tensor:
    """Resize a (B, 3, H, W) batch by `scale`, then pad right/bottom so both sides are stride multiples."""
    h, w = im.shape[2:]
    size = (int(h * scale), int(w * scale))
    out = F.interpolate(im, size=size, mode="bilinear", align_corners=False) if scale != 1.0 else im
    ph, pw = math.ceil(size[0] / stride) * stride - size[0], math.ceil(size[1] / stride) * stride - size[1]
    return F.pad(out, (0, pw, 0, ph), value=PAD_VALUE) if ph or pw else out


def predict_augmented(forward: Callable[[torch.Tensor], torch.Tensor], im: torch.Tensor,
                      stride: int) -> torch.Tensor:
    """Run `forward` on each view; boxes mapped back to `im`'s pixels and concatenated → (B, N_total, 5+nc)."""
    width = im.shape[3]
    outs = []
    for scale, flip in VIEWS:
        view = rescale_batch(im.flip(3) if flip else im, scale, stride)
        pred = forward(view).float().clone()
        pred[..., :4] /= scale
        if flip:
            pred[..., 0] = width - pred[..., 0]
        outs.append(pred)
    return torch.cat(outs, 1)
