"""CPU latency of exported models: PyTorch (.pt, fused) vs ONNX Runtime vs TFLite (XNNPACK) fp32 and int8.

yolov5n and yolov5n-faster (random init: latency does not depend on the weights) at 320 and 640, batch 1,
2 threads. Every model is exported once with utils.exporters (int8 calibrated on --calib-images letterboxed
train images of --data), then each (size, runtime, model) is timed in its own child process, so the peak
memory reported is that runtime's alone; the two models alternate inside each (size, runtime) pair and the
whole sweep repeats --rounds times (median of the rounds' medians is reported). Columns: median latency,
throughput (images/s at batch 1), peak RSS of the child, wall time of the child (load + warm-up + runs).

    python benchmarks/bench_export.py      # int8 calibrated on the shipped data/coco8 (nc=80, as the zoo)
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.profiler import cpu_name  # noqa: E402

RUNTIMES = ("pytorch", "onnxruntime", "tflite fp32", "tflite int8")




def export_models(cfgs: list[str], sizes: list[int], data: str, calib_images: int, folder: Path) -> dict:
    """{(cfg, size): {runtime: path}}: one checkpoint per cfg, exported at each size."""
    import torch

    from models.yolo import DetectionModel
    from utils.checkpoint import build_checkpoint, save_checkpoint
    from utils.dataset import check_dataset, find_image_files
    from utils.exporters import (export_metadata, export_onnx, export_tflite, in_batches, letterboxed_batch,
                                 prepare_for_export)

    torch.set_num_threads(2)
    dataset = check_dataset(data)
    train = find_image_files(dataset["train"])
    step = max(len(train) // calib_images, 1)
    files = {}
    for cfg in cfgs:
        torch.manual_seed(0)
        model = DetectionModel(cfg, nc=int(dataset["nc"]))
        model.names = list(dataset["names"])
        ckpt = save_checkpoint(build_checkpoint(model), folder / f"{Path(cfg).stem}.pt")
        prepared = prepare_for_export(model.eval())
        for size in sizes:
            stem = folder / f"{Path(cfg).stem}-{size}"
            im = torch.zeros(1, 3, size, size)
            meta = export_metadata(prepared, (size, size), 1, "fp32", nms=False)
            onnx_file = export_onnx(prepared, im, stem.with_suffix(".onnx"), meta)
            calibration = in_batches(letterboxed_batch(train[::step][:calib_images], (size, size)), 1)
            tfl = export_tflite(prepared, im, {"fp32": Path(f"{stem}.tflite"), "int8": Path(f"{stem}-int8.tflite")},
                                meta, calibration)
            files[(cfg, size)] = {"pytorch": ckpt, "onnxruntime": onnx_file, "tflite fp32": tfl["fp32"],
                                  "tflite int8": tfl["int8"]}
    return files


def time_one(weights: str, size: int, runs: int, warmup: int) -> dict:
    """Child process: load the file through utils.backends (2 threads), time batch-1 inference."""
    import numpy as np
    import torch

    torch.set_num_threads(2)
    from utils.backends import TFLiteBackend, load_backend

    t0 = time.perf_counter()
    path = Path(weights)
    backend = TFLiteBackend(path, torch.device("cpu"), num_threads=2) if path.suffix == ".tflite" \
        else load_backend(path, "cpu")
    if path.suffix == ".onnx":  # ONNX Runtime's default uses every core; pin it to 2 like the others
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
        backend.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, size, size)
    for _ in range(warmup):
        backend(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        backend(x)
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": float(np.median(times)), "wall_s": time.perf_counter() - t0,
            "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's high-water RSS. VmHWM restarts at exec; ru_maxrss would carry the parent's over."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT / "data/coco8.yaml"),
                   help="calibration data; its nc sizes the models (coco8: 80, as the zoo tables)")
    p.add_argument("--cfg", nargs="+", default=["yolov5n.yaml", "yolov5n-faster.yaml"])
    p.add_argument("--imgsz", nargs="+", type=int, default=[320, 640])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--calib-images", type=int, default=32)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--child", nargs=2, metavar=("WEIGHTS", "SIZE"), help=argparse.SUPPRESS)
    opt = p.parse_args()
    if opt.child:
        print(json.dumps(time_one(opt.child[0], int(opt.child[1]), opt.runs, opt.warmup)))
        return

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        files = export_models(opt.cfg, opt.imgsz, opt.data, opt.calib_images, Path(tmp))
        export_s = time.perf_counter() - t0
        results: dict[tuple, list[dict]] = {}
        for _ in range(opt.rounds):
            for size in opt.imgsz:
                for runtime in RUNTIMES:
                    for cfg in opt.cfg:  # the models alternate within each (size, runtime)
                        cmd = [sys.executable, __file__, "--child", str(files[(cfg, size)][runtime]), str(size),
                               "--runs", str(opt.runs), "--warmup", str(opt.warmup)]
                        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
                        row = json.loads(out.stdout.strip().splitlines()[-1])
                        results.setdefault((size, runtime, cfg), []).append(row)
    rows = []
    for (size, runtime, cfg), rs in results.items():
        median = sorted(r["median_ms"] for r in rs)[len(rs) // 2]
        rows.append({"imgsz": size, "runtime": runtime, "model": Path(cfg).stem, "median_ms": median,
                     "img_per_s": 1e3 / median, "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                     "child_wall_s": sum(r["wall_s"] for r in rs) / len(rs)})
    print(f"CPU: {cpu_name()}, 2 threads, batch 1, {opt.runs} runs x {opt.rounds} rounds; "
          f"export + calibration {export_s:.0f} s, total wall {time.perf_counter() - t_start:.0f} s")
    print(f"{'imgsz':>5}  {'runtime':<12}{'model':<16}{'ms':>8}{'img/s':>8}{'peak MB':>9}{'wall s':>8}"
          f"{'vs ' + Path(opt.cfg[0]).stem:>11}")
    base = {(r["imgsz"], r["runtime"]): r["median_ms"] for r in rows if r["model"] == Path(opt.cfg[0]).stem}
    for r in rows:
        ratio = r["median_ms"] / base[(r["imgsz"], r["runtime"])]
        print(f"{r['imgsz']:>5}  {r['runtime']:<12}{r['model']:<16}{r['median_ms']:>8.1f}{r['img_per_s']:>8.1f}"
              f"{r['peak_rss_mb']:>9.0f}{r['child_wall_s']:>8.1f}{ratio:>10.2f}x")
    if opt.out:
        Path(opt.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
