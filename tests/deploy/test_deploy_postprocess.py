"""deploy/'s numpy pre/post-processing against the project's torch implementations it must reproduce, and its
quantisation and metadata parsing."""
import json

import numpy as np
import pytest
import torch
import torchvision

from deploy import postprocess
from deploy.engines import TensorSpec
from deploy.errors import UserInputError
from deploy.metadata import parse_metadata
from deploy.postprocess import as_rows, end_to_end_detections, nms_xyxy, raw_candidates, scale_boxes_to_image
from deploy.preprocess import Letterbox, as_spec, letterbox, quantize, to_input
from utils.core.boxes import non_max_suppression, scale_boxes
from utils.data.augment import letterbox as project_letterbox


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 50, (n, 2))
    return np.concatenate((xy, xy + rng.uniform(2, 30, (n, 2))), 1).astype(np.float32)


@pytest.mark.parametrize("seed, chunk", [(0, 64), (1, 64), (2, 1), (3, 7), (4, 4096)])
def test_nms_keeps_what_torchvision_keeps(seed, chunk, monkeypatch):
    monkeypatch.setattr(postprocess, "NMS_CHUNK", chunk)  # a box per step, chunks cut inside a class, one chunk
    rng = np.random.default_rng(seed)
    boxes, scores, cls = random_boxes(rng, 300), rng.uniform(0, 1, 300).astype(np.float32), rng.integers(0, 3, 300)
    for agnostic in (False, True):
        ours = nms_xyxy(boxes, scores, cls, 0.45, max_det=1000, agnostic=agnostic)
        ids = torch.zeros(300, dtype=torch.long) if agnostic else torch.from_numpy(cls)
        ref = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), ids, 0.45).numpy()
        assert 10 < len(ours) < 300
        assert ours.tolist() == ref.tolist()
        assert nms_xyxy(boxes, scores, cls, 0.45, max_det=7, agnostic=agnostic).tolist() == ours.tolist()[:7]


def test_decode_and_nms_equal_project_nms():
    """Raw (N, 5+nc) rows → the same detections utils.core.boxes.non_max_suppression gives, --classes included."""
    rng = np.random.default_rng(0)
    n, nc = 500, 4
    xywh = np.concatenate((rng.uniform(0, 64, (n, 2)), rng.uniform(2, 20, (n, 2))), 1)
    pred = np.concatenate((xywh, rng.uniform(0, 1, (n, 1 + nc))), 1).astype(np.float32)
    for classes in (None, [1, 3]):
        xyxy, conf, cls = raw_candidates(pred, 0.25, classes)
        keep = nms_xyxy(xyxy, conf, cls, 0.45, 300)
        ours = np.concatenate((xyxy[keep], conf[keep, None], cls[keep, None]), 1)
        ref = non_max_suppression(torch.from_numpy(pred)[None], 0.25, 0.45, classes=classes, max_det=300)[0].numpy()
        assert len(ref) > 20 and ours.shape == ref.shape
        assert np.abs(ours - ref).max() < 1e-5


def test_candidates_found_before_gathering_equal_the_plain_rule():
    """Thresholding before rows are gathered keeps exactly the boxes of the plain rule (every row's obj x cls,
    best class, > conf), from a channels-first (1, 5+nc, N) output too, NaN scores and negative objectness included."""
    rng = np.random.default_rng(3)
    n, nc = 2000, 6
    pred = np.concatenate((rng.uniform(0, 64, (n, 4)), rng.uniform(-0.1, 1, (n, 1 + nc))), 1).astype(np.float32)
    pred[::97, 7] = np.nan
    channels_first = np.ascontiguousarray(pred.T)[None]
    for classes in (None, [2, 5]):
        rows = pred[pred[:, 4] > 0.3]
        scores = rows[:, 5:] * rows[:, 4:5]
        cls = scores.argmax(1)
        score = scores[np.arange(len(rows)), cls]
        keep = (score > 0.3) & (True if classes is None else np.isin(cls, classes))
        plain = (rows[keep, :2] - rows[keep, 2:4] / 2, score[keep], cls[keep])
        for given in (pred, as_rows(channels_first, nc, False)):
            xyxy, conf, c = raw_candidates(given, 0.3, classes)
            assert 50 < len(conf) < n
            assert np.array_equal(xyxy[:, :2], plain[0])
            assert np.array_equal(conf, plain[1]) and np.array_equal(c, plain[2])


@pytest.mark.parametrize("shape, new_shape", [((432, 768), (64, 64)), ((1080, 810), (320, 320)),
                                              ((432, 768), (640, 640)), ((50, 50), (64, 96))])
