"""Task-aligned assignment (TOOD): which anchor points learn which ground-truth box, and how strongly.

Why: an anchor-free head has no anchor shapes to match against, so positives are chosen by how well the
head already does on each box — the alignment metric cls_score^alpha * IoU^beta — among the anchor points
whose centres lie inside the box. The top-k points per box become positives, and their class target is
the alignment rescaled so the best point of each box gets that box's best overlap (not a hard 1).

Two details follow ultralytics' assigner, whose loss ours was checked against on identical inputs
(tests/utils/train/test_loss_anchor_free.py): the overlap is CIoU clamped at 0 (the box loss's own measure, so
the class target ranks what the box branch optimises), and a box with a side under `min_side` pixels
picks candidates as if that side were `min_side` — otherwise a box smaller than a stride-8 cell may hold
no anchor centre at all and is never learned.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.core.boxes import ciou_loss

EPS = 1e-9


@dataclass
class Assignment:
    """Per anchor point: fg (B, N) bool, boxes (B, N, 4) xyxy, labels (B, N) long, scores (B, N, nc)."""

    fg: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    gt_index: torch.Tensor


def points_inside_boxes_xyxy(points: torch.Tensor, boxes: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(N, 2) points, (B, M, 4) boxes → (B, M, N) True where the point lies strictly inside the box."""
    lt = points.view(1, 1, -1, 2) - boxes[..., None, :2]
    rb = boxes[..., None, 2:] - points.view(1, 1, -1, 2)
    return torch.cat((lt, rb), -1).amin(-1) > eps


def widened_boxes_xyxy(boxes: torch.Tensor, min_side: float) -> torch.Tensor:
    """Boxes (…, 4) xyxy with every side shorter than min_side widened to min_side about the box centre."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = (boxes[..., 2:] - boxes[..., :2]).clamp(min=min_side) / 2
    return torch.cat((centre - half, centre + half), -1)


def paired_ciou(gt: torch.Tensor, pred: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """CIoU (clamped at 0) of the (B, M, N) candidate pairs only, zero elsewhere: gt (B, M, 4), pred (B, N, 4)."""
    b, m, n = pairs.nonzero(as_tuple=True)
    out = torch.zeros(pairs.shape, dtype=pred.dtype, device=pred.device)
    if len(b):
        out[b, m, n] = (1 - ciou_loss(gt[b, m], pred[b, n])).clamp(min=0)
    return out


class TaskAlignedAssigner:
    """Assign anchor points to gt boxes by top-k alignment among points inside each box.

    topk: positives per box; alpha, beta: exponents of the class score and the CIoU in the metric;
    min_side: boxes narrower than this (same units as the boxes) choose candidates as if this wide.
    A point claimed by several boxes keeps the one it overlaps most.
    """

    def __init__(self, nc: int, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, min_side: float = 0.0):
        self.nc, self.topk, self.alpha, self.beta, self.min_side = nc, topk, alpha, beta, min_side

    @torch.no_grad()
    def __call__(self, scores: torch.Tensor, boxes: torch.Tensor, points: torch.Tensor, gt_labels: torch.Tensor,
                 gt_boxes: torch.Tensor, gt_valid: torch.Tensor) -> Assignment:
        """scores (B, N, nc) probabilities; boxes (B, N, 4) xyxy; points (N, 2); gt_labels (B, M) long;
        gt_boxes (B, M, 4) xyxy in the same units as boxes and points; gt_valid (B, M) bool (padding False)."""
        bs, n = scores.shape[:2]
        device = scores.device
        if gt_boxes.shape[1] == 0:
            return Assignment(torch.zeros(bs, n, dtype=torch.bool, device=device), torch.zeros(bs, n, 4, device=device),
                              torch.zeros(bs, n, dtype=torch.long, device=device), torch.zeros_like(scores),
                              torch.zeros(bs, n, dtype=torch.long, device=device))
        candidates = points_inside_boxes_xyxy(points, widened_boxes_xyxy(gt_boxes, self.min_side))
        candidates &= gt_valid.unsqueeze(-1)  # (B, M, N)
        overlap = paired_ciou(gt_boxes, boxes, candidates)
        cls_score = scores.gather(2, gt_labels.clamp(min=0).unsqueeze(1).expand(-1, n, -1)).transpose(1, 2)
        align = cls_score.pow(self.alpha) * overlap.pow(self.beta) * candidates  # (B, M, N)

        k = min(self.topk, n)
        top_idx = align.topk(k, dim=-1).indices  # (B, M, k)
        in_topk = torch.zeros_like(candidates).scatter_(-1, top_idx, True)
        positive = in_topk & candidates & (align > 0)  # zero-metric points are no match, only padding of top-k

        claimed = positive.sum(1)  # (B, N): how many boxes chose each point
        if (claimed > 1).any():  # of the boxes that chose it, keep the one the point overlaps most
            best = torch.zeros_like(positive).scatter_(1, (overlap * positive).argmax(1, keepdim=True), True)
            positive = torch.where((claimed > 1).unsqueeze(1), best, positive)
        fg = positive.any(1)
        gt_index = positive.float().argmax(1)  # (B, N)

        labels = gt_labels.gather(1, gt_index).clamp(min=0)
        target_boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))
        align = align * positive
        # rescale each box's metrics so its best point's target equals its best CIoU among positives
        norm = (align * (overlap * positive).amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + EPS)).amax(1)
        target_scores = torch.zeros_like(scores)
        target_scores.scatter_(2, labels.unsqueeze(-1), 1.0)
        target_scores = target_scores * (norm * fg).unsqueeze(-1)
        return Assignment(fg, target_boxes, labels, target_scores, gt_index)
