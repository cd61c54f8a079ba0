"""The README walkthrough, run line by line as a user would, on a temporary custom dataset at tiny scale.

It runs in a copy of the repository (as a fresh clone: runs/ lands inside it, as yolov5's does), with
my-data/ and my-video.mp4 beside the scripts. Only the scale changes (imgsz 64, 3 epochs, batch 4, CPU instead of GPUs); every other flag is the
README's own, so a renamed flag, file or default breaks this test instead of a newcomer's first hour.
"""
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SCALE = ((r"--imgsz \d+", "--imgsz 64"), (r"--epochs \d+", "--epochs 3"), (r"--batch-size \d+", "--batch-size 4"),
         (r"--device [\d,]+", "--device cpu"))


def fenced_block_after(marker: str) -> str:
    """The first ``` block following an HTML comment marker in README.md."""
    text = README.read_text()
    match = re.search(rf"<!-- {marker} -->\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"README.md has no fenced block after <!-- {marker} -->"
    return match.group(1)


def argv(line: str) -> list[str]:
    """A README command as argv for this interpreter, scaled down."""
    for pattern, repl in SCALE:
        line = re.sub(pattern, repl, line)
    words = shlex.split(line)
    if words[0] == "torchrun":
        words = [sys.executable, "-m", "torch.distributed.run", *words[1:]]
    elif words[0] == "python":
        words = [sys.executable, *words[1:]]
    return words


def copy_repo(dst: Path) -> Path:
    """The code, model YAMLs, hyps and sample media: what a clone holds, minus tests, docs and datasets."""
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
        ".git", "runs", "tests", "docs", "benchmarks", "__pycache__", ".pytest_cache", "coco8", "coco128-person",
        "demo", "*.onnx", "*.tflite"))
    return dst


def make_custom_dataset(folder: Path) -> None:
    """my-data/ as the README lays it out: 8 train and 4 val images of the shipped person set."""
    src = ROOT / "data/coco128-person"
    for split, n in (("train", 8), ("val", 4)):
        (folder / "my-data/images" / split).mkdir(parents=True)
        (folder / "my-data/labels" / split).mkdir(parents=True)
        for image in sorted((src / "images" / split).glob("*.jpg"))[:n]:
            shutil.copy(image, folder / "my-data/images" / split)
            shutil.copy(src / "labels" / split / f"{image.stem}.txt", folder / "my-data/labels" / split)
    (folder / "my-data.yaml").write_text(fenced_block_after("walkthrough-data"))
    shutil.copy(ROOT / "data/videos/people_6s.mp4", folder / "my-video.mp4")


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def kill_after_first_checkpoint(cmd: list[str], cwd: Path, env: dict, last: Path) -> None:
    """Start training and SIGKILL it as soon as its first last.pt exists: the interruption --resume is for."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert last.exists(), err[-2000:]


def video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


@pytest.mark.slow
def test_readme_walkthrough_runs_line_by_line(tmp_path):
    lines = [x for x in fenced_block_after("walkthrough").splitlines() if x.strip()]
    data = yaml.safe_load(fenced_block_after("walkthrough-data"))
    assert data["path"] == "my-data" and data["nc"] == len(data["names"])
    repo = copy_repo(tmp_path / "repo")
    make_custom_dataset(repo)
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    weights = repo / "runs/train/exp/weights"
    seen = []
    for line in lines:
        cmd = argv(line)
        if line.startswith("python train.py") and "--resume" not in line:
            kill_after_first_checkpoint(cmd, repo, env, weights / "last.pt")
            seen.append("train (killed after epoch 0)")
            continue
        proc = run(cmd, repo, env)
        if "--source 0" in line:  # no camera here: the one-line error a user without one sees
            assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == \
                "error: --source 0: camera 0 could not be opened (no such device?)", proc.stderr[-2000:]
        else:
            assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        seen.append(line.split()[1] if line.startswith("python") else line.split()[0])

    assert seen == ["train (killed after epoch 0)", "train.py", "val.py", "detect.py", "detect.py", "export.py",
                    "detect.py", "-m", "torchrun"]
    epochs = [int(float(row.split(",")[0])) for row in (repo / "runs/train/exp/results.csv").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2]  # resumed to the same final epoch, each epoch logged once
    exported = weights  # beside best.pt, where yolov5 writes them
    assert (exported / "best.onnx").stat().st_size > 0 and (exported / "best.tflite").stat().st_size > 0
    assert not (repo / "runs/export").exists()
    n_frames = video_frames(repo / "my-video.mp4")
    for run_dir in ("exp", "exp2", "exp3"):  # detect .pt, detect .onnx, deploy .tflite (the webcam made none)
        assert video_frames(repo / "runs/detect" / run_dir / "my-video.mp4") == n_frames
    assert (repo / "runs/train/exp2/weights/best.pt").is_file()  # the torchrun run
