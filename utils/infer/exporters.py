"""Write a DetectionModel as ONNX, TorchScript, TFLite or OpenVINO IR (utils.infer.verify checks the files).

Why the model is prepared the same way for every format: BN is folded into leaf `nn.Parameter`s (litert-torch
rejects non-leaf parameters), PConv runs its split→conv→cat path (no in-place slice assignment in the graph)
and Detect returns its single decoded tensor (B, N, 5+nc), which is what `utils.infer.backends` expects back.
Metadata keys and encoding are those of `deploy.metadata.encode_metadata` (names, stride, imgsz), plus
descriptive extras (model, date, task, batch, precision, layout, nms, version).
"""
from __future__ import annotations

import copy
import datetime
import json
import logging
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import torch
import torch.nn as nn

from deploy.engines import TFLiteEngine
from deploy.errors import UserInputError
from deploy.metadata import encode_metadata
from utils.core.log import LOGGER
from utils.data.augment import letterbox
from utils.data.dataset import find_image_files

TFLITE_HINT = "TFLite export needs litert-torch and ai-edge-litert: pip install -r requirements-tflite.txt"
# TFLite int8: what stays float, by op scope (the converter names an op after the module path that ran it, and
# the head's own decode ops sit directly in its scope, its convs deeper): see head_float_ops.
TFLITE_FLOAT_SCOPES = (r".*heads\.Detect\w*_\d+;[^/]*$", r"serving_default_output.*")
OPENVINO_HINT = "OpenVINO export needs openvino, and nncf for int8: pip install openvino nncf"
NMS_PRE_TOPK = 1000  # candidates per image fed to the in-graph NMS (its IoU matrix is PRE_TOPK x PRE_TOPK)
NMS_CLASS_OFFSET = 4096.0  # pixels between classes' boxes so one IoU matrix never matches across classes
MAX_CALIBRATION_IMAGES = 300  # int8 calibration images: each costs a forward pass


@dataclass
class ExportedFile:
    """One file written by the exporter; `precision` is fp32, fp16 or int8."""

    fmt: str
    path: Path
    precision: str = "fp32"

    @property
    def label(self) -> str:
        return self.fmt if self.precision == "fp32" else f"{self.fmt} {self.precision}"


class FixedSizeNMS(nn.Module):
    """Detector + NMS in the graph: (B, max_det, 6) rows x1 y1 x2 y2 conf cls, zero-padded.

    For deployments with no NMS step. Uses "Fast NMS" (a box is dropped when any higher-scoring box of its
    class overlaps it above iou_thres), which is pure tensor algebra with fixed shapes, so every exporter
    and runtime handles it; it can drop slightly more boxes than greedy NMS. One class per box (its best).
    """

    def __init__(self, model: nn.Module, max_det: int = 300, conf_thres: float = 0.25, iou_thres: float = 0.45,
                 channels_first: bool = False):
        super().__init__()
        self.model, self.max_det, self.conf_thres, self.iou_thres = model, max_det, conf_thres, iou_thres
        self.channels_first = channels_first  # the model returns (B, 5 + nc, N), not rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pred = self.model(x)
        if self.channels_first:
            pred = pred.transpose(1, 2)  # rows (B, N, 5 + nc)
        k = min(NMS_PRE_TOPK, pred.shape[1])
        scores, cls = (pred[..., 5:] * pred[..., 4:5]).max(2)
        scores, order = scores.topk(k, dim=1)
        cls = cls.gather(1, order).float()
        xywh = pred[..., :4].gather(1, order.unsqueeze(-1).expand(-1, -1, 4))
        xyxy = torch.cat((xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2), 2)
        shifted = xyxy + cls.unsqueeze(-1) * NMS_CLASS_OFFSET
        iou = pairwise_iou_xyxy(shifted)
        rank = torch.ones_like(scores).cumsum(1)  # 1..k in score order; built from the input, so never a constant
        higher = (rank.unsqueeze(2) < rank.unsqueeze(1)).float()  # [b, i, j]: box i outranks box j
        overlap = (iou * higher).max(1).values
        scores = scores * (overlap <= self.iou_thres).float() * (scores > self.conf_thres).float()
        n = min(self.max_det, k)
        scores, keep = scores.topk(n, dim=1)
        rows = torch.cat((xyxy, cls.unsqueeze(-1)), 2).gather(1, keep.unsqueeze(-1).expand(-1, -1, 5))
        valid = (scores > 0).float().unsqueeze(-1)
        out = torch.cat((rows[..., :4], scores.unsqueeze(-1), rows[..., 4:]), 2) * valid
        if n < self.max_det:  # fewer candidates than rows: pad so the shape is always (B, max_det, 6)
            out = torch.cat((out, out.new_zeros(out.shape[0], self.max_det - n, 6)), 1)
        return out


