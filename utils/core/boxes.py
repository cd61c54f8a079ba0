"""Box formats, IoU, rescaling and NMS.

Every function names the box format it reads and writes: xyxy = corners in pixels, xywh = centre and
size in pixels, xywhn = centre and size normalised to the image. Conversions accept torch tensors or
numpy arrays of shape (..., 4) and return the same kind, so the dataloader (numpy) and val (torch)
share them.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torchvision

Boxes = torch.Tensor | np.ndarray


def _empty_like(x: Boxes) -> Boxes:
    return x.clone() if isinstance(x, torch.Tensor) else np.copy(x)


def xywh_to_xyxy(x: Boxes) -> Boxes:
    """(cx, cy, w, h) → (x1, y1, x2, y2)."""
    y = _empty_like(x)
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    y[..., 2] = x[..., 0] + x[..., 2] / 2
    y[..., 3] = x[..., 1] + x[..., 3] / 2
    return y


def xyxy_to_xywh(x: Boxes) -> Boxes:
    """(x1, y1, x2, y2) → (cx, cy, w, h)."""
    y = _empty_like(x)
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def xywhn_to_xyxy(x: Boxes, w: int = 640, h: int = 640, padw: float = 0, padh: float = 0) -> Boxes:
    """Normalised (cx, cy, w, h) → pixel corners in a w×h image, shifted by the letterbox padding."""
    y = _empty_like(x)
    y[..., 0] = w * (x[..., 0] - x[..., 2] / 2) + padw
    y[..., 1] = h * (x[..., 1] - x[..., 3] / 2) + padh
    y[..., 2] = w * (x[..., 0] + x[..., 2] / 2) + padw
    y[..., 3] = h * (x[..., 1] + x[..., 3] / 2) + padh
    return y


def xyxy_to_xywhn(x: Boxes, w: int = 640, h: int = 640, clip: bool = False) -> Boxes:
    """Pixel corners in a w×h image → normalised (cx, cy, w, h); clip first to keep labels in [0, 1]."""
    if clip:
        x = clip_boxes(_empty_like(x), (h, w))
    y = _empty_like(x)
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2 / w
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2 / h
    y[..., 2] = (x[..., 2] - x[..., 0]) / w
    y[..., 3] = (x[..., 3] - x[..., 1]) / h
    return y


def clip_boxes(boxes: Boxes, shape: tuple[int, int]) -> Boxes:
    """Clip xyxy boxes in place to an image of shape (h, w); returns them for chaining."""
    h, w = shape[:2]
    if isinstance(boxes, torch.Tensor):
        boxes[..., 0].clamp_(0, w)
        boxes[..., 1].clamp_(0, h)
        boxes[..., 2].clamp_(0, w)
        boxes[..., 3].clamp_(0, h)
    else:
        boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, w)
        boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, h)
    return boxes


def scale_boxes(img1_shape: tuple[int, int], boxes: Boxes, img0_shape: tuple[int, int],
                ratio_pad: tuple | None = None) -> Boxes:
    """Map xyxy boxes (in place) from the letterboxed image (img1_shape h, w) back to the original (img0_shape).

    ratio_pad = ((ry, rx), (padw, padh)) as the dataloader records it; without it the letterbox is
    recomputed from the two shapes (centred padding, one gain for both axes).
    """
    if ratio_pad is None:
        gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
        gain_x = gain_y = gain
        padw = (img1_shape[1] - img0_shape[1] * gain) / 2
        padh = (img1_shape[0] - img0_shape[0] * gain) / 2
    else:
        (gain_y, gain_x), (padw, padh) = ratio_pad[0], ratio_pad[1]
        if not isinstance(ratio_pad[0], (tuple, list)):
            gain_y = gain_x = ratio_pad[0]
    boxes[..., [0, 2]] -= padw
    boxes[..., [1, 3]] -= padh
    boxes[..., [0, 2]] /= gain_x
    boxes[..., [1, 3]] /= gain_y
    return clip_boxes(boxes, img0_shape)


def box_iou(box1: torch.Tensor, box2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes: (N, 4) × (M, 4) → (N, M)."""
    return torchvision.ops.box_iou(box1, box2)


