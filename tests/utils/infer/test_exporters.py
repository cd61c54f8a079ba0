"""utils/infer/exporters.py pieces: export-form preparation, in-graph NMS, ONNX/TorchScript outputs and metadata."""
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torchvision

from deploy.errors import UserInputError
from models.fasternet import PConv
from models.yolo import DetectionModel
from utils.core.boxes import non_max_suppression
from utils.infer.backends import load_backend
from utils.infer.exporters import (FixedSizeNMS, check_writable_dir, export_metadata, export_onnx,
                                   export_torchscript, in_batches, letterboxed_batch, pairwise_iou_xyxy,
                                   prepare_for_export, quantize_onnx)

ROOT = Path(__file__).resolve().parents[3]
BUS = ROOT / "data/images/bus.jpg"

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = DetectionModel("yolov5n-faster.yaml", nc=3)
    m.names = ["a", "b", "c"]
    with torch.no_grad():  # spread the scores so outputs are not all the bias prior
        for conv in m.model[-1].m:
            conv.weight.normal_(0, 0.3)
            conv.bias.normal_(-1.0, 1.0)
    return m.eval()


def test_prepare_for_export_folds_bn_into_leaf_params_and_switches_modes(model):
    prepared = prepare_for_export(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    assert all(p.is_leaf and not p.requires_grad for p in prepared.parameters())
    pconvs = [m for m in prepared.modules() if isinstance(m, PConv)]
    assert pconvs and all(m.forward_mode == "split_cat" for m in pconvs)
    assert prepared.model[-1].export and not model.model[-1].export  # the caller's model is untouched
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        out = prepared(x)
        ref = model(x)
    assert out.shape == ref.shape == (1, 3 * (8 * 12 + 4 * 6 + 2 * 3), 8)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_pairwise_iou_matches_torchvision():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(1, 20, 2, generator=g) * 100
    boxes = torch.cat((xy, xy + 1 + torch.rand(1, 20, 2, generator=g) * 50), 2)
    assert torch.allclose(pairwise_iou_xyxy(boxes)[0], torchvision.ops.box_iou(boxes[0], boxes[0]), atol=1e-5)


class _FixedPredictions(nn.Module):
    """Returns a stored (B, N, 5+nc) prediction whatever the input (to test NMS alone)."""

    def __init__(self, pred):
        super().__init__()
        self.pred = pred

    def forward(self, x):
        return self.pred


def test_fixed_size_nms_keeps_what_greedy_nms_keeps_when_no_chains():
    # Two clusters of overlapping boxes of class 0, one box of class 1 on top of cluster A, one low score.
    rows = [  # cx, cy, w, h, obj, p(c0), p(c1)
        (50, 50, 40, 40, 0.9, 1.0, 0.0), (52, 51, 40, 40, 0.8, 1.0, 0.0),  # A: the 2nd is suppressed
        (200, 200, 30, 30, 0.7, 1.0, 0.0), (201, 199, 30, 30, 0.6, 1.0, 0.0),  # B: the 2nd is suppressed
        (51, 50, 40, 40, 0.5, 0.0, 1.0),  # other class over A: kept
        (300, 300, 10, 10, 0.1, 1.0, 0.0),  # under conf_thres
    ]
    pred = torch.tensor([rows], dtype=torch.float32)
    nms = FixedSizeNMS(_FixedPredictions(pred), max_det=8, conf_thres=0.25, iou_thres=0.45)
    out = nms(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 8, 6)
    kept = out[0][out[0, :, 4] > 0]
    ref = non_max_suppression(pred, 0.25, 0.45, max_det=8)[0]
    assert len(kept) == len(ref) == 3
    assert torch.allclose(kept[kept[:, 4].argsort(descending=True)], ref[ref[:, 4].argsort(descending=True)])
    assert torch.count_nonzero(out[0, 3:]) == 0  # padding rows are zeros


def test_in_batches_tops_up_the_last_batch():
    images = np.arange(5)[:, None].astype(np.float32)
    batches = in_batches(images, 2)
    assert [b.ravel().tolist() for b in batches] == [[0, 1], [2, 3], [4, 0]]


def test_letterboxed_batch_is_rgb_nchw_unit_range():
    x = letterboxed_batch([BUS], (64, 96))
    assert x.shape == (1, 3, 64, 96) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.allclose(x[0, :, 0, 0], 114 / 255)  # the grey letterbox padding on the left


def test_onnx_export_matches_pytorch_with_dynamic_shapes_and_metadata(model, tmp_path):
    prepared = prepare_for_export(model)
    im = torch.zeros(1, 3, 64, 64)
    meta = export_metadata(prepared, (64, 64), 1, "fp32", nms=False)
    path = export_onnx(prepared, im, tmp_path / "m.onnx", meta, opset=17, dynamic=True, simplify=True)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["names"]) == ["a", "b", "c"] and props["stride"] == "32"
    assert json.loads(props["imgsz"]) == [64, 64] and props["model"] == "yolov5n-faster.yaml"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.from_numpy(np.concatenate([letterboxed_batch([BUS], (96, 128))] * 2))  # other batch and size
    with torch.inference_mode():
        ref = prepared(x).numpy()
    out = session.run(None, {"images": x.numpy()})[0]
    assert out.shape == ref.shape == (2, 3 * (12 * 16 + 6 * 8 + 3 * 4), 8)
    assert np.abs(out - ref).max() < 1e-4
    backend = load_backend(path)
    assert backend.names == ["a", "b", "c"] and backend.stride == 32 and backend.dynamic


