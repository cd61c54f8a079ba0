"""Optimizer, LR schedule, warmup and layer freezing with YOLOv5's semantics."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from deploy.errors import UserInputError
from utils.core.log import LOGGER

NOMINAL_BATCH = 64  # default of the hyp key nbs: gradients are accumulated up to this batch before each step


def nominal_batch(hyp: dict) -> int:
    """The hyp's nbs (ultralytics' key), else yolov5's 64. Small datasets learn faster with a smaller one:
    128 images at nbs 64 give only 2 optimizer steps per epoch."""
    return int(hyp.get("nbs", NOMINAL_BATCH))


def freeze_layers(model: nn.Module, freeze: list[int]) -> list[str]:
    """--freeze N freezes layers 0..N-1; several numbers freeze those layers. Returns frozen names.

    Numbers outside the model's layers, or a freeze that leaves no parameter to train (backward would
    fail on the first batch), are a UserInputError.
    """
    n = len(model.model)
    flag = f"--freeze {' '.join(map(str, freeze))}"
    if any(x < 0 for x in freeze):
        raise UserInputError(f"{flag}: layer numbers and counts must be 0 or more")
    if len(freeze) > 1 and max(freeze) >= n:
        raise UserInputError(f"{flag}: no layer {max(freeze)}; the model has {n} layers, numbered 0 to {n - 1}")
    layers = range(freeze[0]) if len(freeze) == 1 else freeze
    prefixes = tuple(f"model.{x}." for x in layers)
    frozen = []
    for name, p in model.named_parameters():
        p.requires_grad = True
        if prefixes and name.startswith(prefixes):
            p.requires_grad = False
            frozen.append(name)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserInputError(f"{flag}: would freeze all {n} layers of the model, leaving nothing to train; "
                             f"freeze at most the first {n - 1} (--freeze {n - 1}: all but the Detect head)")
    if frozen:
        LOGGER.info(f"Freezing {len(frozen)} parameter tensors in layers {list(layers)}")
    return frozen


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float, decay: float,
                    extra: Sequence[nn.Module] = ()) -> torch.optim.Optimizer:
    """Three groups as YOLOv5: [0] biases (no decay), [1] conv/linear weights (decay), [2] norm weights (no decay).
    `extra` modules (distillation adapters) train alongside the model, grouped the same way."""
    biases, weights, norm_weights = [], [], []
    norm_types = tuple(v for k, v in nn.__dict__.items() if "Norm" in k and isinstance(v, type))
    for module in (m for part in (model, *extra) for m in part.modules()):
        for p_name, p in module.named_parameters(recurse=False):
            if p_name == "bias":
                biases.append(p)
            elif p_name == "weight" and isinstance(module, norm_types):
                norm_weights.append(p)
            else:
                weights.append(p)
    if name == "Adam":
        optimizer = torch.optim.Adam(biases, lr=lr, betas=(momentum, 0.999))
    elif name == "AdamW":
        optimizer = torch.optim.AdamW(biases, lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    else:
        optimizer = torch.optim.SGD(biases, lr=lr, momentum=momentum, nesterov=True)
    optimizer.add_param_group({"params": weights, "weight_decay": decay})
    optimizer.add_param_group({"params": norm_weights, "weight_decay": 0.0})
    LOGGER.info(f"optimizer: {name}(lr={lr}) with parameter groups {len(norm_weights)} weight(decay=0.0), "
                f"{len(weights)} weight(decay={decay}), {len(biases)} bias")
    return optimizer


def lr_lambda(epochs: int, lrf: float, cosine: bool) -> Callable[[float], float]:
    """LR multiplier per epoch: 1 → lrf, linearly or along half a cosine (yolov5's one_cycle)."""
    if cosine:
        return lambda x: ((1 - math.cos(x * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda x: (1 - x / epochs) * (1.0 - lrf) + lrf


def warmup(optimizer: torch.optim.Optimizer, hyp: dict, ni: int, nw: int, lr_factor: float, batch_size: int) -> int:
    """Iteration ni of nw warmup iterations (yolov5): weight lrs rise from 0 and the bias lr falls from
    warmup_bias_lr to the scheduled lr, momentum rises from warmup_momentum, and the number of batches
    accumulated per optimizer step grows from 1 to nbs/batch (returned)."""
    xi = [0, nw]
    for j, group in enumerate(optimizer.param_groups):
        start_lr = hyp["warmup_bias_lr"] if j == 0 else 0.0
        group["lr"] = float(np.interp(ni, xi, [start_lr, group["initial_lr"] * lr_factor]))
        if "momentum" in group:
            group["momentum"] = float(np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]]))
    return max(1, int(np.interp(ni, xi, [1, nominal_batch(hyp) / batch_size]).round()))