def pairwise_iou_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(B, k, 4) xyxy → (B, k, k) IoU, with plain tensor ops (traceable by every exporter)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    iw = (torch.minimum(x2.unsqueeze(2), x2.unsqueeze(1)) - torch.maximum(x1.unsqueeze(2), x1.unsqueeze(1))).clamp(0)
    ih = (torch.minimum(y2.unsqueeze(2), y2.unsqueeze(1)) - torch.maximum(y1.unsqueeze(2), y1.unsqueeze(1))).clamp(0)
    inter = iw * ih
    area = (x2 - x1) * (y2 - y1)
    return inter / (area.unsqueeze(2) + area.unsqueeze(1) - inter + 1e-7)


def prepare_for_export(model: nn.Module, nms: bool = False, max_det: int = 300, conf_thres: float = 0.25,
                       iou_thres: float = 0.45) -> nn.Module:
    """A fused, eval-mode copy in exporter form (split→cat PConv, single-tensor Detect), optionally with NMS."""
    model = copy.deepcopy(model).float().eval()
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        model.fuse()
    model.set_export_mode(True)
    for p in model.parameters():
        p.requires_grad_(False)
    if not nms:
        return model
    channels_first = model.model[-1].export_channels_first
    return FixedSizeNMS(model, max_det, conf_thres, iou_thres, channels_first).eval()


def clear_traced_grid_cache(model: nn.Module) -> None:
    """Drop Detect's cached grids so a trace records how they are built (needed for --dynamic sizes)."""
    for m in model.modules():
        grids = getattr(m, "_grids", None)
        if isinstance(grids, dict):
            grids.clear()


def export_metadata(model: nn.Module, imgsz: tuple[int, int], batch: int, precision: str, nms: bool,
                    layout: str = "NCHW") -> dict[str, str]:
    """String-valued metadata written into (or beside) every exported file."""
    detection = model.model if isinstance(model, FixedSizeNMS) else model
    meta = encode_metadata(detection.names, int(max(detection.stride)), imgsz)
    meta.update(
        model=Path(str(detection.yaml.get("yaml_file", "model.yaml"))).name,
        task="detect",
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        batch=str(batch),
        precision=precision,
        layout=layout,
        nms=json.dumps(bool(nms)),
        output="xyxy_conf_cls" if nms else "xywh_obj_cls",
    )
    return meta


def check_writable_dir(folder: Path, subject: str = "project", hint: str = "") -> Path:
    """Create `folder` and prove a file can be written there (root ignores permission bits, so try it)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test"):
            pass
    except OSError as e:
        raise UserInputError(f"output folder is not writable ({e.strerror or e}){'; ' + hint if hint else ''}",
                             subject, folder) from None
    return folder


def json_metadata(meta: dict[str, str]) -> dict[str, Any]:
    """The string-valued metadata (what ONNX and OpenVINO can store) as a JSON object of real values: names a
    list, sizes numbers, nms a boolean — never JSON text inside JSON. Both metadata readers take either form."""
    out: dict[str, Any] = dict(meta)
    for key in ("names", "imgsz", "nms"):
        if key in out:
            out[key] = json.loads(out[key])
    for key in ("stride", "batch"):
        if key in out:
            out[key] = int(out[key])
    return out


def embed_tflite_metadata(path: Path, meta: dict[str, str]) -> None:
    """Append metadata.json to the .tflite as a zip, as ultralytics does: the flatbuffer ignores bytes after it, so
    the one file carries its classes and size to a device (the sidecar is written too, for older readers)."""
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps(json_metadata(meta)))


def tflite_sidecar(path: Path) -> Path:
    """The metadata JSON written next to a .tflite (best.tflite → best.json), where utils.infer.backends looks."""
    return path.with_suffix(".json")


def written_files(path: Path) -> list[Path]:
    """Every file exporting to `path` writes: the file, plus the metadata sidecar for TFLite, the weights for
    OpenVINO's .xml."""
    if path.suffix == ".tflite":
        return [path, tflite_sidecar(path)]
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def require_calibration(calibration: list[np.ndarray] | None) -> None:
    """Every int8 quantizer needs the images calibration_batches reads from --data."""
    if not calibration:
        raise UserInputError("no calibration images (give a data YAML with a train split)", "int8")


