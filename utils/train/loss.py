"""Training loss for the YOLOv5 anchor head: CIoU box + IoU-targeted objectness + class BCE.

Same semantics as YOLOv5 so its hyperparameter files transfer unchanged: a target is matched to every
anchor whose width/height ratio lies within `anchor_t`, and assigned to its own grid cell plus the two
nearest neighbouring cells (offset 0.5), which triples the positives and lets the (2·sigmoid − 0.5)
centre decode reach them.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from models.heads import Detect
from models.yolo import detection_head
from utils.core.boxes import ciou_loss, xywh_to_xyxy
from utils.core.torch_utils import de_parallel
from utils.train.loss_anchor_free import AnchorFreeLoss

LEVEL_BALANCE = {3: (4.0, 1.0, 0.4)}  # objectness weight per level, small strides weigh more (YOLOv5 P3-P5)
LEVEL_BALANCE_DEFAULT = (4.0, 1.0, 0.25, 0.06, 0.02)
NEIGHBOUR_OFFSET = 0.5  # a target also goes to a neighbour cell when its centre is within this of the border


def smooth_bce_targets(eps: float = 0.0) -> tuple[float, float]:
    """Positive and negative class targets under label smoothing (eps=0: hard 1 / 0)."""
    return 1.0 - 0.5 * eps, 0.5 * eps


class FocalBCE(nn.Module):
    """BCE-with-logits scaled by (1 − p_t)^gamma and an alpha balance, as YOLOv5's FocalLoss (mean reduced)."""

    def __init__(self, bce: nn.BCEWithLogitsLoss, gamma: float = 1.5, alpha: float = 0.25):
        super().__init__()
        self.bce = bce
        self.bce.reduction = "none"
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        loss = self.bce(pred, true)
        prob = pred.sigmoid()
        p_t = true * prob + (1 - true) * (1 - prob)
        alpha_factor = true * self.alpha + (1 - true) * (1 - self.alpha)
        return (loss * alpha_factor * (1.0 - p_t) ** self.gamma).mean()


def scaled_loss_gains(hyp: dict[str, Any], nl: int, nc: int, imgsz: int) -> tuple[float, float, float]:
    """Box / obj / cls gains adjusted like YOLOv5 for the number of levels, classes and image size.

    The hyp files are tuned for 3 levels, 80 classes and 640 px; objectness sums over every cell, so it
    scales with the cell count ((imgsz/640)^2), class loss with nc/80.
    """
    levels = 3 / nl
    return (
        hyp["box"] * levels,
        hyp["obj"] * (imgsz / 640) ** 2 * levels,
        hyp["cls"] * nc / 80 * levels,
    )


