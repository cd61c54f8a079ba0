"""Image + box augmentations for training (YOLOv5 semantics, hyperparameter keys from data/hyps/*.yaml).

Every random choice takes an explicit `np.random.Generator`, so a seeded dataloader gives the same
batches run after run. Images are HWC uint8 BGR (as cv2 reads them); boxes travel as
`(n, 5)` float32 rows `[cls, x1, y1, x2, y2]` in pixels while geometry changes, because corners
transform exactly under affine maps and normalised centres do not.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

PAD_COLOR = (114, 114, 114)


def letterbox(
    im: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    color: tuple[int, int, int] = PAD_COLOR,
    auto: bool = False,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping aspect ratio, then pad to `new_shape` (h, w).

    Returns the image, the (rx, ry) scale applied and the (padw, padh) added on the left/top.
    `auto` pads only up to the next multiple of `stride` (minimum rectangle, for inference);
    `scaleup=False` never enlarges, which keeps val faithful to the original pixels.
    """
    shape = im.shape[:2]
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = (int(round(shape[1] * r)), int(round(shape[0] * r)))  # w, h
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if (shape[1], shape[0]) != new_unpad:
        im = cv2.resize(im, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, (new_unpad[0] / shape[1], new_unpad[1] / shape[0]), (left, top)


def augment_hsv(im: np.ndarray, rng: np.random.Generator, hgain: float = 0.5, sgain: float = 0.5,
                vgain: float = 0.5) -> None:
    """Jitter hue, saturation and value in place by random gains (lookup tables keep it cheap)."""
    if not (hgain or sgain or vgain):
        return
    r = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=im)


