"""Where a process sits in a torchrun job, and the few collective steps training needs (rank 0 first,
stop together, rank 0's validation results to all)."""
from __future__ import annotations

import argparse
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

from deploy.errors import UserInputError
from utils.core.torch_utils import select_device


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a torchrun job (rank -1 and world 1 when not distributed)."""

    local_rank: int
    rank: int
    world_size: int

    @classmethod
    def from_env(cls) -> DistContext:
        return cls(int(os.getenv("LOCAL_RANK", -1)), int(os.getenv("RANK", -1)), int(os.getenv("WORLD_SIZE", 1)))

    @property
    def is_main(self) -> bool:
        return self.rank in (-1, 0)

    @property
    def distributed(self) -> bool:
        return self.rank != -1


def init_distributed(ctx: DistContext, opt: argparse.Namespace) -> torch.device:
    """Pick this process's device; under torchrun also join the process group (nccl on CUDA, gloo on CPU)."""
    device = select_device(opt.device, batch_size=opt.batch_size)
    if not ctx.distributed:
        return device
    if opt.batch_size % ctx.world_size:
        raise UserInputError(f"--batch-size {opt.batch_size}: must be a multiple of WORLD_SIZE {ctx.world_size}")
    if opt.evolve:
        raise UserInputError("--evolve: not compatible with DDP training (run it in a single process)")
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
        device = torch.device("cuda", ctx.local_rank)
    if not dist.is_initialized():
        # naming the rank's GPU spares NCCL from guessing it from the global rank (it warns of hangs otherwise)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return device


@contextmanager
def main_process_first(ctx: DistContext) -> Iterator[None]:
    """Rank 0 builds shared files (label caches) first; the other ranks then read them."""
    if ctx.distributed and not ctx.is_main:
        dist.barrier()
    yield
    if ctx.distributed and ctx.is_main:
        dist.barrier()


def any_rank(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True if `flag` is True on any rank (so all ranks stop together instead of hanging)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_from_main(values: np.ndarray, ctx: DistContext, device: torch.device) -> np.ndarray:
    """Rank 0's `values` on every rank (per-class mAPs: only rank 0 validates, all ranks weight images by them)."""
    if not ctx.distributed:
        return values
    t = torch.as_tensor(np.asarray(values, dtype=np.float32), device=device).contiguous()
    dist.broadcast(t, src=0)
    return t.cpu().numpy().astype(np.float64)


def lost_peer_cause(e: BaseException) -> str | None:
    """What went wrong, in one line, when `e` is a collective failing because another rank is gone (its node
    died or was killed); None for any other error. Gloo raises a plain RuntimeError from its TCP transport,
    naming the peer's address; NCCL and the store raise torch.distributed.DistError."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if not isinstance(e, dist.DistError) and "gloo/transport" not in text:
        return None
    return re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0]  # drop the source-file prefix and the advice
