"""The shipped demo model: the CLIs' no-argument defaults find it, `python detect.py` alone annotates the
shipped images and video, and the model scores what data/demo/README.md says it scores."""
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch

import detect
import export
import val
from utils.assets import DEMO_DATA, DEMO_WEIGHTS, SAMPLES

ROOT = Path(__file__).resolve().parents[2]


def test_cli_defaults_are_the_shipped_demo_files():
    assert detect.parse_opt([]).weights == [str(DEMO_WEIGHTS)] and Path(detect.parse_opt([]).source) == SAMPLES
    assert val.parse_opt([]).weights == [str(DEMO_WEIGHTS)] and Path(val.parse_opt([]).data) == DEMO_DATA
    assert export.parse_opt([]).weights == str(DEMO_WEIGHTS)
    ckpt = torch.load(DEMO_WEIGHTS, map_location="cpu", weights_only=True)
    assert ckpt["names"] in ({0: "person"}, ["person"]) and ckpt["epoch"] == -1 and ckpt["optimizer"] is None
    samples = [SAMPLES.parent / line for line in SAMPLES.read_text().split()]
    assert [p.suffix for p in samples] == [".jpg", ".jpg", ".mp4"] and all(p.is_file() for p in samples)


@pytest.mark.slow
def test_detect_without_arguments_annotates_shipped_images_and_video(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "detect.py")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "runs/detect/exp"
    assert sorted(p.name for p in out.iterdir()) == ["bus.jpg", "people_6s.mp4", "zidane.jpg"]
    assert cv2.imread(str(out / "bus.jpg")).shape == cv2.imread(str(ROOT / "data/images/bus.jpg")).shape
    cap = cv2.VideoCapture(str(out / "people_6s.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 60
    cap.release()


def documented_scores() -> dict[str, tuple[int, float, float]]:
    """{matching: (imgsz, mAP50, mAP50-95)} from the `val[ --matching yolo]:` lines of data/demo/README.md."""
    text = (ROOT / "data/demo/README.md").read_text()
    lines = re.findall(r"^val(?: --matching (\w+))?: imgsz (\d+), mAP50 ([\d.]+), mAP50-95 ([\d.]+)$", text, re.M)
    scores = {rule or "coco": (int(imgsz), float(m50), float(m)) for rule, imgsz, m50, m in lines}
    assert set(scores) == {"coco", "yolo"}, "data/demo/README.md needs a 'val: imgsz N, mAP50 X, mAP50-95 Y' line " \
                                            "(default COCO matching) and a 'val --matching yolo: ...' one"
    return scores


@pytest.mark.slow
@pytest.mark.parametrize("matching", ["coco", "yolo"])
def test_demo_scores_what_its_readme_says(tmp_path, matching):
    imgsz, map50, map50_95 = documented_scores()[matching]
    batch = val.parse_opt([]).batch_size  # as `python val.py` runs: rect batches' padding depends on the batch size
    (_, _, got50, got50_95, *_), _, _ = val.run(data=DEMO_DATA, weights=DEMO_WEIGHTS, imgsz=imgsz, batch_size=batch,
                                                workers=0, plots=False, project=tmp_path, matching=matching)
    assert got50 == pytest.approx(map50, abs=0.002) and got50_95 == pytest.approx(map50_95, abs=0.002)
