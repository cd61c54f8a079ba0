"""Time the model zoo: fused, eval, batch 1, in PyTorch and ONNX Runtime; write a markdown table.

Usage: python benchmarks/bench_zoo.py [--models yolov5n yolov5n-faster ...] [--imgsz 640] [--threads 2]

Models are timed interleaved (one run of each model per round, order alternating) so that CPU
frequency drift and neighbours' load hit every model alike. Achieved GFLOPS = GFLOPs / median
latency: how well a design turns FLOPs into speed on this machine, the quantity PConv targets.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_zoo.py` puts only benchmarks/ on the path
    sys.path.insert(0, str(ROOT))
# Idle OpenMP threads must sleep, not spin: on a shared CPU spinning 2-thread PyTorch ran 5-30x slower
# (yolov5n 1-4 s instead of 0.3 s under load 12); ONNX Runtime's threads sleep too (OnnxEngine spinning=False).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import add_timing_args, check_timing_args, export_onnx, onnx_max_diff, zoo_model  # noqa: E402
from deploy.engines import OnnxEngine  # noqa: E402
from deploy.outputs import increment_path  # noqa: E402
from models.zoo import SCALES, baseline_of  # noqa: E402
from utils.core.cli import run_cli  # noqa: E402
from utils.core.log import LOGGER  # noqa: E402
from utils.core.system import cpu_name, peak_rss_mb  # noqa: E402
from utils.core.torch_utils import count_params, model_flops, select_device  # noqa: E402


@dataclass
class Entry:
    """One model under test and the latencies gathered for it (seconds)."""

    name: str
    model: torch.nn.Module
    engine: OnnxEngine
    params: int
    gflops: float
    ort_max_diff: float
    torch_times: list[float] = field(default_factory=list)
    ort_times: list[float] = field(default_factory=list)


def prepare(name: str, imgsz: int, threads: int, device: torch.device, tmp: Path) -> Entry:
    """Build, fuse and export one zoo model; check ONNX Runtime agrees with PyTorch."""
    model = zoo_model(name)
    onnx_path = export_onnx(model, imgsz, tmp / f"{name.replace('/', '-')}.onnx")  # 'ablations/x': models/ablations/
    engine = OnnxEngine(onnx_path, threads, spinning=False)
    max_diff = onnx_max_diff(model, engine, imgsz)
    return Entry(name, model.to(device), engine, count_params(model), model_flops(model, imgsz), max_diff)


def time_once(entry: Entry, x_torch: torch.Tensor, x_numpy: np.ndarray, record: bool) -> None:
    with torch.inference_mode():
        t0 = time.perf_counter()
        entry.model(x_torch)
        if x_torch.device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
    entry.engine.run(x_numpy)
    t2 = time.perf_counter()
    if record:
        entry.torch_times.append(t1 - t0)
        entry.ort_times.append(t2 - t1)


def markdown_table(entries: list[Entry], imgsz: int) -> str:
    by_name = {e.name: e for e in entries}
    lines = [f"| model | params (M) | GFLOPs@{imgsz} | PyTorch ms | PyTorch img/s | ONNX RT ms | ONNX RT img/s | "
             "ONNX RT GFLOPS | vs baseline (PyTorch / ONNX RT) | ORT max diff |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        pt, ox = statistics.median(e.torch_times), statistics.median(e.ort_times)
        base = by_name.get(baseline_of(e.name))
        ratio = "—"
        if base is not None and base is not e:
            ratio = (f"{pt / statistics.median(base.torch_times):.2f}x / "
                     f"{ox / statistics.median(base.ort_times):.2f}x {base.name}")
        lines.append(f"| {e.name} | {e.params / 1e6:.2f} | {e.gflops:.1f} | {pt * 1e3:.1f} | {1 / pt:.1f} | "
                     f"{ox * 1e3:.1f} | {1 / ox:.1f} | {e.gflops / ox:.0f} | {ratio} | {e.ort_max_diff:.1e} |")
    return "\n".join(lines)


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SCALES), help="zoo names (models/<name>.yaml)")
    add_timing_args(parser, runs=15, warmup=3, threads_help="threads for PyTorch and ONNX Runtime")
    parser.add_argument("--device", default="cpu", help="PyTorch device ('cpu', '0'); ONNX Runtime uses the CPU")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    opt = check_timing_args(parse_opt(argv))
    device = select_device(opt.device)
    torch.set_num_threads(opt.threads)
    wall_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        entries = [prepare(name, opt.imgsz, opt.threads, device, Path(tmp)) for name in opt.models]
        x_torch = torch.rand(1, 3, opt.imgsz, opt.imgsz, device=device)
        x_numpy = x_torch.cpu().numpy()
        for r in range(opt.warmup + opt.runs):
            for entry in entries if r % 2 else reversed(entries):
                time_once(entry, x_torch, x_numpy, record=r >= opt.warmup)
    wall = time.perf_counter() - wall_start
    table = markdown_table(entries, opt.imgsz)
    images = len(entries) * (opt.warmup + opt.runs) * 2
    header = (f"CPU: {cpu_name()}; {opt.threads} threads; torch {torch.__version__} ({device}), onnxruntime "
              f"{ort.__version__}; batch 1, fused, eval, median of {opt.runs} interleaved runs.")
    footer = (f"wall time {wall:.1f} s, {images} forward passes ({images / wall:.1f} images/s overall), "
              f"peak memory (RSS) {peak_rss_mb():.0f} MB")
    if device.type == "cuda":
        footer += f", peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB"
    save_dir = increment_path(Path(opt.project) / opt.name, mkdir=True)
    (save_dir / "zoo.md").write_text(f"{header}\n\n{table}\n\n{footer}\n")
    LOGGER.info(f"{header}\n\n{table}\n\n{footer}\nsaved {save_dir / 'zoo.md'}")


if __name__ == "__main__":
    run_cli(main)
