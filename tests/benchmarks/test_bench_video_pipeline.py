"""bench_video_pipeline end to end at toy size: every requested (pipeline, format) gives one table row of real
numbers, and the deploy.run child stays torch-free. (The speeds it measures are reported, never asserted.)"""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from benchmarks import bench_video_pipeline as bench

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ("deploy.run", "detect.py", "ultralytics")


def tiny_video(path: Path, frames: int = 3) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    writer.release()
    return path


def cells_of(table: str, first: str) -> list[list[str]]:
    lines = [line for line in table.splitlines() if line.startswith(f"| {first} |")]
    return [[c.strip() for c in line.split("|")[1:-1]] for line in lines]


def test_one_row_of_numbers_per_pipeline_and_format(tmp_path):
    out = tmp_path / "table.md"
    rows = bench.main(["--source", str(tiny_video(tmp_path / "clip.mp4")), "--imgsz", "64", "--formats", "onnx",
                       "--pipelines", *PIPELINES, "--rounds", "1", "--bound-runs", "2", "--bound-warmup", "1",
                       "--workdir", str(tmp_path / "work"), "--out", str(out)])
    assert [(r["pipeline"], r["format"]) for r in rows] == [(p, "onnx") for p in PIPELINES]
    assert not [r["error"] for r in rows if "error" in r]
    table = out.read_text()
    for pipeline in PIPELINES:
        (cells,) = [c for c in cells_of(table, pipeline) if c[1] == "onnx" and len(c) == 15]
        numbers = [float(c) for c in cells[3:]]  # frames .. process wall: every column a number
        assert numbers[0] == 3 and min(numbers[2], numbers[3], numbers[6], numbers[7]) > 0  # frames, FPS, inference
        assert numbers[-2] > 0 and cells[2] == "fp32"  # peak RSS; computes in
    (goal,) = cells_of(table, "onnx")
    assert float(goal[1]) > 0 and float(goal[3].split()[0]) > 0 and goal[4].split()[1] in ("met", "missed")
    assert json.loads(out.with_suffix(".json").read_text()) == json.loads(json.dumps(rows))
    assert "CPU: " in table and "Command: python benchmarks/bench_video_pipeline.py" in table

    # the deploy.run child imports no torch: its peak memory is the runner's, as on a device
    spec = {"pipeline": "deploy.run", "file": str(next((tmp_path / "work" / "ours").rglob("*.onnx"))),
            "source": str(tmp_path / "clip.mp4"), "imgsz": 64, "conf": 0.25, "iou": 0.45, "threads": 1, "flags": [],
            "project": str(tmp_path / "runs")}
    block_torch = "import runpy, sys; sys.modules['torch'] = None; runpy.run_path({!r}, run_name='__main__')"
    child = subprocess.run([sys.executable, "-c", block_torch.format(bench.__file__), "--child", json.dumps(spec)],
                           capture_output=True, text=True, cwd=ROOT)
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout.split(bench.RESULT_TAG)[-1])
    assert result["frames"] == 3 and result["loop_s"] > 0 and result["inference"] > 0
