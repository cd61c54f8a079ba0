"""Checkpoints as plain dicts of tensors and Python values.

Why plain values: `torch.load(path, weights_only=True)` refuses pickled classes, so a checkpoint that holds
only state dicts, numbers, strings, lists and dicts loads safely anywhere, with no import of our code.
Why atomic: training may be killed at any moment (SIGKILL, OOM, pre-emption); the file on disk is either
the previous checkpoint or the new one, never a half-written one.
"""
from __future__ import annotations

import argparse
import datetime
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from utils.errors import UserInputError

CHECKPOINT_VERSION = "1"
DEFAULT_IMGSZ = 640  # the inference size when neither --imgsz nor the checkpoint says otherwise (yolov5's)
REQUIRED_KEYS = ("model_yaml", "model")


def plain_value(value: Any) -> Any:
    """Convert a value (Path, Namespace, tuple, numpy scalar ...) into something weights_only can load."""
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return str(value)  # Path, torch.device, ...


def float_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict on CPU with floating tensors in float32 (AMP or .half() leave fp16 behind)."""
    return {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone()
        for k, v in model.state_dict().items()
    }


def build_checkpoint(
    model: nn.Module,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: Any = None,
    epoch: int = -1,
    best_fitness: float = 0.0,
    hyp: dict | None = None,
    opt: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble the checkpoint dict of ARCHITECTURE.md from live training objects.

    `model` may be wrapped in DDP; the bare module's `yaml` and `names` are recorded. `epoch` is the last
    finished epoch, or -1 for a finished run (so --resume can tell the two apart).
    """
    bare = model.module if hasattr(model, "module") else model
    names = list(getattr(bare, "names", []) or [])
    ckpt = {
        "model_yaml": plain_value(getattr(bare, "yaml", None)),
        "model": float_state_dict(bare),
        "ema": float_state_dict(ema) if ema is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "best_fitness": float(best_fitness),
        "names": [str(n) for n in names],
        "nc": len(names),
        "hyp": plain_value(hyp or {}),
        "opt": plain_value(opt or {}),
        "date": datetime.datetime.now().isoformat(),
        "version": CHECKPOINT_VERSION,
    }
    ckpt.update({k: plain_value(v) for k, v in extra.items()})
    return ckpt


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """Write `ckpt` to `path` atomically: temp file in the same folder, fsync, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left behind by a process killed mid-save
        stale.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY) if hasattr(os, "O_DIRECTORY") else None
    if dir_fd is not None:  # make the rename itself durable (POSIX)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with weights_only=True; a missing, foreign or incomplete file is a UserInputError."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign/corrupt files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(f"{path}: not a readable PConv-YOLO checkpoint ({reason[:200]})") from None
    if not isinstance(ckpt, dict):
        raise UserInputError(f"{path}: not a PConv-YOLO checkpoint (holds {type(ckpt).__name__}, not a dict)")
    missing = [k for k in REQUIRED_KEYS if ckpt.get(k) is None]
    if missing:
        raise UserInputError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt


def trained_imgsz(path: str | Path, fallback: int = DEFAULT_IMGSZ) -> int:
    """The --imgsz a .pt checkpoint was trained at, the size its boxes are best at; `fallback` for any other
    file (exported files carry their own size) or a checkpoint without options. Problems with the file
    itself are left to the real load, which reports them."""
    path = Path(path)
    if path.suffix.lower() != ".pt" or not path.is_file():
        return fallback
    try:
        size = (load_checkpoint(path).get("opt") or {}).get("imgsz", fallback)
    except UserInputError:
        return fallback
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> nn.Module:
    """Rebuild the DetectionModel of `ckpt` (EMA weights when present) in float32, train mode, on CPU."""
    from models.yolo import DetectionModel  # imported here: models import utils, not the other way round

    cfg = dict(ckpt["model_yaml"])
    model = DetectionModel(cfg, ch=int(cfg.get("ch", 3)), nc=int(cfg.get("nc", ckpt.get("nc") or 80)))
    state = ckpt.get("ema") or ckpt["model"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserInputError(f"{path}: weights do not match its model_yaml ({str(e).splitlines()[0]})") from None
    names = ckpt.get("names") or [str(i) for i in range(int(cfg.get("nc", 80)))]
    model.names = list(names)
    return model.float()


def load_model(path: str | Path, device: str | torch.device = "cpu", fuse: bool = False) -> nn.Module:
    """Load a checkpoint into a ready-for-inference DetectionModel (eval mode, optional Conv+BN fusion)."""
    model = model_from_checkpoint(load_checkpoint(path), path)
    if fuse and hasattr(model, "fuse"):
        model = model.fuse()
    return model.to(device).eval()
