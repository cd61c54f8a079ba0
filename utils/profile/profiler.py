"""Where a model's time goes: FLOPs, memory access, latency and achieved FLOPS per layer and per operator.

FasterNet's thesis (Chen et al., CVPR 2023) is that FLOPs alone lie about speed: latency = FLOPs / FLOPS,
and operators that touch many bytes per FLOP (depthwise convs, concats, copies) run at a small fraction of
the device's FLOPS. This module measures both factors instead of assuming them:

- `record_ops` runs a forward under a TorchDispatchMode and logs every aten operator with its FLOPs
  (torch.utils.flop_counter's formulas: 2 x multiply-accumulates), memory access in bytes (inputs +
  outputs + weights, as the paper counts it; views move nothing) and its own synchronised latency;
- `profile_models` times each YAML row with its real inputs (median of N, models interleaved so that
  background load hits all of them alike) and joins the operator log per row and per operator type;
- `operator_benchmark` reproduces the paper's Table 1 (Conv / GConv / DWConv / PConv) on this device;
- `whole_model_rows` times the full model in PyTorch eager, ONNX Runtime and TFLite.
"""
from __future__ import annotations

import copy
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from deploy.engines import OnnxEngine, TFLiteEngine
from models.fasternet import PConv, set_pconv_mode
from models.yolo import DetectionModel
from utils.core.log import LOGGER
from utils.core.system import MB, current_rss_mb, peak_rss_mb, reset_peak_rss
from utils.core.torch_utils import count_params, model_flops
from utils.infer.exporters import export_onnx

# Feature maps of a YOLOv5-s backbone's four stages: (channels, stride) -> 64@160², ..., 512@20² at 640.
BACKBONE_STAGES = ((64, 4), (128, 8), (256, 16), (512, 32))
PCONV_N_DIVS = (2, 4, 8)
PCONV_PATHS = ("split_cat", "slicing")
RUNTIMES = ("pytorch", "onnx", "tflite")


TIMERS = ("wall", "cpu")