def head_float_ops(model: nn.Module) -> tuple[str, bool]:
    """(scope tag of the Detect head, whether NMS wraps it) for keeping the decode float in int8 files.

    Exporters name an op after the module path that ran it: the head's own ops (sigmoid, DFL softmax and
    its fixed bin conv, grid and anchor arithmetic, the final concat) sit directly under `model.<i>/`, its convs deeper.
    One int8 scale over a tensor that holds both pixel boxes and 0-1 scores would round every score to zero,
    so these stay float while every other conv, the head's branch convs included, runs int8.
    """
    detection = model.model if isinstance(model, FixedSizeNMS) else model
    return f"model.{len(detection.model) - 1}/", isinstance(model, FixedSizeNMS)


# ------------------------------------------------------------------------------------------------ ONNX
def export_onnx(model: nn.Module, im: torch.Tensor, path: Path, metadata: dict[str, str], opset: int = 17,
                dynamic: bool = False, simplify: bool = False) -> Path:
    """torch.onnx.export with the TorchScript-based exporter (dynamo=False).

    The dynamo exporter of torch 2.14 wrote an invalid Split node for split-cat PConv at opset 17, so the
    legacy tracer is used; dynamic axes cover batch, height and width.
    """
    import onnx

    clear_traced_grid_cache(model)
    dynamic_axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "anchors"}}
    torch.onnx.export(model, im, str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
                      input_names=["images"], output_names=["output0"],
                      dynamic_axes=dynamic_axes if dynamic else None)
    clear_traced_grid_cache(model)
    onnx_model = onnx.load(str(path))
    onnx.checker.check_model(onnx_model)
    if simplify:
        import onnxslim

        LOGGER.info(f"ONNX: simplifying with onnxslim {onnxslim.__version__}")
        onnx_model = onnxslim.slim(onnx_model)
    for key, value in metadata.items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(onnx_model, str(path))
    return path


def quantize_onnx(src: Path, dst: Path, calibration: list[np.ndarray], model: nn.Module) -> Path:
    """Static int8 QDQ ONNX (per-channel int8 weights, uint8 activations) with onnxruntime's quantizer.

    QDQ is the form ONNX Runtime fuses into integer kernels on CPU and TensorRT reads; the head's own ops and
    an in-graph NMS stay float (see head_float_ops), the DFL's bin conv included: int8 on that expectation over
    softmax bins cost an anchor-free yolov5n-fasterneck-af 0.033 mAP50-95 (aquarium val at 320: float 0.235,
    int8 0.202, with the DFL float 0.231). Metadata is carried over from `src`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {"images": x}

    require_calibration(calibration)
    tag, nms = head_float_ops(model)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        # the head's own ops, and the DFL where it is a submodule (ultralytics' heads); branch convs sit deeper
        own_op = re.compile(rf".*/{re.escape(tag)}(dfl/.*|[^/]+)$")
        keep_float = [n.name for n in graph.node if own_op.match(n.name) or (nms and "model." not in n.name)]
        LOGGER.info(f"ONNX: calibrating int8 on {len(calibration)} batch(es), {len(keep_float)} head op(s) float")
        quantize_static(str(prepared), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep_float)
    quantized = onnx.load(str(dst))
    del quantized.metadata_props[:]
    for entry in onnx.load(str(src), load_external_data=False).metadata_props:
        quantized.metadata_props.add().CopyFrom(entry)
    for entry in quantized.metadata_props:
        if entry.key == "precision":
            entry.value = "int8"
    onnx.save(quantized, str(dst))
    return dst


# ----------------------------------------------------------------------------------------- TorchScript
def export_torchscript(model: nn.Module, im: torch.Tensor, path: Path, metadata: dict[str, str]) -> Path:
    """torch.jit.trace; metadata travels as the `config.txt` extra file utils.infer.backends reads."""
    clear_traced_grid_cache(model)
    traced = torch.jit.trace(model, im, strict=False, check_trace=False)
    clear_traced_grid_cache(model)
    traced.save(str(path), _extra_files={"config.txt": json.dumps(metadata)})
    return path


# ---------------------------------------------------------------------------------------------- TFLite
def require_litert() -> None:
    """Fail early, with the install command, when the TFLite toolchain is missing."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        import litert_torch  # noqa: F401
    except ImportError as e:
        raise UserInputError(f"{TFLITE_HINT} ({e})", "include", "tflite") from None


