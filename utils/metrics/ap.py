"""Detection metrics: prediction/label matching, COCO-style AP, confusion matrix.

AP is COCO's: the precision envelope (best precision at any recall ≥ r) read at 101 recall points
r = 0, 0.01, ..., 1 and averaged, so hand-built cases have exact answers. Two matching rules decide which
detections are true positives (`MATCHING_RULES`):
- "coco" (the default): pycocotools' evaluateImg rule, so val's mAP is the number pycocotools gives on the same
  detections. Per image and class only the 100 highest-scoring detections count (its maxDets=100); in descending
  score they each take the best-IoU ground truth still unmatched at that threshold (IoU ties: the later label).
  YOLO labels carry no crowd flag, so pycocotools' crowd/ignore branches never apply.
- "yolo": yolov5 / ultralytics (globally highest IoU first, every detection counts). A low-scoring box that
  overlaps a label better takes it from a high-scoring one, which makes the high-scoring box an FP: for weak
  models with many overlapping boxes this gives a much lower mAP than COCO's rule (see docs/val.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from utils.core.boxes import box_iou

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)  # mAP50-95
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's recall thresholds
CONF_GRID = np.linspace(0.0, 1.0, 1000)  # confidences at which P, R and F1 curves are read
MATCHING_RULES = ("coco", "yolo")  # val --matching; the first is the default
MATCHING_NOTES = {"coco": "COCO rule: by score, best-IoU free label, max 100 detections per image and class "
                          "(as pycocotools)",
                  "yolo": "yolov5/ultralytics rule: highest IoU first, all detections"}
COCO_MAX_DETS = 100  # pycocotools' maxDets for its headline AP


def _one_to_one(pairs: np.ndarray) -> np.ndarray:
    """From rows (label_idx, pred_idx, iou) keep the highest-IoU row per prediction, then per label."""
    if len(pairs) > 1:
        pairs = pairs[pairs[:, 2].argsort(kind="stable")[::-1]]
        pairs = pairs[np.unique(pairs[:, 1], return_index=True)[1]]
        pairs = pairs[pairs[:, 2].argsort(kind="stable")[::-1]]
        pairs = pairs[np.unique(pairs[:, 0], return_index=True)[1]]
    return pairs


def _match_coco(iou: np.ndarray, conf: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """pycocotools' greedy match; iou (m labels, n detections) is -1 across classes. Returns bool (n, t)."""
    correct = np.zeros((iou.shape[1], len(thresholds)), dtype=bool)
    taken = np.zeros((len(thresholds), iou.shape[0]), dtype=bool)  # label claimed, per threshold
    reach = iou.max(0) >= thresholds.min()  # detections that can match anything at all
    for d in np.argsort(-conf, kind="stable"):  # pycocotools sorts scores with a stable mergesort too
        if not reach[d]:
            continue
        free = (iou[:, d] >= thresholds[:, None]) & ~taken  # (t, m)
        hit = free.any(1)
        # best IoU among free labels; on a tie pycocotools keeps the later label, so search from the end
        best = iou.shape[0] - 1 - np.where(free, iou[:, d], -np.inf)[:, ::-1].argmax(1)
        taken[hit, best[hit]] = True
        correct[d, hit] = True
    return correct


