"""Model output → final boxes in the original image's pixels: decode, NMS in numpy, undo the letterbox.

Two output forms, both in input pixels (export.py never normalises):
  raw   (N, 5 + nc)  cx cy w h, objectness, class probabilities (sigmoid applied) — NMS happens here;
  --nms (max_det, 6) x1 y1 x2 y2 conf cls, zero rows are padding — only thresholds and --classes remain.
The rules copy detect.py's: objectness > conf, then best class score obj * cls > conf, greedy NMS per
class suppressing IoU > iou_thres, at most max_det boxes by descending score.
"""
from __future__ import annotations

import numpy as np

from .preprocess import Letterbox

MAX_NMS_CANDIDATES = 30000  # boxes fed into NMS per image; beyond that NMS time explodes for no gain


def as_rows(output: np.ndarray, nc: int, end_to_end: bool) -> np.ndarray:
    """(1, N, K) or channels-first (1, K, N) → (N, K) rows for one image."""
    y = output[0]
    width = 6 if end_to_end else nc + 5
    if y.shape[-1] != width and y.shape[0] == width:
        y = y.T
    if y.ndim != 2 or y.shape[-1] != width:
        raise ValueError(f"model output {output.shape} is not (1, N, {width}); was the file exported with "
                         f"{nc} classes{' and --nms' if end_to_end else ''}?")
    return y


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    xy, half = boxes[:, :2], boxes[:, 2:4] / 2
    return np.concatenate((xy - half, xy + half), 1)


def raw_candidates(rows: np.ndarray, conf_thres: float,
                   classes: list[int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw rows → (xyxy, score, class) of boxes whose best class score clears conf_thres (one class per box)."""
    rows = rows[rows[:, 4] > conf_thres]
    scores = rows[:, 5:] * rows[:, 4:5]
    cls = scores.argmax(1)
    score = scores[np.arange(len(rows)), cls]
    keep = score > conf_thres
    if classes is not None:
        keep &= np.isin(cls, classes)
    return cxcywh_to_xyxy(rows[keep, :4]), score[keep], cls[keep]


def iou_one_to_many_xyxy(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box against (n, 4) xyxy boxes, in float32 like the reference NMS."""
    iw = (np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])).clip(0)
    ih = (np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])).clip(0)
    inter = iw * ih
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):  # two zero-area boxes: NaN, never suppressed (as torchvision)
        return inter / (area + areas - inter)


def nms_xyxy(boxes: np.ndarray, scores: np.ndarray, cls: np.ndarray, iou_thres: float, max_det: int,
             agnostic: bool = False) -> np.ndarray:
    """Greedy NMS within each class (across classes when agnostic); indices kept, highest score first."""
    order = np.argsort(-scores, kind="stable")[:MAX_NMS_CANDIDATES]
    keep = []
    while order.size and len(keep) < max_det:
        i, rest = order[0], order[1:]
        keep.append(i)
        iou = iou_one_to_many_xyxy(boxes[i], boxes[rest])
        suppressed = iou > iou_thres
        if not agnostic:
            suppressed &= cls[rest] == cls[i]
        order = rest[~suppressed]
    return np.asarray(keep, dtype=np.int64)


def end_to_end_detections(rows: np.ndarray, conf_thres: float, classes: list[int] | None,
                          max_det: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of a file exported with --nms: drop padding and low scores, apply --classes and --max-det."""
    rows = rows[rows[:, 4] > conf_thres]
    cls = rows[:, 5].round().astype(np.int64)
    if classes is not None:
        rows, cls = rows[np.isin(cls, classes)], cls[np.isin(cls, classes)]
    order = np.argsort(-rows[:, 4], kind="stable")[:max_det]
    return rows[order, :4], rows[order, 4], cls[order]


def scale_boxes_to_image(boxes: np.ndarray, box: Letterbox, image_shape: tuple[int, ...]) -> np.ndarray:
    """xyxy in network-input pixels → xyxy in the original image (h, w), clipped to it."""
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - box.pad_left) / np.float32(box.ratio_x)
    out[:, [1, 3]] = (out[:, [1, 3]] - box.pad_top) / np.float32(box.ratio_y)
    h, w = image_shape[:2]
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def xyxy_to_xywhn(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    """Pixel xyxy → YOLO label cx cy w h normalised by the image size."""
    boxes = boxes.astype(np.float64)
    return np.stack(((boxes[:, 0] + boxes[:, 2]) / 2 / w, (boxes[:, 1] + boxes[:, 3]) / 2 / h,
                     (boxes[:, 2] - boxes[:, 0]) / w, (boxes[:, 3] - boxes[:, 1]) / h), 1)