def export_tflite(model: nn.Module, im: torch.Tensor, outputs: dict[str, Path], metadata: dict[str, str],
                  calibration: list[np.ndarray] | None = None) -> dict[str, Path]:
    """litert_torch.convert straight from PyTorch (once), then ai-edge-quantizer for each reduced precision.

    `outputs` maps precision (fp32, fp16, int8) to the file to write. fp16 stores conv weights as float16
    (dequantized at load; compute stays fp32 on XNNPACK). int8 is static post-training quantization (int8
    weights and activations) calibrated on `calibration` batches; the Detect head (its 1x1 convs, the decode
    and the final concat) stays float, because one int8 scale over a tensor holding both pixel boxes and 0-1
    scores rounds every score to zero. Input and output stay float32. Metadata goes to a sidecar
    `<file>.json` (utils.infer.backends reads it), with the precision and the input layout the converter produced.
    """
    require_litert()
    import litert_torch

    with torch.inference_mode():
        model(im)  # fixed input size: Detect's grids become constants instead of attributes set mid-export
    edge_model = litert_torch.convert(model, (im,))
    folder = next(iter(outputs.values())).parent
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        float_file = Path(tmp) / "float.tflite"
        edge_model.export(str(float_file))
        layout = "NCHW" if tflite_input_shape(float_file)[1] == im.shape[1] else "NHWC"
        for precision, path in outputs.items():
            if precision == "fp32":
                shutil.copyfile(float_file, path)
            else:
                quantize_tflite(float_file, path, precision, calibration)
            meta = {**metadata, "precision": precision, "layout": layout}
            embed_tflite_metadata(path, meta)
            tflite_sidecar(path).write_text(json.dumps(json_metadata(meta), indent=2), encoding="utf-8")
    return outputs