def match_predictions(detections: torch.Tensor, labels: torch.Tensor,
                      iou_thresholds: torch.Tensor = IOU_THRESHOLDS, matching: str = "coco") -> torch.Tensor:
    """Which detections are true positives at each IoU threshold, by the `matching` rule (module docstring).

    detections (n, 6): x1 y1 x2 y2 conf cls; labels (m, 5): cls x1 y1 x2 y2 (same pixel frame).
    Returns bool (n, len(iou_thresholds)). A label is claimed by at most one detection of its class,
    so a crowd of duplicates yields one TP and the rest FPs. The maxDets cap is `score_image`'s job.
    """
    if matching not in MATCHING_RULES:
        raise ValueError(f"matching {matching!r}: expected one of {', '.join(MATCHING_RULES)}")
    correct = np.zeros((detections.shape[0], len(iou_thresholds)), dtype=bool)
    if detections.shape[0] and labels.shape[0]:
        iou = box_iou(labels[:, 1:], detections[:, :4])
        same_class = labels[:, 0:1] == detections[:, 5]
        thresholds = iou_thresholds.cpu().double().numpy() - 1e-6  # tolerance: IoU exactly at a threshold counts
        if matching == "coco":
            iou = torch.where(same_class, iou, -1.0).cpu().double().numpy()
            correct = _match_coco(iou, detections[:, 4].cpu().numpy(), thresholds)
        else:
            iou = (iou * same_class).cpu().numpy()
            for k, thr in enumerate(thresholds):
                li, di = np.nonzero(iou >= thr)
                if li.size:
                    pairs = _one_to_one(np.stack((li, di, iou[li, di]), 1))
                    correct[pairs[:, 1].astype(int), k] = True
    return torch.from_numpy(correct).to(detections.device)


