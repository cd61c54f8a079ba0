"""Model output → final boxes in the original image's pixels: decode, NMS in numpy, undo the letterbox.

Two output forms, both in input pixels (export.py never normalises):
  raw   (N, 5 + nc)  cx cy w h, objectness, class probabilities (sigmoid applied) — NMS happens here;
  --nms (max_det, 6) x1 y1 x2 y2 conf cls, zero rows are padding — only thresholds and --classes remain.
The rules copy detect.py's: objectness > conf, then best class score obj * cls > conf, greedy NMS per
class suppressing IoU > iou_thres, at most max_det boxes by descending score.
"""
from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np

from .errors import UserInputError
from .preprocess import Letterbox

MAX_NMS_CANDIDATES = 30000  # boxes fed into NMS per image; beyond that NMS time explodes for no gain
NMS_CHUNK = 64  # boxes of one class decided per step of greedy NMS (IoU memory: chunk x (kept + chunk) floats)


def check_class_ids(ids: int | list[int] | tuple[int, ...] | None, nc: int | None,
                    model: str | Path) -> list[int] | None:
    """A --classes filter as a list of ids, each one a class of `model` (when its class count `nc` is known).

    An id the model does not have would only filter every box away, which looks like 'nothing detected'.
    """
    if ids is None:
        return None
    ids = [ids] if isinstance(ids, numbers.Integral) else list(ids)
    bad = [i for i in ids if not isinstance(i, numbers.Integral) or i < 0 or (nc is not None and i >= nc)]
    if bad:
        known = "" if nc is None else f"; {Path(model).name} has {nc} class{'es' * (nc != 1)} " \
                                        f"({'id 0' if nc == 1 else f'ids 0-{nc - 1}'})"
        raise UserInputError(f"no such class id{known}", "classes", " ".join(map(str, bad)))
    return [int(i) for i in ids]


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
    """Raw rows → (xyxy, score, class) of boxes whose best class score clears conf_thres (one class per box).

    The threshold is applied before any row is copied: a box's best score obj × cls equals obj × its best cls
    (rounding keeps the order of products by one non-negative factor), so the rows that pass are found from two
    columns' worth of work, and only those few are gathered — from a channels-first output too, where copying
    every row would walk the whole array across its strides.
    """
    obj = rows[:, 4]
    rows = rows[(obj > conf_thres) & (rows[:, 5:].max(1) * obj > conf_thres)]
    scores = rows[:, 5:] * rows[:, 4:5]
    cls = scores.argmax(1)
    score = scores[np.arange(len(rows)), cls]
    keep = score > conf_thres
    if classes is not None:
        keep &= np.isin(cls, classes)
    return cxcywh_to_xyxy(rows[keep, :4]), score[keep], cls[keep]


def pairwise_iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4) × (m, 4) xyxy → (n, m) IoU in float32 (torchvision's formula); two zero-area boxes give NaN."""
    iw = (np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])).clip(0)
    ih = (np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])).clip(0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a[:, None] + area_b[None] - inter)


def greedy_nms_xyxy(boxes: np.ndarray, iou_thres: float, max_det: int) -> list[int]:
    """Greedy NMS over boxes already sorted by descending score; positions kept. NaN IoU never suppresses.

    A box survives when no kept box before it overlaps it more than iou_thres. Boxes are decided NMS_CHUNK at a
    time: one IoU block against every box kept so far, one within the chunk, then a loop over the chunk's
    survivors. The work is (kept + chunk) per box, not the n² of a full IoU matrix: a busy frame brings
    thousands of candidates of one class of which a few dozen are kept.
    """
    keep: list[int] = []
    kept_boxes = boxes[:0]
    for start in range(0, len(boxes), NMS_CHUNK):
        chunk = boxes[start:start + NMS_CHUNK]
        alive = ~(pairwise_iou_xyxy(kept_boxes, chunk) > iou_thres).any(0)
        candidates = np.flatnonzero(alive)
        overlaps = pairwise_iou_xyxy(chunk[candidates], chunk[candidates]) > iou_thres
        removed = np.zeros(len(candidates), bool)
        for j in range(len(candidates)):
            if not removed[j]:
                keep.append(start + int(candidates[j]))
                if len(keep) == max_det:
                    return keep
                removed |= overlaps[j]
        kept_boxes = boxes[keep]
    return keep


def nms_xyxy(boxes: np.ndarray, scores: np.ndarray, cls: np.ndarray, iou_thres: float, max_det: int,
             agnostic: bool = False) -> np.ndarray:
    """Greedy NMS within each class (across classes when agnostic); indices kept, highest score first.

    Classes are run one at a time so each box is compared only with its own class's boxes: one stable sort
    puts the candidates class by class, each class still in descending score order.
    """
    order = np.argsort(-scores, kind="stable")[:MAX_NMS_CANDIDATES]
    if agnostic:
        groups = [order]
    else:
        by_class = order[np.argsort(cls[order], kind="stable")]
        groups = np.split(by_class, np.flatnonzero(np.diff(cls[by_class])) + 1)
    keep = np.concatenate([g if len(g) == 1 else g[greedy_nms_xyxy(boxes[g], iou_thres, max_det)]
                           for g in groups if len(g)] or [order[:0]])
    return keep[np.argsort(-scores[keep], kind="stable")][:max_det].astype(np.int64)


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
