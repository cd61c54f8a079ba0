"""The inference runtimes: ONNX Runtime for .onnx, LiteRT (ai-edge-litert) for .tflite, OpenVINO for its IR.

Each takes the array `preprocess.to_input` built for it (layout, dtype and quantisation of the file's own
input tensor) and returns the first output as float32, dequantised when the file's output is int8/uint8.
A runtime is imported only when a file needs it, so a device may install just one of them.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserInputError
from .log import LOGGER
from .metadata import ModelInfo, read_tflite_metadata, parse_metadata

SUFFIXES = (".onnx", ".tflite", ".xml")
OPENVINO_DIR_SUFFIX = "_openvino_model"  # export.py's folder (best_openvino_model/best.xml + .bin)
OPENVINO_KEYS = ("names", "stride", "imgsz", "nms", "layout", "precision")  # what parse_metadata reads
QUANTIZED_DTYPES = (np.int8, np.uint8, np.int16)
ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
               "tensor(int8)": np.int8}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor: dtype and affine quantisation (real = (q - zero_point) * scale; scale 0: none)."""

    dtype: type
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.dtype(self.dtype).type in QUANTIZED_DTYPES


def default_threads() -> int:
    """Every core the process may use (an affinity mask on a shared board can hold fewer than cpu_count)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Engine:
    """A loaded model file. `batch` is None and `dynamic` True when the input size is free (dynamic ONNX)."""

    def __init__(self, path: Path, info: ModelInfo, shape: list, layout: str, input_spec: TensorSpec,
                 output_spec: TensorSpec):
        self.path, self.info, self.layout = path, info, layout
        self.precision = info.precision  # what runs; a runtime that computes in another precision says so
        self.input_spec, self.output_spec = input_spec, output_spec
        batch, h, w = (shape[0], shape[1], shape[2]) if layout == "NHWC" else (shape[0], shape[2], shape[3])
        self.batch = batch if isinstance(batch, int) and batch > 0 else None
        self.dynamic = not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0)
        self.input_hw = info.imgsz if self.dynamic else (int(h), int(w))
        if not self.dynamic and self.input_hw != info.imgsz:
            raise UserInputError(f"--model {path}: input tensor is {self.input_hw[0]}x{self.input_hw[1]} but its metadata "
                              f"says imgsz {info.imgsz[0]}x{info.imgsz[1]}; re-export the file")

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run one image (batch 1 array); a file exported with a larger fixed batch gets zero images alongside."""
        if self.batch and self.batch > 1:
            x = np.concatenate([x, np.zeros((self.batch - 1, *x.shape[1:]), x.dtype)])
        y = self._run(x)[:1]
        spec = self.output_spec
        if spec.quantized:
            return (y.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)
        return y.astype(np.float32, copy=False)


def layout_of(shape: list, declared: str | None) -> str:
    """NHWC when the last axis holds the 3 colour channels and the second does not; else what the file declares."""
    if len(shape) != 4:
        raise ValueError(f"expected a 4-D image input, got shape {shape}")
    if shape[-1] == 3 and shape[1] != 3:
        return "NHWC"
    if shape[1] == 3 and shape[-1] != 3:
        return "NCHW"
    return declared or "NCHW"


class OnnxEngine(Engine):
    """ONNX Runtime; the CUDA provider when onnxruntime-gpu is installed with a GPU (e.g. a Jetson), else CPU."""

    def __init__(self, path: Path, threads: int):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserInputError(f"--model {path}: .onnx files need onnxruntime (pip install onnxruntime)") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf types
            raise UserInputError(f"--model {path}: not a readable ONNX model ({str(e).splitlines()[0]})") from None
        info = parse_metadata(self.session.get_modelmeta().custom_metadata_map, path, "its ONNX metadata_props")
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        if inp.type not in ONNX_DTYPES:
            raise UserInputError(f"--model {path}: unsupported input type {inp.type}")
        try:
            layout = layout_of(list(inp.shape), info.layout)
        except ValueError as e:
            raise UserInputError(f"--model {path}: {e}") from None
        super().__init__(path, info, list(inp.shape), layout, TensorSpec(ONNX_DTYPES[inp.type]), TensorSpec(np.float32))

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class TFLiteEngine(Engine):
    """LiteRT interpreter (XNNPACK on CPU); fp32, fp16-weight and int8 files alike."""

    def __init__(self, path: Path, threads: int):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise UserInputError(f"--model {path}: .tflite files need ai-edge-litert "
                              f"(pip install ai-edge-litert)") from None
        info = read_tflite_metadata(path)
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise UserInputError(f"--model {path}: not a readable TFLite model ({str(e).splitlines()[0]})") from None
        inp, out = self.interpreter.get_input_details()[0], self.interpreter.get_output_details()[0]
        self.input_index, self.output_index = inp["index"], out["index"]
        shape = [int(s) for s in inp["shape"]]
        try:
            layout = layout_of(shape, info.layout)
        except ValueError as e:
            raise UserInputError(f"--model {path}: {e}") from None
        super().__init__(path, info, shape, layout, self._spec(inp), self._spec(out))

    @staticmethod
    def _spec(details: dict) -> TensorSpec:
        scale, zero_point = details.get("quantization", (0.0, 0))
        return TensorSpec(details["dtype"], float(scale), int(zero_point))

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input_index, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)


