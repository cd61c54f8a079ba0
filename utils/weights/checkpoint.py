"""Checkpoints as plain dicts of tensors and Python values.

Why plain values: `torch.load(path, weights_only=True)` refuses pickled classes, so a checkpoint that holds
only state dicts, numbers, strings, lists and dicts loads safely anywhere, with no import of our code.
Why atomic: training may be killed at any moment (SIGKILL, OOM, pre-emption); the file on disk is either
the previous checkpoint or the new one, never a half-written one.
load_model rebuilds a ready DetectionModel from one; files written by ultralytics or YOLOv5 are read through
utils.weights.foreign and come back as our checkpoint dict.
"""
from __future__ import annotations

import argparse
import datetime
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from deploy.errors import UserInputError
from utils.core.files import atomic_file
from models.yolo import DetectionModel
from utils.weights.foreign import checkpoint_from_foreign, is_foreign_checkpoint

CHECKPOINT_VERSION = "1"
DEFAULT_IMGSZ = 640  # the inference size when neither --imgsz nor the checkpoint says otherwise (yolov5's)
REQUIRED_KEYS = ("model_yaml", "model")
SNIFF_BYTES = 512  # enough of a file's start to tell text, zip and pickle apart
ZIP_MAGIC, PICKLE_PROTO = b"PK\x03\x04", 0x80  # torch.save's zip format; its legacy format, a pickle


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
    """Write `ckpt` to `path` whole or not at all, synced to disk (utils.core.files.atomic_file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, durable=True, single_writer=True) as f:
        torch.save(ckpt, f)
    return path


def _not_pytorch(head: bytes) -> str | None:
    """What a file whose first bytes cannot start any PyTorch save is (empty, a text file ...), else None.

    torch.load's own errors for these are noise ("invalid load key", "101"); naming the content says what happened.
    """
    if not head:
        return "the file is empty (0 bytes)"
    if head.startswith(ZIP_MAGIC) or head[0] == PICKLE_PROTO:  # torch.save's zip, or its legacy pickle
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:  # text, unless the bad byte is a character cut at the end of `head`
        text = head[:e.start].decode("utf-8") if e.start > len(head) - 4 else None
    if text is None or "\0" in text:
        return "binary data that is neither a zip nor a pickle, the two formats torch.save writes"
    stripped = text.lstrip()
    if stripped.startswith("version https://git-lfs"):
        return "a Git LFS pointer, not the file itself (fetch it with `git lfs pull`)"
    if stripped[:15].lower().startswith(("<!doctype html", "<html")):
        return "an HTML page (a failed download?), not a PyTorch checkpoint"
    first = stripped.splitlines()[0][:40] if stripped else ""
    return f"a text file{f' (starts {first!r})' if first else ''}, not a PyTorch checkpoint"


def _unreadable_reason(path: Path, head: bytes, error: Exception) -> str:
    """torch.load's failure in our words: pickled classes, a truncated file, a zip of something else."""
    message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # torch colours parts of its weights_only text
    pickled = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if pickled:
        return (f"it pickles Python classes ({pickled.group(1)}), which PConv-YOLO never unpickles (that runs code "
                f"from the file); to convert, load it in its own project and save plain values: torch.save("
                f"{{'model_yaml': <model YAML dict>, 'model': model.state_dict()}}, 'new.pt')")
    if head.startswith(ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return "a truncated or damaged zip file (an interrupted save, copy or download?)"
        if not any(n.endswith("data.pkl") for n in zipfile.ZipFile(path).namelist()):
            return "a zip archive without data.pkl, not a PyTorch checkpoint"
    if isinstance(error, EOFError) or "truncated" in message:
        return "the file ends too early (an interrupted save, copy or download?)"
    if isinstance(error, pickle.UnpicklingError) and head[0] == PICKLE_PROTO:
        return "a Python pickle that is not a PyTorch checkpoint"
    first = next((line.strip() for line in message.splitlines() if line.strip()), type(error).__name__)
    return f"PyTorch cannot read it ({first[:160]})"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with weights_only=True; an ultralytics or YOLOv5 one as the checkpoint of ours it maps onto
    (utils.weights.foreign); a missing, other or incomplete file is a UserInputError."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: checkpoint file not found")
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    foreign = _not_pytorch(head)
    if foreign:
        raise UserInputError(f"{path}: not a PConv-YOLO checkpoint: {foreign}")
    try:
        with warnings.catch_warnings():  # a plain pickle.dump file would first warn about its protocol
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign/corrupt files
        if is_foreign_checkpoint(path):  # an ultralytics/YOLOv5 model: read without its code, mapped onto ours
            return checkpoint_from_foreign(path)
        raise UserInputError(f"{path}: not a PConv-YOLO checkpoint: {_unreadable_reason(path, head, e)}") from None
    if not isinstance(ckpt, dict):
        raise UserInputError(f"{path}: not a PConv-YOLO checkpoint (holds {type(ckpt).__name__}, not a dict)")
    missing = [k for k in REQUIRED_KEYS if ckpt.get(k) is None]
    if missing:
        raise UserInputError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt


def checkpoint_imgsz(ckpt: dict[str, Any]) -> int | None:
    """The imgsz the checkpoint's run trained at (its boxes are best there); None when it does not say."""
    size = (ckpt.get("opt") or {}).get("imgsz")
    if size is None:
        return None
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> DetectionModel:
    """Rebuild the DetectionModel of `ckpt` (EMA weights when present) in float32, train mode, on CPU."""
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


def load_model(path: str | Path, device: str | torch.device = "cpu", fuse: bool = False) -> DetectionModel:
    """Load a checkpoint (utils.weights.checkpoint format) into a ready-for-inference DetectionModel (eval mode,
    optional Conv+BN fusion): what the .pt backend, export, the profiler and torch.hub run."""
    model = model_from_checkpoint(load_checkpoint(path), path)
    if fuse:
        model = model.fuse()
    return model.to(device).eval()
