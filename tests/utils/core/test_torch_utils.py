"""torch helpers: device choice errors, seeding, EMA maths and state, BN fusion, FLOP counting."""
import math

import pytest
import torch
import torch.nn as nn

from deploy.errors import UserInputError
from models.common import Conv
from utils.core.torch_utils import (MULTI_SCALE_STREAM, ModelEMA, count_params, de_parallel, epoch_seed, fuse_conv_and_bn,
                               init_seeds, model_flops, model_info, select_device)


def test_select_device_cpu_and_errors(monkeypatch):
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("") == (torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserInputError, match="--device 0: CUDA requested but not available"):
        select_device("0")
    with pytest.raises(UserInputError, match="--device gpu"):
        select_device("gpu")
    assert select_device("") == torch.device("cpu")


def test_select_device_with_fake_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("cuda:1") == torch.device("cuda:1")
    assert select_device("cuda") == torch.device("cuda:0")
    assert select_device("0,1", batch_size=16) == torch.device("cuda:0")
    with pytest.raises(UserInputError, match="no CUDA device 2"):
        select_device("0,2")
    with pytest.raises(UserInputError, match="--batch-size 15"):
        select_device("0,1", batch_size=15)


def test_init_seeds_repeats_random_streams():
    init_seeds(3)
    a = torch.rand(4), torch.randint(0, 100, (3,))
    init_seeds(3)
    b = torch.rand(4), torch.randint(0, 100, (3,))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_epoch_seed_is_fixed_by_seed_epoch_rank_and_stream():
    base = epoch_seed(0, 3, rank=1)
    assert base == epoch_seed(0, 3, rank=1) and 0 <= base < 2**32  # a pure function: what --resume relies on
    others = [epoch_seed(1, 3, 1), epoch_seed(0, 4, 1), epoch_seed(0, 3, 0), epoch_seed(0, 3, 1, MULTI_SCALE_STREAM)]
    assert len({base, *others}) == 5
    assert epoch_seed(0, 3, rank=-1) == epoch_seed(0, 3, rank=0)  # no DDP is rank 0
    assert epoch_seed(-1, 0) != epoch_seed(0, 0)  # any --seed, negative ones too


def test_model_ema_follows_yolov5_decay_and_restores_state():
    model = nn.Sequential(nn.Linear(2, 2))
    ema = ModelEMA(model, decay=0.9, tau=10)
    w0 = ema.ema[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1 / 10))
    assert ema.updates == 1 and ema.decay(1) == pytest.approx(d)
    assert torch.allclose(ema.ema[0].weight, d * w0 + (1 - d) * model[0].weight)
    assert not any(p.requires_grad for p in ema.ema.parameters())
    restored = ModelEMA(nn.Sequential(nn.Linear(2, 2)))
    restored.load_state(ema.ema.state_dict(), ema.updates)
    assert restored.updates == 1 and torch.equal(restored.ema[0].weight, ema.ema[0].weight)
    model.names = ["a"]
    ema.update_attr(model)
    assert ema.ema.names == ["a"] and not ema.ema.training


def test_de_parallel_unwraps_data_parallel():
    model = nn.Linear(2, 2)
    assert de_parallel(nn.DataParallel(model)) is model and de_parallel(model) is model


def test_fuse_conv_and_bn_equals_conv_then_bn():
    torch.manual_seed(0)
    block = Conv(4, 8, 3, 2, act=False).eval()
    block.bn.running_mean.uniform_(-1, 1)
    block.bn.running_var.uniform_(0.5, 2)
    block.bn.weight.data.uniform_(0.5, 2)
    block.bn.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 4, 9, 9)
    fused = fuse_conv_and_bn(block.conv, block.bn)
    assert fused.stride == (2, 2) and fused.weight.is_leaf and not fused.weight.requires_grad
    assert torch.allclose(fused(x), block(x), atol=1e-5)


def test_flops_count_two_per_multiply_accumulate():
    conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
    expected = 2 * 3 * 16 * 9 * 32 * 32 / 1e9
    assert model_flops(conv, 32) == pytest.approx(expected)
    assert model_flops(conv, (32, 64)) == pytest.approx(2 * expected)
    info = model_info(conv, 32, verbose=False)
    assert info["params"] == count_params(conv) == 432 and info["layers"] == 1
    assert conv.weight.device.type == "cpu"  # counted on a copy


def test_model_summary_never_reads_zero_gflops_at_a_small_size(caplog):
    """At 64 px a nano model costs ~0.03 GFLOPs: the summary shows the digits, not '0.0'."""
    from models.yolo import DetectionModel
    from utils.core.torch_utils import gflops_text, model_info
    assert (gflops_text(4.23), gflops_text(0.0346), gflops_text(0.1)) == ("4.2", "0.035", "0.1")
    info = model_info(DetectionModel("models/yolov5n.yaml", nc=3), 64, verbose=False)
    assert 0.01 < info["gflops"] < 0.1 and gflops_text(info["gflops"]) != "0.0"
