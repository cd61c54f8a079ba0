"""Original BGR frame → the exact array the model file takes (letterboxed, RGB, [0, 1], its layout and dtype).

The letterbox is the one detect.py applies (same rounding of the resized size and of the padding), so the
runner feeds a model bit-for-bit the input detect.py feeds it and the boxes match.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from .engines import TensorSpec

PAD_COLOR = (114, 114, 114)


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the network input: scale per axis and the left/top padding in pixels."""

    ratio_x: float
    ratio_y: float
    pad_left: int
    pad_top: int


def letterbox(image: np.ndarray, new_shape: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio, then pad to `new_shape` (h, w) whole: every model file, the .pt and a
    dynamic ONNX included, sees the same input for the same image, so they find the same boxes."""
    h0, w0 = image.shape[:2]
    r = min(new_shape[0] / h0, new_shape[1] / w0)
    new_w, new_h = int(round(w0 * r)), int(round(h0 * r))
    dw, dh = new_shape[1] - new_w, new_shape[0] - new_h
    dw, dh = dw / 2, dh / 2
    if (w0, h0) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=PAD_COLOR)
    return image, Letterbox(new_w / w0, new_h / h0, left, top)


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Real values → the integer dtype of a quantised input: round(x / scale + zero_point), clipped to its range."""
    limits = np.iinfo(spec.dtype)
    q = np.round(x / np.float32(spec.scale) + spec.zero_point)
    return np.clip(q, limits.min, limits.max).astype(spec.dtype)


def to_input(boxed_bgr: np.ndarray, layout: str, spec: TensorSpec) -> np.ndarray:
    """Letterboxed uint8 BGR (H, W, 3) → batch-1 RGB array in [0, 1] in the file's layout, dtype and quantisation.

    Each pixel is looked up in `pixel_table`, not converted, scaled and quantised as a float frame: a 640² frame
    took 2–5 ms that way (two float passes, and rounding for int8 files) and takes ~0.5 ms as a lookup, with
    the same values bit for bit.
    """
    table = pixel_table(spec)
    if layout == "NCHW":
        x = np.empty((1, 3, *boxed_bgr.shape[:2]), table.dtype)
        for plane, channel in zip(cv2.split(boxed_bgr)[::-1], x[0]):  # B, G, R planes into R, G, B channels
            _lookup(plane, table, out=channel)
        return x
    return _lookup(cv2.cvtColor(boxed_bgr, cv2.COLOR_BGR2RGB), table)[None]


@functools.lru_cache(maxsize=16)
def pixel_table(spec: TensorSpec) -> np.ndarray:
    """What each 8-bit pixel value becomes in the model input: value / 255 (a true division, as detect.py does;
    multiplying by 1/255 differs in the last bit), in the input's dtype and quantisation. Built once per input
    spec (read-only: every frame shares it)."""
    table = as_spec(np.arange(256, dtype=np.float32) / np.float32(255), spec)
    table.flags.writeable = False
    return table


def _lookup(pixels: np.ndarray, table: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """table[pixels] through OpenCV's LUT where it takes the table's dtype (every one but float16)."""
    if table.dtype == np.float16:
        return np.take(table, pixels, out=out)
    return cv2.LUT(pixels, table, dst=out)


def as_spec(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Real values -> the input tensor's dtype, quantised when the tensor is."""
    if spec.quantized:
        return quantize(x, spec)
    return x if x.dtype == spec.dtype else x.astype(spec.dtype)


def batch_to_input(x: np.ndarray, layout: str, spec: TensorSpec) -> np.ndarray:
    """A float RGB NCHW batch in [0, 1] (what the torch side's backends take) -> the file's layout and dtype."""
    x = x.transpose(0, 2, 3, 1) if layout == "NHWC" else x
    return np.ascontiguousarray(as_spec(x, spec))
