"""Time the model zoo: fused, eval, batch 1, in PyTorch and ONNX Runtime; write a markdown table.

Usage: python benchmarks/bench_zoo.py [--models yolov5n yolov5n-faster ...] [--imgsz 640] [--threads 2]

Models are timed interleaved (one run of each model per round, order alternating) so that CPU
frequency drift and neighbours' load hit every model alike. Achieved GFLOPS = GFLOPs / median
latency: how well a design turns FLOPs into speed on this machine, the quantity PConv targets.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
# Idle OpenMP threads must sleep, not spin: on a shared CPU spinning 2-thread PyTorch ran 5-30x slower
# (yolov5n 1-4 s instead of 0.3 s under load 12); ONNX Runtime gets the same (allow_spinning 0) below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from models.yolo import DetectionModel, find_model_yaml  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import UserInputError  # noqa: E402
from utils.log import LOGGER  # noqa: E402
from utils.runs import increment_path  # noqa: E402
from utils.torch_utils import count_params, model_flops, select_device  # noqa: E402
from utils.system import cpu_name  # noqa: E402

ZOO = ["yolov5n", "yolov5n-faster", "yolov5s", "yolov5s-faster", "yolov5-fasternet-t0", "yolov5m", "yolov5m-faster",
       "yolov5-fasternet-t1", "yolov5-fasternet-t2", "yolov5l", "yolov5l-faster", "yolov5x", "yolov5x-faster"]
# the baseline each PConv model is compared with (same scale; FasterNet backbones by size)
BASELINE_OF = {"yolov5-fasternet-t0": "yolov5s", "yolov5-fasternet-t1": "yolov5m", "yolov5-fasternet-t2": "yolov5m"}


@dataclass
class Entry:
    """One model under test and the latencies gathered for it (seconds)."""

    name: str
    model: torch.nn.Module
    session: ort.InferenceSession
    params: int
    gflops: float
    ort_max_diff: float
    torch_times: list[float] = field(default_factory=list)
    ort_times: list[float] = field(default_factory=list)




def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def baseline_of(name: str) -> str:
    return BASELINE_OF.get(name, name.split("-")[0])


def export_onnx(model: DetectionModel, x: torch.Tensor, path: Path) -> None:
    """Export in the exporter's form: one output tensor, PConv as split→conv→cat."""
    model.set_export_mode(True)
    with warnings.catch_warnings():  # the TorchScript exporter is chosen on purpose (see measured notes)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["output0"])
    model.set_export_mode(False)


def prepare(name: str, imgsz: int, threads: int, device: torch.device, tmp: Path) -> Entry:
    """Build, fuse and export one zoo model; check ONNX Runtime agrees with PyTorch."""
    cfg = find_model_yaml(f"{name}.yaml")
    if not cfg.is_file():
        raise UserInputError(f"--models {name}: no models/{name}.yaml")
    torch.manual_seed(0)
    model = DetectionModel(cfg).fuse().eval()
    x = torch.rand(1, 3, imgsz, imgsz)
    onnx_path = tmp / f"{name.replace('/', '-')}.onnx"  # 'ablations/x' names a file in models/ablations/
    with torch.no_grad():
        export_onnx(model, x, onnx_path)
        expected = model(x).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not steal
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    return Entry(name, model.to(device), session, count_params(model), model_flops(model, imgsz),
                 float(np.abs(got - expected).max()))


def time_once(entry: Entry, x_torch: torch.Tensor, x_numpy: np.ndarray, record: bool) -> None:
    with torch.inference_mode():
        t0 = time.perf_counter()
        entry.model(x_torch)
        if x_torch.device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
    entry.session.run(None, {"images": x_numpy})
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
    parser.add_argument("--models", nargs="+", default=ZOO, help="zoo names (models/<name>.yaml)")
    parser.add_argument("--imgsz", type=int, default=640, help="square input size")
    parser.add_argument("--threads", type=int, default=2, help="threads for PyTorch and ONNX Runtime")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds")
    parser.add_argument("--runs", type=int, default=15, help="timed rounds (each times every model once)")
    parser.add_argument("--device", default="cpu", help="PyTorch device ('cpu', '0'); ONNX Runtime uses the CPU")
    parser.add_argument("--project", default=str(ROOT / "runs" / "benchmark"), help="save to project/name")
    parser.add_argument("--name", default="exp", help="save to project/name")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    opt = parse_opt(argv)
    if opt.imgsz < 32 or opt.imgsz % 32:
        raise UserInputError(f"--imgsz {opt.imgsz}: must be a positive multiple of 32")
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
