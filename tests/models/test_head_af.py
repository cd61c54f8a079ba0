"""DetectAF: DFL decode, output contract shared with Detect, bias priors, fuse/export/checkpoint round trips."""
import copy
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import export
from deploy.errors import UserInputError
from models.heads import DetectAF, dfl_expectation
from models.yolo import DetectionModel, load_model_yaml
from utils.weights.checkpoint import build_checkpoint, save_checkpoint
from utils.weights.checkpoint import load_model

NC = 3


@pytest.fixture(scope="module")
def af_model() -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel("yolov5n-faster-af.yaml", nc=NC)


def test_dfl_decode_of_known_distributions():
    bins = torch.arange(16, dtype=torch.float32)
    logits = torch.full((4, 16), -1e4)
    logits[0, 3] = 0.0  # all mass on bin 3 → 3
    logits[1, [2, 5]] = 0.0  # half on 2, half on 5 → 3.5
    logits[2] = 0.0  # uniform → 7.5
    logits[3, 15] = 0.0  # the last bin → 15
    assert torch.allclose(dfl_expectation(logits.view(1, 64), bins), torch.tensor([[3.0, 3.5, 7.5, 15.0]]))


def test_exported_decode_equals_decode_for_extreme_and_known_distributions():
    """The exported form (exp of logits minus their max, one conv for both moments) must not overflow where a
    softmax would not: logits of +-1e4 and 80 (exp overflows float32 past 88) give decode()'s boxes."""
    head = DetectAF(nc=2, reg_max=16, ch=[8, 8]).eval()
    head.stride.copy_(torch.tensor([8.0, 16.0]))
    torch.manual_seed(0)
    boxes = [torch.randn(1, 64, 2, 3) * 3, torch.full((1, 64, 1, 2), -1e4)]
    boxes[1][:, 3::16] = 1e4  # every side on bin 3
    boxes[0][:, 0, 0, 0] = 80.0
    logits = [torch.randn(1, 2, 2, 3), torch.randn(1, 2, 1, 2)]
    exported = head.decode_channels_first(boxes, logits)
    expected = head.decode([torch.cat((b, c), 1).permute(0, 2, 3, 1) for b, c in zip(boxes, logits)])
    assert exported.shape == (1, 7, 8) and torch.isfinite(exported).all()
    assert torch.allclose(exported.transpose(1, 2), expected, rtol=1e-5, atol=1e-4)
    assert torch.allclose(exported[0, 2:4, 6:], torch.full((2, 2), 6 * 16.0))  # l + r = t + b = 3 + 3 bins


def test_decode_turns_distances_into_pixel_boxes_with_unit_objectness():
    head = DetectAF(nc=2, reg_max=4, ch=[8]).eval()
    head.stride.fill_(8.0)
    raw = torch.full((1, 2, 3, 4 * 4 + 2), -1e4)  # a 2x3 map
    raw[..., [1, 4 + 2, 8 + 3, 12 + 0]] = 0.0  # l=1, t=2, r=3, b=0 cells
    raw[..., 16:] = torch.tensor([0.0, 2.0])
    pred = head.decode([raw])
    assert pred.shape == (1, 6, 7)
    # cell (x=1, y=1) is row 4: centre (12, 12) px; x1 = 12-8, y1 = 12-16, x2 = 12+24, y2 = 12+0
    assert torch.allclose(pred[0, 4, :4], torch.tensor([20.0, 4.0, 32.0, 16.0]))
    assert torch.equal(pred[..., 4], torch.ones(1, 6))
    assert torch.allclose(pred[0, 0, 5:], torch.sigmoid(torch.tensor([0.0, 2.0])))


def test_model_contract_matches_detect(af_model):
    head = af_model.model[-1]
    assert isinstance(head, DetectAF) and not hasattr(head, "anchors")
    assert af_model.stride.tolist() == [8.0, 16.0, 32.0]
    x = torch.rand(2, 3, 64, 96)
    af_model.train()
    raw = af_model(x)
    assert [tuple(r.shape) for r in raw] == [(2, 8, 12, 64 + NC), (2, 4, 6, 64 + NC), (2, 2, 3, 64 + NC)]
    af_model.eval()
    with torch.no_grad():
        pred = af_model(x)
        pred2, raw2 = af_model(x, raw=True)
    assert pred.shape == (2, 96 + 24 + 6, 5 + NC)
    assert torch.equal(pred, pred2) and len(raw2) == 3
    assert ((pred[..., 5:] >= 0) & (pred[..., 5:] <= 1)).all() and (pred[..., 2:4] > 0).all()