class ComputeLoss:
    """loss(preds, targets) -> (total × batch size, tensor [box, obj, cls]) for the anchor head."""

    def __init__(self, model: nn.Module, hyp: dict[str, Any], imgsz: int = 640):
        device = next(model.parameters()).device
        head = detection_head(model, Detect)
        self.na, self.nl, self.nc = int(head.na), int(head.nl), int(head.nc)
        self.head = head  # anchors are read at call time: autoanchor may rewrite them after construction
        self.anchor_t = float(hyp["anchor_t"])
        self.box_gain, self.obj_gain, self.cls_gain = scaled_loss_gains(hyp, self.nl, self.nc, imgsz)
        self.balance = LEVEL_BALANCE.get(self.nl, LEVEL_BALANCE_DEFAULT[: self.nl])
        self.cls_pos, self.cls_neg = smooth_bce_targets(float(hyp.get("label_smoothing", 0.0)))
        self.gr = 1.0  # objectness target = gr·IoU + (1 − gr)
        cls_bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([float(hyp.get("cls_pw", 1.0))], device=device))
        obj_bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([float(hyp.get("obj_pw", 1.0))], device=device))
        gamma = float(hyp.get("fl_gamma", 0.0))
        self.cls_bce = FocalBCE(cls_bce, gamma) if gamma > 0 else cls_bce
        self.obj_bce = FocalBCE(obj_bce, gamma) if gamma > 0 else obj_bce

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """preds: nl tensors (B, na, ny, nx, 5+nc) of raw logits; targets (N, 6) [img, cls, cx, cy, w, h] normalised."""
        device = targets.device
        anchors = self.head.anchors.to(device)
        lbox = torch.zeros(1, device=device)
        lobj = torch.zeros(1, device=device)
        lcls = torch.zeros(1, device=device)
        assigned = self.build_targets(preds, targets, anchors)
        for i, pi in enumerate(preds):
            img, anchor_idx, gj, gi, tbox, tcls = assigned[i]
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype, device=device)
            n = img.shape[0]
            if n:
                pxy, pwh, _, pcls = pi[img, anchor_idx, gj, gi].float().split((2, 2, 1, self.nc), 1)
                pxy = pxy.sigmoid() * 2 - 0.5
                pwh = (pwh.sigmoid() * 2) ** 2 * anchors[i][anchor_idx]
                pbox = torch.cat((pxy, pwh), 1)
                box_loss = ciou_loss(xywh_to_xyxy(pbox), xywh_to_xyxy(tbox))
                lbox += box_loss.mean()
                iou = (1.0 - box_loss).detach().clamp(0).to(tobj.dtype)
                tobj[img, anchor_idx, gj, gi] = (1.0 - self.gr) + self.gr * iou
                if self.nc > 1:  # a single class is all objectness
                    t = torch.full_like(pcls, self.cls_neg)
                    t[torch.arange(n, device=device), tcls] = self.cls_pos
                    lcls += self.cls_bce(pcls, t)
            lobj += self.obj_bce(pi[..., 4].float(), tobj.float()) * self.balance[i]
        lbox *= self.box_gain
        lobj *= self.obj_gain
        lcls *= self.cls_gain
        bs = preds[0].shape[0]
        return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

    def build_targets(self, preds: list[torch.Tensor], targets: torch.Tensor, anchors: torch.Tensor) -> list[tuple]:
        """Per level: (img, anchor, gj, gi, box (N,4) xywh relative to cell corner in grid units, cls)."""
        device = targets.device
        na, nt = self.na, targets.shape[0]
        anchor_ids = torch.arange(na, device=device).float().view(na, 1).repeat(1, nt)
        # (na, nt, 7): img, cls, cx, cy, w, h, anchor
        t_all = torch.cat((targets.repeat(na, 1, 1), anchor_ids[..., None]), 2)
        g = NEIGHBOUR_OFFSET
        offsets_grid = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device).float() * g
        gain = torch.ones(7, device=device)
        out = []
        for i, pi in enumerate(preds):
            ny, nx = pi.shape[2], pi.shape[3]
            gain[2:6] = torch.tensor([nx, ny, nx, ny], device=device, dtype=gain.dtype)
            t = t_all * gain  # to grid units of this level
            if nt:
                ratio = t[..., 4:6] / anchors[i][:, None]
                t = t[torch.max(ratio, 1 / ratio).max(2)[0] < self.anchor_t]
                gxy = t[:, 2:4]
                gxy_inv = gain[[2, 3]] - gxy
                left, top = ((gxy % 1 < g) & (gxy > 1)).T
                right, bottom = ((gxy_inv % 1 < g) & (gxy_inv > 1)).T
                keep = torch.stack((torch.ones_like(left), left, top, right, bottom))
                t = t.repeat((5, 1, 1))[keep]
                offsets = (torch.zeros_like(gxy)[None] + offsets_grid[:, None])[keep]
            else:
                t = t_all[0]
                offsets = torch.zeros_like(t[:, 2:4])
            img, cls = t[:, 0].long(), t[:, 1].long()
            gxy, gwh, anchor_idx = t[:, 2:4], t[:, 4:6], t[:, 6].long()
            gij = (gxy - offsets).long()
            gi = gij[:, 0].clamp(0, nx - 1)
            gj = gij[:, 1].clamp(0, ny - 1)
            box = torch.cat((gxy - gij, gwh), 1)
            out.append((img, anchor_idx, gj, gi, box, cls))
        return out


def build_loss(model: nn.Module, hyp: dict[str, Any], imgsz: int = 640):
    """The loss that matches the model's head — picked by the head, not by a flag (train.py and val use this).

    An anchor-free model (DetectAF) gets AnchorFreeLoss (box, dfl, cls); the YOLOv5 anchor head gets
    ComputeLoss (box, obj, cls). Both return (total × batch size, three loss items).
    """
    if de_parallel(model).anchor_free:
        return AnchorFreeLoss(model, hyp, imgsz)
    return ComputeLoss(model, hyp, imgsz)