def box_candidates(before: np.ndarray, after: np.ndarray, wh_thr: float = 2, ar_thr: float = 100,
                   area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """Keep boxes (xyxy, shape (4, n)) still wider/taller than wh_thr px, with ≥ area_thr of their
    scaled area left and an aspect ratio below ar_thr — the rest were cut or squashed to slivers."""
    w1, h1 = before[2] - before[0], before[3] - before[1]
    w2, h2 = after[2] - after[0], after[3] - after[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def random_perspective(
    im: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    degrees: float = 10,
    translate: float = 0.1,
    scale: float = 0.1,
    shear: float = 10,
    perspective: float = 0.0,
    border: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation/scale/shear/translation/perspective of the image and its xyxy-pixel labels.

    `border` (y, x) is added to each side of the output (negative crops: mosaic uses -s/2 to turn the
    2s canvas back into s). Boxes that end up degenerate are dropped (see box_candidates).
    """
    height = im.shape[0] + border[0] * 2
    width = im.shape[1] + border[1] * 2

    center = np.eye(3)
    center[0, 2] = -im.shape[1] / 2
    center[1, 2] = -im.shape[0] / 2
    persp = np.eye(3)
    persp[2, 0] = rng.uniform(-perspective, perspective)
    persp[2, 1] = rng.uniform(-perspective, perspective)
    rot = np.eye(3)
    angle = rng.uniform(-degrees, degrees)
    s = rng.uniform(1 - scale, 1 + scale)
    rot[:2] = cv2.getRotationMatrix2D(angle=angle, center=(0, 0), scale=s)
    shr = np.eye(3)
    shr[0, 1] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    shr[1, 0] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    trans = np.eye(3)
    trans[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * width
    trans[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * height
    m = trans @ shr @ rot @ persp @ center

    scale_xy = (s, s)
    if not (degrees or shear or perspective):  # scale + shift only: crop-and-resize is ~3x faster than a warp
        im, m, scale_xy = _scale_shift(im, m, s, width, height)
    elif perspective:
        im = cv2.warpPerspective(im, m, dsize=(width, height), borderValue=PAD_COLOR)
    else:
        im = cv2.warpAffine(im, m[:2], dsize=(width, height), borderValue=PAD_COLOR)

    n = len(labels)
    if n:
        corners = np.ones((n * 4, 3))
        corners[:, :2] = labels[:, [1, 2, 3, 4, 1, 4, 3, 2]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
        corners = corners @ m.T
        corners = (corners[:, :2] / corners[:, 2:3] if perspective else corners[:, :2]).reshape(n, 8)
        xs, ys = corners[:, [0, 2, 4, 6]], corners[:, [1, 3, 5, 7]]
        new = np.stack((xs.min(1), ys.min(1), xs.max(1), ys.max(1)), axis=1)
        new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
        new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
        keep = box_candidates(labels[:, 1:5].T * np.array(scale_xy * 2)[:, None], new.T)
        labels = labels[keep]
        labels[:, 1:5] = new[keep]
    return im, labels


def _scale_shift(im: np.ndarray, m: np.ndarray, s: float, width: int,
                 height: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Apply x' = s·x + m[0, 2], y' = s·y + m[1, 2] by resizing only the visible crop and pasting it.

    Crop bounds and paste offsets are whole pixels, so the scale actually applied differs from s by
    a rounding; the returned matrix is the one realised, so labels follow the pixels exactly.
    """
    h_in, w_in = im.shape[:2]
    out = np.full((height, width, im.shape[2]), PAD_COLOR[0], dtype=im.dtype)
    realised = np.eye(3)
    scales = []
    bounds = []
    for axis, (size_in, size_out) in enumerate(((w_in, width), (h_in, height))):
        shift = m[axis, 2]
        lo = max(0, math.floor(-shift / s))
        hi = min(size_in, math.ceil((size_out - shift) / s))
        n_out = max(1, round((hi - lo) * s)) if hi > lo else 0
        sa = n_out / (hi - lo) if hi > lo else s
        offset = round(shift + s * lo)
        realised[axis, axis], realised[axis, 2] = sa, offset - sa * lo
        scales.append(sa)
        bounds.append((lo, hi, n_out, offset))
    (x0, x1, nw, ox), (y0, y1, nh, oy) = bounds
    if nw and nh:
        crop = cv2.resize(im[y0:y1, x0:x1], (nw, nh), interpolation=cv2.INTER_LINEAR)
        px0, py0 = max(ox, 0), max(oy, 0)
        px1, py1 = min(ox + nw, width), min(oy + nh, height)
        if px1 > px0 and py1 > py0:
            out[py0:py1, px0:px1] = crop[py0 - oy:py1 - oy, px0 - ox:px1 - ox]
    return out, realised, (scales[0], scales[1])


def mosaic4(images: list[np.ndarray], labels: list[np.ndarray], size: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tile 4 images around a random centre of a 2·size canvas; labels are xyxy pixels per image.

    Returns the 2·size canvas and its labels; follow with random_perspective(border=(-size//2,)*2)
    to crop back to size x size, as YOLOv5 does.
    """
    s = size
    yc, xc = (int(rng.uniform(s // 2, 2 * s - s // 2)) for _ in range(2))
    canvas = np.full((s * 2, s * 2, images[0].shape[2]), PAD_COLOR[0], dtype=np.uint8)
    out = []
    for i, (im, lb) in enumerate(zip(images, labels)):
        h, w = im.shape[:2]
        if i == 0:  # top left
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif i == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, s * 2), yc
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif i == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(s * 2, yc + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, s * 2), min(s * 2, yc + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        canvas[y1a:y2a, x1a:x2a] = im[y1b:y2b, x1b:x2b]
        shifted = lb.copy()
        shifted[:, [1, 3]] += x1a - x1b
        shifted[:, [2, 4]] += y1a - y1b
        out.append(shifted)
    merged = np.concatenate(out, 0) if out else np.zeros((0, 5), np.float32)
    merged[:, 1:5] = merged[:, 1:5].clip(0, 2 * s)
    return canvas, merged


def mixup(im: np.ndarray, labels: np.ndarray, im2: np.ndarray, labels2: np.ndarray,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blend two same-size images with a Beta(32, 32) ratio and keep both label sets."""
    r = rng.beta(32.0, 32.0)
    blended = (im.astype(np.float32) * r + im2.astype(np.float32) * (1 - r)).astype(np.uint8)
    return blended, np.concatenate((labels, labels2), 0)


def flip_lr(im: np.ndarray, labels_xywhn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; labels are [cls, cx, cy, w, h] normalised."""
    labels_xywhn = labels_xywhn.copy()
    labels_xywhn[:, 1] = 1 - labels_xywhn[:, 1]
    return cv2.flip(im, 1), labels_xywhn


def flip_ud(im: np.ndarray, labels_xywhn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror top-bottom; labels are [cls, cx, cy, w, h] normalised."""
    labels_xywhn = labels_xywhn.copy()
    labels_xywhn[:, 2] = 1 - labels_xywhn[:, 2]
    return cv2.flip(im, 0), labels_xywhn


def multi_scale_size(imgsz: int, stride: int, rng: np.random.Generator, spread: float = 0.5) -> int:
    """A random training size in [imgsz·(1-spread), imgsz·(1+spread)], a multiple of stride (--multi-scale)."""
    lo, hi = imgsz * (1 - spread), imgsz * (1 + spread)
    return max(stride, int(rng.uniform(lo, hi + stride)) // stride * stride)


def resize_batch(imgs: torch.Tensor, size: int, stride: int = 32) -> torch.Tensor:
    """Resize a float (B, 3, H, W) batch so its long side is about `size`, each side a multiple of stride.

    The trainer's --multi-scale hook (pick `size` with multi_scale_size): targets are normalised to
    the image, so they need no change.
    """
    h, w = imgs.shape[2:]
    r = size / max(h, w)
    if r == 1:
        return imgs
    new = [math.ceil(x * r / stride) * stride for x in (h, w)]
    return F.interpolate(imgs, size=new, mode="bilinear", align_corners=False)