@dataclass(frozen=True)
class Stopwatch:
    """How a latency is read: a clock, bracketed by a device sync so that queued GPU work is counted.

    'wall' (perf_counter) is latency on a quiet machine. 'cpu' (process CPU time) is immune to other
    processes taking the cores, and equals latency when the work runs on one thread: the only usable
    reading on a shared, overloaded box.
    """

    sync: Callable[[], None]
    clock: Callable[[], float] = time.perf_counter

    def time(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        """(fn's result, seconds it took)."""
        self.sync()
        t0 = self.clock()
        out = fn()
        self.sync()
        return out, self.clock() - t0


def make_stopwatch(device: torch.device, timer: str = "wall") -> Stopwatch:
    if timer not in TIMERS:
        raise ValueError(f"timer must be one of {TIMERS}, got {timer!r}")
    syncs = {"cuda": lambda: torch.cuda.synchronize(device), "mps": lambda: torch.mps.synchronize()}
    return Stopwatch(syncs.get(device.type, lambda: None), time.perf_counter if timer == "wall" else time.process_time)


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1e3


def tensors_in(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def is_view_op(func) -> bool:
    """A non-mutating op whose result aliases its input (view, split, slice, permute): it moves no data."""
    schema = func._schema
    return not schema.is_mutable and any(r.alias_info is not None for r in schema.returns)


def op_flops(func, args: tuple, kwargs: dict, out: Any) -> int:
    """FLOPs of one aten call by torch.utils.flop_counter's formulas (0 for ops it does not count)."""
    formula = flop_registry.get(func._overloadpacket)
    return int(formula(*args, **kwargs, out_val=out)) if formula is not None else 0


def op_bytes(func, args: tuple, kwargs: dict, out: Any) -> int:
    """Memory access of one aten call: bytes read (inputs, weights) + bytes written (outputs).

    Views move nothing. A mutating op's aliased result is its write; `copy_` does not read its destination.
    """
    if is_view_op(func):
        return 0
    inputs = tensors_in((args, kwargs))
    if func._overloadpacket is torch.ops.aten.copy_:
        inputs = inputs[1:]
    return sum(tensor_bytes(t) for t in inputs) + sum(tensor_bytes(t) for t in tensors_in(out))


def conv_kind(args: tuple) -> str:
    """Name a convolution by what it computes: 'Conv 3x3', 'Conv 3x3 s2', 'DWConv 3x3', 'GConv 3x3 g16'."""
    x, w, stride, groups = args[0], args[1], args[3], args[8]
    k = "x".join(str(s) for s in w.shape[2:])
    if groups == 1:
        name = f"Conv {k}"
    elif groups == x.shape[1]:
        name = f"DWConv {k}"
    else:
        name = f"GConv {k} g{groups}"
    s = max(stride) if isinstance(stride, (list, tuple)) else stride
    return f"{name} s{s}" if s > 1 else name


def op_kind(func, args: tuple) -> str:
    """Operator type for the tables: convolutions by kernel and grouping, everything else by aten name."""
    if func._overloadpacket is torch.ops.aten.convolution:
        return conv_kind(args)
    return func._overloadpacket.__name__


@dataclass
class OpRecord:
    """One aten call: which module ran it, what it was, what it cost."""

    module: str  # innermost module's qualified name inside the profiled root, '' for the root itself
    kind: str
    flops: int
    bytes: int
    seconds: float


class OpRecorder(TorchDispatchMode):
    """Log every aten call made inside a module tree with its FLOPs, bytes and synchronised latency.

    Module attribution comes from forward pre/post hooks on every submodule of `root`, so a record's
    `module` is e.g. '2.m.0.pconv.conv' (row 2, first FasterNet block, its PConv's conv).
    """

    def __init__(self, root: nn.Module, watch: Stopwatch):
        super().__init__()
        self.root, self.watch = root, watch
        self.records: list[OpRecord] = []
        self.stack: list[str] = [""]
        self.handles: list = []

    def __enter__(self):
        for name, m in self.root.named_modules():
            if name:
                self.handles.append(m.register_forward_pre_hook(self._push(name)))
                self.handles.append(m.register_forward_hook(self._pop))
        return super().__enter__()

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        return super().__exit__(*exc)

    def _push(self, name: str):
        def hook(module, inputs):
            self.stack.append(name)
        return hook

    def _pop(self, module, inputs, output):
        self.stack.pop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out, seconds = self.watch.time(lambda: func(*args, **kwargs))
        self.records.append(OpRecord(self.stack[-1], op_kind(func, args), op_flops(func, args, kwargs, out),
                                     op_bytes(func, args, kwargs, out), seconds))
        return out


def record_ops(root: nn.Module, run: Callable[[], Any], device: torch.device, passes: int = 1,
               timer: str = "wall") -> list[OpRecord]:
    """Run `run()` `passes` times under an OpRecorder; each op's latency is the median over the passes.

    `run` must issue the same op sequence every pass (warm caches first); a mismatch raises RuntimeError.
    """
    logs = []
    for _ in range(passes):  # not inference_mode: under it composite ops (conv2d) reach the mode undecomposed
        with torch.inference_mode(False), torch.no_grad(), OpRecorder(root, make_stopwatch(device, timer)) as recorder:
            run()
        logs.append(recorder.records)
    if any(len(log) != len(logs[0]) for log in logs):
        raise RuntimeError("the forward pass issued a different number of operators between passes")
    merged = []
    for same in zip(*logs):
        first = same[0]
        if any(r.kind != first.kind for r in same):
            raise RuntimeError("the forward pass issued different operators between passes")
        merged.append(OpRecord(first.module, first.kind, first.flops, first.bytes,
                               statistics.median(r.seconds for r in same)))
    return merged


def layer_of(module_name: str) -> int:
    """YAML row index of a record whose module lives under DetectionModel.model ('2.m.0' → 2; root → -1)."""
    head = module_name.split(".", 1)[0]
    return int(head) if head.isdigit() else -1


def time_layers(model: nn.Module, x: torch.Tensor, watch: Stopwatch) -> list[float]:
    """Seconds each YAML row took in one forward, each row timed alone with its real inputs."""
    seconds = []

    def timed(m: nn.Module, inp):
        out, dt = watch.time(lambda: m(inp))
        seconds.append(dt)
        return out

    with torch.inference_mode():
        model.forward_layers(x, timed)
    return seconds


@dataclass
class ModelProfile:
    """Per-row and per-operator measurements of one model at one input size."""

    name: str
    params: int
    flops: int  # FlopCounterMode's total for the whole forward
    layer_rows: list[dict] = field(default_factory=list)
    ops: list[OpRecord] = field(default_factory=list)

    def op_rows(self) -> list[dict]:
        """Operators aggregated by type: count, FLOPs, bytes, summed median latency, achieved GFLOPS."""
        return aggregate_ops(self.ops, lambda r: r.kind, "operator")

    def module_rows(self, depth: int = 4) -> list[dict]:
        """Operators aggregated by module path cut to `depth` parts (e.g. '2.m.0.pconv' or '2.cv1.conv')."""
        return aggregate_ops(self.ops, lambda r: ".".join(r.module.split(".")[:depth]), "module")


def aggregate_ops(ops: list[OpRecord], key: Callable[[OpRecord], str], label: str) -> list[dict]:
    groups: dict[str, list[OpRecord]] = {}
    for r in ops:
        groups.setdefault(key(r), []).append(r)
    rows = []
    for name, recs in groups.items():
        seconds = sum(r.seconds for r in recs)
        flops = sum(r.flops for r in recs)
        nbytes = sum(r.bytes for r in recs)
        rows.append({label: name, "calls": len(recs), "GFLOPs": flops / 1e9, "MB": nbytes / MB,
                     "FLOP/B": flops / nbytes if nbytes else 0.0, "ms": seconds * 1e3,
                     "GFLOPS": flops / seconds / 1e9 if seconds else 0.0})
    return rows


def describe_rows(model: nn.Module) -> list[dict]:
    """The YAML rows as models/yolo.py built them: index, from, module type, repeats, parameters."""
    return [{"layer": m.i, "from": str(m.f), "module": m.type, "n": m.n, "params": m.np} for m in model.model]


def prepare_model(model: DetectionModel, device: torch.device, pconv_mode: str = "auto") -> DetectionModel:
    """Inference form: BN folded into convs, eval mode, on `device`, PConv on the requested path."""
    return copy.deepcopy(model).to(device).eval().fuse().set_pconv_mode(pconv_mode)


def profile_models(models: dict[str, nn.Module], imgsz: int, device: torch.device, runs: int = 20,
                   warmup: int = 3, batch: int = 1, timer: str = "wall") -> list[ModelProfile]:
    """Per-layer latency (median of `runs`, models interleaved) and the per-operator log of each model.

    Models must be prepared (`prepare_model`): fused, eval, on `device`.
    """
    watch = make_stopwatch(device, timer)
    inputs = {name: torch.rand(batch, m.yaml.get("ch", 3), imgsz, imgsz, device=device) for name, m in models.items()}
    for name, m in models.items():
        for _ in range(warmup):
            time_layers(m, inputs[name], watch)
    per_run: dict[str, list[list[float]]] = {name: [] for name in models}
    for _ in range(runs):
        for name, m in models.items():
            per_run[name].append(time_layers(m, inputs[name], watch))
    profiles = []
    for name, m in models.items():
        ops = record_ops(m.model, lambda: m(inputs[name]), device, max(3, runs // 4), timer)
        profile = ModelProfile(name, count_params(m), int(round(model_flops(m, imgsz) * 1e9)) * batch, ops=ops)
        layer_ms = [median_ms(list(s)) for s in zip(*per_run[name])]
        for row, ms in zip(describe_rows(m), layer_ms):
            recs = [r for r in ops if layer_of(r.module) == row["layer"]]
            flops, nbytes = sum(r.flops for r in recs), sum(r.bytes for r in recs)
            row.update({"GFLOPs": flops / 1e9, "MB": nbytes / MB, "FLOP/B": flops / nbytes if nbytes else 0.0,
                        "ms": ms, "GFLOPS": flops / ms / 1e6 if ms else 0.0})
            profile.layer_rows.append(row)
        profiles.append(profile)
    return profiles


# ----------------------------------------------------------------- operator micro-benchmark (paper Table 1)
def operator_suite(c: int) -> dict[str, nn.Module]:
    """The paper's Table 1 operators on c channels: dense, group (g=16), depthwise, and PConv variants."""
    suite: dict[str, nn.Module] = {
        "Conv 3x3": nn.Conv2d(c, c, 3, 1, 1, bias=False),
        "GConv 3x3 g16": nn.Conv2d(c, c, 3, 1, 1, groups=16, bias=False),
        "DWConv 3x3": nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False),
    }
    for n_div in PCONV_N_DIVS:
        for path in PCONV_PATHS:
            suite[f"PConv 1/{n_div} {path}"] = set_pconv_mode(PConv(c, n_div), path)
    return suite


def time_calls(fns: dict[str, Callable[[], Any]], runs: int, warmup: int, watch: Stopwatch) -> dict[str, list[float]]:
    """Seconds of each timed call of each function, calls interleaved round by round (fair under background load)."""
    seconds: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for i in range(warmup + runs):
            for k, fn in fns.items():
                dt = watch.time(fn)[1]
                if i >= warmup:
                    seconds[k].append(dt)
    return seconds


def operator_benchmark(imgsz: int, device: torch.device, runs: int = 50, warmup: int = 5, batch: int = 1,
                       timer: str = "wall") -> list[dict]:
    """FLOPs, memory access, latency and achieved GFLOPS of each Table-1 operator at each backbone stage.

    FLOPs count the arithmetic actually done (for PConv only its c/n_div-channel conv), bytes every
    tensor each operator reads and writes — for PConv its split/cat or clone/copy traffic too.
    """
    watch = make_stopwatch(device, timer)
    rows = []
    for c, stride in BACKBONE_STAGES:
        side = max(imgsz // stride, 1)
        x = torch.rand(batch, c, side, side, device=device)
        suite = {k: m.to(device).eval() for k, m in operator_suite(c).items()}
        seconds = time_calls({k: (lambda m=m: m(x)) for k, m in suite.items()}, runs, warmup, watch)
        for k, m in suite.items():
            ops = record_ops(m, lambda m=m: m(x), device)
            flops, nbytes, ms = sum(r.flops for r in ops), sum(r.bytes for r in ops), median_ms(seconds[k])
            rows.append({"stage": f"{c}@{side}x{side}", "operator": k, "GFLOPs": flops / 1e9, "MB": nbytes / MB,
                         "FLOP/B": flops / nbytes, "ms": ms, "GFLOPS": flops / ms / 1e6,
                         "min_ms": min(seconds[k]) * 1e3})
    return rows


# ----------------------------------------------------------------- whole-model rows
def pytorch_runner(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    return lambda: model(x)


def onnx_runner(model: nn.Module, x: torch.Tensor, path: Path, threads: int) -> Callable[[], Any]:
    """Export with the exporter every ONNX file of ours comes from, and run it in the runner's ONNX engine."""
    export = copy.deepcopy(model).cpu().eval()
    if hasattr(export, "set_export_mode"):
        export.set_export_mode(True)
    with torch.no_grad():
        export_onnx(export, x.cpu(), path, metadata={})
    engine = OnnxEngine(path, threads)
    data = x.cpu().numpy()
    return lambda: engine.run(data)


def tflite_available() -> bool:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        import litert_torch  # noqa: F401
    except ImportError:
        return False
    return True


def tflite_runner(model: nn.Module, x: torch.Tensor, path: Path, threads: int) -> Callable[[], Any]:
    """Convert with litert-torch straight from PyTorch and run it in the runner's TFLite engine (XNNPACK)."""
    import litert_torch

    export = copy.deepcopy(model).cpu().eval()
    if hasattr(export, "set_export_mode"):
        export.set_export_mode(True)
    litert_torch.convert(export, (x.cpu(),)).export(str(path))
    engine = TFLiteEngine(path, threads)
    data = x.cpu().numpy()
    if tuple(engine.input_shape) != data.shape:  # an NHWC signature
        data = data.transpose(0, 2, 3, 1)
    data = np.ascontiguousarray(data, dtype=engine.input_spec.dtype)
    return lambda: engine.run(data)


def whole_model_rows(models: dict[str, nn.Module], imgsz: int, device: torch.device, backends: tuple[str, ...],
                     runs: int = 30, warmup: int = 5, batch: int = 1, threads: int = 2,
                     timer: str = "wall") -> list[dict]:
    """Median latency, achieved GFLOPS, throughput, peak memory and build time of every model x backend.

    Per backend, all models' runners are built first and then timed round-robin, so a noisy neighbour
    slows every model alike; backends are timed one after another, because one runtime's idle
    spinning threads would slow the next runtime's run. Peak memory is measured per runner before the
    timing rounds: process peak RSS (and its rise over the RSS before the forwards) on CPU,
    torch.cuda.max_memory_allocated for PyTorch on CUDA.
    """
    watch = make_stopwatch(device, timer)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pconv_bench_") as tmp:
        for backend in backends:
            runners: dict[str, Callable[[], Any]] = {}
            info: dict[str, dict] = {}
            for name, model in models.items():
                x = torch.rand(batch, model.yaml.get("ch", 3), imgsz, imgsz, device=device)
                t0 = time.perf_counter()
                info[name] = {"model": name, "backend": backend, "params": count_params(model),
                              "GFLOPs": model_flops(model, imgsz) * batch, "note": ""}
                try:
                    runners[name] = build_runner(backend, model, x, Path(tmp) / name, threads)
                except Exception as e:  # a converter failing on one model must not lose the other rows
                    reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                    LOGGER.warning(f"WARNING: {name} {backend}: skipped ({reason})")
                    info[name]["note"] = f"failed: {reason}"
                    continue
                info[name]["build_s"] = time.perf_counter() - t0
                info[name].update(measure_memory(runners[name], backend, device, watch.sync, warmup))
            seconds = time_calls(runners, runs, warmup, watch)
            for name, row in info.items():
                if name in seconds:
                    ms = median_ms(seconds[name])
                    row.update({"ms": ms, "min_ms": min(seconds[name]) * 1e3, "GFLOPS": row["GFLOPs"] / ms * 1e3,
                                "img/s": batch / ms * 1e3})
                rows.append(row)
    return rows


def build_runner(backend: str, model: nn.Module, x: torch.Tensor, stem: Path, threads: int) -> Callable[[], Any]:
    if backend == "pytorch":
        return pytorch_runner(model, x)
    if backend == "onnx":
        return onnx_runner(model, x, stem.with_suffix(".onnx"), threads)
    if backend == "tflite":
        return tflite_runner(model, x, stem.with_suffix(".tflite"), threads)
    raise ValueError(f"unknown backend {backend!r}, expected one of {RUNTIMES}")


def measure_memory(run: Callable[[], Any], backend: str, device: torch.device, sync: Callable[[], None],
                   warmup: int) -> dict:
    """Warm a runner up and report the memory its forwards peak at."""
    on_cuda = backend == "pytorch" and device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    reset_peak_rss()
    before = current_rss_mb()
    with torch.inference_mode():
        for _ in range(max(warmup, 1)):
            run()
    sync()
    if on_cuda:
        return {"peak_MB": torch.cuda.max_memory_allocated(device) / MB, "forward_MB": float("nan")}
    peak = peak_rss_mb()
    return {"peak_MB": peak, "forward_MB": max(peak - before, 0.0)}


def markdown_table(rows: list[dict], columns: list[str] | None = None, digits: int = 2) -> str:
    """A GitHub markdown table; floats rounded to `digits`, ints with thousands separators."""
    if not rows:
        return "(no rows)\n"
    columns = columns or list(rows[0])

    def cell(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return "" if v is None else str(v)
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, float):
            return "" if v != v else f"{v:,.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def iter_backends(requested: tuple[str, ...]) -> Iterator[str]:
    """The requested backends that can run here, with a note for each that cannot."""
    for b in requested:
        if b == "tflite" and not tflite_available():
            LOGGER.warning("WARNING: tflite: skipped (litert-torch / ai-edge-litert not installed; "
                           "pip install -r requirements-tflite.txt)")
            continue
        yield b
