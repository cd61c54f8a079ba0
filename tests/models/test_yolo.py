"""YAML builder: schema, overrides, stride/anchor set-up, fusion, summary CLI and its errors."""
import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

from deploy.errors import UserInputError
from models.fasternet import PConv
from models.heads import Detect, DetectAF
from models.yolo import ROOT, DetectionModel, detection_head, find_model_yaml, layer_table, main, make_divisible
from utils.core.cli import run_cli

TINY = {
    "nc": 2,
    "depth_multiple": 0.5,
    "width_multiple": 0.25,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
    "backbone": [[-1, 1, "Conv", [64, 6, 2, 2]],  # 0 /2
                 [-1, 1, "Conv", [128, 3, 2]],  # 1 /4
                 [-1, 2, "C3Faster", [128]],  # 2
                 [-1, 1, "Conv", [128, 3, 2]],  # 3 /8
                 [-1, 1, "Conv", [256, 3, 2]],  # 4 /16
                 [-1, 1, "Conv", [256, 3, 2]],  # 5 /32
                 [-1, 1, "SPPF", [256, 5]]],  # 6
    "head": [[-1, 1, "nn.Upsample", ["None", 2, "nearest"]],  # 7
             [[-1, 4], 1, "Concat", [1]],  # 8
             [-1, 1, "C3", [128, False]],  # 9
             [[3, 9, 6], 1, "Detect", ["nc", "anchors"]]],
}


def write_yaml(tmp_path, d, name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(d))
    return path


def tiny(**changes):
    d = copy.deepcopy(TINY)
    d.update(changes)
    return d


def test_model_names_resolve_under_models_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_model_yaml("yolov5n.yaml") == ROOT / "models/yolov5n.yaml"
    assert find_model_yaml("ablations/c3bb-bnneck-c32p3-af.yaml") == ROOT / "models/ablations/c3bb-bnneck-c32p3-af.yaml"
    assert find_model_yaml("nope/yolov5n-af.yaml") == ROOT / "models/yolov5n-af.yaml"  # a zoo file name wins
    (tmp_path / "yolov5n.yaml").write_text("nc: 1\n")
    assert find_model_yaml("yolov5n.yaml") == Path("yolov5n.yaml")  # the user's own file comes first
    assert find_model_yaml("missing.yaml") == Path("missing.yaml")


def test_builds_with_width_and_depth_scaling(tmp_path):
    model = DetectionModel(write_yaml(tmp_path, tiny()))
    assert make_divisible(64 * 0.25) == 16 and make_divisible(20) == 24
    assert model.model[0].conv.out_channels == 16
    assert len(model.model[2].m) == 1  # depth 2 x 0.5
    assert model.model[8].type == "Concat" and model.model[9].cv1.conv.in_channels == 64 + 64
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert torch.allclose(model.model[-1].anchors[2, 2], torch.tensor([373 / 32, 326 / 32]))
    assert model.names == ["class0", "class1"] and model.yaml["nc"] == 2
    assert model.yaml["yaml_file"].endswith("tiny.yaml") and model.save == [3, 4, 6, 9]


def test_forward_contract_per_mode(tmp_path):
    model = DetectionModel(write_yaml(tmp_path, tiny()))
    x = torch.rand(2, 3, 64, 96)
    raw = model(x)
    assert [r.shape for r in raw] == [(2, 3, 8, 12, 7), (2, 3, 4, 6, 7), (2, 3, 2, 3, 7)]
    model.eval()
    with torch.no_grad():
        pred = model(x)
        pred2, raw2 = model(x, raw=True)
    assert pred.shape == (2, 3 * (96 + 24 + 6), 7) and torch.equal(pred, pred2) and len(raw2) == 3
    assert 0 <= pred[..., 4:].min() and pred[..., 4:].max() <= 1
    model.set_export_mode(True)
    assert all(m.forward_mode == "split_cat" for m in model.modules() if isinstance(m, PConv))
    with torch.no_grad():
        assert torch.allclose(model(x), pred, atol=1e-5)
    model.set_export_mode(False)
    assert not model.model[-1].export


def test_set_pconv_mode_is_checked_and_export_mode_restores_auto():
    model = DetectionModel(tiny())
    pconvs = [m for m in model.modules() if isinstance(m, PConv)]
    assert pconvs and model.set_pconv_mode("slicing") is model
    assert all(m.forward_mode == "slicing" for m in pconvs)
    with pytest.raises(ValueError, match="forward_mode must be one of"):
        model.set_pconv_mode("split")
    model.set_export_mode(True).set_export_mode(False)
    assert all(m.forward_mode == "auto" for m in pconvs)


