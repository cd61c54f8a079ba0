"""One inference interface over every model format we ship: .pt, .torchscript, .onnx, .tflite and OpenVINO IR.

detect, val and the Python API call `backend(im)` the same way whatever the file is:
`im` is float NCHW RGB in [0, 1] (torch tensor or numpy array) and the result is a float32 torch tensor
(B, N, 5 + nc) on the backend's device: cx, cy, w, h in input pixels, objectness, class probabilities —
exactly what `DetectionModel` returns in eval mode, so NMS does not care where it came from.

Exported files carry their own metadata so they run without the training code or the data YAML.
The keys (written by utils/infer/exporters.py, read here; all values are strings):
    names   JSON list of class names, index = class id (a JSON object {"0": "person", ...} is accepted too)
    stride  the model's largest stride, an integer ("32")
    imgsz   JSON [height, width] the model was exported at
    batch   optional, the batch size a TorchScript file was traced with (ONNX/TFLite: read from the input)
    nms     optional JSON boolean: "true" when NMS is inside the graph; the output is then (B, max_det, 6)
            rows x1 y1 x2 y2 conf cls (zero rows are padding) instead of the raw predictions
Where they live: ONNX `metadata_props`; TorchScript `_extra_files={"config.txt": <JSON object>}`;
TFLite a sidecar JSON object next to the model (`model.json` or `model.tflite.json`) or a `metadata.json`
inside a zip appended to the .tflite; OpenVINO the IR's rt_info under `model_info`. Box outputs of every
format are in input pixels, never normalised.
"""
from __future__ import annotations

import ast
import json
import numbers
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deploy.engines import (OPENVINO_DIR_SUFFIX, compile_openvino, openvino_compute,  # torch-free: the
                            openvino_xml_in)  # edge runner's OpenVINO path, one Core per process
from models.yolo import DetectionModel
from utils.weights.checkpoint import load_model
from utils.errors import UserInputError
from utils.infer.backend_base import Backend
from utils.infer.ensemble import Ensemble
from utils.log import LOGGER
from utils.torch_utils import select_device

SUFFIXES = {".pt": "pytorch", ".torchscript": "torchscript", ".onnx": "onnx", ".tflite": "tflite", ".xml": "openvino"}


def encode_metadata(names: list[str], stride: int, imgsz: tuple[int, int] | list[int]) -> dict[str, str]:
    """Metadata dict (string values) for an exported model; the exporter writes exactly this."""
    return {"names": json.dumps(list(names)), "stride": str(int(stride)), "imgsz": json.dumps([int(s) for s in imgsz])}