def quantize_tflite(src: Path, dst: Path, precision: str, calibration: list[np.ndarray] | None) -> None:
    """Rewrite a float .tflite as fp16-weight or static int8 with ai-edge-quantizer."""
    from ai_edge_quantizer import qtyping, quantizer, recipe

    ops = qtyping.TFLOperationName
    qt = quantizer.Quantizer(str(src))
    if precision == "fp16":
        qt.update_quantization_recipe(
            regex=".*", operation_name=ops.CONV_2D, algorithm_key=recipe.AlgorithmName.FLOAT_CASTING,
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True))
        qt.quantize().export_model(str(dst), overwrite=True)
        return
    require_calibration(calibration)
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    for regex in TFLITE_FLOAT_SCOPES:
        qt.update_quantization_recipe(regex=regex, operation_name=ops.ALL_SUPPORTED,
                                      algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
    for op in (ops.INPUT, ops.OUTPUT):
        qt.update_quantization_recipe(regex=".*", operation_name=op, algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
    LOGGER.info(f"TFLite: calibrating int8 on {len(calibration)} batch(es)")
    result = qt.calibrate({"serving_default": [{"args_0": x} for x in calibration]})
    qt.quantize(calibration_result=result).export_model(str(dst), overwrite=True)


def tflite_input_shape(path: Path) -> list[int]:
    """The converted file's input shape, read through the runner's own engine."""
    return TFLiteEngine(path).input_shape


# -------------------------------------------------------------------------------------------- OpenVINO
def require_openvino(int8: bool) -> None:
    """Fail early, with the install command, when openvino (or nncf, for --int8) is missing."""
    try:
        import openvino  # noqa: F401
    except ImportError as e:
        raise UserInputError(f"{OPENVINO_HINT} ({e})", "include", "openvino") from None
    if int8:
        try:
            import nncf  # noqa: F401
        except ImportError as e:
            raise UserInputError(f"OpenVINO int8 needs nncf: pip install nncf ({e})", "int8") from None


def openvino_xml(folder: Path, stem: str, precision: str = "fp32") -> Path:
    """best.pt → best_openvino_model/best.xml (int8: best_int8_openvino_model/), the folders YOLOv5 and
    ultralytics users know; the backends take the folder or the .xml."""
    name = f"{stem}_openvino_model" if precision == "fp32" else f"{stem}_{precision}_openvino_model"
    return folder / name / f"{stem}.xml"


def export_openvino(model: nn.Module, im: torch.Tensor, outputs: dict[str, Path], metadata: dict[str, str],
                    calibration: list[np.ndarray] | None = None) -> dict[str, Path]:
    """openvino.convert_model straight from PyTorch (once), then nncf post-training quantization for int8.

    `outputs` maps precision (fp32, int8) to the .xml to write. The fp32 IR keeps fp32 weights: the runtime's
    precision hint decides how it computes (bf16 on CPUs with AVX512-BF16 or AMX, f32 elsewhere), so one
    file serves every CPU. int8 quantizes every conv's input and weights, calibrated on `calibration`, and
    keeps the head's decode float (head_float_ops). Metadata is stored in the IR's rt_info under
    `model_info`, where utils.infer.backends and deploy/ read it.
    """
    import openvino as ov

    with torch.inference_mode():
        model(im)  # fixed input size: Detect's grids become constants
    ov_model = ov.convert_model(model, example_input=im, input=[tuple(im.shape)])
    for precision, path in outputs.items():
        out = ov_model if precision == "fp32" else quantize_openvino(ov_model, model, calibration)
        for key, value in {**metadata, "precision": precision}.items():
            out.set_rt_info(value, ["model_info", key])
        path.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(out, str(path), compress_to_fp16=False)
    return outputs


def quantize_openvino(ov_model, model: nn.Module, calibration: list[np.ndarray] | None):
    """nncf.quantize with the head's decode (and an in-graph NMS) left float."""
    import nncf

    require_calibration(calibration)
    tag, nms = head_float_ops(model)
    patterns = [f".*{re.escape(tag)}.*"] + [r"^(?!__module\.).*"] * nms
    LOGGER.info(f"OpenVINO: calibrating int8 on {len(calibration)} batch(es) with nncf {nncf.__version__}")
    nncf.set_log_level(logging.WARNING)  # else one INFO line per op it leaves unquantized
    return nncf.quantize(ov_model, nncf.Dataset(calibration), subset_size=len(calibration),
                         ignored_scope=nncf.IgnoredScope(patterns=patterns, validate=False))


# ---------------------------------------------------------------------------------------------- images
def letterboxed_batch(files: Iterable[str | Path], imgsz: tuple[int, int]) -> np.ndarray:
    """Images letterboxed to exactly imgsz, as float32 RGB NCHW in [0, 1] (what every backend takes)."""
    out = []
    for f in files:
        im = cv2.imread(str(f))
        if im is None:
            LOGGER.warning(f"WARNING: {f}: unreadable image, skipped")
            continue
        boxed = letterbox(im, imgsz, auto=False)[0]
        out.append(np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255)
    return np.stack(out) if out else np.zeros((0, 3, *imgsz), np.float32)


def in_batches(images: np.ndarray, batch: int) -> list[np.ndarray]:
    """Split N images into batches of exactly `batch` (the last one topped up by repeating images)."""
    if not len(images):
        return []
    n = -(-len(images) // batch) * batch
    images = np.concatenate([images] * (-(-n // len(images))))[:n]
    return [images[i:i + batch] for i in range(0, n, batch)]


def calibration_batches(data: dict, imgsz: tuple[int, int], batch: int) -> list[np.ndarray]:
    """Up to MAX_CALIBRATION_IMAGES letterboxed train images of a checked data YAML, evenly spread over the split:
    what every int8 exporter calibrates on."""
    files = find_image_files(data["train"])
    if not files:
        raise UserInputError("no train images to calibrate int8 with", "data", data["yaml_file"])
    step = max(len(files) / MAX_CALIBRATION_IMAGES, 1)
    picked = [files[int(i * step)] for i in range(min(len(files), MAX_CALIBRATION_IMAGES))]
    LOGGER.info(f"int8 calibration: {len(picked)} train image(s) from {data['yaml_file']}")
    return in_batches(letterboxed_batch(picked, imgsz), batch)
