"""Hyperparameter files (YOLOv5's keys): loaded as plain dicts and checked, so a typo is an error
instead of a silently ignored setting."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any


from utils.errors import UserInputError
from utils.yaml_io import read_yaml_mapping

REQUIRED_HYP_KEYS = ("lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum",
                     "warmup_bias_lr", "box", "cls", "cls_pw", "obj", "obj_pw", "anchor_t")
OPTIONAL_HYP_KEYS = ("iou_t", "fl_gamma", "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear",
                     "perspective", "flipud", "fliplr", "mosaic", "mixup", "copy_paste", "anchors",
                     "dfl", "tal_topk",  # anchor-free head (hyp.scratch-af.yaml)
                     "nbs",  # nominal batch size (default 64), as ultralytics names it
                     "kd_box", "kd_cls", "kd_t")  # distillation gains and temperature (train.py --teacher)


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
