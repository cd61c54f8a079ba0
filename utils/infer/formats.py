"""The export formats as one table: per format its name (--include, the backend's `kind`), file suffix and file
name rule, the extra precisions it writes, its exporter, its requirement check and the deploy/ engine that runs
it. export.py's --include choices and its per-format steps, and the backends' suffix detection, read this table:
a new runtime is one engine (deploy/engines.py), one exporter (utils/infer/exporters.py) and one row here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from deploy.engines import Engine, OnnxEngine, OpenVINOEngine, TFLiteEngine
from utils.infer.exporters import (export_onnx, export_openvino, export_tflite, export_torchscript, openvino_xml,
                                   quantize_onnx, require_litert, require_openvino)
from utils.core.log import LOGGER

@dataclass(frozen=True)
class ExportSettings:
    """What export.py's flags give every exporter besides the model, its dummy input and the metadata."""

    opset: int = 17
    dynamic: bool = False
    simplify: bool = False
    calibration: list[np.ndarray] | None = None  # int8 calibration batches (--int8)


# (export-form model, dummy input, {precision: file to write}, metadata, settings) -> {precision: file written}
Exporter = Callable[[nn.Module, torch.Tensor, dict[str, Path], dict[str, str], ExportSettings], dict[str, Path]]


def write_torchscript(model: nn.Module, im: torch.Tensor, outputs: dict[str, Path], meta: dict[str, str],
                      settings: ExportSettings) -> dict[str, Path]:
    """torch.jit.trace on the export device, in the dummy input's precision."""
    LOGGER.info("TorchScript: tracing")
    return {"fp32": export_torchscript(model, im, outputs["fp32"], meta)}


def write_onnx(model: nn.Module, im: torch.Tensor, outputs: dict[str, Path], meta: dict[str, str],
               settings: ExportSettings) -> dict[str, Path]:
    """torch.onnx.export, then the int8 QDQ file quantized from it."""
    LOGGER.info(f"ONNX: torch.onnx.export (TorchScript-based exporter, dynamo=False), opset {settings.opset}")
    written = {"fp32": export_onnx(model, im, outputs["fp32"], meta, settings.opset, settings.dynamic,
                                   settings.simplify)}
    if "int8" in outputs:
        written["int8"] = quantize_onnx(written["fp32"], outputs["int8"], settings.calibration, model)
    return written


def write_tflite(model: nn.Module, im: torch.Tensor, outputs: dict[str, Path], meta: dict[str, str],
                 settings: ExportSettings) -> dict[str, Path]:
    """litert_torch.convert once, then each precision."""
    LOGGER.info(f"TFLite: litert_torch.convert, then {', '.join(outputs)}")
    return export_tflite(model, im, outputs, meta, settings.calibration)


def write_openvino(model: nn.Module, im: torch.Tensor, outputs: dict[str, Path], meta: dict[str, str],
                   settings: ExportSettings) -> dict[str, Path]:
    """openvino.convert_model once, then each precision."""
    LOGGER.info(f"OpenVINO: openvino.convert_model, then {', '.join(outputs)}")
    return export_openvino(model, im, outputs, meta, settings.calibration)


@dataclass(frozen=True)
class ExportFormat:
    """One row of the table. `converted`: written from an fp32 CPU copy of the model (what litert and OpenVINO's CPU
    plugin take) rather than traced on the export device in its dtype. `engine`: the deploy/ engine that runs the
    file (None: torch runs it). `requires(int8)` raises a one-line UserInputError when a package is missing."""

    name: str
    suffix: str
    precisions: tuple[str, ...]  # the extra files it can write besides fp32: fp16 (--half), int8 (--int8)
    export: Exporter
    converted: bool = False
    engine: type[Engine] | None = None
    requires: Callable[[bool], None] | None = None
    file_name: Callable[[Path, str, str], Path] | None = None  # (folder, stem, precision) -> path; None: the rule below

    @property
    def half_at_runtime(self) -> bool:
        """--half changes how its engine computes (OpenVINO) instead of being fixed in the file at export."""
        return self.engine is not None and self.engine.half_at_runtime

    def file(self, folder: Path, stem: str, precision: str = "fp32") -> Path:
        """Where export.py writes this format's file of `precision`: best.onnx, best-int8.onnx, ... by default."""
        if self.file_name is not None:
            return self.file_name(folder, stem, precision)
        return folder / f"{stem}{'' if precision == 'fp32' else '-' + precision}{self.suffix}"

    def label(self, precision: str = "fp32") -> str:
        """The file's name in export.py's table: 'onnx', 'onnx int8'."""
        return self.name if precision == "fp32" else f"{self.name} {precision}"


EXPORT_FORMATS = (  # in the order export.py writes them
    ExportFormat("torchscript", ".torchscript", (), write_torchscript),
    ExportFormat("onnx", OnnxEngine.suffix, ("int8",), write_onnx, engine=OnnxEngine),
    ExportFormat("tflite", TFLiteEngine.suffix, ("fp16", "int8"), write_tflite, converted=True, engine=TFLiteEngine,
                 requires=lambda int8: require_litert()),
    ExportFormat("openvino", OpenVINOEngine.suffix, ("int8",), write_openvino, converted=True, engine=OpenVINOEngine,
                 requires=require_openvino, file_name=openvino_xml),
)
FORMATS = tuple(f.name for f in EXPORT_FORMATS)
INT8_FORMATS = tuple(f.name for f in EXPORT_FORMATS if "int8" in f.precisions)  # the formats --int8 adds a file to


def export_format(name: str) -> ExportFormat:
    """The row of `name` (one of FORMATS)."""
    return next(f for f in EXPORT_FORMATS if f.name == name)