def test_head_kind_is_asked_of_the_model_and_found_through_wrappers():
    anchor, af = DetectionModel(tiny()), DetectionModel("yolov5n-af.yaml", nc=2)
    assert not anchor.anchor_free and af.anchor_free
    assert detection_head(nn.DataParallel(anchor)) is anchor.model[-1]  # the wrapped model's head
    assert detection_head(af, DetectAF) is af.model[-1] and detection_head(af.model[-1]) is af.model[-1]
    with pytest.raises(ValueError, match="DetectionModel has a DetectAF head, not a Detect"):
        detection_head(af, Detect)
    with pytest.raises(ValueError, match="Conv2d has no detection head"):
        detection_head(nn.Conv2d(3, 3, 1))


def test_nc_and_anchor_overrides(tmp_path):
    path = write_yaml(tmp_path, tiny())
    model = DetectionModel(path, nc=5, anchors=[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    detect = model.model[-1]
    assert detect.nc == 5 and detect.na == 2 and detect.m[0].out_channels == 2 * 10
    assert model.yaml["nc"] == 5 and len(model.names) == 5
    assert torch.allclose(detect.anchors[0, 1], torch.tensor([3 / 8, 4 / 8]))
    rebuilt = DetectionModel(model.yaml)  # checkpoints rebuild from the stored dict
    assert rebuilt.model[-1].nc == 5 and torch.equal(rebuilt.model[-1].anchors, detect.anchors)
    assert DetectionModel(path, anchors=4).model[-1].na == 4
    gray = DetectionModel(path, ch=1)
    assert DetectionModel(gray.yaml).model[0].conv.in_channels == 1


def test_reversed_anchor_order_is_flipped(tmp_path):
    d = tiny(anchors=list(reversed(TINY["anchors"])))
    anchors = DetectionModel(write_yaml(tmp_path, d)).model[-1].anchors
    assert torch.allclose(anchors[0, 0], torch.tensor([10 / 8, 13 / 8]))


def test_stride_probe_leaves_no_batchnorm_statistics(tmp_path):
    model = DetectionModel(write_yaml(tmp_path, tiny()))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(int(bn.num_batches_tracked) == 0 and torch.all(bn.running_var == 1) for bn in bns)
    assert all(bn.eps == 1e-3 and bn.momentum == 0.03 for bn in bns)


def test_fuse_keeps_outputs_and_leaves_leaf_frozen_params(tmp_path, outputs_before_and_after_fuse):
    torch.manual_seed(0)
    model = DetectionModel(write_yaml(tmp_path, tiny()))
    before, after = outputs_before_and_after_fuse(model, torch.rand(1, 3, 64, 64))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert (before - after).abs().max().item() < 1e-4
    fused = model.model[0].conv
    assert fused.bias is not None and fused.weight.is_leaf and not fused.weight.requires_grad


@pytest.mark.parametrize("name, act_type", [("ReLU", nn.ReLU), ("LeakyReLU", nn.LeakyReLU)])
def test_activation_key_replaces_every_silu_and_survives_a_rebuild(tmp_path, name, act_type):
    n_silu = sum(type(m) is nn.SiLU for m in DetectionModel(write_yaml(tmp_path, tiny())).modules())
    model = DetectionModel(write_yaml(tmp_path, tiny(activation=name)))
    assert n_silu > 10 and not any(type(m) is nn.SiLU for m in model.modules())
    assert sum(type(m) is act_type for m in model.modules()) == n_silu
    assert isinstance(model.model[2].m[0].mlp[0].act, act_type)  # inside the FasterNet blocks too
    rebuilt = DetectionModel(model.yaml)  # what a checkpoint stores
    assert sum(type(m) is act_type for m in rebuilt.modules()) == n_silu
    if name == "LeakyReLU":
        assert model.model[0].act.negative_slope == 0.1


def test_relu_model_exports_without_silu_ops(tmp_path):
    """The point of ReLU: the exported graph has no Sigmoid·Mul pairs left, only the head's (one per level)."""
    import onnx

    def sigmoid_count(model: DetectionModel) -> int:
        path = tmp_path / "m.onnx"
        model.eval().set_export_mode(True)
        torch.onnx.export(model, (torch.rand(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17)
        return sum(node.op_type == "Sigmoid" for node in onnx.load(str(path)).graph.node)

    assert sigmoid_count(DetectionModel(write_yaml(tmp_path, tiny()))) > 10
    assert sigmoid_count(DetectionModel(write_yaml(tmp_path, tiny(activation="ReLU")))) == 3


def test_error_unknown_activation(tmp_path):
    with pytest.raises(UserInputError, match=r"tiny\.yaml: activation must be one of GELU, LeakyReLU, ReLU, SiLU, "
                                             r"got 'relu6'"):
        DetectionModel(write_yaml(tmp_path, tiny(activation="relu6")))


def test_layer_table_and_cli(tmp_path, capsys):
    path = write_yaml(tmp_path, tiny())
    model = DetectionModel(path)
    table = layer_table(model, 64).splitlines()
    assert len(table) == 1 + 11 + 1 and "C3Faster" in table[3] and "GFLOPs" in table[0]
    assert table[-1].startswith("tiny summary:") and f"{sum(p.numel() for p in model.parameters()):,}" in table[-1]
    main(["--cfg", str(path), "--imgsz", "64"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == table[-1]
    main(["--cfg", str(path), "--imgsz", "50"])  # the one --imgsz rule: rounded up to the stride, said once
    assert capsys.readouterr().out.strip().splitlines()[-1] == table[-1]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(["--cfg", str(path), "--imgsz", "0"]))
    assert exit_info.value.code == 2 and "--imgsz 0" in capsys.readouterr().err


def test_error_unknown_module(tmp_path):
    d = tiny()
    d["backbone"][2][2] = "C4"
    with pytest.raises(UserInputError, match=r"tiny\.yaml: row 2: unknown module 'C4'"):
        DetectionModel(write_yaml(tmp_path, d))


def test_error_wrong_argument_count(tmp_path):
    d = tiny()
    d["backbone"][6][3] = [256, 5, 7, 9]
    with pytest.raises(UserInputError, match=r"tiny\.yaml: row 6: wrong number of arguments for SPPF"):
        DetectionModel(write_yaml(tmp_path, d))


def test_error_bad_from_index(tmp_path):
    d = tiny()
    d["head"][1][0] = [-1, 12]
    with pytest.raises(UserInputError, match=r"tiny\.yaml: row 8: 'from' index 12 does not name an earlier layer"):
        DetectionModel(write_yaml(tmp_path, d))


def test_error_missing_keys(tmp_path):
    d = tiny()
    del d["anchors"], d["head"]
    with pytest.raises(UserInputError, match=r"tiny\.yaml: missing key\(s\) anchors, head"):
        DetectionModel(write_yaml(tmp_path, d))


def test_error_not_a_yaml_file(tmp_path):
    txt = tmp_path / "model.txt"
    txt.write_text("nc: 2")
    with pytest.raises(UserInputError, match=r"model\.txt: not a model YAML file"):
        DetectionModel(txt)
    broken = tmp_path / "broken.yaml"
    broken.write_text("nc: [2\nbackbone: {")
    with pytest.raises(UserInputError, match=r"broken\.yaml: not valid YAML"):
        DetectionModel(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text")
    with pytest.raises(UserInputError, match=r"scalar\.yaml: a model YAML must be a mapping"):
        DetectionModel(scalar)
    with pytest.raises(UserInputError, match=r"absent\.yaml: model YAML file not found"):
        DetectionModel(tmp_path / "absent.yaml")


def test_error_malformed_row_and_bad_values(tmp_path):
    d = tiny()
    d["backbone"][1] = [-1, 1, "Conv"]
    with pytest.raises(UserInputError, match=r"row 1: expected \[from, number, module, args\]"):
        DetectionModel(write_yaml(tmp_path, d))
    d = tiny()
    d["backbone"][2][3] = [128, 1, 1, 0.5, 4, "x"]  # right count for C3Faster is at most 7 after wiring
    with pytest.raises(UserInputError, match=r"row 2: wrong number of arguments for C3Faster"):
        DetectionModel(write_yaml(tmp_path, d))
    d["backbone"][2][3] = [128, 1, 1, 0.5, "x"]
    with pytest.raises(UserInputError, match=r"row 2: cannot build C3Faster.*n_div must be a positive integer, got 'x'"):
        DetectionModel(write_yaml(tmp_path, d))
    d = tiny()
    d["head"][-1] = [[3, 9], 1, "Detect", ["nc", "anchors"]]
    with pytest.raises(UserInputError, match=r"row 10: cannot build Detect.*3 anchor levels but 2 input layers"):
        DetectionModel(write_yaml(tmp_path, d))
    d["head"][-1] = [[3, 9, 6], 1, "Detect", ["nc"]]
    with pytest.raises(UserInputError, match=r"row 10: Detect takes \[nc, anchors\], got 1 argument"):
        DetectionModel(write_yaml(tmp_path, d))
    with pytest.raises(UserInputError, match=r"anchors must be a list"):
        DetectionModel(write_yaml(tmp_path, tiny(anchors="big")))
    d = tiny()
    d["backbone"][0][3] = ["wide", 6, 2, 2]
    with pytest.raises(UserInputError, match=r"row 0: Conv needs its output channels \(an int\)"):
        DetectionModel(write_yaml(tmp_path, d))
    with pytest.raises(UserInputError, match=r"nc must be a positive integer"):
        DetectionModel(write_yaml(tmp_path, tiny(nc=0)))
    d = tiny()
    d["head"] = d["head"][:-1]
    with pytest.raises(UserInputError, match=r"last row must be a Detect head"):
        DetectionModel(write_yaml(tmp_path, d))
