"""What an exported file says about itself: class names, stride, input size, layout, whether NMS is inside.

export.py writes these keys (`encode_metadata`, all values strings) into ONNX `metadata_props`, OpenVINO's rt_info
`model_info`, TorchScript's `config.txt` and, for TFLite, a sidecar JSON next to the model (`best.json` or
`best.tflite.json`) and `metadata.json` in a zip appended to the .tflite. Reading them here, instead of asking
the user, is what lets one file carry everything a device needs; the torch side decodes them here too, so old
files (yolov5's str(dict) names, JSON text inside JSON) read the same everywhere. int8 scale / zero point are
not copied here: they live in the .tflite tensors themselves.
"""
from __future__ import annotations

import ast
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import MODEL_FILE, UserInputError

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


def encode_metadata(names: list[str], stride: int, imgsz: tuple[int, int] | list[int]) -> dict[str, str]:
    """The required keys as export.py writes them (string values), beside the decoder that reads them back."""
    return {"names": json.dumps(list(names)), "stride": str(int(stride)), "imgsz": json.dumps([int(s) for s in imgsz])}


def decode_metadata(raw: dict[str, Any], model: Path, where: str) -> dict[str, Any]:
    """The keys `raw` has, decoded (names, stride, imgsz, nms, layout, precision): what the torch side reads, where
    a file without names takes them from --data. A present but unreadable value is the user's error."""
    present = {key: value for key, value in raw.items() if value not in (None, "")}
    decoders = {"names": _names, "stride": lambda v: int(float(v)), "imgsz": _imgsz,
                "nms": lambda v: bool(_json_or_literal(v)), "layout": _layout, "precision": str}
    try:
        return {key: decode(present[key]) for key, decode in decoders.items() if key in present}
    except (ValueError, SyntaxError, TypeError, KeyError) as e:
        raise UserInputError(f"unreadable metadata in {where} ({e})", MODEL_FILE, model) from None


def _layout(value: Any) -> str:
    layout = str(value).upper()
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout}")
    return layout


def parse_metadata(raw: dict[str, Any], model: Path, where: str) -> ModelInfo:
    """Check and decode the metadata dict of `model`; `where` says where it was looked for (for the message)."""
    missing = [key for key in REQUIRED_KEYS if raw.get(key) in (None, "")]
    if missing:
        raise UserInputError(f"missing PConv-YOLO metadata {', '.join(missing)} in {where} "
                             f"(re-export with export.py, which writes {', '.join(REQUIRED_KEYS)})", MODEL_FILE, model)
    return ModelInfo(**decode_metadata(raw, model, where))


def tflite_sidecars(model: Path) -> tuple[Path, Path]:
    """The two names export.py's sidecar may have: best.json, best.tflite.json."""
    return model.with_suffix(".json"), model.with_name(model.name + ".json")


def read_tflite_metadata(model: Path) -> tuple[dict[str, Any], str]:
    """(metadata, where it was found) of a .tflite: the sidecar JSON, else metadata.json inside a zip appended to
    the file; ({}, the names looked for) when neither exists (files exported before metadata was written)."""
    for sidecar in tflite_sidecars(model):
        if sidecar.is_file():
            try:
                raw = json.loads(sidecar.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise UserInputError(f"metadata file {sidecar} is not JSON ({e})", MODEL_FILE, model) from None
            if not isinstance(raw, dict):
                raise UserInputError(f"metadata file {sidecar} is not a JSON object", MODEL_FILE, model)
            return raw, str(sidecar)
    if zipfile.is_zipfile(model):
        with zipfile.ZipFile(model) as archive:
            if "metadata.json" in archive.namelist():
                return json.loads(archive.read("metadata.json")), "its embedded metadata.json"
    first, second = tflite_sidecars(model)
    return {}, f"{first.name} / {second.name} (no such file beside the model)"
