"""What an exported file says about itself: class names, stride, input size, layout, whether NMS is inside.

export.py writes these keys (all values strings) into ONNX `metadata_props` and, for TFLite, into a sidecar
JSON next to the model (`best.json` or `best.tflite.json`, or `metadata.json` in a zip appended to the
.tflite). Reading them here, instead of asking the user, is what lets one file carry everything a device
needs. int8 scale / zero point are not copied here: they live in the .tflite tensors themselves.
"""
from __future__ import annotations

import ast
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserInputError

REQUIRED_KEYS = ("names", "stride", "imgsz")
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class ModelInfo:
    """Decoded metadata. `imgsz` is (height, width); `layout` is None when the file did not say."""

    names: tuple[str, ...]
    stride: int
    imgsz: tuple[int, int]
    nms: bool = False
    layout: str | None = None
    precision: str = "fp32"


def _json_or_literal(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return ast.literal_eval(value)  # yolov5-style str(dict): "{0: 'person', ...}"


def _names(value: Any) -> tuple[str, ...]:
    value = _json_or_literal(value)
    if isinstance(value, dict):
        return tuple(str(value[k]) for k in sorted(value, key=int))
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("names must be a non-empty list")
    return tuple(str(v) for v in value)


def _imgsz(value: Any) -> tuple[int, int]:
    value = _json_or_literal(value)
    size = [value, value] if isinstance(value, (int, float)) else list(value)
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise ValueError(f"imgsz must be [height, width], got {value}")
    return int(size[0]), int(size[1])


def parse_metadata(raw: dict[str, Any], model: Path, where: str) -> ModelInfo:
    """Check and decode the metadata dict of `model`; `where` says where it was looked for (for the message)."""
    missing = [key for key in REQUIRED_KEYS if raw.get(key) in (None, "")]
    if missing:
        raise UserInputError(f"--model {model}: missing PConv-YOLO metadata {', '.join(missing)} in {where} "
                          f"(re-export with export.py, which writes {', '.join(REQUIRED_KEYS)})")
    try:
        layout = raw.get("layout")
        layout = str(layout).upper() if layout else None
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout}")
        return ModelInfo(
            names=_names(raw["names"]),
            stride=int(float(raw["stride"])),
            imgsz=_imgsz(raw["imgsz"]),
            nms=bool(_json_or_literal(raw["nms"])) if raw.get("nms") not in (None, "") else False,
            layout=layout,
            precision=str(raw.get("precision") or "fp32"),
        )
    except (ValueError, SyntaxError, TypeError, KeyError) as e:
        raise UserInputError(f"--model {model}: unreadable metadata in {where} ({e})") from None


def tflite_sidecars(model: Path) -> tuple[Path, Path]:
    """The two names export.py's sidecar may have: best.json, best.tflite.json."""
    return model.with_suffix(".json"), model.with_name(model.name + ".json")


def read_tflite_metadata(model: Path) -> ModelInfo:
    """Metadata of a .tflite: the sidecar JSON, else metadata.json inside a zip appended to the file."""
    for sidecar in tflite_sidecars(model):
        if sidecar.is_file():
            try:
                raw = json.loads(sidecar.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise UserInputError(f"--model {model}: metadata file {sidecar} is not JSON ({e})") from None
            if not isinstance(raw, dict):
                raise UserInputError(f"--model {model}: metadata file {sidecar} is not a JSON object")
            return parse_metadata(raw, model, str(sidecar))
    if zipfile.is_zipfile(model):
        with zipfile.ZipFile(model) as archive:
            if "metadata.json" in archive.namelist():
                return parse_metadata(json.loads(archive.read("metadata.json")), model, "its embedded metadata.json")
    first, second = tflite_sidecars(model)
    return parse_metadata({}, model, f"{first.name} / {second.name} (no such file beside the model)")