def test_bias_priors(af_model):
    head = af_model.model[-1]
    for box, cls, s in zip(head.box, head.cls, (8, 16, 32)):
        assert torch.equal(box[-1].bias, torch.ones(64))
        assert torch.allclose(cls[-1].bias, torch.full((NC,), math.log(5 / NC / (640 / s) ** 2)))


def test_fuse_and_export_mode_keep_outputs(af_model):
    x = torch.rand(1, 3, 64, 64)
    model = copy.deepcopy(af_model).eval()
    with torch.no_grad():
        expected = model(x)
        model.fuse()
        assert torch.allclose(model(x), expected, atol=1e-3)
        model.set_export_mode(True)
        out = model(x)
    # the exported form: channels first (B, 5 + nc, N), the same values
    assert isinstance(out, torch.Tensor) and out.shape == expected.transpose(1, 2).shape
    assert torch.allclose(out.transpose(1, 2), expected, atol=1e-3)


@pytest.mark.parametrize("block", DetectAF.BLOCKS)
def test_every_branch_block_builds_and_decodes(block):
    head = DetectAF(nc=2, reg_max=8, block=block, ch=[16, 32]).eval()
    head.stride.copy_(torch.tensor([8.0, 16.0]))
    with torch.no_grad():
        pred, raw = head([torch.rand(1, 16, 8, 8), torch.rand(1, 32, 4, 4)])
    assert pred.shape == (1, 80, 7) and [tuple(r.shape) for r in raw] == [(1, 8, 8, 34), (1, 4, 4, 34)]


def test_shared_head_is_cheaper_and_other_blocks_keep_their_checkpoint_keys():
    """'shared' computes one stem per level for both outputs; the other blocks' stems are parameter-free, so
    checkpoints written before the stem existed still load."""
    heads = {b: DetectAF(nc=80, reg_max=16, block=b, ch=[64, 128, 256]) for b in ("pconv", "shared")}
    n_params = {b: sum(p.numel() for p in h.parameters()) for b, h in heads.items()}
    assert n_params["shared"] < 0.4 * n_params["pconv"]
    assert not any(k.startswith("stem.") for k in heads["pconv"].state_dict())
    assert any(k.startswith("stem.") for k in heads["shared"].state_dict())


def test_width_sets_every_branch_conv_and_conv_shared_reads_the_stem_for_classes():
    head = DetectAF(nc=3, reg_max=16, block="conv_shared", width=24, ch=[64, 128])
    for stem, box, cls in zip(head.stem, head.box, head.cls):
        assert stem.conv.out_channels == 24 and stem.conv.kernel_size == (3, 3)
        assert box[0].conv.in_channels == box[0].conv.out_channels == 24 and box[0].conv.kernel_size == (3, 3)
        assert len(cls) == 1 and cls[0].in_channels == 24 and cls[0].out_channels == 3
    dense = DetectAF(nc=3, reg_max=16, block="conv", width=24, ch=[64, 128])
    assert all(b[0].conv.out_channels == c[0].conv.out_channels == 24 for b, c in zip(dense.box, dense.cls))
    dw = DetectAF(nc=3, reg_max=16, block="conv_dwcls", ch=[64, 128])
    assert [m.conv.groups for m in dw.cls[1][:4]] == [128, 1, 64, 1] and dw.box[1][0].conv.groups == 1
    cp = DetectAF(nc=3, reg_max=16, block="conv_pconv", width=32, ch=[64, 128])
    first, pconv, mix = cp.box[1][:3]
    assert first.conv.kernel_size == (3, 3) and (first.conv.in_channels, first.conv.out_channels) == (128, 32)
    assert pconv.dim_conv == 8 and mix.conv.kernel_size == (1, 1) and mix.conv.out_channels == 32
    dense32 = DetectAF(nc=3, reg_max=16, block="conv", width=32, ch=[64, 128])
    assert sum(p.numel() for p in cp.parameters()) < 0.85 * sum(p.numel() for p in dense32.parameters())
    split = DetectAF(nc=3, reg_max=16, block="conv", width=[16, 48], ch=[64, 128])
    assert [split.box[0][0].conv.out_channels, split.cls[0][0].conv.out_channels] == [16, 48]
    usual = DetectAF(nc=3, reg_max=16, block="conv", ch=[64, 128])
    assert [usual.box[0][0].conv.out_channels, usual.cls[0][0].conv.out_channels] == [64, 64]


