"""End-to-end detect.py speed on a video: yolov5n-faster vs yolov5n, CPU, one run, same machine.

Usage: python benchmarks/bench_detect_video.py [--source ../shared/media/people_6s.mp4] [--imgsz 640]
                                               [--models yolov5n yolov5n-faster] [--rounds 2] [--threads 2]

Each model is built from models/<name>.yaml (untrained weights: speed does not depend on them), saved as a
checkpoint in a temporary folder and run through `detect.run` exactly as a user would (decode, letterbox,
inference, NMS, drawing, mp4 writing). Every run happens in a fresh process, so peak memory is per model
and no run inherits another's warm caches; models alternate order over rounds so neighbours' load hits
both alike. Reported: wall time of detect.run, throughput (frames / wall), the per-stage means detect.py
prints, and peak RSS. A low --conf-thres keeps NMS busy as it would be with a trained model.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_detect_video.py` puts only benchmarks/ on the path
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

from deploy.errors import UserInputError  # noqa: E402
from deploy.outputs import increment_path  # noqa: E402
from utils.core.cli import run_cli  # noqa: E402
from utils.core.log import LOGGER  # noqa: E402
from utils.core.system import cpu_name, peak_rss_mb  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", default=str(ROOT.parent / "shared/media/people_6s.mp4"), help="video file")
    p.add_argument("--models", nargs="+", default=["yolov5n", "yolov5n-faster"], help="model YAML names")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--conf-thres", type=float, default=0.001, help="low, so NMS sees many boxes")
    p.add_argument("--rounds", type=int, default=2, help="runs per model, order alternating")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--project", default="runs/benchmark")
    p.add_argument("--name", default="detect_video")
    return p.parse_args(argv)


def build_checkpoint_file(model_name: str, folder: Path) -> Path:
    """Untrained COCO-shaped (nc=80) model from its YAML, saved as our checkpoint format."""
    from models.yolo import DetectionModel
    from utils.weights.checkpoint import build_checkpoint, save_checkpoint

    model = DetectionModel(f"models/{model_name}.yaml", nc=80)
    return save_checkpoint(build_checkpoint(model), folder / f"{model_name}.pt")


class SpeedLine(logging.Handler):
    """Keeps detect.py's closing 'Speed: ...' line so its per-stage means can be reported."""

    def __init__(self):
        super().__init__()
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Speed:"):
            self.text = record.getMessage()


def one_run(weights: str, source: str, imgsz: int, conf: float, threads: int, project: str) -> dict:
    """Child process (spawned: a fresh interpreter, so its peak RSS is its own): detect.run on the video; wall
    time, frames written, peak RSS, detect's speed line."""
    import torch

    import detect

    torch.set_num_threads(threads)
    for handler in LOGGER.handlers:  # per-frame lines stay out of the report; warnings still show
        handler.setLevel(logging.WARNING)
    speed = SpeedLine()
    LOGGER.addHandler(speed)
    t0 = time.perf_counter()
    save_dir = detect.run(weights=weights, source=source, imgsz=imgsz, conf_thres=conf, device="cpu",
                          project=project, name="run")
    wall = time.perf_counter() - t0
    video = next(save_dir.glob("*.mp4"))
    cap = cv2.VideoCapture(str(video))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    return {"wall_s": wall, "frames": frames, "peak_rss_mb": peak_rss_mb(), "speed": speed.text}


def main(argv: list[str] | None = None) -> None:
    opt = parse_opt(argv)
    source = Path(opt.source)
    if not source.is_file():
        raise UserInputError(f"--source {source}: video not found")
    cap = cv2.VideoCapture(str(source))
    n_in, fps_in = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
    size_in = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    ctx = multiprocessing.get_context("spawn")
    results: dict[str, list[dict]] = {m: [] for m in opt.models}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = {m: build_checkpoint_file(m, tmp) for m in opt.models}
        for r in range(opt.rounds):
            order = opt.models if r % 2 == 0 else opt.models[::-1]
            for m in order:
                with ctx.Pool(1) as pool:
                    res = pool.apply(one_run, (str(weights[m]), str(source), opt.imgsz, opt.conf_thres, opt.threads,
                                               str(tmp / f"{m}_{r}")))
                results[m].append(res)
                LOGGER.info(f"round {r + 1} {m}: {res['wall_s']:.2f} s, {res['frames']} frames, "
                            f"{res['frames'] / res['wall_s']:.2f} FPS, peak {res['peak_rss_mb']:.0f} MB | {res['speed']}")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    header = (f"detect.py end to end on {source.name} ({n_in} frames, {size_in[0]}x{size_in[1]} @ {fps_in:g} fps), "
              f"imgsz {opt.imgsz}, CPU {cpu_name()}, {opt.threads} torch threads, conf {opt.conf_thres}, "
              f"median of {opt.rounds} alternating runs, each in a fresh process; load average at the end {load}")
    rows = ["| model | wall s | FPS (frames/wall) | peak RSS MB | frames | detect.py speed line (last run) |",
            "|---|---|---|---|---|---|"]
    fps = {}
    for m, runs in results.items():
        wall = statistics.median(r["wall_s"] for r in runs)
        fps[m] = statistics.median(r["frames"] / r["wall_s"] for r in runs)
        peak = max(r["peak_rss_mb"] for r in runs)
        rows.append(f"| {m} | {wall:.2f} | {fps[m]:.2f} | {peak:.0f} | {runs[-1]['frames']} | "
                    f"{runs[-1]['speed'].removeprefix('Speed: ')} |")
    base = opt.models[0]
    ratios = ", ".join(f"{m}/{base} throughput {fps[m] / fps[base]:.3f}x" for m in opt.models[1:])
    report = f"{header}\n\n" + "\n".join(rows) + f"\n\n{ratios}\n"
    save_dir = increment_path(Path(opt.project) / opt.name, mkdir=True)
    (save_dir / "bench_detect_video.md").write_text(report)
    LOGGER.info(f"\n{report}\nSaved to {save_dir / 'bench_detect_video.md'}")


if __name__ == "__main__":
    run_cli(main)