@functools.lru_cache(maxsize=None)
def openvino_core():
    """The process's one OpenVINO Core. OpenVINO 2026.4 swaps a thread's signal stack when a Core compiles and
    restores it only if Cores are freed in reverse creation order on that thread: a Core per model left the
    main thread on freed memory, and the next signal Python handles (a child exiting) crashed the process."""
    import openvino as ov

    return ov.Core()


def compile_openvino(path: Path, half: bool = False, threads: int | None = None) -> tuple[Any, dict[str, str]]:
    """(the IR at `path` compiled for the CPU, its rt_info metadata): f32, the .pt's numbers, or with `half`
    (--half) the runtime's own default precision, bf16 on CPUs with AVX512-BF16 or AMX (faster, scores a little
    off f32). RuntimeError: not a readable IR. Shared by this runner and the torch side's backend."""
    core = openvino_core()
    model = core.read_model(str(path))
    meta = {key: model.get_rt_info(["model_info", key]).astype(str) for key in OPENVINO_KEYS
            if model.has_rt_info(["model_info", key])}
    config: dict[str, Any] = {} if half else {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(model, "CPU", config), meta


def openvino_compute(compiled: Any) -> str:
    """The precision a compiled OpenVINO model computes in: 'f32', 'bf16' or 'f16'."""
    return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


class OpenVINOEngine(Engine):
    """OpenVINO runtime on the CPU, f32 by default (detect.py's numbers); `half` as in compile_openvino."""

    def __init__(self, path: Path, threads: int, half: bool = False):
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise UserInputError(f"--model {path}: OpenVINO models need openvino (pip install openvino)") from None
        try:
            self.compiled, raw = compile_openvino(path, half, threads)
        except RuntimeError as e:
            raise UserInputError(f"--model {path}: not a readable OpenVINO model ({str(e).splitlines()[0]})") from None
        info = parse_metadata(raw, path, "its rt_info model_info")
        shape = [d.get_length() if d.is_static else -1 for d in self.compiled.input(0).get_partial_shape()]
        try:
            layout = layout_of(shape, info.layout)
        except ValueError as e:
            raise UserInputError(f"--model {path}: {e}") from None
        super().__init__(path, info, shape, layout, TensorSpec(np.float32), TensorSpec(np.float32))
        compute = openvino_compute(self.compiled)
        if compute != "f32":
            self.precision = f"{info.precision}, {compute} compute"

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.compiled(x)[0]


def openvino_xml_in(path: Path) -> Path:
    """export.py's OpenVINO folder (best_openvino_model/) stands for the one .xml inside it; any other path is
    itself. ValueError says what is wrong with such a folder (each caller names its own flag)."""
    if not path.name.endswith(OPENVINO_DIR_SUFFIX):
        return path
    if not path.is_dir():
        raise ValueError("folder not found")
    xmls = sorted(path.glob("*.xml"))
    if len(xmls) != 1:
        raise ValueError(f"expected one .xml in the OpenVINO model folder, found {len(xmls)}")
    return xmls[0]


def load_engine(model: str | Path, threads: int | None = None, half: bool = False) -> Engine:
    """Open `model` with the runtime its extension names (.onnx, .tflite, OpenVINO .xml or its folder).

    `half` is OpenVINO's --half (its runtime's default precision); other files' precision is fixed at export.
    """
    try:
        path = openvino_xml_in(Path(model))
    except ValueError as e:
        raise UserInputError(f"--model {model}: {e}") from None
    if path.suffix.lower() not in SUFFIXES:
        raise UserInputError(f"--model {path}: unsupported format '{path.suffix}' (use .onnx, .tflite, OpenVINO .xml "
                          f"or a *{OPENVINO_DIR_SUFFIX} folder; export .pt checkpoints with export.py first)")
    if not path.is_file():
        raise UserInputError(f"--model {path}: file not found")
    threads = threads or default_threads()
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return OpenVINOEngine(path, threads, half)
    if half:
        LOGGER.warning(f"WARNING: --half has no effect on {suffix} files (precision is fixed at export)")
    return OnnxEngine(path, threads) if suffix == ".onnx" else TFLiteEngine(path, threads)