def test_letterbox_is_detect_pys(shape, new_shape):
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours, box = letterbox(image, new_shape)
    ref, (rx, ry), (left, top) = project_letterbox(image, new_shape, auto=False)
    assert ours.shape[:2] == new_shape and np.array_equal(ours, ref)  # the whole shape, never a stride-multiple crop
    assert (box.ratio_x, box.ratio_y, box.pad_left, box.pad_top) == (rx, ry, left, top)
    x = to_input(ours, "NCHW", TensorSpec(np.float32))
    expected = torch.from_numpy(np.ascontiguousarray(ref[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255
    assert np.array_equal(x, expected.numpy())  # bit for bit what detect.py feeds the model
    assert np.array_equal(to_input(ours, "NHWC", TensorSpec(np.float32)), x.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("spec", [TensorSpec(np.float32), TensorSpec(np.float16), TensorSpec(np.int8, 1 / 255, -128),
                                  TensorSpec(np.uint8, 0.0078, 3)], ids=["f32", "f16", "int8", "uint8-odd-scale"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_pixel_lookup_equals_converting_the_whole_frame(spec, layout):
    image = np.random.default_rng(3).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    image[0, :3] = (0, 128, 255)
    frame = image[:, :, ::-1].astype(np.float32) / np.float32(255)  # RGB in [0, 1], then the file's layout and dtype
    expected = as_spec(np.ascontiguousarray((frame.transpose(2, 0, 1) if layout == "NCHW" else frame)[None]), spec)
    x = to_input(image, layout, spec)
    assert x.dtype == expected.dtype and x.shape == expected.shape and x.flags.c_contiguous
    assert np.array_equal(x, expected)


def test_boxes_scale_back_like_detect_py():
    boxes = random_boxes(np.random.default_rng(2), 50) * 6
    box = Letterbox(0.4740740740740741, 0.4740740740740741, 0, 32)
    ref = scale_boxes((320, 320), torch.from_numpy(boxes.copy()), (432, 768), ((box.ratio_y, box.ratio_x), (0, 32)))
    assert np.abs(scale_boxes_to_image(boxes, box, (432, 768)) - ref.numpy()).max() < 1e-3


def test_int8_quantisation_round_trip():
    spec = TensorSpec(np.int8, scale=1 / 255, zero_point=-128)
    assert spec.quantized and not TensorSpec(np.float32).quantized
    x = np.linspace(-0.2, 1.2, 101, dtype=np.float32)
    q = quantize(x, spec)
    assert q.dtype == np.int8 and q.min() == -128 and q.max() == 127  # out-of-range values clip, not wrap
    inside = (x >= 0) & (x <= 1)
    restored = (q[inside].astype(np.float32) - spec.zero_point) * spec.scale
    assert np.abs(restored - x[inside]).max() <= spec.scale / 2 + 1e-7
    image = np.full((4, 4, 3), 255, np.uint8)
    assert np.all(to_input(image, "NHWC", spec) == 127)


def test_output_rows_and_end_to_end_selection():
    raw = np.arange(9 * 7, dtype=np.float32).reshape(1, 9, 7)  # nc=2: 9 boxes of 7 values
    assert np.array_equal(as_rows(raw, 2, False), raw[0])
    assert np.array_equal(as_rows(raw.transpose(0, 2, 1), 2, False), raw[0])  # channels-first export
    with pytest.raises(ValueError, match="is not \\(1, N, 6\\)"):
        as_rows(raw, 2, True)
    rows = np.array([[0, 0, 5, 5, 0.3, 1], [1, 1, 6, 6, 0.9, 0], [2, 2, 7, 7, 0.6, 1], [0, 0, 0, 0, 0, 0]], np.float32)
    xyxy, conf, cls = end_to_end_detections(rows, 0.25, None, 10)
    assert conf.tolist() == pytest.approx([0.9, 0.6, 0.3]) and cls.tolist() == [0, 1, 1]
    xyxy, conf, cls = end_to_end_detections(rows, 0.25, [1], 1)
    assert conf.tolist() == pytest.approx([0.6]) and xyxy.tolist() == [[2, 2, 7, 7]]


def test_metadata_parsing(tmp_path):
    meta = {"names": json.dumps(["a", "b"]), "stride": "32", "imgsz": "[64, 96]", "nms": "true", "layout": "nhwc",
            "precision": "int8"}
    info = parse_metadata(meta, tmp_path / "m.onnx", "x")
    assert (info.names, info.stride, info.imgsz, info.nms, info.layout, info.precision) == (
        ("a", "b"), 32, (64, 96), True, "NHWC", "int8")
    assert parse_metadata({**meta, "names": "{1: 'b', 0: 'a'}"}, tmp_path, "x").names == ("a", "b")  # yolov5 style
    with pytest.raises(UserInputError, match="missing PConv-YOLO metadata stride, imgsz in x"):
        parse_metadata({"names": meta["names"]}, tmp_path / "m.onnx", "x")
    with pytest.raises(UserInputError, match="unreadable metadata in x"):
        parse_metadata({**meta, "layout": "CHW"}, tmp_path / "m.onnx", "x")
