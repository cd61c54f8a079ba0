"""The inference runtimes, one adapter each: ONNX Runtime for .onnx, LiteRT (ai-edge-litert) for .tflite, OpenVINO
for its IR.

An engine is the one place its runtime opens a file: it reads the file's metadata, says which input tensor the
file takes (shape, layout, dtype and quantisation) and runs a batch, numpy in, the first output out as float32
(dequantised when the file's output is int8/uint8). The runner, the torch side's backends, the profiler and the
benchmarks all open files through these classes, so a runtime's options and quirks live in one place. A runtime
is imported only when a file needs it, so a device may install just one of them.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MODEL_FILE, UserInputError
from .log import LOGGER
from .metadata import ModelInfo, decode_metadata, parse_metadata, read_tflite_metadata

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


def layout_of(shape: list, declared: str | None) -> str:
    """NHWC when the last axis holds the 3 colour channels and the second does not; else what the file declares."""
    if len(shape) != 4:
        raise ValueError(f"expected a 4-D image input, got shape {shape}")
    if shape[-1] == 3 and shape[1] != 3:
        return "NHWC"
    if shape[1] == 3 and shape[-1] != 3:
        return "NCHW"
    return declared or "NCHW"


ENGINES: dict[str, type[Engine]] = {}  # file suffix -> its engine; each Engine subclass with a suffix adds itself


class Engine:
    """A model file open in its runtime. `metadata` holds the keys the file has, decoded; `info` the runner's
    complete set. `batch` is None and `dynamic` True (`input_hw` None) when the input size is free (dynamic ONNX)."""

    suffix = ""  # the file ending this runtime opens
    runtime = ""  # its name, the torch side's backend `kind`
    half_at_runtime = False  # whether --half changes how it computes (else precision is fixed at export)

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if cls.suffix:
            ENGINES[cls.suffix] = cls

    def __init__(self, path: Path, raw: dict[str, Any], where: str, shape: list, input_spec: TensorSpec,
                 output_spec: TensorSpec):
        self.path = path
        self.raw_metadata, self.metadata_source = raw, where
        self.metadata = decode_metadata(raw, path, where)
        try:
            self.layout = layout_of(shape, self.metadata.get("layout"))
        except ValueError as e:
            raise UserInputError(str(e), MODEL_FILE, path) from None
        self.input_shape, self.input_spec, self.output_spec = shape, input_spec, output_spec
        batch, h, w = (shape[0], shape[1], shape[2]) if self.layout == "NHWC" else (shape[0], shape[2], shape[3])
        self.batch = batch if isinstance(batch, int) and batch > 0 else None
        self.dynamic = not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0)
        self.input_hw = None if self.dynamic else (int(h), int(w))

    @classmethod
    def open(cls, path: Path, threads: int | None = None, half: bool = False, cuda: bool = False) -> Engine:
        """The engine for the options every door has (threads, --half, a CUDA device); each runtime maps them onto
        its own constructor's options, which the benchmarks also set directly."""
        return cls(path, threads)

    @property
    def compute(self) -> str | None:
        """The precision the runtime computes in where it chooses one (OpenVINO); None: the file's own."""
        return None

    @property
    def precision(self) -> str:
        """What runs: the file's precision, and the runtime's compute precision where that differs from f32."""
        stored = self.metadata.get("precision", "fp32")
        return stored if self.compute in (None, "f32") else f"{stored}, {self.compute} compute"

    @functools.cached_property
    def info(self) -> ModelInfo:
        """The metadata the runner needs, checked complete and matching the input tensor (the torch side reads
        `metadata` instead: a file without names takes them from --data there)."""
        info = parse_metadata(self.raw_metadata, self.path, self.metadata_source)
        if not self.dynamic and self.input_hw != info.imgsz:
            raise UserInputError(f"input tensor is {self.input_hw[0]}x{self.input_hw[1]} but its metadata says imgsz "
                                 f"{info.imgsz[0]}x{info.imgsz[1]}; re-export the file", MODEL_FILE, self.path)
        return info

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, x: np.ndarray) -> np.ndarray:
        """A batch in the file's layout, dtype and quantisation (preprocess.to_input) -> its first output, float32."""
        y = self._run(x)
        spec = self.output_spec
        if spec.quantized:
            return (y.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)
        return y.astype(np.float32, copy=False)


