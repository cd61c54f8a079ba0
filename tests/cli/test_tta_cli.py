"""Test-time augmentation (--augment) through val.py and detect.py with a real checkpoint.

An untrained one-class model scores a non-zero mAP on large single-object images (its big-anchor boxes
overlap them), so plain and augmented validation give numbers that can be told apart.
"""
from pathlib import Path

import pytest
import torch

import detect
import val
from models.yolo import DetectionModel, load_model_yaml
from utils.weights.checkpoint import build_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def blobs(blob_data, tmp_path_factory):
    """(data YAML, checkpoint): the shared blob data and an untrained 1-class model."""
    torch.manual_seed(0)
    cfg = load_model_yaml(ROOT / "models/yolov5n-faster.yaml")
    cfg["width_multiple"] = 0.0625  # tiny, but the real architecture and head
    model = DetectionModel(cfg, nc=1)
    model.names = ["blob"]
    return blob_data, save_checkpoint(build_checkpoint(model), tmp_path_factory.mktemp("blob_model") / "blob.pt")




def _table_numbers(r: val.ValResult) -> tuple[float, float, float, float]:
    """What val's 'all' row prints: P, R, mAP50, mAP50-95."""
    return r.precision, r.recall, r.map50, r.map50_95


def _all_row(messages: list[str]) -> list[float]:
    """P, R, mAP50, mAP50-95 of the last 'all' row of val's table."""
    rows = [line.split() for m in messages for line in m.splitlines() if line.split()[:1] == ["all"]]
    return [float(v) for v in rows[-1][3:7]]


def test_val_with_augment_reports_a_different_map(blobs, tmp_path, log_text):
    data, weights = blobs
    common = ["--weights", str(weights), "--data", str(data), "--imgsz", "128", "--batch-size", "4",
              "--workers", "0", "--project", str(tmp_path)]
    plain = _table_numbers(val.run(**vars(val.parse_opt(common)), plots=False))
    plain_row = _all_row(log_text.messages)
    augmented = _table_numbers(val.run(**vars(val.parse_opt(common + ["--augment"])), plots=False))
    augmented_row = _all_row(log_text.messages)
    assert plain[2] > 0 and augmented[2] > 0, "both runs find the blobs"
    assert plain != augmented, "TTA adds boxes from scaled/flipped views, so the mAP must change"
    assert plain_row == pytest.approx(plain, abs=6e-3) and augmented_row == pytest.approx(augmented, abs=6e-3), \
        "the printed table reports the returned numbers"
    assert plain_row != augmented_row


def test_detect_with_augment_merges_more_views(blobs, tmp_path):
    from utils.infer.predictor import Detector

    _, weights = blobs
    image = str(ROOT / "data/images/bus.jpg")
    plain = Detector(weights, imgsz=128, conf=0.001, iou=0.99, max_det=10000)(image)[0]
    augmented = Detector(weights, imgsz=128, conf=0.001, iou=0.99, max_det=10000, augment=True)(image)[0]
    assert len(augmented) > len(plain) > 0, "three views give more boxes before NMS merges them"
    h, w = augmented.image.shape[:2]
    assert (augmented.xyxy >= 0).all() and (augmented.xyxy[:, [0, 2]] <= w).all()  # mapped back to the image
    save_dir = detect.run(weights=[str(weights)], source=image, imgsz=[128], conf_thres=0.001, augment=True,
                          project=str(tmp_path), save_txt=True)
    assert (save_dir / "bus.jpg").is_file() and (save_dir / "labels/bus.txt").read_text().strip()
