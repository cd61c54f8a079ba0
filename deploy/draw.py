"""Boxes and labels drawn with plain OpenCV calls (no fonts to fetch, nothing beyond cv2)."""
from __future__ import annotations

import cv2
import numpy as np

PALETTE_BGR = (  # 20 well-separated colours, cycled by class id
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72), (23, 204, 146),
    (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100),
    (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255))


def class_color(cls: int) -> tuple[int, int, int]:
    return PALETTE_BGR[int(cls) % len(PALETTE_BGR)]


def default_line_width(image: np.ndarray) -> int:
    """yolov5's rule: about 0.3 % of the image's mean side, at least 2 pixels."""
    return max(round(sum(image.shape[:2]) / 2 * 0.003), 2)


def draw_detections(image: np.ndarray, boxes: np.ndarray, labels: list[str], cls: np.ndarray,
                    line_width: int | None = None) -> np.ndarray:
    """A copy of `image` with each xyxy box and its label (an empty label draws the box only)."""
    out = image.copy()
    lw = line_width or default_line_width(out)
    font_scale, font_thickness = lw / 3, max(lw - 1, 1)
    for (x1, y1, x2, y2), label, c in zip(boxes.round().astype(int).tolist(), labels, cls.tolist()):
        color = class_color(c)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, lw, cv2.LINE_AA)
        if not label:
            continue
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, font_thickness)
        above = y1 - th - 3 >= 0  # label above the box when it fits, else inside it
        top = y1 - th - 3 if above else y1
        cv2.rectangle(out, (x1, top), (x1 + tw, top + th + 3), color, -1, cv2.LINE_AA)
        cv2.putText(out, label, (x1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    font_thickness, cv2.LINE_AA)
    return out
