"""Building a training run: the model (from --cfg, --weights or a checkpoint to resume), its loaders, optimizer
and schedule, the state --resume restores, and the DDP wrapper. train.py runs the epochs on what these build."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from deploy.errors import UserInputError
from deploy.imgsz import round_to_stride
from models.yolo import DetectionModel
from utils.core.log import LOGGER
from utils.core.torch_utils import ModelEMA, model_info
from utils.data.dataset import create_dataloader, single_cls_names
from utils.metrics.val_result import ValResult
from utils.train.distributed import DistContext
from utils.train.optim import build_optimizer, freeze_layers, lr_lambda, nominal_batch
from utils.train.run_log import truncate_results
from utils.weights.checkpoint import load_checkpoint
from utils.weights.inherit import inherit_from_checkpoint


def intersect_state_dicts(src: dict, dst: dict, exclude: tuple[str, ...] = ()) -> dict:
    """Entries of src whose name and shape match dst (transfer learning across class counts)."""
    return {k: v for k, v in src.items()
            if k in dst and not any(x in k for x in exclude) and v.shape == dst[k].shape}


def build_model(opt: argparse.Namespace, hyp: dict, nc: int, ckpt: dict | None) -> DetectionModel:
    """From --cfg (scratch), --cfg with --weights (layers inherited by stage and block), --weights alone (same
    architecture: names + shapes) or a resume checkpoint."""
    if ckpt is None:
        return DetectionModel(opt.cfg, ch=3, nc=nc, anchors=hyp.get("anchors"))
    resuming = bool(opt.resume)
    cfg = opt.cfg or ckpt["model_yaml"]
    model = DetectionModel(cfg, ch=3, nc=nc, anchors=None if resuming else hyp.get("anchors"))
    if opt.cfg and not resuming:  # --cfg's anchors (or hyp's) win over the file's
        report = inherit_from_checkpoint(model, ckpt, str(opt.weights), exclude=("anchor",))
        LOGGER.info(report.summary())
        LOGGER.info(report.inherited())
        return model
    src = ckpt["model"] if resuming else (ckpt.get("ema") or ckpt["model"])
    exclude = ("anchor",) if hyp.get("anchors") and not resuming else ()
    state = intersect_state_dicts(src, model.state_dict(), exclude)
    model.load_state_dict(state, strict=False)
    LOGGER.info(f"Transferred {len(state)}/{len(model.state_dict())} items from {opt.weights}")
    return model


def check_train_imgsz(imgsz: int, stride: int) -> int:
    """Training's own limit first: a size below the model's largest stride leaves no feature map to train;
    then the rule every entry point applies (rounded up to a stride multiple)."""
    if imgsz < stride:
        raise UserInputError(f"--imgsz {imgsz}: too small, must be at least the model's largest stride {stride}")
    return round_to_stride(imgsz, stride)


def build_train_loader(data: dict, imgsz: int, batch_size: int, gs: int, hyp: dict, opt: argparse.Namespace,
                       ctx: DistContext):
    """The augmenting, shuffled training loader (rebuilt without mosaic by --close-mosaic)."""
    return create_dataloader(
        data["train"], imgsz, batch_size, gs, hyp=hyp, augment=True, cache=opt.cache, rect=opt.rect,
        rank=ctx.local_rank if ctx.distributed else -1, workers=opt.workers, shuffle=True, seed=opt.seed,
        single_cls=opt.single_cls, prefix="train: ", nc=int(data["nc"]), image_weights=opt.image_weights)


def build_val_loader(data: dict, imgsz: int, batch_size: int, gs: int, hyp: dict, opt: argparse.Namespace):
    """Rank 0's validation loader: rectangular batches of twice the training batch, not augmented."""
    return create_dataloader(
        data["val"], imgsz, batch_size * 2, gs, hyp=hyp, cache=None if opt.noval else opt.cache, rect=True,
        workers=opt.workers * 2, pad=0.5, single_cls=opt.single_cls, prefix="val: ", nc=int(data["nc"]))[0]


@dataclass
class Progress:
    """Where training stands between epochs: what last.pt keeps for --resume, and the last validation's results."""

    start_epoch: int
    best_fitness: float
    best_epoch: int
    last_opt_step: int  # the batch of the last optimizer step: the next one comes `accumulate` batches later
    maps: np.ndarray  # per-class mAP50-95 of the last validation (--image-weights draws by it)
    results: ValResult = field(default_factory=ValResult.zeros)  # the last validation
    stop: bool = False  # --patience ran out


