"""The shipped demo model: the CLIs' no-argument defaults find it, `python detect.py` alone annotates the
shipped images and video, and the model scores what data/demo/README.md says it scores."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import detect
import export
import val
from deploy.detector import Detector as FileDetector
from utils.core.assets import DEMO_DATA, DEMO_WEIGHTS, SAMPLES
from utils.infer.predictor import Detector

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
    """No flags at all, from any folder: results land in the repository's runs/detect/exp* (yolov5's ROOT-relative
    default), which the test removes again."""
    runs = ROOT / "runs/detect"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    proc = subprocess.run([sys.executable, str(ROOT / "detect.py")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    new = sorted(set(runs.iterdir()) - before) if runs.is_dir() else []
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(new) == 1 and new[0].name.startswith("exp") and not (tmp_path / "runs").exists()
        out = new[0]
        assert sorted(p.name for p in out.iterdir()) == ["bus.jpg", "people_6s.mp4", "zidane.jpg"]
        assert cv2.imread(str(out / "bus.jpg")).shape == cv2.imread(str(ROOT / "data/images/bus.jpg")).shape
        cap = cv2.VideoCapture(str(out / "people_6s.mp4"))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 60
        cap.release()
    finally:
        for folder in new:
            shutil.rmtree(folder)


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
    got = val.run(data=DEMO_DATA, weights=DEMO_WEIGHTS, imgsz=imgsz, batch_size=batch, workers=0, plots=False,
                  project=tmp_path, matching=matching)
    assert got.map50 == pytest.approx(map50, abs=0.002) and got.map50_95 == pytest.approx(map50_95, abs=0.002)


@pytest.mark.slow
def test_demo_pt_and_its_onnx_find_the_same_people(tmp_path):
    """A user's first pictures: the shipped .pt and the ONNX file export.py makes of it see the same letterboxed
    input and find the same boxes — on the people in bus.jpg and zidane.jpg."""
    result = export.run(weights=str(DEMO_WEIGHTS), include=["onnx"], project=str(tmp_path), name="export")
    onnx_file = next(f.path for f in result["files"] if f.path.suffix == ".onnx")
    pt, exported = Detector(DEMO_WEIGHTS, device="cpu"), FileDetector(onnx_file)
    found = {}
    for name in ("bus.jpg", "zidane.jpg"):
        image = cv2.imread(str(ROOT / "data/images" / name))
        ours, theirs = pt.predict(image), exported.predict(image)
        assert len(ours) == len(theirs) and ours.cls.tolist() == theirs.cls.tolist()
        np.testing.assert_allclose(ours.xyxy, theirs.xyxy, atol=1.0)  # pixels of the original image
        np.testing.assert_allclose(ours.conf, theirs.conf, atol=2e-3)
        found[name] = len(ours)
    assert found["bus.jpg"] >= 2 and found["zidane.jpg"] >= 2, found  # the two people in front of the bus; both on zidane
