"""The speed designs (models/yolov5{n,s}-pconv-lite.yaml, yolov5n-pconv-lite2.yaml): they build, run,
train and export.

Their speed is measured by benchmarks/bench_speed_designs.py, never asserted here (no timed tests);
these tests pin what the speed claims rest on: the cheaper stem and downsamplers are really there,
strides and output shapes are unchanged, the models are smaller, and ONNX Runtime runs the export.
"""
import io

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.yolo import DetectionModel
from utils.core.torch_utils import count_params, model_flops

DESIGNS = {"yolov5n-pconv-lite.yaml": "yolov5n.yaml", "yolov5s-pconv-lite.yaml": "yolov5s.yaml",
           "yolov5n-pconv-lite2.yaml": "yolov5n.yaml"}
C3FASTER_ROWS = {"yolov5n-pconv-lite.yaml": 8, "yolov5s-pconv-lite.yaml": 8,
                 "yolov5n-pconv-lite2.yaml": 7}  # lite2 has no C3Faster at P2
NO = 85  # 5 + 80 classes per anchor


def strided_convs(model):
    """(kernel, stride) of every stride > 1 conv in the YAML's plain Conv rows."""
    return [(m.conv.kernel_size[0], m.conv.stride[0]) for m in model.model
            if m.type == "Conv" and m.conv.stride[0] > 1]


@pytest.fixture(scope="module", params=list(DESIGNS))
def design(request):
    torch.manual_seed(0)
    return request.param, DetectionModel(request.param)


def test_design_has_patch_stem_and_2x2_downsamplers(design):
    cfg, model = design
    assert strided_convs(model) == [(4, 4)] + [(2, 2)] * 5
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert [m.type for m in model.model].count("C3Faster") == C3FASTER_ROWS[cfg]


def test_design_is_smaller_than_its_baseline(design):
    cfg, model = design
    with torch.device("meta"):
        baseline = DetectionModel(DESIGNS[cfg])
    assert count_params(model) < 0.85 * count_params(baseline)
    assert model_flops(model, 320) < 0.75 * model_flops(baseline, 320)


def test_design_forward_train_and_eval_at_320(design):
    _, model = design
    x = torch.rand(1, 3, 320, 320)
    model.train()
    raw = model(x)
    assert [tuple(r.shape) for r in raw] == [(1, 3, 40, 40, NO), (1, 3, 20, 20, NO), (1, 3, 10, 10, NO)]
    model.eval()
    with torch.no_grad():
        pred = model(x)
    assert pred.shape == (1, 3 * (40 * 40 + 20 * 20 + 10 * 10), NO)
    assert torch.isfinite(pred).all() and 0 <= pred[..., 4:].min() and pred[..., 4:].max() <= 1


def test_design_gradients_reach_every_parameter(design):
    _, model = design
    model.train()
    model.zero_grad()
    sum(r.square().mean() for r in model(torch.rand(2, 3, 128, 128))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("cfg", ["yolov5n-pconv-lite.yaml", "yolov5n-pconv-lite2.yaml"])
def test_n_design_eval_at_640(cfg):
    torch.manual_seed(0)
    model = DetectionModel(cfg).eval()
    with torch.no_grad():
        pred = model(torch.rand(1, 3, 640, 640))
    assert pred.shape == (1, 3 * (80 * 80 + 40 * 40 + 20 * 20), NO)
    assert torch.isfinite(pred).all()


@pytest.mark.parametrize("cfg", ["yolov5n-pconv-lite.yaml", "yolov5n-pconv-lite2.yaml"])
def test_n_design_onnx_export_runs_in_onnxruntime(cfg):
    torch.manual_seed(0)
    model = DetectionModel(cfg).eval().fuse().set_export_mode(True)
    x = torch.rand(1, 3, 320, 320)
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17, input_names=["images"])
        expected = model(x).numpy()
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-3
