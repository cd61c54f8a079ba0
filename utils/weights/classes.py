"""A pretrained model cut down to some of its classes, by name.

A user whose classes are all among a pretrained file's (persons and cars in COCO's 80) already holds a teacher that
knows them: its head's outputs for those classes are exactly what a fine-tuned teacher would be trained toward, and
fine-tuning on a few hundred images first loses much of what COCO taught (a fresh head, a new warmup). Keeping only
those classes' rows of the head's class outputs gives that teacher in a second, with nothing trained.
"""
from __future__ import annotations

import torch

from models.yolo import DetectionModel
from utils.weights.checkpoint import model_from_checkpoint


def known_class_indices(known: list[str], wanted: list[str]) -> list[int] | None:
    """The index in `known` of each of `wanted`, in `wanted`'s order; None unless every one is known."""
    if not wanted or not set(wanted) <= set(known):
        return None
    return [known.index(name) for name in wanted]


def head_rows(anchor_free: bool, na: int, nc: int, keep: list[int]) -> list[int]:
    """Output rows of a head conv that stay: an anchor head's rows are per anchor (4 box, objectness, nc classes);
    an anchor-free head's class conv has one row per class."""
    if anchor_free:
        return keep
    return [a * (5 + nc) + r for a in range(na) for r in [*range(5), *(5 + k for k in keep)]]


def class_subset(ckpt: dict, wanted: list[str], path: str = "checkpoint") -> DetectionModel:
    """The model of `ckpt` with `wanted` classes only (each one of its names), their outputs unchanged."""
    source = model_from_checkpoint(ckpt, path)
    keep = known_class_indices(list(source.names), wanted)
    if keep is None:
        raise ValueError(f"{path}: does not know every class of {wanted}")
    cfg = {**source.yaml, "nc": len(wanted)}
    target = DetectionModel(cfg, ch=int(cfg.get("ch", 3)), nc=len(wanted))
    head = source.model[-1]
    rows = head_rows(source.anchor_free, getattr(head, "na", 1), head.nc, keep)
    theirs = source.state_dict()
    state = {}
    for key, ours in target.state_dict().items():
        tensor = theirs[key]
        if tensor.shape != ours.shape:  # a class output conv of the head: its rows for the kept classes
            tensor = tensor[torch.tensor(rows)]
        state[key] = tensor.clone()
    target.load_state_dict(state, strict=True)
    target.names = list(wanted)
    return target.float()
