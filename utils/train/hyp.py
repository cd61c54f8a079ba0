"""Hyperparameter files (YOLOv5's keys): loaded as plain dicts and checked, so a typo is an error
instead of a silently ignored setting."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np

from deploy.errors import UserInputError
from utils.core.yaml_io import read_yaml_mapping

REQUIRED_HYP_KEYS = ("lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum",
                     "warmup_bias_lr", "box", "cls", "cls_pw", "obj", "obj_pw", "anchor_t")
OPTIONAL_HYP_KEYS = ("iou_t", "fl_gamma", "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear",
                     "perspective", "flipud", "fliplr", "mosaic", "mixup", "copy_paste", "anchors",
                     "dfl", "tal_topk",  # anchor-free head (hyp.scratch-af.yaml)
                     "nbs",  # nominal batch size (default 64), as ultralytics names it
                     "kd_box", "kd_cls", "kd_feat", "kd_t")  # distillation gains and temperature (train.py --teacher)


def load_hyp(path: str | Path | dict) -> dict[str, Any]:
    """A hyperparameter YAML as a plain dict, checked for yolov5's required numeric keys."""
    if isinstance(path, dict):
        hyp, source = dict(path), "hyp"
    else:
        source = str(path)
        if not Path(path).is_file():
            raise UserInputError(f"--hyp {path}: hyperparameter file not found")
        hyp = read_yaml_mapping(Path(path), f"--hyp {path}", "expected a mapping of hyperparameter names to numbers")
    missing = [k for k in REQUIRED_HYP_KEYS if k not in hyp]
    if missing:
        raise UserInputError(f"--hyp {source}: missing key(s) {', '.join(missing)}")
    known = REQUIRED_HYP_KEYS + OPTIONAL_HYP_KEYS
    unknown = [str(k) for k in hyp if k not in known]
    if unknown:  # a typo would otherwise silently train with the default value
        raise UserInputError(f"--hyp {source}: unknown key(s) {', '.join(with_suggestion(k, known) for k in unknown)}")
    bad = [k for k, v in hyp.items() if k != "anchors" and (not isinstance(v, (int, float)) or isinstance(v, bool))]
    if bad:
        raise UserInputError(f"--hyp {source}: values must be numbers, not for {', '.join(bad)}")
    return hyp


def with_suggestion(key: str, known: tuple[str, ...]) -> str:
    """'lr_0 (did you mean lr0?)' when a known key is close, else the key alone."""
    close = difflib.get_close_matches(key, known, n=1)
    return f"{key} (did you mean {close[0]}?)" if close else key


# mutation scale, lower limit, upper limit (yolov5's search space for the keys of hyp.scratch-*.yaml)
EVOLVE_SPACE = {
    "lr0": (1, 1e-5, 1e-1), "lrf": (1, 0.01, 1.0), "momentum": (0.3, 0.6, 0.98), "weight_decay": (1, 0.0, 0.001),
    "warmup_epochs": (1, 0.0, 5.0), "warmup_momentum": (1, 0.0, 0.95), "warmup_bias_lr": (1, 0.0, 0.2),
    "box": (1, 0.02, 0.2), "cls": (1, 0.2, 4.0), "cls_pw": (1, 0.5, 2.0), "obj": (1, 0.2, 4.0),
    "obj_pw": (1, 0.5, 2.0), "iou_t": (0, 0.1, 0.7), "anchor_t": (1, 2.0, 8.0), "fl_gamma": (0, 0.0, 2.0),
    "hsv_h": (1, 0.0, 0.1), "hsv_s": (1, 0.0, 0.9), "hsv_v": (1, 0.0, 0.9), "degrees": (1, 0.0, 45.0),
    "translate": (1, 0.0, 0.9), "scale": (1, 0.0, 0.9), "shear": (1, 0.0, 10.0), "perspective": (0, 0.0, 0.001),
    "flipud": (1, 0.0, 1.0), "fliplr": (0, 0.0, 1.0), "mosaic": (1, 0.0, 1.0), "mixup": (1, 0.0, 1.0),
    "copy_paste": (1, 0.0, 1.0),
}


def mutate_hyp(base: dict, rng: np.random.Generator, prob: float = 0.8, sigma: float = 0.2) -> dict:
    """Multiply each evolvable hyp by a random factor (~N(1, sigma)), then clip to its limits."""
    keys = [k for k in EVOLVE_SPACE if k in base]
    gains = np.array([EVOLVE_SPACE[k][0] for k in keys])
    factors = np.ones(len(keys))
    while len(keys) and (factors == 1).all():  # mutate until something changes
        factors = ((rng.random(len(keys)) < prob) * rng.standard_normal(len(keys)) * rng.random() * gains * sigma
                   + 1).clip(0.3, 3.0)
    child = dict(base)
    for k, f in zip(keys, factors):
        _, lo, hi = EVOLVE_SPACE[k]
        child[k] = round(float(min(max(base[k] * f, lo), hi)), 5)
    return child