def ciou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """1 - CIoU of paired xyxy boxes (..., 4) → (...): torchvision's complete_box_iou_loss, except that heights get
    `eps` in the aspect-ratio term, as in YOLOv5's and ultralytics' CIoU. Without it a predicted box whose height
    rounds to 0 (a tiny size added to and taken from a centre) has a finite loss but NaN gradients, and one
    optimizer step turns every weight NaN."""
    (px1, py1, px2, py2), (tx1, ty1, tx2, ty2) = pred.unbind(-1), target.unbind(-1)
    pw, ph, tw, th = px2 - px1, py2 - py1, tx2 - tx1, ty2 - ty1
    inter = (torch.min(px2, tx2) - torch.max(px1, tx1)).clamp(0) * (torch.min(py2, ty2) - torch.max(py1, ty1)).clamp(0)
    iou = inter / (pw * ph + tw * th - inter + eps)
    hull_diagonal2 = (torch.max(px2, tx2) - torch.min(px1, tx1)) ** 2 + (torch.max(py2, ty2) - torch.min(py1, ty1)) ** 2
    centre_distance2 = ((px1 + px2 - tx1 - tx2) ** 2 + (py1 + py2 - ty1 - ty2) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(tw / (th + eps)) - torch.atan(pw / (ph + eps))) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return 1 - iou + centre_distance2 / (hull_diagonal2 + eps) + alpha * v


def non_max_suppression(pred: torch.Tensor, conf_thres: float = 0.25, iou_thres: float = 0.45,
                        classes: list[int] | None = None, agnostic: bool = False,
                        multi_label: bool = False, max_det: int = 300) -> list[torch.Tensor]:
    """Per image: keep confident boxes, suppress overlaps within each class, return rows x1 y1 x2 y2 conf cls.

    pred is (B, N, 5 + nc): cx, cy, w, h in pixels, objectness and class probabilities; a box's score
    for a class is obj × cls. multi_label keeps every class above conf_thres for a box (higher mAP at
    low thresholds, as val uses); otherwise only its best class. agnostic suppresses across classes.
    """
    if not 0 <= conf_thres <= 1:
        raise ValueError(f"conf_thres must be in [0, 1], got {conf_thres}")
    if not 0 <= iou_thres <= 1:
        raise ValueError(f"iou_thres must be in [0, 1], got {iou_thres}")
    nc = pred.shape[2] - 5
    multi_label &= nc > 1
    max_nms = 30000  # boxes fed into NMS per image; beyond that NMS time explodes for no gain
    output = []
    for x in pred:
        x = x[x[:, 4] > conf_thres]
        scores = x[:, 5:] * x[:, 4:5]
        boxes = xywh_to_xyxy(x[:, :4])
        if multi_label:
            i, j = (scores > conf_thres).nonzero(as_tuple=False).T
            det = torch.cat((boxes[i], scores[i, j, None], j[:, None].float()), 1)
        else:
            conf, j = scores.max(1, keepdim=True)
            det = torch.cat((boxes, conf, j.float()), 1)[conf.view(-1) > conf_thres]
        if classes is not None:
            det = det[(det[:, 5:6] == torch.tensor(classes, device=det.device)).any(1)]
        if det.shape[0] > max_nms:
            det = det[det[:, 4].argsort(descending=True)[:max_nms]]
        class_ids = torch.zeros_like(det[:, 5]).long() if agnostic else det[:, 5].long()
        output.append(det[top_kept(det[:, :4], det[:, 4], class_ids, iou_thres, max_det)])
    return output


def top_kept(boxes: torch.Tensor, scores: torch.Tensor, class_ids: torch.Tensor, iou_thres: float,
             max_det: int) -> torch.Tensor:
    """Indices of the max_det best boxes that survive per-class NMS, best first; equal scores keep input order.

    Greedy NMS decides each box from higher-ranked boxes only, so NMS over the k best boxes equals full
    NMS restricted to them. Growing k until max_det boxes survive gives the exact result at a fraction
    of the O(n^2) cost when an untrained model floods every anchor with low scores (early epochs' val).
    NMS runs on each box's rank (a strict order: stable sort) rather than its score, so ties cannot be
    ordered differently inside a subset than in the whole, and class filters keep the same boxes.
    """
    order = scores.argsort(descending=True, stable=True)
    rank = torch.arange(order.numel(), 0, -1, dtype=torch.float32, device=scores.device)
    k = 4 * max_det
    while True:
        top = order[:k]
        keep = torchvision.ops.batched_nms(boxes[top], rank[:k], class_ids[top], iou_thres)
        if keep.numel() >= max_det or k >= order.numel():
            return top[keep[:max_det]]
        k *= 4
