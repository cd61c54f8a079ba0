"""YOLOv5 blocks: padding keeps size, residuals and channel wiring are right."""
import torch
import torch.nn as nn

from models.common import C3, SPPF, Bottleneck, Concat, Conv, autopad


def test_autopad_keeps_same_size():
    assert autopad(1) == 0 and autopad(3) == 1 and autopad(6, 2) == 2 and autopad(3, d=2) == 2
    x = torch.randn(1, 4, 16, 16)
    assert Conv(4, 8, 3)(x).shape == (1, 8, 16, 16)
    assert Conv(4, 8, 3, 2)(x).shape == (1, 8, 8, 8)
    assert Conv(4, 8, 6, 2, 2)(x).shape == (1, 8, 8, 8)  # yolov5's stem


def test_conv_activation_choices():
    assert isinstance(Conv(4, 8).act, nn.SiLU)
    assert isinstance(Conv(4, 8, act=False).act, nn.Identity)
    assert isinstance(Conv(4, 8, act=nn.ReLU()).act, nn.ReLU)
    conv = Conv(4, 8, act=False).eval()
    x = torch.randn(1, 4, 3, 3)
    assert torch.allclose(conv(x), conv.bn(conv.conv(x)))


def test_bottleneck_residual_only_when_shapes_match():
    assert Bottleneck(8, 8).add and not Bottleneck(8, 8, shortcut=False).add and not Bottleneck(8, 16).add
    b = Bottleneck(8, 8).eval()
    nn.init.zeros_(b.cv2.bn.weight)
    nn.init.zeros_(b.cv2.bn.bias)  # branch outputs SiLU(0) = 0 → identity
    x = torch.randn(1, 8, 4, 4)
    assert torch.equal(b(x), x)


def test_c3_sppf_concat_shapes():
    x = torch.randn(2, 16, 8, 8)
    c3 = C3(16, 32, n=3)
    assert c3(x).shape == (2, 32, 8, 8) and len(c3.m) == 3 and c3.cv1.conv.out_channels == 16
    assert SPPF(16, 24)(x).shape == (2, 24, 8, 8)
    assert Concat(1)([x, x[:, :3]]).shape == (2, 19, 8, 8)