@pytest.mark.parametrize("block", ["conv", "conv_shared", "shared"])
def test_per_level_width_sets_each_level_apart(block):
    head = DetectAF(nc=3, reg_max=16, block=block, width=[[16, 24], 32, 0], ch=[64, 128, 256])
    if block == "conv":
        assert [(b[0].conv.out_channels, c[0].conv.out_channels) for b, c in zip(head.box, head.cls)] == \
            [(16, 24), (32, 32), (64, 64)]
    else:  # the stems take each level's box width; both output convs read it
        assert [b[-1].in_channels for b in head.box] == [c[-1].in_channels for c in head.cls] == [16, 32, 64]
    out = head.eval()([torch.rand(1, c, s, s) for c, s in [(64, 8), (128, 4), (256, 2)]])[0]
    assert out.shape == (1, 64 + 16 + 4, 8)


def test_yaml_width_reaches_the_head():
    d = load_model_yaml("yolov5n-af.yaml")
    d["head"][-1][3] = ["nc", 16, "conv_shared", 40]
    head = DetectionModel(d, nc=3).model[-1]
    assert head.block == "conv_shared" and head.stem[0].conv.out_channels == 40


@pytest.mark.parametrize("args, message", [(["nc", 16, "dwconv"], "block must be one of"),
                                           (["nc", 16, "conv", -8], "width must be a non-negative int"),
                                           (["nc", 16, "conv", [16]], "width must be .* \\[box, class\\]"),
                                           (["nc", 16, "conv", [[16, 16], 32]], "one entry per input level \\(3\\)"),
                                           (["nc", 16, "conv", [[16, 16], 32, "x"]], "width must be")])
def test_bad_head_arguments_are_user_errors(args, message):
    d = load_model_yaml("yolov5n-af.yaml")
    d["head"][-1][3] = args
    with pytest.raises(UserInputError, match=f"DetectAF.*{message}"):
        DetectionModel(d)


def test_checkpoint_weights_only_and_onnx_export_parity(af_model, tmp_path):
    af_model.names = ["a", "b", "c"]
    path = save_checkpoint(build_checkpoint(af_model, ema=af_model), tmp_path / "af.pt")
    loaded = load_model(path)  # torch.load(weights_only=True) inside
    assert isinstance(loaded.model[-1], DetectAF) and loaded.names == ["a", "b", "c"]
    x = torch.rand(1, 3, 64, 64)
    af_model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), af_model(x), atol=1e-5)
    result = export.run(weights=str(path), include=["onnx"], imgsz=[64], project=str(tmp_path / "export"))
    onnx_file = next(f.path for f in result["files"] if f.path.suffix == ".onnx")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = loaded(x).transpose(1, 2).numpy()
    assert got.shape == expected.shape == (1, 5 + NC, 84)
    assert np.abs(got - expected).max() < 1e-3
    assert all(row["max_abs"] < 1e-3 for row in result["rows"])  # export.py's own self-check
    # the decode in the form every runtime runs cheapest: the DFL expectation through one fixed 1x1 conv whose two
    # filters are the bin values and ones (sum(bin * e), sum(e)); no Softmax (slow over a middle axis), no MatMul
    graph = onnx.load(str(onnx_file)).graph
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    consts.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR})
    dfl = [consts[n.input[1]] for n in graph.node if n.op_type == "Conv" and n.input[1] in consts and
           consts[n.input[1]].shape == (2, 16, 1, 1)]
    assert len(dfl) == 1 and np.array_equal(dfl[0][:, :, 0, 0], np.stack((np.arange(16), np.ones(16))))
    assert not [n for n in graph.node if n.op_type in ("Softmax", "MatMul")]