def _parse_names(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = ast.literal_eval(value)  # yolov5 writes str(dict): "{0: 'person', ...}"
    if isinstance(value, dict):
        return [str(value[k]) for k in sorted(value, key=int)]
    return [str(v) for v in value]


def decode_metadata(meta: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Parse metadata written by `encode_metadata` (values may already be decoded, as in a JSON sidecar)."""
    out: dict[str, Any] = {}
    try:
        if meta.get("names") is not None:
            out["names"] = _parse_names(meta["names"])
        if meta.get("stride") is not None:
            out["stride"] = int(float(meta["stride"]))
        if meta.get("imgsz") is not None:
            size = json.loads(meta["imgsz"]) if isinstance(meta["imgsz"], str) else meta["imgsz"]
            size = [size] * 2 if isinstance(size, int) else size
            out["imgsz"] = (int(size[0]), int(size[1]))
        if meta.get("nms") is not None:
            out["nms"] = bool(json.loads(meta["nms"]) if isinstance(meta["nms"], str) else meta["nms"])
    except (ValueError, SyntaxError, TypeError, KeyError, IndexError) as e:
        raise UserInputError(f"--weights {path}: unreadable model metadata ({e})") from None
    return out


def check_class_ids(ids: int | list[int] | tuple[int, ...] | None, nc: int | None,
                    model: str | Path) -> list[int] | None:
    """A --classes filter as a list of ids, each one a class of `model` (when its class count `nc` is known).

    An id the model does not have would only filter every box away, which looks like 'nothing detected'.
    """
    if ids is None:
        return None
    ids = [ids] if isinstance(ids, numbers.Integral) else list(ids)
    bad = [i for i in ids if not isinstance(i, numbers.Integral) or i < 0 or (nc is not None and i >= nc)]
    if bad:
        known = "" if nc is None else f"; {Path(model).name} has {nc} class{'es' * (nc != 1)} " \
                                        f"({'id 0' if nc == 1 else f'ids 0-{nc - 1}'})"
        raise UserInputError(f"--classes {' '.join(map(str, bad))}: no such class id{known}")
    return [int(i) for i in ids]


class ExportedBackend(Backend):
    """A model file written by utils/infer/exporters.py: its names, stride, size and NMS come from its metadata."""

    def _apply_metadata(self, meta: dict[str, Any]) -> None:
        meta = decode_metadata(meta, self.path)
        self.names = meta.get("names", self.names)
        self.stride = meta.get("stride", self.stride)
        self.imgsz = meta.get("imgsz", self.imgsz)
        self.end_to_end = meta.get("nms", self.end_to_end)


class ModelBackend(Backend):
    """A live DetectionModel, no file behind it (hubconf's untrained constructors, notebooks)."""

    kind = "pytorch"

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu", fp16: bool = False,
                 path: Path | None = None):
        device = torch.device(device)
        path = path or Path(getattr(model, "yaml", {}).get("yaml_file", "model"))
        super().__init__(path, device, fp16 and device.type == "cuda")  # fp16 convs on CPU are slow or unsupported
        model = model.to(self.device).eval()
        self.model = model.half() if self.fp16 else model.float()
        self.names = list(getattr(model, "names", []) or [])
        self.stride = int(max(int(s) for s in model.stride))
        self.dynamic = True

    def _forward(self, im: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(im)


class PyTorchBackend(ModelBackend):
    """Our training checkpoint (utils.weights.checkpoint format), BN fused for speed."""

    def __init__(self, path: Path, device: torch.device, fp16: bool = False):
        super().__init__(load_model(path, device, fuse=True), device, fp16, path=path)


class TorchScriptBackend(ExportedBackend):
    """A torch.jit.trace'd model with its metadata in the `config.txt` extra file."""

    kind = "torchscript"

    def __init__(self, path: Path, device: torch.device, fp16: bool = False):
        super().__init__(path, device, fp16)
        extra = {"config.txt": ""}
        try:
            model = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        except RuntimeError as e:
            raise UserInputError(f"--weights {path}: not a readable TorchScript file ({str(e).splitlines()[0]})") from None
        config: dict[str, Any] = {}
        if extra["config.txt"]:
            try:
                config = json.loads(extra["config.txt"])
            except json.JSONDecodeError as e:
                raise UserInputError(f"--weights {path}: config.txt is not JSON ({e})") from None
        self._apply_metadata(config)
        self.model = model.half() if fp16 else model.float()
        self.model.eval()
        self.fixed_batch = int(config.get("batch", 1))  # a traced graph keeps the batch size it was traced with

    def _forward(self, im: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(im)


class ONNXBackend(ExportedBackend):
    """ONNX Runtime session (CUDA provider when the device is a GPU and onnxruntime-gpu is installed)."""

    kind = "onnx"

    def __init__(self, path: Path, device: torch.device, fp16: bool = False):
        super().__init__(path, device, False)
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        elif device.type == "cuda":
            LOGGER.warning("WARNING: onnxruntime has no CUDA provider here; running the ONNX model on CPU")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise UserInputError(f"--weights {path}: not a readable ONNX model ({str(e).splitlines()[0]})") from None
        self._apply_metadata(self.session.get_modelmeta().custom_metadata_map)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        batch, _, h, w = inp.shape
        if isinstance(h, int) and isinstance(w, int):
            self.imgsz = (h, w)
        else:  # exported with dynamic axes: any multiple of stride works, metadata imgsz is only the default
            self.dynamic = True
        self.fixed_batch = batch if isinstance(batch, int) else None

    def _forward(self, im: torch.Tensor) -> torch.Tensor:
        x = im.detach().cpu().numpy().astype(self.input_dtype, copy=False)
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])


class TFLiteBackend(ExportedBackend):
    """A .tflite file run by ai-edge-litert; input layout (NHWC or NCHW) and int8 quantisation read from the file."""

    kind = "tflite"

    def __init__(self, path: Path, device: torch.device, fp16: bool = False, num_threads: int | None = None):
        super().__init__(path, device, False)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise UserInputError(f"--weights {path}: TFLite models need ai-edge-litert; install it with "
                                 f"`pip install -r requirements-tflite.txt`") from None
        if device.type != "cpu":
            LOGGER.warning(f"WARNING: TFLite runs on CPU only; ignoring --device {device}")
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads or torch.get_num_threads())
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise UserInputError(f"--weights {path}: not a readable TFLite model ({str(e).splitlines()[0]})") from None
        self._apply_metadata(self._read_metadata(path))
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        shape = [int(s) for s in self.input["shape"]]
        self.nhwc = shape[-1] == 3
        self.imgsz = tuple(shape[1:3]) if self.nhwc else tuple(shape[2:4])
        self.fixed_batch = shape[0]
        self.device = torch.device("cpu")

    @staticmethod
    def _read_metadata(path: Path) -> dict[str, Any]:
        for sidecar in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
            if sidecar.is_file():
                try:
                    return json.loads(sidecar.read_text(encoding="utf-8"))
                except json.JSONDecodeError as e:
                    raise UserInputError(f"--weights {path}: metadata file {sidecar} is not JSON ({e})") from None
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if "metadata.json" in archive.namelist():
                    return json.loads(archive.read("metadata.json"))
        LOGGER.warning(f"WARNING: {path}: no metadata found (expected {path.with_suffix('.json').name}); "
                       f"class names come from --data")
        return {}

    def _forward(self, im: torch.Tensor) -> torch.Tensor:
        x = im.detach().cpu().float().numpy()
        if self.nhwc:
            x = x.transpose(0, 2, 3, 1)
        scale, zero_point = self.input["quantization"]
        if self.input["dtype"] in (np.int8, np.uint8) and scale:
            x = (x / scale + zero_point).round().astype(self.input["dtype"])
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"], copy=False))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        scale, zero_point = self.output["quantization"]
        if self.output["dtype"] in (np.int8, np.uint8) and scale:
            y = (y.astype(np.float32) - zero_point) * scale
        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))


