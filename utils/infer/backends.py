"""One inference interface over every model format we ship: .pt, .torchscript, .onnx, .tflite and OpenVINO IR.

detect, val and the Python API call `backend(im)` the same way whatever the file is:
`im` is float NCHW RGB in [0, 1] (torch tensor or numpy array), or one frame as `backend.frame_input` made it
(an exported file's own input array: no float pass, no per-frame quantising), and the result is a float32 torch tensor
(B, N, 5 + nc) on the backend's device: cx, cy, w, h in input pixels, objectness, class probabilities —
exactly what `DetectionModel` returns in eval mode, so NMS does not care where it came from.

Exported files carry their own metadata (names, stride, imgsz, nms: deploy/metadata.py writes and decodes
them) so they run without the training code or the data YAML; a file without names takes them from --data.
.onnx, .tflite and OpenVINO files are opened and run by deploy/'s engines, the same adapters the torch-free
runner, the profiler and the benchmarks use; this module turns their numpy batches into tensors on the
backend's device. Box outputs of every format are in input pixels, never normalised.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deploy.engines import OPENVINO_DIR_SUFFIX, openvino_xml_in  # torch-free: one adapter per runtime
from deploy.errors import MODEL_FILE, UserInputError
from deploy.metadata import decode_metadata
from deploy.preprocess import batch_to_input, to_input
from utils.core.log import LOGGER
from utils.core.torch_utils import select_device
from utils.infer.backend_base import Backend, EngineInput
from utils.infer.ensemble import Ensemble
from utils.infer.formats import EXPORT_FORMATS, export_format
from utils.weights.checkpoint import checkpoint_imgsz, load_checkpoint, model_from_checkpoint

SUFFIXES = {".pt": "pytorch", **{fmt.suffix: fmt.name for fmt in EXPORT_FORMATS}}  # suffix -> backend kind


class ExportedBackend(Backend):
    """A model file written by utils/infer/exporters.py: its names, stride, size and NMS come from its metadata."""

    def _apply_metadata(self, meta: dict[str, Any]) -> None:
        """Take names, stride, size and NMS from the file's decoded metadata, where it has them."""
        self.names = list(meta.get("names", self.names))
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
    """Our training checkpoint (utils.weights.checkpoint format), BN fused for speed. The file is read once: the
    model and the size it was trained at come from the same load."""

    def __init__(self, path: Path, device: torch.device, fp16: bool = False):
        ckpt = load_checkpoint(path)
        super().__init__(model_from_checkpoint(ckpt, path).fuse(), device, fp16, path=path)
        self.trained_imgsz = checkpoint_imgsz(ckpt)