def top_per_class(conf: torch.Tensor, cls: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask keeping the k highest-scoring detections of each class (ties: the earlier row)."""
    keep = torch.zeros(len(conf), dtype=torch.bool, device=conf.device)
    for c in cls.unique():
        rows = torch.nonzero(cls == c).flatten()
        if len(rows) > k:
            rows = rows[torch.sort(conf[rows], descending=True, stable=True).indices[:k]]
        keep[rows] = True
    return keep


def score_image(detections: torch.Tensor, labels: torch.Tensor, matching: str = "coco",
                iou_thresholds: torch.Tensor = IOU_THRESHOLDS) -> tuple[torch.Tensor, ...]:
    """What one image adds to ap_per_class: (tp (n, t), conf (n,), pred cls (n,), label cls (m,)).

    detections (n, 6) x1 y1 x2 y2 conf cls and labels (m, 5) cls x1 y1 x2 y2 in one pixel frame. Under "coco"
    only the COCO_MAX_DETS best detections per class are scored, as pycocotools' AP@[.5:.95] | maxDets=100.
    """
    if matching == "coco" and len(detections) > COCO_MAX_DETS:
        detections = detections[top_per_class(detections[:, 4], detections[:, 5], COCO_MAX_DETS)]
    tp = match_predictions(detections, labels, iou_thresholds, matching)
    return tp, detections[:, 4], detections[:, 5], labels[:, 0]


def coco_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """COCO 101-point AP from recall/precision listed in descending-confidence order."""
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    valid = idx < len(recall)
    return float(envelope[idx[valid]].sum() / len(RECALL_POINTS))


@dataclass
class APResult:
    """Per-class results (rows follow `classes`, the classes that have labels) and curves for plots."""

    classes: np.ndarray  # (c,) class ids with at least one label
    p: np.ndarray  # (c,) precision at the confidence of max mean F1
    r: np.ndarray  # (c,) recall there
    f1: np.ndarray  # (c,)
    ap: np.ndarray  # (c, 10) AP at IoU 0.50:0.05:0.95
    best_conf: float  # the confidence where mean F1 peaks
    p_curve: np.ndarray  # (c, 1000) precision against CONF_GRID, IoU 0.5
    r_curve: np.ndarray  # (c, 1000)
    f1_curve: np.ndarray  # (c, 1000)
    pr_curve: np.ndarray  # (c, 1000) precision envelope against recall = CONF_GRID, IoU 0.5

    @property
    def ap50(self) -> np.ndarray:
        return self.ap[:, 0]

    @property
    def ap50_95(self) -> np.ndarray:
        return self.ap.mean(1)

    @property
    def mp(self) -> float:
        return float(self.p.mean()) if len(self.p) else 0.0

    @property
    def mr(self) -> float:
        return float(self.r.mean()) if len(self.r) else 0.0

    @property
    def map50(self) -> float:
        return float(self.ap50.mean()) if len(self.ap) else 0.0

    @property
    def map(self) -> float:
        return float(self.ap50_95.mean()) if len(self.ap) else 0.0


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray) -> APResult:
    """AP per class at each IoU threshold, plus P/R/F1 at the confidence that maximises mean F1.

    tp (n, t) bool from match_predictions over the whole set, conf (n,), pred_cls (n,), target_cls (m,).
    Predictions of classes with no labels do not count, as in COCO.
    """
    tp, conf, pred_cls, target_cls = (np.asarray(a) for a in (tp, conf, pred_cls, target_cls))
    tp = tp[:, None] if tp.ndim == 1 else tp
    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes, n_labels = np.unique(target_cls, return_counts=True)
    c, t = len(classes), tp.shape[1]
    ap = np.zeros((c, t))
    p_curve, r_curve, pr_curve = np.zeros((c, 1000)), np.zeros((c, 1000)), np.zeros((c, 1000))
    for ci, (cls, n_l) in enumerate(zip(classes, n_labels)):
        mine = pred_cls == cls
        if not mine.any():
            continue
        tpc = tp[mine].cumsum(0)
        fpc = (1 - tp[mine]).cumsum(0)
        recall = tpc / n_l
        precision = tpc / (tpc + fpc)
        for k in range(t):
            ap[ci, k] = coco_ap(recall[:, k], precision[:, k])
        # curves against confidence (conf falls along the rows, so interpolate on -conf)
        r_curve[ci] = np.interp(-CONF_GRID, -conf[mine], recall[:, 0], left=0)
        p_curve[ci] = np.interp(-CONF_GRID, -conf[mine], precision[:, 0], left=1)
        envelope = np.maximum.accumulate(precision[::-1, 0])[::-1]
        idx = np.searchsorted(recall[:, 0], CONF_GRID, side="left")
        pr_curve[ci] = np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)
    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + 1e-16)
    best = int(f1_curve.mean(0).argmax()) if c else 0
    return APResult(classes=classes.astype(int), p=p_curve[:, best], r=r_curve[:, best], f1=f1_curve[:, best],
                    ap=ap, best_conf=float(CONF_GRID[best]), p_curve=p_curve, r_curve=r_curve,
                    f1_curve=f1_curve, pr_curve=pr_curve)


class ConfusionMatrix:
    """Counts (nc+1)×(nc+1): rows = predicted class, columns = true class; index nc is background.

    Row nc holds labels no detection found (FN); column nc holds detections matching no label (FP).
    Like yolov5 it only looks at detections above `conf` and matches at IoU > `iou_thres` regardless
    of class, so a box of the wrong class lands off the diagonal instead of in both FP and FN.
    """

    def __init__(self, nc: int, conf: float = 0.25, iou_thres: float = 0.45):
        self.nc, self.conf, self.iou_thres = nc, conf, iou_thres
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)

    def process_batch(self, detections: torch.Tensor | None, labels: torch.Tensor) -> None:
        """Add one image: detections (n, 6) x1 y1 x2 y2 conf cls (or None), labels (m, 5) cls x1 y1 x2 y2."""
        gt_classes = labels[:, 0].int().tolist()
        if detections is None or not len(detections):
            for gc in gt_classes:
                self.matrix[self.nc, gc] += 1
            return
        detections = detections[detections[:, 4] > self.conf]
        det_classes = detections[:, 5].int().tolist()
        pairs = np.zeros((0, 3))
        if len(gt_classes) and len(det_classes):
            iou = box_iou(labels[:, 1:], detections[:, :4]).cpu().numpy()
            li, di = np.nonzero(iou > self.iou_thres)
            if li.size:
                pairs = _one_to_one(np.stack((li, di, iou[li, di]), 1))
        matched_det = {int(d): int(g) for g, d, _ in pairs}
        matched_gt = {g: d for d, g in matched_det.items()}
        for g, gc in enumerate(gt_classes):
            row = det_classes[matched_gt[g]] if g in matched_gt else self.nc
            self.matrix[row, gc] += 1
        for d, dc in enumerate(det_classes):
            if d not in matched_det:
                self.matrix[dc, self.nc] += 1

    def tp_fp(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-class TP (diagonal) and FP (row sum minus diagonal), background excluded."""
        tp = self.matrix.diagonal()
        fp = self.matrix.sum(1) - tp
        return tp[:-1], fp[:-1]