class OpenVINOBackend(ExportedBackend):
    """An OpenVINO IR (.xml + .bin) compiled for the CPU in f32, the same numbers as the .pt; with `fp16`
    (--half) in the runtime's own default precision instead, which is bf16 on CPUs with AVX512-BF16 or AMX
    (faster, scores move by ~1e-2) and f32 elsewhere. `precision` tells which one runs."""

    kind = "openvino"

    def __init__(self, path: Path, device: torch.device, fp16: bool = False):
        super().__init__(path, device, False)
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise UserInputError(f"--weights {path}: OpenVINO models need openvino (pip install openvino)") from None
        if device.type != "cpu":
            LOGGER.warning(f"WARNING: OpenVINO runs on the CPU here; ignoring --device {device}")
            self.device = torch.device("cpu")
        try:
            self.compiled, meta = compile_openvino(path, fp16)
        except RuntimeError as e:
            raise UserInputError(f"--weights {path}: not a readable OpenVINO model ({str(e).splitlines()[0]})") from None
        self._apply_metadata(meta)
        self.precision = openvino_compute(self.compiled)
        shape = self.compiled.input(0).get_partial_shape()
        if shape.is_static:
            batch, _, h, w = (int(d) for d in shape.to_shape())
            self.imgsz, self.fixed_batch = (h, w), batch
        else:
            self.dynamic = True

    def _forward(self, im: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.compiled(im.detach().cpu().float().numpy())[0])


BACKENDS: dict[str, type[Backend]] = {
    "pytorch": PyTorchBackend, "torchscript": TorchScriptBackend, "onnx": ONNXBackend, "tflite": TFLiteBackend,
    "openvino": OpenVINOBackend}


def resolve_model_path(path: Path) -> Path:
    """An OpenVINO model folder (best_openvino_model/) stands for the one .xml inside it."""
    try:
        return openvino_xml_in(path)
    except ValueError as e:
        raise UserInputError(f"--weights {path}: {e}") from None


def load_backend(weights: str | Path | list | tuple | Backend, device: torch.device | str = "cpu",
                 fp16: bool = False) -> Backend:
    """Open `weights` with the backend its extension names. The path is only ever a file path (no shell).

    Several paths (`--weights a.pt b.pt`) give an ensemble; an already-built Backend is used as is.
    """
    if isinstance(weights, Backend):
        return weights
    if isinstance(weights, (list, tuple)):
        if len(weights) > 1:
            return Ensemble([load_backend(w, device, fp16) for w in weights])
        if not weights:
            raise UserInputError("--weights: give a model file (.pt, .torchscript, .onnx, .tflite or OpenVINO .xml)")
        weights = weights[0]
    path = resolve_model_path(Path(weights))
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UserInputError(f"--weights {path}: unsupported model format '{path.suffix}' "
                             f"(use one of: {', '.join(SUFFIXES)}, or a *{OPENVINO_DIR_SUFFIX} folder)")
    if not path.is_file():
        raise UserInputError(f"--weights {path}: file not found")
    device = select_device(device)  # also '0', as --device spells it
    if kind == "openvino":  # runs on the CPU, where --half picks the runtime's reduced precision
        return OpenVINOBackend(path, device, fp16)
    if fp16 and device.type == "cpu":
        LOGGER.warning("WARNING: --half needs a CUDA device; running in float32 on CPU")
        fp16 = False
    if fp16 and kind in ("onnx", "tflite"):
        LOGGER.warning(f"WARNING: --half has no effect on {kind} models (precision is fixed at export)")
    return BACKENDS[kind](path, device, fp16)
