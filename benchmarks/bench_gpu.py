"""GPU throughput: PyTorch fp16 and ONNX Runtime (CUDA provider) at batch 1 and 32, yolov5n / yolov5nu / the zoo's
fast models, with peak GPU memory — the one prepared script to run when a GPU machine is lent.

    python benchmarks/bench_gpu.py                                   # CUDA device 0, 640, batches 1 32
    python benchmarks/bench_gpu.py --device cpu --imgsz 64 --batches 1 2 --runs 2   # a dry run anywhere

Every model is random-init (throughput does not depend on the weights), fused, eval; timed interleaved, one
round of each per pass, after --warmup runs, with torch.cuda.synchronize around each timed call. img/s = batch /
median seconds. ONNX Runtime runs our exporter's fp32 file with a dynamic batch (benchmarks.common.export_onnx;
ultralytics' peers through the same exporter, their head in export form); without onnxruntime-gpu its rows say so instead of timing the CPU.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_gpu.py` puts only benchmarks/ on the path
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import command_line, export_onnx, peer_model, publish, zoo_model  # noqa: E402
from deploy.engines import OnnxEngine  # noqa: E402
from utils.core.system import cpu_name  # noqa: E402
from utils.core.torch_utils import select_device  # noqa: E402

MODELS = ("yolov5n", "yolov5n-fasterneck-af", "yolov5n-lite2-fasterneck-af", "yolov5n-pconv-lite2-af")
PEERS = ("yolov5nu",)


def timed(run: Callable[[], Any], runs: int, warmup: int, sync: Callable[[], None]) -> float:
    """Median seconds of `run` over `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def torch_row(model: Any, device: torch.device, batch: int, imgsz: int, opt: argparse.Namespace) -> dict:
    half = device.type == "cuda"
    net = (model.half() if half else model.float()).to(device)
    x = torch.rand(batch, 3, imgsz, imgsz, device=device, dtype=torch.float16 if half else torch.float32)
    sync = (lambda: torch.cuda.synchronize(device)) if half else (lambda: None)
    if half:
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        seconds = timed(lambda: net(x), opt.runs, opt.warmup, sync)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if half else float("nan")
    return {"runtime": f"PyTorch {'fp16' if half else 'fp32'}", "img_s": batch / seconds, "peak_mb": peak}


def ort_row(path: Path, device: torch.device, batch: int, imgsz: int, opt: argparse.Namespace) -> dict:
    engine = OnnxEngine(path, cuda=device.type == "cuda")
    if device.type == "cuda" and not engine.on_cuda:
        return {"runtime": "ORT CUDA fp32", "error": "onnxruntime has no CUDA provider (pip install onnxruntime-gpu)"}
    x = np.random.rand(batch, 3, imgsz, imgsz).astype(np.float32)
    seconds = timed(lambda: engine.run(x), opt.runs, opt.warmup, lambda: None)
    return {"runtime": f"ORT {'CUDA' if engine.on_cuda else 'CPU'} fp32", "img_s": batch / seconds,
            "peak_mb": float("nan")}


def table(rows: list[dict], header: str) -> str:
    lines = [header, "", "| model | runtime | batch | img/s | vs yolov5n | peak GPU MB |", "|---|---|---|---|---|---|"]
    base = {(r["runtime"], r["batch"]): r["img_s"] for r in rows if r["model"] == "yolov5n" and "img_s" in r}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['runtime']} | {r['batch']} | {r['error']} | | |")
            continue
        ref = base.get((r["runtime"], r["batch"]))
        ratio = f"{r['img_s'] / ref:.2f}x" if ref else "—"
        peak = "—" if np.isnan(r["peak_mb"]) else f"{r['peak_mb']:.0f}"
        lines.append(f"| {r['model']} | {r['runtime']} | {r['batch']} | {r['img_s']:.1f} | {ratio} | {peak} |")
    return "\n".join(lines)


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", default=list(MODELS), help="our model YAMLs (models/)")
    p.add_argument("--peers", nargs="*", default=list(PEERS), help="ultralytics models built from their YAML")
    p.add_argument("--device", default="0", help="CUDA device, or cpu for a dry run")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--out", default="", help="write the markdown table here too")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    opt = parse_opt(argv)
    device = select_device(opt.device)
    t0 = time.perf_counter()
    models = {name: zoo_model(name) for name in opt.models} | {name: peer_model(name) for name in opt.peers}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {name: export_onnx(m, opt.imgsz, Path(tmp) / f"{name}.onnx", dynamic=True) for name, m in models.items()}
        for batch in opt.batches:
            for name, model in models.items():  # interleaved: drift hits every model alike
                rows.append({"model": name, "batch": batch, **torch_row(model, device, batch, opt.imgsz, opt)})
            for name in models:
                rows.append({"model": name, "batch": batch, **ort_row(files[name], device, batch, opt.imgsz, opt)})
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"no GPU: {cpu_name()}"
    header = (f"Device: {gpu}; torch {torch.__version__}; {opt.imgsz}x{opt.imgsz}, random init, {opt.runs} runs after "
              f"{opt.warmup} warm-up, median; wall {time.perf_counter() - t0:.0f} s\n" + command_line("bench_gpu.py", sys.argv[1:]))
    publish(table(rows, header), opt.out)


if __name__ == "__main__":
    main()
