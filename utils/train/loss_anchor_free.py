"""Training loss for the anchor-free DetectAF head: task-aligned targets, BCE class, CIoU + DFL box.

Why these terms: the class branch is the only confidence the head has (no objectness), so it learns the
alignment-weighted IoU as a soft target (a box's score ranks how well it is localised); boxes learn both
their overlap (CIoU) and a sharp distribution over each side's distance (Distribution Focal Loss: cross
entropy against the two bins around the true distance). Box and DFL terms are weighted per positive by
its class target, and every term is normalised by the sum of class targets, as TOOD-style heads do.

Returns (total × batch size, [box, dfl, cls]) so train.py / val.py log them in yolov5's three loss
columns: box → box_loss, dfl → obj_loss (the head has no objectness), cls → cls_loss.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.heads import DetectAF, dfl_expectation
from models.yolo import detection_head
from utils.core.boxes import ciou_loss, xywh_to_xyxy
from utils.core.log import LOGGER
from utils.train.assigner import TaskAlignedAssigner

DFL_EDGE = 0.01  # targets stop just short of the last bin, so both neighbouring bins exist


def dfl_loss(dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(n, reg_max) logits, (n,) distances in bins → (n,) cross entropy to the two nearest bins, linearly weighted."""
    left = target.long()
    w_right = target - left
    return (F.cross_entropy(dist, left, reduction="none") * (1 - w_right)
            + F.cross_entropy(dist, left + 1, reduction="none") * w_right)


def padded_targets(targets: torch.Tensor, bs: int, size_wh: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(N, 6) [img, cls, cx, cy, w, h] normalised → labels (B, M) long, boxes (B, M, 4) xyxy pixels, valid (B, M)."""
    device = targets.device
    img = targets[:, 0].long()
    counts = torch.bincount(img, minlength=bs) if len(img) else torch.zeros(bs, dtype=torch.long, device=device)
    m = int(counts.max()) if bs else 0
    labels = torch.zeros(bs, m, dtype=torch.long, device=device)
    boxes = torch.zeros(bs, m, 4, device=device)
    valid = torch.zeros(bs, m, dtype=torch.bool, device=device)
    if len(img):
        order = img.argsort(stable=True)
        img, t = img[order], targets[order]
        slot = torch.arange(len(img), device=device) - (torch.cumsum(counts, 0) - counts)[img]
        labels[img, slot] = t[:, 1].long()
        boxes[img, slot] = xywh_to_xyxy(t[:, 2:6] * size_wh.repeat(2))
        valid[img, slot] = True
    return labels, boxes, valid


class AnchorFreeLoss:
    """loss(preds, targets) -> (total × batch size, tensor [box, dfl, cls]) for DetectAF.

    Gains come from the hyp file: `box` (CIoU), `cls` (BCE), `dfl`; `tal_topk` sets the positives per box.
    """

    def __init__(self, model: nn.Module, hyp: dict[str, Any], imgsz: int = 640):
        self.head = detection_head(model, DetectAF)
        self.nc, self.reg_max, self.no = int(self.head.nc), int(self.head.reg_max), int(self.head.no)
        self.box_gain, self.cls_gain = float(hyp["box"]), float(hyp["cls"])
        self.dfl_gain = float(hyp.get("dfl", 1.5))
        if float(hyp.get("label_smoothing", 0.0)) > 0:
            LOGGER.warning("--label-smoothing is ignored for anchor-free heads: their class targets are already "
                           "soft (the alignment-weighted IoU)")
        strides = sorted(float(s) for s in self.head.stride)
        self.assigner = TaskAlignedAssigner(self.nc, topk=int(hyp.get("tal_topk", 10)), alpha=0.5, beta=6.0,
                                            min_side=strides[len(strides) // 2])  # the middle level's stride

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """preds: nl raw maps (B, ny, nx, 4·reg_max + nc); targets (N, 6) [img, cls, cx, cy, w, h] normalised."""
        bs, device = preds[0].shape[0], preds[0].device
        shapes = [p.shape[1:3] for p in preds]
        p = torch.cat([r.reshape(bs, -1, self.no) for r in preds], 1).float()
        dist, logits = p.split((4 * self.reg_max, self.nc), 2)
        points, strides = self.head.anchor_points(shapes, device, torch.float32)  # grid units of each level
        lt, rb = dfl_expectation(dist, self.head.bins.float()).split((2, 2), 2)
        pred_boxes = torch.cat((points - lt, points + rb), 2)  # xyxy, grid units

        size_wh = torch.tensor([shapes[0][1], shapes[0][0]], device=device, dtype=torch.float32) * strides[0]
        gt_labels, gt_boxes, gt_valid = padded_targets(targets.float(), bs, size_wh)
        assigned = self.assigner(logits.detach().sigmoid(), pred_boxes.detach() * strides, points * strides,
                                 gt_labels, gt_boxes, gt_valid)
        score_sum = assigned.scores.sum().clamp(min=1)
        lcls = F.binary_cross_entropy_with_logits(logits, assigned.scores, reduction="sum") / score_sum

        lbox = torch.zeros((), device=device)
        ldfl = torch.zeros((), device=device)
        fg = assigned.fg
        if fg.any():
            weight = assigned.scores.sum(-1)[fg]
            target_boxes = assigned.boxes / strides  # grid units
            ciou = ciou_loss(pred_boxes[fg], target_boxes[fg])
            lbox = (ciou * weight).sum() / score_sum
            target_ltrb = torch.cat((points - target_boxes[..., :2], target_boxes[..., 2:] - points), 2)
            target_ltrb = target_ltrb[fg].clamp(0, self.reg_max - 1 - DFL_EDGE)
            per_side = dfl_loss(dist[fg].reshape(-1, self.reg_max), target_ltrb.reshape(-1)).view(-1, 4).mean(1)
            ldfl = (per_side * weight).sum() / score_sum
        lbox, ldfl, lcls = lbox * self.box_gain, ldfl * self.dfl_gain, lcls * self.cls_gain
        return (lbox + ldfl + lcls) * bs, torch.stack((lbox, ldfl, lcls)).detach()
