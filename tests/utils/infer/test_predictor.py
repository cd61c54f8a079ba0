"""Detector: inputs of every kind, boxes mapped back to original pixels, drawing, labels, crops, TTA."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from deploy.errors import UserInputError
from models.yolo import DetectionModel, load_model_yaml
from utils.infer.backends import Backend
from utils.infer.predictor import Detector
from utils.weights.checkpoint import build_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[3]


class ScriptedBackend(Backend):
    """Returns boxes chosen by the test, in input pixels, so every coordinate can be checked exactly.

    `boxes` rows are (x1, y1, x2, y2, obj, *class scores); None means 'one 10x10 box on the brightest spot'.
    """

    def __init__(self, boxes=None, names=("dark", "bright"), dynamic=True, imgsz=None):
        super().__init__(Path("scripted"), torch.device("cpu"))
        self.boxes, self.names, self.dynamic, self.imgsz = boxes, list(names), dynamic, imgsz
        self.calls = []

    def _forward(self, im):
        self.calls.append(tuple(im.shape))
        if self.boxes is None:
            b, _, h, w = im.shape
            flat = im.sum(1).flatten(1).argmax(1).float()
            cy, cx = flat.div(w, rounding_mode="floor") + 0.5, flat % w + 0.5
            rows = [torch.tensor([[cx[i], cy[i], 10, 10, 0.9, 0.1, 0.9]]) for i in range(b)]
            return torch.stack(rows)
        t = torch.tensor(self.boxes, dtype=torch.float32)
        xywh = torch.cat([(t[:, :2] + t[:, 2:4]) / 2, t[:, 2:4] - t[:, :2], t[:, 4:]], 1)
        return xywh[None].repeat(im.shape[0], 1, 1)


@pytest.fixture
def scripted(monkeypatch):
    """Detector whose backend is a ScriptedBackend (created by the returned factory)."""

    def make(backend: ScriptedBackend, **kwargs) -> Detector:
        monkeypatch.setattr("utils.infer.predictor.load_backend", lambda *a, **k: backend)
        return Detector("scripted.pt", device="cpu", **kwargs)

    return make


def bright_spot_image(h=64, w=128, x=90, y=8) -> np.ndarray:
    image = np.full((h, w, 3), 20, np.uint8)
    image[y:y + 4, x:x + 4] = 255
    return image


def test_boxes_map_back_to_original_pixels(scripted):
    # 100x200 image at imgsz 64 → the whole 64x64 input (gain 0.32, 16 px padding top and bottom), even for a
    # model that takes any size: the .pt sees what its fixed-size export sees
    backend = ScriptedBackend([[16, 24, 48, 40, 0.9, 0.2, 0.8]])
    result = scripted(backend, imgsz=64)(np.zeros((100, 200, 3), np.uint8))[0]
    assert backend.calls[-1] == (1, 3, 64, 64) and result.input_shape == (1, 3, 64, 64)
    np.testing.assert_allclose(result.xyxy, [[50, 25, 150, 75]], atol=1e-3)
    np.testing.assert_allclose(result.conf, [0.72], atol=1e-6)
    assert result.cls.tolist() == [1] and result.summary() == "1 bright"
    assert set(result.speed) == {"preprocess", "inference", "postprocess"}


def test_fixed_size_model_letterboxes_with_padding(scripted, log_lines):
    # 50x100 image into a fixed 64x64 model: gain 0.64, 16 px of padding top and bottom
    backend = ScriptedBackend([[16, 24, 48, 40, 0.9, 0.8, 0.1]], dynamic=False, imgsz=(64, 64))
    detector = scripted(backend, imgsz=320)
    assert detector.imgsz == (64, 64) and any("exported at [64, 64]" in m for m in log_lines())
    result = detector(np.zeros((50, 100, 3), np.uint8))[0]
    np.testing.assert_allclose(result.xyxy, [[25, 12.5, 75, 37.5]], atol=1e-3)
    lines = result.yolo_lines(save_conf=True)
    cls, cx, cy, w, h, conf = (float(v) for v in lines[0].split())
    assert (cls, cx, cy, w, h) == (0, 0.5, 0.5, 0.5, 0.5) and conf == pytest.approx(0.72, abs=1e-5)
    assert result.yolo_lines() == ["0 0.5 0.5 0.5 0.5"]


def test_nms_options(scripted):
    boxes = [[10, 10, 50, 50, 0.9, 0.9, 0.1], [12, 12, 50, 50, 0.8, 0.1, 0.9], [100, 10, 120, 40, 0.9, 0.9, 0.1]]
    image = np.zeros((64, 128, 3), np.uint8)
    assert sorted(scripted(ScriptedBackend(boxes), imgsz=128)(image)[0].cls.tolist()) == [0, 0, 1]
    assert scripted(ScriptedBackend(boxes), imgsz=128, agnostic=True)(image)[0].cls.tolist() == [0, 0]
    assert scripted(ScriptedBackend(boxes), imgsz=128, classes=[1])(image)[0].cls.tolist() == [1]
    assert len(scripted(ScriptedBackend(boxes), imgsz=128, max_det=1)(image)[0]) == 1
    assert len(scripted(ScriptedBackend(boxes), imgsz=128, conf=0.75)(image)[0]) == 2


def test_class_filter_ids_must_exist(scripted):
    """Checked at construction, on hub-style assignment after loading, and for nameless files at the first frame."""
    boxes = [[10, 10, 50, 50, 0.9, 0.9, 0.1]]
    with pytest.raises(UserInputError, match=r"^classes 2: no such class id; scripted has 2 classes \(ids 0-1\)$"):
        scripted(ScriptedBackend(boxes), classes=[0, 2])
    detector = scripted(ScriptedBackend(boxes), classes=1)
    assert detector.classes == [1]
    with pytest.raises(UserInputError, match="^classes -1 5: no such class id"):
        detector.classes = [-1, 0, 5]
    assert detector.classes == [1]
    detector.classes = None
    assert len(detector(np.zeros((64, 64, 3), np.uint8))[0]) == 1
    nameless = scripted(ScriptedBackend(boxes, names=()), imgsz=64, classes=[7])  # count unknown until it runs
    with pytest.raises(UserInputError, match=r"^classes 7: no such class id; scripted has 2 classes"):
        nameless(np.zeros((64, 64, 3), np.uint8))
    data_named = scripted(ScriptedBackend(boxes, names=()), data=ROOT / "data/coco8.yaml", classes=[79])
    assert data_named.classes == [79]


def test_every_input_kind_gives_the_same_boxes(scripted, tmp_path):
    image = bright_spot_image()
    cv2.imwrite(str(tmp_path / "spot.png"), image)
    pil = Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    detector = scripted(ScriptedBackend(), imgsz=128)
    results = detector([image, pil, str(tmp_path / "spot.png"), tmp_path])
    assert len(results) == 4 and results[2].path.endswith("spot.png")
    for r in results:
        np.testing.assert_allclose(r.xyxy, [[85.5, 3.5, 95.5, 13.5]], atol=1e-3)  # 10x10 around the spot's argmax
    assert len(detector(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))[0]) == 1  # grey frames are accepted


@pytest.mark.parametrize("cpu_runtime", [True, False])
def test_torch_runs_on_one_thread_around_a_cpu_runtime(scripted, cpu_runtime):
    """Around a model another runtime computes on the CPU, torch's spinning workers would take its cores."""
    seen = []

    class Recording(ScriptedBackend):
        def _forward(self, im):
            seen.append(torch.get_num_threads())
            return super()._forward(im)

    backend = Recording()
    backend.cpu_runtime = cpu_runtime
    detector = scripted(backend, warmup=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert detector.predict(bright_spot_image()).summary() == "1 bright"
        assert seen == [1 if cpu_runtime else 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_bad_inputs(scripted):
    detector = scripted(ScriptedBackend(), imgsz=64)
    with pytest.raises(UserInputError, match="expected a path, numpy array or PIL image, got int"):
        detector(5)
    with pytest.raises(UserInputError, match="expected uint8 pixels, got float64"):
        detector(np.zeros((8, 8, 3)))
    with pytest.raises(UserInputError, match="never end; use Detector.stream"):
        detector("rtsp://8.8.8.8/cam")
    with pytest.raises(UserInputError, match=r"^conf_thres 1.5: must be between 0 and 1$"):
        scripted(ScriptedBackend(), conf=1.5)
    with pytest.raises(UserInputError, match="^imgsz 1 2 3: expected one or two sizes"):
        scripted(ScriptedBackend(), imgsz=[1, 2, 3])
    assert scripted(ScriptedBackend(), imgsz=[100]).imgsz == (128, 128)
    assert scripted(ScriptedBackend(), imgsz=[320, 200]).imgsz == (320, 224)


def test_names_from_data_when_the_model_has_none(scripted, tmp_path):
    detector = scripted(ScriptedBackend([[0, 0, 8, 8, 0.9, 0.9, 0.1]], names=()), data=ROOT / "data/coco8.yaml")
    assert detector.names[:2] == ["person", "bicycle"] and len(detector.names) == 80
    unnamed = scripted(ScriptedBackend([[0, 0, 8, 8, 0.9, 0.1, 0.9]], names=()), imgsz=64)
    assert unnamed(np.zeros((64, 64, 3), np.uint8))[0].names == ["class0", "class1"]
    (tmp_path / "bad.yaml").write_text("train: x\n")
    with pytest.raises(UserInputError, match="bad.yaml: no 'names' list"):
        scripted(ScriptedBackend(), data=tmp_path / "bad.yaml")


def test_plot_draws_exactly_around_the_boxes(scripted):
    image = np.full((160, 160, 3), 40, np.uint8)  # the input size: no padding
    result = scripted(ScriptedBackend([[40, 50, 100, 110, 0.9, 0.9, 0.1]]), imgsz=160)(image)[0]
    drawn = result.plot(line_width=2)
    assert drawn.shape == image.shape and np.array_equal(result.image, image)  # original untouched
    changed = np.abs(drawn.astype(int) - image).sum(2) > 0
    assert changed[50:110, 40].all() and changed[50:110, 99].all() and changed[109, 40:100].all()
    assert changed[40:50, 40:60].any()  # the label sits above the box
    assert not changed[60:100, 50:90].any() and not changed[55:, 110:].any()  # inside, right: untouched
    bare = result.plot(line_width=2, hide_labels=True)
    assert not (np.abs(bare.astype(int) - image).sum(2) > 0)[:45].any()
    assert result.label(0) == "dark 0.81" and result.label(0, hide_conf=True) == "dark"


def test_crop_is_the_box_with_a_margin(scripted):
    image = np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)
    result = scripted(ScriptedBackend([[40, 50, 100, 110, 0.9, 0.9, 0.1]]), imgsz=160)(image)[0]
    crop = result.crop(0)
    assert crop.shape == (71, 71, 3)  # 60 px * 1.02 + 10 around the same centre
    assert np.array_equal(crop, image[44:115, 34:105])


def test_augment_maps_scaled_and_flipped_predictions_back(scripted):
    backend = ScriptedBackend()
    detector = scripted(backend, imgsz=128, augment=True)
    image = bright_spot_image()
    im, _ = detector.preprocess(image)
    pred = detector.infer(im)
    assert pred.shape == (1, 3, 7) and backend.calls[-3:] == [(1, 3, 128, 128), (1, 3, 128, 128), (1, 3, 96, 96)]
    np.testing.assert_allclose(pred[0, :, 0], [92] * 3, atol=2.5)  # flipped copy unflipped, scales undone
    np.testing.assert_allclose(pred[0, :, 1], [10 + 32] * 3, atol=2.5)  # 32 px of letterbox padding above
    fixed = scripted(ScriptedBackend(dynamic=False, imgsz=(64, 64)), augment=True)
    assert fixed.augment is False


def tiny_checkpoint(path: Path, obj_logit: float = 8.0) -> Path:
    """A yolov5n-shaped model at 1/8 width whose head is confident everywhere (so it detects things)."""
    torch.manual_seed(0)
    cfg = load_model_yaml("models/yolov5n.yaml")
    cfg["width_multiple"] = 0.125
    model = DetectionModel(cfg, nc=3)
    model.names = ["person", "car", "dog"]
    detect = model.model[-1]
    for conv in detect.m:
        conv.bias.data.view(detect.na, -1)[:, 4] = obj_logit
    return save_checkpoint(build_checkpoint(model), path)


def test_real_checkpoint_on_shipped_images(tmp_path):
    weights = tiny_checkpoint(tmp_path / "tiny.pt")
    detector = Detector(weights, device="cpu", imgsz=96, conf=0.1, max_det=20)
    results = list(detector.stream(ROOT / "data/images"))
    assert [Path(r.path).name for r in results] == ["bus.jpg", "zidane.jpg"]
    for r in results:
        h, w = r.image.shape[:2]
        assert 0 < len(r) <= 20 and r.xyxy.dtype == np.float32 and r.names == ["person", "car", "dog"]
        assert (r.xyxy[:, [0, 2]] >= 0).all() and (r.xyxy[:, [0, 2]] <= w).all() and (r.xyxy[:, 3] <= h).all()
        assert (r.conf >= 0.1).all() and set(r.cls.tolist()) <= {0, 1, 2}
        assert list(r.conf) == sorted(r.conf, reverse=True)
    assert results[1].input_shape == (1, 3, 96, 96)  # 720x1280 → the whole --imgsz, as an export takes it


def test_model_with_nms_inside(scripted, log_lines):
    rows = [[100, 10, 120, 40, 0.9, 1], [10, 10, 50, 50, 0.6, 0], [12, 12, 50, 50, 0.2, 2], [0, 0, 0, 0, 0, 0]]
    backend = ScriptedBackend(names=())
    backend._forward = lambda im: torch.tensor(rows, dtype=torch.float32)[None]  # already x1 y1 x2 y2 conf cls
    backend.end_to_end, backend.dynamic, backend.imgsz = True, False, (64, 128)
    detector = scripted(backend, conf=0.25, augment=True)
    assert detector.augment is False and any("NMS inside" in m for m in log_lines())
    result = detector(np.zeros((64, 128, 3), np.uint8))[0]
    np.testing.assert_allclose(result.xyxy, [[100, 10, 120, 40], [10, 10, 50, 50]])
    assert result.cls.tolist() == [1, 0] and result.names == ["class0", "class1"]
    detector.classes, detector.max_det = [0, 2], 5
    assert detector(np.zeros((64, 128, 3), np.uint8))[0].cls.tolist() == [0]
