"""PConv's two forward paths agree and train; FasterNet blocks keep shapes; C3Faster swaps in for C3."""
import pytest
import torch
import torch.nn as nn

from models.common import C3
from models.fasternet import (C3Faster, C3FasterBN, FasterNetBlock, FasterNetStage, PatchEmbed, PatchMerging, PConv,
                              set_pconv_mode)


@pytest.mark.parametrize("c, n_div, hw", [(16, 4, (8, 8)), (32, 2, (5, 7)), (24, 3, (6, 4)), (64, 8, (3, 3)),
                                           (8, 1, (4, 4))])
def test_pconv_paths_are_identical(c, n_div, hw):
    torch.manual_seed(0)
    pconv = PConv(c, n_div).eval()
    x = torch.randn(2, c, *hw)
    with torch.no_grad():
        a = pconv.forward_split_cat(x)
        b = pconv.forward_slicing(x)
    assert (a - b).abs().max().item() < 1e-6
    assert torch.equal(a[:, c // n_div:], x[:, c // n_div:])  # untouched channels pass through
    assert not torch.equal(a[:, : c // n_div], x[:, : c // n_div])


def test_pconv_slicing_leaves_input_intact():
    pconv = PConv(16, 4).eval()
    x = torch.randn(1, 16, 4, 4)
    before = x.clone()
    with torch.no_grad():
        pconv(x)
    assert torch.equal(x, before)


def test_pconv_auto_mode_picks_path_by_mode(monkeypatch):
    pconv = PConv(16, 4)
    calls = []
    monkeypatch.setattr(pconv, "forward_split_cat", lambda x: calls.append("split_cat") or x)
    monkeypatch.setattr(pconv, "forward_slicing", lambda x: calls.append("slicing") or x)
    x = torch.zeros(1, 16, 2, 2)
    pconv.train()(x)
    pconv.eval()(x)
    pconv.forward_mode = "split_cat"
    pconv(x)
    pconv.train().forward_mode = "slicing"
    pconv(x)
    assert calls == ["split_cat", "slicing", "split_cat", "slicing"]
    pconv.forward_mode = "fast"
    with pytest.raises(ValueError, match="forward_mode"):
        pconv(x)


def test_set_pconv_mode_reaches_every_pconv_and_refuses_an_unknown_path():
    stage = FasterNetStage(16, 16, 2)
    pconvs = [m for m in stage.modules() if isinstance(m, PConv)]
    assert len(pconvs) == 2 and set_pconv_mode(stage, "slicing") is stage
    assert all(m.forward_mode == "slicing" for m in pconvs)
    assert set_pconv_mode(pconvs[0], "split_cat").forward_mode == "split_cat"  # a bare PConv counts as its own
    with pytest.raises(ValueError, match="forward_mode must be one of"):
        set_pconv_mode(stage, "fast")
    assert [m.forward_mode for m in pconvs] == ["split_cat", "slicing"]  # nothing half-applied


def test_pconv_trace_uses_split_cat_and_matches_eager():
    pconv = PConv(16, 4).eval()
    x = torch.randn(1, 16, 6, 6)
    traced = torch.jit.trace(pconv, x)
    assert "aten::cat" in str(traced.graph)
    assert torch.allclose(traced(x), pconv(x), atol=1e-6)


def test_pconv_gradients_flow_in_training():
    pconv = PConv(16, 4).train()
    x = torch.randn(2, 16, 5, 5, requires_grad=True)
    pconv(x).square().sum().backward()
    assert pconv.conv.weight.grad is not None and pconv.conv.weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


def test_pconv_rejects_too_few_channels():
    with pytest.raises(ValueError, match="n_div"):
        PConv(3, 4)


@pytest.mark.parametrize("act", ["GELU", "ReLU", nn.SiLU()])
def test_fasternet_block_shape_residual_and_grad(act):
    torch.manual_seed(0)
    block = FasterNetBlock(16, n_div=4, mlp_ratio=2, act=act).train()
    assert block.mlp[0].conv.out_channels == 32
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert block.pconv.conv.weight.grad.abs().sum() > 0
    nn.init.zeros_(block.mlp[1].weight)  # last 1x1 zeroed → the block is the identity
    assert torch.equal(block(x), x)


def test_fasternet_block_layer_scale_and_drop_path():
    block = FasterNetBlock(8, layer_scale=1e-2, drop_path=0.5)
    assert block.layer_scale.shape == (8, 1, 1) and torch.allclose(block.layer_scale, torch.full((8, 1, 1), 1e-2))
    block.eval()
    x = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        assert torch.allclose(block(x), x + 1e-2 * block.mlp(block.pconv(x)), atol=1e-6)
    with pytest.raises(ValueError, match="unknown activation"):
        FasterNetBlock(8, act="Swish")


def test_c3faster_has_c3_signature_and_shapes():
    x = torch.randn(1, 32, 8, 8)
    c3 = C3(32, 64, 2, False, 1, 0.5)
    c3f = C3Faster(32, 64, 2, False, 1, 0.5)
    assert c3f(x).shape == c3(x).shape == (1, 64, 8, 8)
    assert len(c3f.m) == 2 and all(isinstance(b, FasterNetBlock) for b in c3f.m)
    assert sum(p.numel() for p in c3f.parameters()) < sum(p.numel() for p in c3.parameters())


def test_c3faster_n_div_sets_the_convolved_share_from_a_yaml_row():
    from models.yolo import DetectionModel

    assert C3Faster(32, 64, 1).m[0].pconv.dim_conv == 8  # c_ = 32, a quarter by default
    assert C3Faster(32, 64, 1, True, 1, 0.5, 2).m[0].pconv.dim_conv == 16
    m = DetectionModel({"nc": 2, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": 1,
                        "backbone": [[-1, 1, "Conv", [32, 3, 2]], [-1, 2, "C3Faster", [64, True, 1, 0.5, 2]]],
                        "head": [[[1, 1, 1], 1, "DetectAF", ["nc", 16, "shared"]]]})
    assert [b.pconv.dim_conv for b in m.model[1].m] == [16, 16]


def test_c3faster_bn_normalises_the_branch_in_training_and_fuses_away(outputs_before_and_after_fuse):
    from models.yolo import DetectionModel

    torch.manual_seed(0)
    block = C3FasterBN(32, 32, 1, True, 1, 0.5).m[0]
    out_bn = block.mlp[1].bn
    assert isinstance(out_bn, nn.BatchNorm2d) and out_bn.num_features == 16
    x = torch.randn(4, 16, 8, 8) * 5
    branch = block.mlp(block.pconv(x))  # training mode: batch statistics
    assert torch.allclose(branch.mean((0, 2, 3)), torch.zeros(16), atol=1e-4)
    assert torch.allclose(branch.var((0, 2, 3), unbiased=False), torch.ones(16), atol=1e-2)

    m = DetectionModel({"nc": 2, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": 1,
                        "backbone": [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "C3FasterBN", [32]]],
                        "head": [[[1, 1, 1], 1, "DetectAF", ["nc", 16, "shared"]]]})
    before, after = outputs_before_and_after_fuse(m, torch.rand(1, 3, 32, 32))
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())
    assert torch.allclose(before, after, atol=1e-3)  # box pixels; class probabilities


def test_patch_embed_merging_and_stage_shapes():
    x = torch.randn(1, 3, 64, 64)
    y = PatchEmbed(3, 40)(x)
    assert y.shape == (1, 40, 16, 16)
    y = FasterNetStage(40, 40, n=2, act="GELU")(y)
    assert y.shape == (1, 40, 16, 16)
    assert PatchMerging(40, 80)(y).shape == (1, 80, 8, 8)
    with pytest.raises(ValueError, match="keeps its width"):
        FasterNetStage(40, 80)
