"""PyTorch helpers shared by the flows: device choice, seeding, EMA, BN fusion, model size/FLOPs, unwrapping DDP."""
from __future__ import annotations

import copy
import math
import os
import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from deploy.errors import UserInputError
from utils.core.log import LOGGER


def select_device(device: str | int | torch.device = "", batch_size: int = 0) -> torch.device:
    """yolov5's --device: '' (CUDA 0 if available, else CPU), 'cpu', '0', '0,1', 'cuda:0' or 'cuda'.

    Asking for CUDA where there is none, or for more GPUs than exist, is a UserInputError.
    With several GPUs the first is returned (DDP picks its own per LOCAL_RANK); the batch must
    then divide evenly among them.
    """
    spec = str(device).strip().lower().replace("cuda:", "").replace(" ", "")
    spec = "0" if spec == "cuda" else spec  # torch's spelling of the first GPU
    if spec in ("cpu", "mps"):
        if spec == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise UserInputError("--device mps: Apple MPS is not available on this machine")
        return torch.device(spec)
    if spec in ("", "none"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    ids = spec.split(",")
    if not all(i.isdigit() for i in ids):
        raise UserInputError(f"--device {device}: expected '', 'cpu', or CUDA ids like '0' or '0,1'")
    if not torch.cuda.is_available():
        raise UserInputError(f"--device {device}: CUDA requested but not available here (use --device cpu)")
    count = torch.cuda.device_count()
    missing = [i for i in ids if int(i) >= count]
    if missing:
        raise UserInputError(f"--device {device}: no CUDA device {','.join(missing)} (found {count})")
    if len(ids) > 1 and batch_size and batch_size % len(ids):
        raise UserInputError(f"--batch-size {batch_size}: must be a multiple of the GPU count {len(ids)}")
    return torch.device(f"cuda:{ids[0]}")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n` inside the block and restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def init_seeds(seed: int = 0, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally ask for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # cuBLAS needs it for determinism
        os.environ["PYTHONHASHSEED"] = str(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


# independent random streams of one (seed, epoch, rank): the process's global RNGs, the --multi-scale sizes, and
# the augmentation of loader worker k (stream LOADER_STREAM + k; a loader without workers counts as worker 0)
GLOBAL_STREAM, MULTI_SCALE_STREAM, LOADER_STREAM = 0, 1, 2


def epoch_seed(seed: int, epoch: int, rank: int = -1, stream: int = GLOBAL_STREAM) -> int:
    """The 32-bit seed of one random stream of one epoch on one rank.

    A pure function of its arguments, so an epoch draws the same whether this process ran every epoch before
    it or started there with --resume; no RNG state has to travel in checkpoints, nor from every DDP rank
    to rank 0 (which alone saves them).
    """
    return int(np.random.SeedSequence([seed % 2**64, epoch, max(rank, 0), stream]).generate_state(1)[0])


def de_parallel(model: nn.Module) -> nn.Module:
    """The bare model inside DataParallel / DistributedDataParallel (or the model itself)."""
    parallel = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, parallel) else model


def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One Conv2d equal to conv → bn (eval statistics).

    Weights are new leaf `nn.Parameter(requires_grad=False)` tensors: exporters such as
    litert-torch reject parameters that are results of autograd ops.
    """
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = conv.weight * scale.view(-1, 1, 1, 1)
        conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        bias = (conv_bias - bn.running_mean) * scale + bn.bias
    fused.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    fused.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return fused


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (optionally only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def input_channels(model: nn.Module) -> int:
    """Channels the first conv expects (the model's input channels)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def model_flops(model: nn.Module, imgsz: int | tuple[int, int] = 640) -> float:
    """GFLOPs of one eval forward at imgsz (batch 1), counting 2 x multiply-accumulates as yolov5 does.

    Counted on a copy moved to the meta device: only shapes are computed, so even the largest zoo
    model costs milliseconds, and the caller's model (mode, caches, device) is left untouched.
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    meta = copy.deepcopy(de_parallel(model)).to("meta").eval()
    x = torch.zeros(1, input_channels(meta), h, w, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(x)
    return counter.get_total_flops() / 1e9


def model_info(model: nn.Module, imgsz: int | tuple[int, int] = 640, verbose: bool = True) -> dict:
    """Layers, parameters, gradients and GFLOPs at imgsz; logs yolov5's one-line summary if verbose."""
    info = {
        "layers": len(list(model.modules())),
        "params": count_params(model),
        "gradients": count_params(model, trainable_only=True),
        "gflops": model_flops(model, imgsz),
    }
    if verbose:
        LOGGER.info(f"{type(model).__name__} summary: {info['layers']} layers, {info['params']:,} parameters, "
                    f"{info['gradients']:,} gradients, {gflops_text(info['gflops'])} GFLOPs at {imgsz}")
    return info


def gflops_text(gflops: float) -> str:
    """yolov5's one decimal, with enough digits below 0.1 that a small input never reads '0.0 GFLOPs'."""
    return f"{gflops:.1f}" if gflops >= 0.1 else f"{gflops:.2g}"


def copy_attr(dst: object, src: object, include: tuple = (), exclude: tuple = ()) -> None:
    """Copy src's public non-module attributes to dst (e.g. names, yaml onto the EMA model)."""
    for k, v in src.__dict__.items():
        if (include and k not in include) or k.startswith("_") or k == "training" or k in exclude:
            continue
        setattr(dst, k, v)


class ModelEMA:
    """Exponential moving average of a model's state, as yolov5 keeps it.

    decay ramps from 0 towards `decay` as 1 − exp(−updates / tau), so early weights are not
    frozen in. `updates` travels with checkpoints (see load_state) to resume the ramp exactly.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0):
        self.ema = copy.deepcopy(de_parallel(model)).eval()
        self.updates = updates
        self.final_decay = decay
        self.tau = tau
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def decay(self, updates: int) -> float:
        return self.final_decay * (1 - math.exp(-updates / self.tau))

    def update(self, model: nn.Module) -> None:
        """Blend the model's current floating-point state into the average."""
        self.updates += 1
        d = self.decay(self.updates)
        msd = de_parallel(model).state_dict()
        with torch.no_grad():
            for k, v in self.ema.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(msd[k].detach(), alpha=1 - d)

    def update_attr(self, model: nn.Module, include: tuple = (), exclude: tuple = ("process_group", "reducer")) -> None:
        """Copy plain attributes (names, yaml, ...) from the model to the EMA copy."""
        copy_attr(self.ema, de_parallel(model), include, exclude)

    def load_state(self, ema_state_dict: dict, updates: int) -> None:
        """Restore the average and its update counter from a checkpoint."""
        self.ema.load_state_dict(ema_state_dict)
        self.updates = updates
