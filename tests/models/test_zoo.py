"""The model zoo: baselines match YOLOv5's published sizes; PConv variants build, run and are smaller.

Sizes are counted on shape-only (meta-device) models, so even yolov5x costs milliseconds; real
forward passes are kept to the light models (batch 1) to respect the suite's time budget.
"""
import functools
from pathlib import Path

import pytest
import torch

from models.yolo import DetectionModel
from utils.core.torch_utils import count_params, model_flops

ROOT = Path(__file__).resolve().parents[2]
# YOLOv5 v6+ README table at nc=80: params (M), GFLOPs at 640
PUBLISHED = {"n": (1.9, 4.5), "s": (7.2, 16.5), "m": (21.2, 49.0), "l": (46.5, 109.1), "x": (86.7, 205.7)}
# PConv model → the baseline it must undercut in both params and GFLOPs
VARIANTS = {f"yolov5{s}-faster.yaml": f"yolov5{s}.yaml" for s in "nsmlx"} | {
    "yolov5-fasternet-t0.yaml": "yolov5s.yaml",
    "yolov5-fasternet-t1.yaml": "yolov5m.yaml",
    "yolov5-fasternet-t2.yaml": "yolov5m.yaml",
}


@functools.lru_cache(maxsize=None)
def meta_model(cfg):
    with torch.device("meta"):
        return DetectionModel(cfg)


@functools.lru_cache(maxsize=None)
def size_of(cfg):
    """(parameters, GFLOPs at 640) of a zoo YAML."""
    model = meta_model(cfg)
    return count_params(model), model_flops(model, 640)


@pytest.mark.parametrize("scale", list(PUBLISHED))
def test_baseline_matches_published_size(scale):
    params, gflops = size_of(f"yolov5{scale}.yaml")
    published_params_m, published_gflops = PUBLISHED[scale]
    assert params / 1e6 == pytest.approx(published_params_m, rel=0.02)
    assert gflops == pytest.approx(published_gflops, rel=0.02)


def test_yolov5n_exact_parameter_count():
    assert size_of("yolov5n.yaml")[0] == 1_872_157  # yolov5's own summary for yolov5n.yaml


@pytest.mark.parametrize("cfg", list(VARIANTS))
def test_pconv_variant_is_smaller_than_its_baseline(cfg):
    params, gflops = size_of(cfg)
    baseline_params, baseline_gflops = size_of(VARIANTS[cfg])
    assert params < baseline_params and gflops < baseline_gflops


@pytest.mark.parametrize("cfg", list(VARIANTS))
def test_pconv_variant_forward_shapes_at_640_and_320(cfg):
    model = meta_model(cfg)  # shape-level forward: every variant, heavy ones included
    for imgsz in (640, 320):
        x = torch.zeros(1, 3, imgsz, imgsz, device="meta")
        raw = model.train()(x)
        assert [tuple(r.shape) for r in raw] == [(1, 3, imgsz // s, imgsz // s, 85) for s in (8, 16, 32)]
        assert model.eval()(x).shape == (1, 3 * 21 * (imgsz // 32) ** 2, 85)


def check_real_forward(model, imgsz):
    x = torch.rand(1, 3, imgsz, imgsz)
    with torch.no_grad():
        raw = model.train()(x)
        pred = model.eval()(x)
    assert [tuple(r.shape) for r in raw] == [(1, 3, imgsz // s, imgsz // s, 8) for s in (8, 16, 32)]
    assert pred.shape == (1, 3 * 21 * (imgsz // 32) ** 2, 8) and torch.isfinite(pred).all()


def test_yolov5n_faster_runs_for_real_at_640_and_320():
    model = DetectionModel("yolov5n-faster.yaml", nc=3)
    for imgsz in (640, 320):
        check_real_forward(model, imgsz)


@pytest.mark.parametrize("cfg", ["yolov5s-faster.yaml", "yolov5-fasternet-t0.yaml", "yolov5-fasternet-t2.yaml"])
def test_pconv_variant_runs_for_real_small(cfg):
    check_real_forward(DetectionModel(cfg, nc=3), 128)  # t1 = t0 wider; m/l/x: sizes and shapes only


ALL_YAMLS = sorted(p.relative_to(ROOT / "models").as_posix()
                   for p in [*(ROOT / "models").glob("*.yaml"), *(ROOT / "models/ablations").glob("*.yaml")])


@pytest.mark.parametrize("cfg", ALL_YAMLS)
def test_every_shipped_yaml_builds_with_the_head_its_name_promises(cfg):
    model = meta_model(str(ROOT / "models" / cfg))
    head = model.model[-1]
    assert model.anchor_free == cfg.endswith("-af.yaml")
    if "shared" in cfg:
        assert head.block == "shared"


def test_lite2_fasterneck_af_puts_pconv_in_the_neck_on_lite2s_skeleton():
    """The design its YAML states: PConv only in the neck's FasterNet blocks, C3 in the backbone, the dense head at 32
    channels, and fewer FLOPs than yolov5n-fasterneck-af (same blocks, yolov5n's skeleton)."""
    from models.common import C3
    from models.fasternet import C3FasterBN, PConv

    model = meta_model("yolov5n-lite2-fasterneck-af.yaml")
    layers = list(model.model)
    sppf = next(i for i, m in enumerate(layers) if type(m).__name__ == "SPPF")
    backbone, neck, head = layers[:sppf + 1], layers[sppf + 1:-1], layers[-1]
    assert not any(isinstance(m, PConv) for layer in backbone for m in layer.modules())
    assert sum(type(layer) is C3 for layer in backbone) == 3
    assert sum(isinstance(layer, C3FasterBN) for layer in neck) == 4
    assert head.block == "conv" and not any(isinstance(m, PConv) for m in head.modules())
    assert {conv.out_channels for branch in head.box for conv in branch.modules()
            if isinstance(conv, torch.nn.Conv2d)} == {32, 64}  # two 3x3 convs at 32, then 4 x 16 DFL bins
    assert layers[0].conv.kernel_size == (4, 4) and layers[0].conv.stride == (4, 4)  # the patch stem
    assert size_of("yolov5n-lite2-fasterneck-af.yaml")[1] < 0.6 * size_of("yolov5n-fasterneck-af.yaml")[1]