class OnnxEngine(Engine):
    """ONNX Runtime on the CPU, or with `cuda` the CUDA provider where onnxruntime-gpu has one (e.g. a Jetson).
    `spinning` False lets idle threads sleep: beside other sessions in one process, spinning ones steal the cores
    the timed one runs on (yolov5n read 49.9 ms beside other sessions against 26.9 ms alone). `profile`: ONNX
    Runtime's per-node trace beside the file (`session.end_profiling()`)."""

    suffix, runtime = ".onnx", "onnx"

    def __init__(self, path: Path, threads: int | None = None, cuda: bool = False, spinning: bool = True,
                 profile: bool = False):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserInputError(".onnx files need onnxruntime (pip install onnxruntime)", MODEL_FILE, path) from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if profile:
            options.enable_profiling, options.profile_file_prefix = True, str(path.with_suffix(""))
        wanted = ("CUDAExecutionProvider", "CPUExecutionProvider") if cuda else ("CPUExecutionProvider",)
        providers = [p for p in wanted if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf types
            raise UserInputError(f"not a readable ONNX model ({str(e).splitlines()[0]})", MODEL_FILE, path) from None
        inp = self.session.get_inputs()[0]
        if inp.type not in ONNX_DTYPES:
            raise UserInputError(f"unsupported input type {inp.type}", MODEL_FILE, path)
        self.input_name = inp.name
        super().__init__(path, self.session.get_modelmeta().custom_metadata_map, "its ONNX metadata_props",
                         list(inp.shape), TensorSpec(ONNX_DTYPES[inp.type]), TensorSpec(np.float32))

    @classmethod
    def open(cls, path: Path, threads: int | None = None, half: bool = False, cuda: bool = False) -> Engine:
        return cls(path, threads, cuda=cuda)

    @property
    def on_cuda(self) -> bool:
        """Whether the session got the CUDA provider."""
        return "CUDAExecutionProvider" in self.session.get_providers()

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class TFLiteEngine(Engine):
    """LiteRT interpreter (XNNPACK on CPU); fp32, fp16-weight and int8 files alike."""

    suffix, runtime = ".tflite", "tflite"

    def __init__(self, path: Path, threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise UserInputError(".tflite files need ai-edge-litert (pip install ai-edge-litert)", MODEL_FILE,
                                 path) from None
        raw, where = read_tflite_metadata(path)
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise UserInputError(f"not a readable TFLite model ({str(e).splitlines()[0]})", MODEL_FILE, path) from None
        inp, out = self.interpreter.get_input_details()[0], self.interpreter.get_output_details()[0]
        self.input_index, self.output_index = inp["index"], out["index"]
        super().__init__(path, raw, where, [int(s) for s in inp["shape"]], self._spec(inp), self._spec(out))

    @staticmethod
    def _spec(details: dict) -> TensorSpec:
        scale, zero_point = details.get("quantization", (0.0, 0))
        return TensorSpec(details["dtype"], float(scale), int(zero_point))

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input_index, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)


@functools.lru_cache(maxsize=None)
def openvino_core() -> Any:
    """The process's one OpenVINO Core. OpenVINO 2026.4 swaps a thread's signal stack when a Core compiles and
    restores it only if Cores are freed in reverse creation order on that thread: a Core per model left the
    main thread on freed memory, and the next signal Python handles (a child exiting) crashed the process."""
    import openvino as ov

    return ov.Core()


class OpenVINOEngine(Engine):
    """OpenVINO on the CPU. `precision` is the INFERENCE_PRECISION_HINT: f32 by default (the .pt's numbers), None
    for the runtime's own choice (bf16 on CPUs with AVX512-BF16 or AMX: faster, scores a little off f32).
    `latency` sets PERFORMANCE_HINT LATENCY, `perf_count` PERF_COUNT (per-node counters, benchmarks/ov_counters)."""

    suffix, runtime, half_at_runtime = ".xml", "openvino", True

    def __init__(self, path: Path, threads: int | None = None, precision: str | None = "f32", latency: bool = False,
                 perf_count: bool = False):
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise UserInputError("OpenVINO models need openvino (pip install openvino)", MODEL_FILE, path) from None
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if latency:
            config["PERFORMANCE_HINT"] = "LATENCY"
        if perf_count:
            config["PERF_COUNT"] = True
        try:
            model = openvino_core().read_model(str(path))
            raw = {key: model.get_rt_info(["model_info", key]).astype(str) for key in OPENVINO_KEYS
                   if model.has_rt_info(["model_info", key])}
            self.compiled = openvino_core().compile_model(model, "CPU", config)
        except RuntimeError as e:
            raise UserInputError(f"not a readable OpenVINO model ({str(e).splitlines()[0]})", MODEL_FILE,
                                 path) from None
        shape = [d.get_length() if d.is_static else -1 for d in self.compiled.input(0).get_partial_shape()]
        super().__init__(path, raw, "its rt_info model_info", shape, TensorSpec(np.float32), TensorSpec(np.float32))

    @classmethod
    def open(cls, path: Path, threads: int | None = None, half: bool = False, cuda: bool = False) -> Engine:
        """--half: the runtime's own default precision instead of f32."""
        return cls(path, threads, precision=None if half else "f32")

    @property
    def compute(self) -> str:
        """'f32', 'bf16' or 'f16': what the compiled model computes in."""
        return self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.compiled(x)[0]


def openvino_xml_in(path: Path) -> Path:
    """export.py's OpenVINO folder (best_openvino_model/) stands for the one .xml inside it; any other path is
    itself. ValueError says what is wrong with such a folder."""
    if not path.name.endswith(OPENVINO_DIR_SUFFIX):
        return path
    if not path.is_dir():
        raise ValueError("folder not found")
    xmls = sorted(path.glob("*.xml"))
    if len(xmls) != 1:
        raise ValueError(f"expected one .xml in the OpenVINO model folder, found {len(xmls)}")
    return xmls[0]


def open_engine(model: str | Path, threads: int | None = None, half: bool = False, cuda: bool = False) -> Engine:
    """Open `model` with the engine its extension names (.onnx, .tflite, OpenVINO .xml or its folder)."""
    try:
        path = openvino_xml_in(Path(model))
    except ValueError as e:
        raise UserInputError(str(e), MODEL_FILE, model) from None
    if path.suffix.lower() not in ENGINES:
        raise UserInputError(f"unsupported format '{path.suffix}' (use .onnx, .tflite, OpenVINO .xml or a "
                             f"*{OPENVINO_DIR_SUFFIX} folder; export .pt checkpoints with export.py first)", MODEL_FILE,
                             path)
    if not path.is_file():
        raise UserInputError("file not found", MODEL_FILE, path)
    return ENGINES[path.suffix.lower()].open(path, threads, half, cuda)


def load_engine(model: str | Path, threads: int | None = None, half: bool = False) -> Engine:
    """The runner's engine: every core by default, CUDA where onnxruntime-gpu has it. `half` is OpenVINO's --half
    (its runtime's default precision); other files' precision is fixed at export."""
    engine = open_engine(model, threads or default_threads(), half, cuda=True)
    if half and not engine.half_at_runtime:
        LOGGER.warning(f"WARNING: --half has no effect on {engine.path.suffix.lower()} files "
                       f"(precision is fixed at export)")
    return engine
