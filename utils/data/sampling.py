"""`--image-weights`: draw each epoch's training images by how much their classes still need learning.

YOLOv5's rule: a class weighs its inverse frequency in the training labels times (1 - its last val mAP)²,
an image the sum over its labels, and an epoch draws as many images as the set holds, with replacement.
The sampler lives in the main process, so persistent loader workers see new weights without a restart;
under DDP each rank takes its share of one common draw.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def class_frequency_weights(labels: Sequence[np.ndarray], nc: int) -> np.ndarray:
    """(nc,) weights ∝ 1 / label count, summing to 1; a class with no labels counts as one label."""
    classes = np.concatenate([lb[:, 0] for lb in labels]).astype(int) if len(labels) else np.zeros(0, int)
    counts = np.bincount(classes[(classes >= 0) & (classes < nc)], minlength=nc).astype(np.float64)
    weights = 1.0 / np.maximum(counts, 1.0)
    return weights / weights.sum()


def per_image_weights(labels: Sequence[np.ndarray], class_weights: np.ndarray) -> np.ndarray:
    """(n_images,) sum of class weights over each image's labels; background images get the smallest
    positive weight so they are still drawn now and then."""
    nc = len(class_weights)
    out = np.array([class_weights[lb[:, 0].astype(int).clip(0, nc - 1)].sum() for lb in labels], dtype=np.float64)
    floor = out[out > 0].min() if (out > 0).any() else 1.0
    return np.where(out > 0, out, floor)


def epoch_class_weights(frequency_weights: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """YOLOv5's per-epoch class weights: frequency weight x (1 - per-class mAP50-95)² / nc."""
    return frequency_weights * (1.0 - np.asarray(maps, dtype=np.float64)) ** 2 / len(frequency_weights)


class ImageWeightSampler(Sampler[int]):
    """len(weights) indices per epoch, drawn with replacement ∝ weights, from a seeded generator.

    Under DDP every rank draws the same epoch (same seed, same weights — train.py broadcasts the mAPs they
    come from) and keeps every world_size-th index from its rank on, so the ranks share one weighted epoch
    as DistributedSampler shares a shuffled one. `set_epoch` reseeds, so a resumed run draws as an unbroken
    one would; without it each pass draws anew from the running generator.
    """

    def __init__(self, weights: np.ndarray, seed: int = 0, rank: int = -1, world_size: int = 1):
        if world_size < 1 or not -1 <= rank < world_size:
            raise ValueError(f"rank {rank} does not fit world size {world_size}")
        self.seed, self.rank, self.world_size = seed, max(rank, 0), world_size
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self.set_weights(weights)

    def set_weights(self, weights: np.ndarray) -> None:
        weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if weights.ndim != 1 or not len(weights) or not torch.isfinite(weights).all() or (weights < 0).any() \
                or weights.sum() <= 0:
            raise ValueError("image weights must be a non-empty 1-D array of finite, non-negative numbers, not all 0")
        self.weights = weights

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)

    def __len__(self) -> int:
        return -(-len(self.weights) // self.world_size)

    def __iter__(self) -> Iterator[int]:
        drawn = torch.multinomial(self.weights, len(self.weights), True, generator=self.generator).tolist()
        total = len(self) * self.world_size
        drawn += drawn[: total - len(drawn)]  # every rank gets as many indices, as DistributedSampler pads
        yield from drawn[self.rank:total:self.world_size]