def start_checkpoint(opt: argparse.Namespace, resume_ckpt: dict | None) -> dict | None:
    """The checkpoint a run starts from: the one --resume continues, else --weights, else none (--cfg)."""
    if resume_ckpt is None and opt.weights:
        resume_ckpt = load_checkpoint(opt.weights)
    if resume_ckpt is None and not opt.cfg:
        raise UserInputError("--cfg: give a model YAML (e.g. models/yolov5n-faster.yaml) or --weights to start from")
    return resume_ckpt


def prepare_model(opt: argparse.Namespace, hyp: dict, data: dict, ckpt: dict | None, device: torch.device,
                  ctx: DistContext) -> tuple[DetectionModel, int, int]:
    """The model on `device` with the data's class names and --freeze applied; its grid size; the checked --imgsz."""
    names = single_cls_names(data["names"]) if opt.single_cls else list(data["names"])
    model = build_model(opt, hyp, len(names), ckpt).to(device)
    model.names = names
    freeze_layers(model, opt.freeze)
    gs = max(int(model.stride.max()), 32)
    imgsz = check_train_imgsz(opt.imgsz, gs)
    if ctx.is_main:
        model_info(model, imgsz)
    return model, gs, imgsz


def build_optimization(model: nn.Module, hyp: dict, opt: argparse.Namespace, extra: list[nn.Module]) -> tuple[
        torch.optim.Optimizer, Callable[[int], float], torch.optim.lr_scheduler.LambdaLR, int]:
    """Optimizer (3 parameter groups, weight decay scaled to the nominal batch; `extra` modules train too), the lr
    schedule and the number of batches per optimizer step: (optimizer, lf, scheduler, accumulate)."""
    nbs = nominal_batch(hyp)
    accumulate = max(round(nbs / opt.batch_size), 1)
    decay = hyp["weight_decay"] * opt.batch_size * accumulate / nbs
    optimizer = build_optimizer(model, opt.optimizer, hyp["lr0"], hyp["momentum"], decay, extra)
    lf = lr_lambda(opt.epochs, hyp["lrf"], opt.cos_lr)
    return optimizer, lf, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lf), accumulate


def load_optimization_state(ckpt: dict, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                            ema: ModelEMA | None) -> None:
    """--resume: the interrupted run's optimizer, AMP scaler and EMA, so the next step is the one it would have made."""
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if ema is not None and ckpt.get("ema"):
        ema.load_state(ckpt["ema"], int(ckpt.get("updates", 0)))


def resumed_progress(opt: argparse.Namespace, ckpt: dict, nc: int, ctx: DistContext) -> Progress:
    """--resume: the interrupted run's progress; results.csv is cut back to its last saved epoch, so an epoch
    logged but not saved before the interruption is redone."""
    start_epoch = int(ckpt["epoch"]) + 1
    if ctx.is_main:
        truncate_results(Path(opt.save_dir) / "results.csv", start_epoch - 1)
    LOGGER.info(f"Resuming training from {opt.resume} at epoch {start_epoch} of {opt.epochs}")
    return Progress(start_epoch, float(ckpt.get("best_fitness", 0.0)), int(ckpt.get("best_epoch", start_epoch - 1)),
                    int(ckpt.get("last_opt_step", -1)),  # else a resumed run steps a batch early
                    np.array(ckpt.get("maps") or np.zeros(nc), dtype=np.float64))


def wrap_distributed(model: nn.Module, opt: argparse.Namespace, ctx: DistContext, device: torch.device) -> nn.Module:
    """DDP under torchrun (SyncBatchNorm first with --sync-bn on CUDA); --sync-bn elsewhere is only a warning."""
    cuda = device.type == "cuda"
    if not ctx.distributed:
        if opt.sync_bn:
            LOGGER.warning("WARNING: --sync-bn only applies to DDP (torchrun) training, ignored")
        return model
    if opt.sync_bn and cuda:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device)
        LOGGER.info("Using SyncBatchNorm()")
    elif opt.sync_bn:
        LOGGER.warning("WARNING: --sync-bn needs CUDA (SyncBatchNorm runs on GPUs only), ignored on CPU")
    return distribute(model, ctx, device)


def distribute(module: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """`module` under DDP when torchrun started this process (gradients averaged over ranks), else as is."""
    if not ctx.distributed:
        return module
    cuda = device.type == "cuda"
    return DDP(module, device_ids=[ctx.local_rank] if cuda else None, output_device=ctx.local_rank if cuda else None)
