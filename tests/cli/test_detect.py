"""detect.py end to end on real files: images, generated and shipped videos, a fake webcam, bad input."""
from __future__ import annotations

import csv
import functools
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import detect
from deploy.errors import UserInputError
from deploy.sources import open_source
from models.yolo import DetectionModel, load_model_yaml
from utils.core.assets import DEMO_WEIGHTS
from utils.weights.checkpoint import build_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["person", "car", "dog"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """yolov5n-shaped model at 1/8 width whose head is confident everywhere, so it detects things."""
    torch.manual_seed(0)
    cfg = load_model_yaml("models/yolov5n.yaml")
    cfg["width_multiple"] = 0.125
    model = DetectionModel(cfg, nc=len(NAMES))
    model.names = NAMES
    head = model.model[-1]
    for conv in head.m:
        conv.bias.data.view(head.na, -1)[:, 4] = 8.0
    return save_checkpoint(build_checkpoint(model), tmp_path_factory.mktemp("w") / "tiny.pt")


def run(weights, tmp_path, **kwargs) -> Path:
    opts = dict(weights=weights if isinstance(weights, list) else str(weights), device="cpu", imgsz=96, conf_thres=0.1, max_det=10, project=str(tmp_path / "runs"))
    return detect.run(**{**opts, **kwargs})


def write_video(path: Path, frames: int, size=(96, 64), fps=12.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def video_props(path: Path) -> tuple[int, float, int, int]:
    """(frames actually decodable, fps, width, height)."""
    cap = cv2.VideoCapture(str(path))
    fps, w, h = cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n, fps, w, h


def read_labels(path: Path) -> np.ndarray:
    rows = [[float(v) for v in line.split()] for line in path.read_text().splitlines()]
    assert rows and all(len(r) in (5, 6) for r in rows)
    return np.array(rows)


def test_image_folder_all_outputs(weights, tmp_path, log_lines):
    save_dir = run(weights, tmp_path, source=str(ROOT / "data/images"), save_txt=True, save_conf=True,
                   save_csv=True, save_crop=True)
    assert save_dir == tmp_path / "runs" / "exp"
    for name in ("bus", "zidane"):
        original = cv2.imread(str(ROOT / f"data/images/{name}.jpg"))
        assert cv2.imread(str(save_dir / f"{name}.jpg")).shape == original.shape
    labels = {p.stem: read_labels(p) for p in (save_dir / "labels").glob("*.txt")}
    assert set(labels) == {"bus", "zidane"}
    for rows in labels.values():
        assert rows.shape[1] == 6 and len(rows) <= 10 and set(rows[:, 0]) <= {0, 1, 2}
        assert (rows[:, 1:5] >= 0).all() and (rows[:, 1:5] <= 1).all() and (rows[:, 5] >= 0.1).all()
    with open(save_dir / "predictions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["Image Name", "Prediction", "Confidence", "Frame", "x1", "y1", "x2", "y2"]
    assert len(table) == sum(len(r) for r in labels.values())
    bus_rows = [r for r in table if r["Image Name"] == "bus.jpg"]
    h, w = cv2.imread(str(ROOT / "data/images/bus.jpg")).shape[:2]
    first = labels["bus"][0]  # same detection in both files: label cx,cy,w,h == csv corners
    x1, y1, x2, y2 = (float(bus_rows[0][k]) for k in ("x1", "y1", "x2", "y2"))
    np.testing.assert_allclose([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h], first[1:5],
                               atol=2e-4)
    assert bus_rows[0]["Prediction"] == NAMES[int(first[0])] and float(bus_rows[0]["Confidence"]) == \
        pytest.approx(first[5], abs=1e-4)
    crops = list((save_dir / "crops").rglob("*.jpg"))
    assert len(crops) == len(table) and {c.parent.name for c in crops} <= set(NAMES)
    messages = log_lines()
    assert any(m.startswith("image 1/2 ") and "bus.jpg: 96x96 " in m and m.endswith("ms") for m in messages)
    assert any(m.startswith("Speed: ") and "per image at shape (1, 3, 96, 96)" in m for m in messages)
    assert run(weights, tmp_path, source=str(ROOT / "data/images"), nosave=True) == tmp_path / "runs" / "exp2"
    assert not list((tmp_path / "runs" / "exp2").iterdir())  # --nosave and nothing else asked for


def test_save_txt_matches_the_drawn_box(weights, tmp_path):
    image = cv2.resize(cv2.imread(str(ROOT / "data/images/zidane.jpg")), (192, 108))
    cv2.imwrite(str(tmp_path / "z.png"), image)  # lossless in and out: every changed pixel is drawing
    save_dir = run(weights, tmp_path, source=str(tmp_path / "z.png"), max_det=1, save_txt=True, hide_labels=True,
                   line_thickness=1)
    (cls, cx, cy, bw, bh), = read_labels(save_dir / "labels" / "z.txt")
    drawn = cv2.imread(str(save_dir / "z.png"))
    ys, xs = np.nonzero(np.abs(drawn.astype(int) - image).sum(2))
    x1, y1, x2, y2 = (cx - bw / 2) * 192, (cy - bh / 2) * 108, (cx + bw / 2) * 192, (cy + bh / 2) * 108
    assert abs(xs.min() - x1) <= 2.5 and abs(xs.max() - x2) <= 2.5  # 1 px anti-aliased line
    assert abs(ys.min() - y1) <= 2.5 and abs(ys.max() - y2) <= 2.5


def test_classes_filter(weights, tmp_path):
    source = str(ROOT / "data/images/zidane.jpg")
    everything = read_labels(run(weights, tmp_path, source=source, max_det=300, save_txt=True) / "labels/zidane.txt")
    assert len(set(everything[:, 0])) > 1
    only = read_labels(run(weights, tmp_path, source=source, max_det=300, save_txt=True, classes=[2])
                       / "labels/zidane.txt")
    assert set(only[:, 0]) == {2} and len(only) >= (everything[:, 0] == 2).sum() > 0
    for row in everything[everything[:, 0] == 2]:  # the class-2 boxes found before are all still there
        assert np.isclose(only, row, atol=1e-5).all(1).any()


def test_generated_video_keeps_every_frame_fps_and_size(weights, tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=15)
    save_dir = run(weights, tmp_path, source=str(video), save_txt=True)
    assert video_props(save_dir / "clip.mp4") == (15, 12.0, 96, 64)
    assert {p.name for p in (save_dir / "labels").iterdir()} == {f"clip_{i}.txt" for i in range(1, 16)}
    strided = run(weights, tmp_path, source=str(video), vid_stride=4, save_txt=True)
    assert video_props(strided / "clip.mp4") == (4, 3.0, 96, 64)  # frames 1, 5, 9, 13; duration kept
    assert {p.name for p in (strided / "labels").iterdir()} == {f"clip_{i}.txt" for i in (1, 5, 9, 13)}


def test_shipped_video(weights, tmp_path):
    save_dir = run(weights, tmp_path, source=str(ROOT / "data/videos/people_6s.mp4"), imgsz=64, max_det=3,
                   vid_stride=2)
    assert video_props(save_dir / "people_6s.mp4") == (30, 5.0, 768, 432)  # 60 frames @ 10 fps in


@pytest.mark.timeout(60)
def test_fake_webcam_is_recorded_and_ends(weights, tmp_path, monkeypatch):
    class FakeCamera:
        """6 frames, then the camera is gone (and stays gone on reconnect)."""

        def __init__(self, frames: int):
            self.left = frames

        def isOpened(self):
            return self.left > 0

        def read(self):
            if self.left == 0:
                return False, None
            self.left -= 1
            return True, np.full((48, 64, 3), 40 * self.left, np.uint8)

        def get(self, prop):
            return 5.0 if prop == cv2.CAP_PROP_FPS else 0.0

        def release(self):
            self.left = 0

    cameras = []

    def factory(source):
        cameras.append(FakeCamera(6 if not cameras else 0))
        return cameras[-1]

    monkeypatch.setattr(detect, "open_source", functools.partial(open_source, capture_factory=factory,
                                                                 retries=1, retry_delay=0.0))
    save_dir = run(weights, tmp_path, source="0", save_txt=True)
    frames, fps, w, h = video_props(save_dir / "0.mp4")
    assert 1 <= frames <= 6 and (fps, w, h) == (5.0, 64, 48)
    assert (save_dir / "labels" / "0_6.txt").is_file()  # the last frame is always processed


def test_view_img_without_display_still_saves(weights, tmp_path, monkeypatch, log_lines):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    save_dir = run(weights, tmp_path, source=str(ROOT / "data/images/bus.jpg"), view_img=True)
    assert (save_dir / "bus.jpg").is_file()
    assert any("--view-img: no display found" in m for m in log_lines())


def test_weights_path_with_shell_characters(weights, tmp_path):
    odd = tmp_path / "my model; rm -rf ~ $(touch pwned) `id` & | *.pt"
    shutil.copy(weights, odd)
    save_dir = run(odd, tmp_path, source=str(ROOT / "data/images/bus.jpg"))
    assert (save_dir / "bus.jpg").is_file()
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_bad_input(weights, tmp_path):
    with pytest.raises(UserInputError, match="missing.pt: file not found"):
        run(tmp_path / "missing.pt", tmp_path)
    with pytest.raises(UserInputError, match=r"unsupported model format '\.caffemodel'"):
        run(tmp_path / "m.caffemodel", tmp_path)
    with pytest.raises(UserInputError, match="--source .*nope: file or folder not found"):
        run(weights, tmp_path, source=str(tmp_path / "nope"))
    with pytest.raises(UserInputError, match="missing2.pt: file not found"):  # each ensemble member is checked
        run([weights, tmp_path / "missing2.pt"], tmp_path)
    with pytest.raises(UserInputError, match="non-public address"):
        run(weights, tmp_path, source="http://169.254.169.254/latest/meta-data")
    with pytest.raises(UserInputError, match="unknown option.*conf_thresh"):
        run(weights, tmp_path, conf_thresh=0.3)


def test_line_thickness_below_zero_is_refused_and_zero_means_by_image_size(weights, tmp_path):
    with pytest.raises(UserInputError, match=r"--line-thickness -3: must be 1 or more pixels \(0: by image size\)"):
        run(weights, tmp_path, line_thickness=-3)
    assert not (tmp_path / "runs").exists()  # refused before anything was made
    bus = str(ROOT / "data/images/bus.jpg")
    auto = cv2.imread(str(run(weights, tmp_path, source=bus, line_thickness=0, name="zero") / "bus.jpg"))
    default = cv2.imread(str(run(weights, tmp_path, source=bus, line_thickness=None, name="none") / "bus.jpg"))
    assert np.array_equal(auto, default)


def test_cli_prints_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "detect.py"), "--weights", str(tmp_path / "x.pt"),
                           "--source", str(ROOT / "data/images")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: --weights {tmp_path / 'x.pt'}: file not found"


def test_classes_the_model_lacks_are_refused(weights, tmp_path):
    """A class id the model lacks would filter every box away and look like 'no detections'."""
    demo = str(DEMO_WEIGHTS)
    proc = subprocess.run([sys.executable, str(ROOT / "detect.py"), "--weights", demo,
                           "--source", str(ROOT / "data/images/bus.jpg"), "--classes", "0", "99",
                           "--project", str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not (tmp_path / "runs").exists()
    assert proc.stderr.strip() == f"error: --classes 99: no such class id; {DEMO_WEIGHTS.name} has 1 class (id 0)"
    with pytest.raises(UserInputError, match=r"^classes 3 -1: no such class id; tiny.pt has 3 classes \(ids 0-2\)"):
        run([weights, weights], tmp_path, source=str(ROOT / "data/images/bus.jpg"), classes=[2, 3, -1])  # ensemble


def test_missing_camera_stderr_is_our_line_only(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "detect.py"), "--source", "99", "--project", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "error: --source 99: camera 99 could not be opened (no such device?)\n"


def test_runs_go_to_the_repository_like_train_val_export(tmp_path, monkeypatch):
    """--project defaults to this repository's runs/detect (as val's to runs/val), wherever detect is started."""
    monkeypatch.chdir(tmp_path)
    assert detect.parse_opt([]).project == str(ROOT / "runs" / "detect")


def test_output_names_one_per_input(weights, tmp_path):
    """Inputs named alike (the same name in two folders, a .txt list naming a file twice) never share an output."""
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        shutil.copy(ROOT / "data/images/bus.jpg", tmp_path / folder / "bus.jpg")
    listing = tmp_path / "list.txt"
    listing.write_text("x/bus.jpg\ny/bus.jpg\nx/bus.jpg\n")
    save_dir = run(weights, tmp_path, source=str(listing), save_txt=True)
    assert sorted(p.name for p in save_dir.glob("*.jpg")) == ["bus.jpg", "bus_2.jpg", "bus_3.jpg"]
    assert sorted(p.name for p in (save_dir / "labels").iterdir()) == ["bus.txt", "bus_2.txt", "bus_3.txt"]


def test_an_imgsz_far_above_the_trained_size_warns(tmp_path, log_lines):
    """A checkpoint trained at 32 px asked to run at 160: the user hears the cost before the long wait."""
    from utils.infer.predictor import Detector
    model = DetectionModel(load_model_yaml("models/yolov5n.yaml"), nc=3)
    path = save_checkpoint(build_checkpoint(model, opt={"imgsz": 32}), tmp_path / "small.pt")
    Detector(path, device="cpu", imgsz=64, warmup=False)
    assert not any("the model was trained at" in line for line in log_lines())
    Detector(path, device="cpu", imgsz=160, warmup=False)
    assert any(line.startswith("WARNING: --imgsz 160 is 5x the 32 px the model was trained at") for line in log_lines())
