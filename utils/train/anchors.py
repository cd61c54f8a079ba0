"""Autoanchor: check that the model's anchors fit the dataset's boxes, and refit them when they do not.

A box can only be learned by an anchor whose width/height ratio to it is within `anchor_t` (see
utils/train/loss.py). Best possible recall (BPR) is the share of labelled boxes that at least one anchor can
match; below 0.98 the anchors are re-fitted by k-means on the label sizes, then refined by a genetic
search on the same fitness YOLOv5 uses. New anchors go into `Detect.anchors` (grid units, smallest
anchors on the smallest stride), so they are saved with every checkpoint.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from models.heads import Detect
from models.yolo import detection_head
from utils.core.log import LOGGER

BPR_THRESHOLD = 0.98
MIN_BOX_PX = 2.0  # boxes smaller than this in both sides are too small to fit anchors to


def label_wh(labels: list[np.ndarray], shapes: np.ndarray, imgsz: int, rng: np.random.Generator) -> np.ndarray:
    """Label widths/heights in pixels at training size, (n, 2), with ±10% random scale like augmentation.

    labels: per image (n, 5) [cls, cx, cy, w, h] normalised; shapes: per image (w, h) original size.
    """
    shapes = np.asarray(shapes, dtype=np.float64).reshape(-1, 2)
    sized = imgsz * shapes / shapes.max(1, keepdims=True)
    scale = rng.uniform(0.9, 1.1, size=(len(sized), 1))
    parts = [np.asarray(lb, dtype=np.float64).reshape(-1, 5)[:, 3:5] * s for s, lb in zip(sized * scale, labels)]
    return np.concatenate(parts, 0) if parts else np.zeros((0, 2))


def anchor_metrics(anchors_px: torch.Tensor, wh: torch.Tensor, thr: float) -> tuple[float, float]:
    """(best possible recall, mean anchors per box above threshold) for anchors (k, 2) and boxes (n, 2)."""
    ratio = wh[:, None] / anchors_px[None]
    worst_side = torch.min(ratio, 1 / ratio).min(2)[0]  # (n, k)
    best = worst_side.max(1)[0]
    return (best > 1 / thr).float().mean().item(), (worst_side > 1 / thr).float().sum(1).mean().item()


def anchor_fitness(anchors_px: np.ndarray, wh: torch.Tensor, thr: float) -> float:
    """YOLOv5's anchor fitness: mean best match ratio over boxes, counting only those above 1/thr."""
    ratio = wh[:, None] / torch.tensor(anchors_px, dtype=torch.float32)[None]
    best = torch.min(ratio, 1 / ratio).min(2)[0].max(1)[0]
    return (best * (best > 1 / thr).float()).mean().item()


def kmeans_anchors(wh: np.ndarray, n: int, thr: float, gen: int = 1000, seed: int = 0) -> np.ndarray:
    """Fit n anchors (pixels, sorted by area) to box sizes: whitened k-means, then genetic refinement."""
    from scipy.cluster.vq import kmeans  # scipy arrives with ultralytics; imported only when refitting

    rng = np.random.default_rng(seed)
    wh = wh[(wh >= MIN_BOX_PX).any(1)].astype(np.float64)
    if len(wh) < n:
        raise ValueError(f"only {len(wh)} usable boxes to fit {n} anchors")
    std = wh.std(0)
    std[std == 0] = 1.0
    k = kmeans(wh / std, n, iter=30, seed=rng)[0] * std
    if len(k) != n:  # k-means merged clusters: fall back to random sizes in the data's range
        k = np.sort(rng.random((n, 2)) * wh.max(), 0)
    wh_t = torch.tensor(wh, dtype=torch.float32)
    fitness = anchor_fitness(k, wh_t, thr)
    mutation_prob, sigma = 0.9, 0.1
    for _ in range(gen):
        factors = np.ones(k.shape)
        while (factors == 1).all():  # mutate until something changes
            mask = rng.random(k.shape) < mutation_prob
            factors = (mask * rng.random() * rng.standard_normal(k.shape) * sigma + 1).clip(0.3, 3.0)
        candidate = (k * factors).clip(min=MIN_BOX_PX)
        candidate_fitness = anchor_fitness(candidate, wh_t, thr)
        if candidate_fitness > fitness:
            fitness, k = candidate_fitness, candidate
    return k[np.argsort(k.prod(1))]


def check_anchors(model: nn.Module, labels: list[np.ndarray], shapes: np.ndarray, thr: float = 4.0,
                  imgsz: int = 640, seed: int = 0) -> bool:
    """Log BPR of the model's anchors on the labels; refit them in place if BPR < 0.98. True if changed."""
    head = detection_head(model, Detect)
    stride = model_strides(model, head).to(head.anchors.device).view(-1, 1, 1)
    rng = np.random.default_rng(seed)
    wh = torch.tensor(label_wh(labels, shapes, imgsz, rng), dtype=torch.float32)
    if len(wh) == 0:
        LOGGER.info("AutoAnchor: no labels, anchors left as they are")
        return False
    anchors_px = (head.anchors * stride).detach().cpu().view(-1, 2)
    bpr, aat = anchor_metrics(anchors_px, wh, thr)
    prefix = f"AutoAnchor: {aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall (BPR)"
    if bpr > BPR_THRESHOLD:
        LOGGER.info(f"{prefix}. Current anchors are a good fit to dataset")
        return False
    LOGGER.info(f"{prefix}. Anchors are a poor fit to dataset, attempting to improve...")
    n = head.anchors.numel() // 2
    try:
        new = kmeans_anchors(wh.numpy(), n, thr, seed=seed)
    except ValueError as e:
        LOGGER.info(f"AutoAnchor: cannot refit anchors ({e}); keeping the original ones")
        return False
    new_bpr, _ = anchor_metrics(torch.tensor(new, dtype=torch.float32), wh, thr)
    if new_bpr <= bpr:
        LOGGER.info(f"AutoAnchor: refit BPR {new_bpr:.3f} is no better; keeping the original anchors")
        return False
    with torch.no_grad():
        new_px = torch.tensor(new, dtype=head.anchors.dtype, device=head.anchors.device).view_as(head.anchors)
        order = stride.view(-1).argsort()  # anchors come sorted by area: smallest go to the smallest stride
        head.anchors[order] = new_px / stride[order]
    LOGGER.info(f"AutoAnchor: new anchors saved to model (BPR {new_bpr:.4f}); update the model YAML to reuse them")
    return True


def model_strides(model: nn.Module, head: nn.Module) -> torch.Tensor:
    """Strides per level (nl,) from the model (ARCHITECTURE: `model.stride`) or the head."""
    bare = model.module if hasattr(model, "module") else model
    stride = getattr(bare, "stride", None)
    if not isinstance(stride, torch.Tensor):
        stride = head.stride
    return stride.float()