class TorchScriptBackend(ExportedBackend):
    """A torch.jit.trace'd model with its metadata in the `config.txt` extra file."""

    kind = "torchscript"

    def __init__(self, path: Path, device: torch.device, fp16: bool = False):
        super().__init__(path, device, fp16)
        extra = {"config.txt": ""}
        try:
            model = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        except RuntimeError as e:
            raise UserInputError(f"not a readable TorchScript file ({str(e).splitlines()[0]})", MODEL_FILE,
                                 path) from None
        config: dict[str, Any] = {}
        if extra["config.txt"]:
            try:
                config = json.loads(extra["config.txt"])
            except json.JSONDecodeError as e:
                raise UserInputError(f"config.txt is not JSON ({e})", MODEL_FILE, path) from None
        self._apply_metadata(decode_metadata(config, path, "its config.txt"))
        self.model = model.half() if fp16 else model.float()
        self.model.eval()
        self.fixed_batch = int(config.get("batch", 1))  # a traced graph keeps the batch size it was traced with

    def _forward(self, im: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(im)


class EngineBackend(ExportedBackend):
    """A file one of deploy/'s engines opens (.onnx, .tflite, OpenVINO IR): tensors in and out around its numpy
    batch. ONNX runs on CUDA when the device is a GPU and onnxruntime-gpu has the provider; TFLite and OpenVINO run
    on the CPU. OpenVINO computes in f32, the .pt's numbers, or with `fp16` (--half) in the runtime's own default
    precision, bf16 on CPUs with AVX512-BF16 or AMX (faster, scores move by ~1e-2); `precision` says which."""

    def __init__(self, path: Path, device: torch.device, fp16: bool = False):
        super().__init__(path, device, False)
        engine = export_format(SUFFIXES[path.suffix.lower()]).engine
        self.engine = engine.open(path, torch.get_num_threads(), fp16, device.type == "cuda")
        self.kind, self.precision = self.engine.runtime, self.engine.compute
        self._place(device)
        self.cpu_runtime = self.device.type == "cpu"
        self._apply_metadata(self.engine.metadata)
        if "names" not in self.engine.metadata:
            LOGGER.warning(f"WARNING: {path}: no class names in {self.engine.metadata_source}; class names come "
                           f"from --data")
        if self.engine.dynamic:  # exported with dynamic axes: any multiple of stride works, imgsz is the default
            self.dynamic = True
        else:
            self.imgsz = self.engine.input_hw
        self.fixed_batch = self.engine.batch

    def _place(self, device: torch.device) -> None:
        """Outputs go to the GPU for ONNX on CUDA; runtimes that run on the CPU only say so and stay there."""
        if device.type == "cpu":
            return
        if self.kind != "onnx":
            LOGGER.warning(f"WARNING: {self.kind} models run on the CPU here; ignoring --device {device}")
            self.device = torch.device("cpu")
        elif not self.engine.on_cuda:
            LOGGER.warning("WARNING: onnxruntime has no CUDA provider here; running the ONNX model on CPU")

    def _forward(self, im: torch.Tensor) -> torch.Tensor:
        x = batch_to_input(im.detach().cpu().float().numpy(), self.engine.layout, self.engine.input_spec)
        return torch.from_numpy(self.engine.run(x))

    def frame_input(self, boxed_bgr: np.ndarray) -> torch.Tensor | EngineInput:
        """The frame straight into the file's layout, dtype and quantisation through deploy's pixel lookup (the
        same values bit for bit as the float path, without its float passes and per-frame quantising); a file
        exported for larger batches takes the float path, which pads the batch."""
        if (self.fixed_batch or 1) != 1:
            return self.frame_tensor(boxed_bgr)
        h, w = boxed_bgr.shape[:2]
        return EngineInput(to_input(boxed_bgr, self.engine.layout, self.engine.input_spec), (1, 3, h, w))

    def __call__(self, im: torch.Tensor | np.ndarray | EngineInput) -> torch.Tensor:
        if isinstance(im, EngineInput):  # frame_input's array: the runtime takes it as is
            return self._as_boxes(torch.from_numpy(self.engine.run(im.array)))
        return super().__call__(im)


# The formats torch runs itself; every other one runs in the deploy/ engine of its row in utils.infer.formats.
BACKENDS: dict[str, type[Backend]] = {"pytorch": PyTorchBackend, "torchscript": TorchScriptBackend}


def resolve_model_path(path: Path) -> Path:
    """An OpenVINO model folder (best_openvino_model/) stands for the one .xml inside it."""
    try:
        return openvino_xml_in(path)
    except ValueError as e:
        raise UserInputError(str(e), MODEL_FILE, path) from None


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
            raise UserInputError("give one (.pt, .torchscript, .onnx, .tflite or OpenVINO .xml)", MODEL_FILE)
        weights = weights[0]
    path = resolve_model_path(Path(weights))
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UserInputError(f"unsupported model format '{path.suffix}' (use one of: {', '.join(SUFFIXES)}, or a "
                             f"*{OPENVINO_DIR_SUFFIX} folder)", MODEL_FILE, path)
    if not path.is_file():
        raise UserInputError("file not found", MODEL_FILE, path)
    device = select_device(device)  # also '0', as --device spells it
    fmt = None if kind == "pytorch" else export_format(kind)
    if fmt is not None and fmt.half_at_runtime:  # OpenVINO: on the CPU, --half picks its reduced precision
        return EngineBackend(path, device, fp16)
    if fp16 and device.type == "cpu":
        LOGGER.warning("WARNING: --half needs a CUDA device; running in float32 on CPU")
        fp16 = False
    if fp16 and fmt is not None and fmt.engine is not None:
        LOGGER.warning(f"WARNING: --half has no effect on {kind} models (precision is fixed at export)")
    return BACKENDS.get(kind, EngineBackend)(path, device, fp16)
