"""Task-aligned assignment (TOOD): which anchor points learn which ground-truth box, and how strongly.

Why: an anchor-free head has no anchor shapes to match against, so positives are chosen by how well the
head already does on each box — the alignment metric cls_score^alpha * IoU^beta — among the anchor points
whose centres lie inside the box. The top-k points per box become positives, and their class target is
the alignment rescaled so the best point of each box gets that box's best IoU (not a hard 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

EPS = 1e-9


@dataclass
class Assignment:
    """Per anchor point: fg (B, N) bool, boxes (B, N, 4) xyxy, labels (B, N) long, scores (B, N, nc)."""

    fg: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    gt_index: torch.Tensor


def pairwise_iou_xyxy(gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """IoU of every gt box with every predicted box of the same image: (B, M, 4), (B, N, 4) → (B, M, N)."""
    g, p = gt.unsqueeze(2), pred.unsqueeze(1)
    wh = (torch.minimum(g[..., 2:], p[..., 2:]) - torch.maximum(g[..., :2], p[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_g = (g[..., 2] - g[..., 0]) * (g[..., 3] - g[..., 1])
    area_p = (p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1])
    return inter / (area_g + area_p - inter + EPS)


def points_inside_boxes_xyxy(points: torch.Tensor, boxes: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(N, 2) points, (B, M, 4) boxes → (B, M, N) True where the point lies strictly inside the box."""
    lt = points.view(1, 1, -1, 2) - boxes[..., None, :2]
    rb = boxes[..., None, 2:] - points.view(1, 1, -1, 2)
    return torch.cat((lt, rb), -1).amin(-1) > eps


class TaskAlignedAssigner:
    """Assign anchor points to gt boxes by top-k alignment among points inside each box.

    topk: positives per box; alpha, beta: exponents of the class score and the IoU in the metric.
    A point claimed by several boxes keeps the one it overlaps most.
    """

    def __init__(self, nc: int, topk: int = 10, alpha: float = 0.5, beta: float = 6.0):
        self.nc, self.topk, self.alpha, self.beta = nc, topk, alpha, beta

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
        candidates = points_inside_boxes_xyxy(points, gt_boxes) & gt_valid.unsqueeze(-1)  # (B, M, N)
        iou = pairwise_iou_xyxy(gt_boxes, boxes).clamp(min=0) * candidates
        cls_score = scores.gather(2, gt_labels.clamp(min=0).unsqueeze(1).expand(-1, n, -1)).transpose(1, 2)
        align = cls_score.pow(self.alpha) * iou.pow(self.beta) * candidates  # (B, M, N)

        k = min(self.topk, n)
        top_idx = align.topk(k, dim=-1).indices  # (B, M, k)
        in_topk = torch.zeros_like(candidates).scatter_(-1, top_idx, True)
        positive = in_topk & candidates & (align > 0)  # zero-metric points are no match, only padding of top-k

        claimed = positive.sum(1)  # (B, N): how many boxes chose each point
        if (claimed > 1).any():  # of the boxes that chose it, keep the one the point overlaps most
            best = torch.zeros_like(positive).scatter_(1, (iou * positive).argmax(1, keepdim=True), True)
            positive = torch.where((claimed > 1).unsqueeze(1), best, positive)
        fg = positive.any(1)
        gt_index = positive.float().argmax(1)  # (B, N)

        labels = gt_labels.gather(1, gt_index).clamp(min=0)
        target_boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))
        align = align * positive
        # rescale each box's metrics so its best point's target equals its best IoU among positives
        norm = (align * (iou * positive).amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + EPS)).amax(1)
        target_scores = torch.zeros_like(scores)
        target_scores.scatter_(2, labels.unsqueeze(-1), 1.0)
        target_scores = target_scores * (norm * fg).unsqueeze(-1)
        return Assignment(fg, target_boxes, labels, target_scores, gt_index)