def anchor_free_onnx(kind: str, path: Path, **export_options) -> tuple[Path, nn.Module]:
    """A 64-px fp32 ONNX of our anchor-free model (DFL bin conv the head's own op; `export_options` go to
    export_onnx) or of ultralytics' yolov5nu (DFL a `dfl` submodule), and the module exported."""
    torch.manual_seed(0)
    if kind == "ours":
        model = prepare_for_export(DetectionModel("yolov5n-pconv-lite2-shared-af.yaml", nc=3).eval())
        model.names = ["a", "b", "c"]
        meta = export_metadata(model, (64, 64), 1, "fp32", nms=False)
        return export_onnx(model, torch.zeros(1, 3, 64, 64), path, meta, opset=17, **export_options), model
    from ultralytics.nn.tasks import DetectionModel as UltralyticsModel

    model = UltralyticsModel("yolov5nu.yaml", nc=3, verbose=False).eval()
    model.model[-1].export, model.model[-1].format = True, "onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 64, 64), str(path), dynamo=False, opset_version=17,
                      input_names=["images"])
    return path, model


def test_anchor_free_onnx_with_dynamic_shapes_decodes_other_sizes_like_pytorch(tmp_path):
    """DetectAF caches anchor points per input size: a dynamic export must not freeze the traced size's."""
    path, prepared = anchor_free_onnx("ours", tmp_path / "af.onnx", dynamic=True, simplify=True)
    x = torch.rand(2, 3, 96, 128)
    with torch.inference_mode():
        ref = prepared(x).numpy()
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    assert out.shape == ref.shape == (2, 8, 12 * 16 + 6 * 8 + 3 * 4)  # channels first, as ultralytics' exports
    assert np.abs(out - ref).max() < 1e-3  # box pixels up to 128


@pytest.mark.parametrize("cfg", ["yolov5n-faster.yaml", "yolov5n-faster-af.yaml"])
def test_fp16_onnx_export_of_both_heads_runs_like_pytorch(cfg, tmp_path):
    """export.py --half on CUDA casts model and input to fp16; tracing a half-precision arange for the head's
    grid failed in the ONNX exporter ("tensor does not have a device", seen on the lent GPU). CPU half tensors
    take the same exporter path, so the check runs everywhere."""
    torch.manual_seed(0)
    m = DetectionModel(cfg, nc=3)
    m.names = ["a", "b", "c"]
    prepared = prepare_for_export(m.eval()).half()
    im = torch.rand(1, 3, 64, 64).half()
    meta = export_metadata(prepared, (64, 64), 1, "fp16", nms=False)
    path = export_onnx(prepared, im, tmp_path / "h.onnx", meta, opset=17, dynamic=False, simplify=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"images": im.numpy()})[0]
    with torch.inference_mode():
        ref = prepared(im).float().numpy()
    assert out.dtype == np.float16 and out.shape == ref.shape
    assert np.abs(out[..., :4].astype(np.float32) - ref[..., :4]).max() < 0.5  # fp16 pixels up to 64
    assert np.abs(out[..., 4:].astype(np.float32) - ref[..., 4:]).max() < 1e-2


def test_torchscript_export_carries_metadata_for_the_backend(model, tmp_path):
    prepared = prepare_for_export(model)
    im = torch.zeros(1, 3, 64, 64)
    path = export_torchscript(prepared, im, tmp_path / "m.torchscript",
                              export_metadata(prepared, (64, 64), 1, "fp32", nms=False))
    backend = load_backend(path)
    assert backend.names == ["a", "b", "c"] and backend.imgsz == (64, 64)
    x = torch.from_numpy(letterboxed_batch([BUS], (64, 64)))
    with torch.inference_mode():
        assert torch.allclose(backend(x), prepared(x), atol=1e-5)


def test_output_folder_that_cannot_be_created_is_a_user_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(UserInputError, match="not writable"):
        check_writable_dir(blocker / "exp")


@pytest.mark.parametrize("kind, dfl_conv", [("ours", "Conv"), ("ultralytics", "dfl/conv/Conv")])
def test_int8_onnx_keeps_the_heads_decode_and_dfl_float_and_quantizes_every_other_conv(kind, dfl_conv, tmp_path):
    """The DFL bin conv is an expectation over softmax bins: int8 there cost a trained anchor-free model 0.03
    mAP50-95. Every other conv, the head's branches included, runs int8."""
    src, model = anchor_free_onnx(kind, tmp_path / "af.onnx")
    dst = quantize_onnx(src, tmp_path / "af-int8.onnx", in_batches(letterboxed_batch([BUS], (64, 64)), 1), model)
    graph = onnx.load(str(dst)).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    head = f"/model.{len(model.model) - 1}/"
    convs = {node.name: [producer.get(name) == "DequantizeLinear" for name in node.input[:2]]
             for node in graph.node if node.op_type == "Conv"}
    assert convs.pop(head + dfl_conv) == [False, False]  # float input, float weights
    assert any(name.startswith(head) for name in convs) and all(all(q) for q in convs.values()), convs
