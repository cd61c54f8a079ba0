"""Train a PConv-YOLO detector on a YOLOv5-format dataset.

Usage (yolov5's flags):
    python train.py --data data/coco8.yaml --cfg models/yolov5n-faster.yaml --imgsz 640 --epochs 100
    python train.py --data coco128.yaml --weights runs/train/exp/weights/best.pt     # transfer
    python train.py --resume                                                         # latest last.pt
    torchrun --nproc_per_node 2 train.py --data ... --cfg ... --device 0,1            # DDP

The flow reads top to bottom: options → data → model → optimizer/schedule → EMA → epochs
(train, validate the EMA model, log results.csv, save last/best) → final validation of best.pt.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # allow `python train.py` and torchrun from anywhere
    sys.path.append(str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
import yaml  # noqa: E402
from tqdm import tqdm  # noqa: E402

import val as validate  # noqa: E402
from models.yolo import DetectionModel  # noqa: E402
from utils.core.cli import run_cli  # noqa: E402
from utils.data.augment import multi_scale_size, resize_batch  # noqa: E402
from utils.data.dataset import check_dataset, set_loader_epoch  # noqa: E402
from utils.train.anchors import check_anchors  # noqa: E402
from utils.train.recipe import pretrain_on_images, teacher_for_data  # noqa: E402
from utils.train.resume import restored_options  # noqa: E402
from utils.weights.checkpoint import build_checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from utils.weights.checkpoint import load_model  # noqa: E402
from utils.train.distributed import (DistContext, any_rank, broadcast_from_main, init_distributed,  # noqa: E402
                               lost_peer_cause, main_process_first)
from deploy.errors import UserInputError  # noqa: E402
from utils.core.log import LOGGER  # noqa: E402
from utils.metrics.val_result import CSV_COLUMNS, ValResult  # noqa: E402
from utils.train.distill import ADAPTERS_KEY, Distiller, load_teacher  # noqa: E402
from utils.train.hyp import load_hyp, mutate_hyp  # noqa: E402
from utils.train.loss import build_loss  # noqa: E402
from utils.train.optim import warmup  # noqa: E402
from utils.train.run_log import RESULTS_COLUMNS, save_run_settings, write_results_row  # noqa: E402
from utils.train.setup import (Progress, build_optimization, build_train_loader, build_val_loader,  # noqa: E402
                               load_optimization_state, prepare_model, resumed_progress, start_checkpoint,
                               distribute, wrap_distributed)
from deploy.cli import add_run_folder_flags  # noqa: E402
from deploy.outputs import increment_path, make_run_folder  # noqa: E402
from utils.core.torch_utils import MULTI_SCALE_STREAM, ModelEMA, de_parallel, epoch_seed, init_seeds  # noqa: E402
from utils.data.sampling import class_frequency_weights, epoch_class_weights, per_image_weights  # noqa: E402
from utils.train.tensorboard_log import TensorBoardLogger  # noqa: E402

DEFAULT_HYP = ROOT / "data/hyps/hyp.scratch-low.yaml"
DEFAULT_HYP_AF = ROOT / "data/hyps/hyp.scratch-af.yaml"  # anchor-free heads' loss gains
MIN_WARMUP_ITERS = 100
GRAD_CLIP_NORM = 10.0
PLOTTED_TRAIN_BATCHES = 3
DEFAULT_WORKERS = 8
DEFAULT_DATA = str(ROOT / "data/coco8.yaml")


@dataclass
class TrainSummary:
    """What a finished run left behind: its folder, checkpoints and the final validation results."""

    save_dir: Path
    last: Path
    best: Path
    results: ValResult  # the final validation (of best.pt)
    epochs_run: int


# ------------------------------------------------------------------------------------------- options
def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a PConv-YOLO detector")
    parser.add_argument("--weights", type=str, default="",
                        help="initial weights: our .pt, or an ultralytics (yolov5nu.pt, ...) or YOLOv5 (yolov5n.pt, ...) file")
    parser.add_argument("--cfg", type=str, default="", help="model.yaml path (e.g. models/yolov5n-faster.yaml)")
    parser.add_argument("--data", type=str, default=DEFAULT_DATA, help="dataset.yaml path")
    parser.add_argument("--hyp", type=str, default=str(DEFAULT_HYP), help="hyperparameters path")
    parser.add_argument("--epochs", type=int, default=100, help="total training epochs")
    parser.add_argument("--batch-size", type=int, default=16, help="total batch size for all GPUs")
    parser.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="train, val image size (pixels)")
    parser.add_argument("--rect", action="store_true", help="rectangular training")
    parser.add_argument("--resume", nargs="?", const=True, default=False, help="resume most recent training")
    parser.add_argument("--nosave", action="store_true", help="only save final checkpoint")
    parser.add_argument("--noval", action="store_true", help="only validate final epoch")
    parser.add_argument("--noautoanchor", action="store_true", help="disable AutoAnchor")
    parser.add_argument("--noplots", action="store_true", help="save no plot files")
    parser.add_argument("--evolve", type=int, nargs="?", const=300, help="evolve hyperparameters for x generations")
    parser.add_argument("--cache", type=str, nargs="?", const="ram", help="image --cache ram/disk")
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    parser.add_argument("--multi-scale", action="store_true", help="vary img-size +/- 50%%")
    parser.add_argument("--single-cls", action="store_true", help="train multi-class data as single-class")
    parser.add_argument("--optimizer", type=str, choices=["SGD", "Adam", "AdamW"], default="SGD", help="optimizer")
    parser.add_argument("--sync-bn", action="store_true", help="use SyncBatchNorm, only available in DDP mode")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="max dataloader workers (per RANK in DDP mode)")
    add_run_folder_flags(parser, str(ROOT / "runs/train"))
    parser.add_argument("--cos-lr", action="store_true", help="cosine LR scheduler")
    parser.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing epsilon")
    parser.add_argument("--patience", type=int, default=100, help="EarlyStopping patience (epochs without improvement)")
    parser.add_argument("--freeze", nargs="+", type=int, default=[0], help="freeze layers: backbone=10, first3=0 1 2")
    parser.add_argument("--save-period", type=int, default=-1, help="save checkpoint every x epochs (disabled if < 1)")
    parser.add_argument("--seed", type=int, default=0, help="global training seed")
    parser.add_argument("--image-weights", action="store_true", help="use weighted image selection for training")
    parser.add_argument("--close-mosaic", type=int, default=0, help="train the last N epochs without mosaic/mixup")
    parser.add_argument("--teacher", type=str, default="",
                        help="distill from this checkpoint: ours, YOLOv5's or ultralytics' (e.g. yolov5n.pt), either head "
                             "kind; one that does not know --data's classes is fine-tuned on --data first, in RUN/teacher "
                             "(gains kd_box, kd_cls, kd_feat, kd_t in --hyp)")
    parser.add_argument("--teacher-epochs", type=int, default=0,
                        help="epochs of that fine-tuning (0: --epochs)")
    parser.add_argument("--teacher-hyp", type=str, default="",
                        help="hyperparameters of that fine-tuning (default: the scratch hyp of the teacher's head kind)")
    parser.add_argument("--pretrain-images", type=str, default="",
                        help="with --teacher: first train the student on the teacher's own outputs on these unlabeled "
                             "images (a folder or .txt list; RUN/pretrain), then on --data from there")
    parser.add_argument("--pretrain-epochs", type=int, default=10, help="epochs of that pretraining")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=-1, help="set by torch.distributed (env LOCAL_RANK wins)")
    return parser.parse_args(argv)


def resume_options(opt: argparse.Namespace, whole_recipe: bool = True) -> tuple[argparse.Namespace, dict | None]:
    """--resume's options and checkpoint (utils.train.resume), against this CLI's defaults."""
    return restored_options(opt, parse_opt([]), whole_recipe)


# --------------------------------------------------------------------------------------------- model


def plot_safely(fn: Callable, *args: Any) -> None:
    """Plots are a convenience: a plotting failure is logged, never fatal to a training run."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 — any plotting error (fonts, backend, data) must not stop training
        LOGGER.warning(f"WARNING: {fn.__name__} failed ({type(e).__name__}: {e})")


# -------------------------------------------------------------------------------------------- train


@dataclass
class TrainRun:
    """What one run set up before its first epoch. The epoch steps read it; --close-mosaic replaces the loader."""

    opt: argparse.Namespace
    hyp: dict
    device: torch.device
    ctx: DistContext
    plotting: Any  # the utils.core.plots module, None under --noplots / --evolve
    data: dict
    names: list[str]
    model: nn.Module  # DDP-wrapped under torchrun
    gs: int  # grid size: the model's largest stride, at least 32
    imgsz: int
    batch_size: int  # per process
    train_loader: Any
    dataset: Any
    nb: int  # batches per epoch
    val_loader: Any  # rank 0 only
    tb: TensorBoardLogger
    optimizer: torch.optim.Optimizer
    lf: Callable[[int], float]  # lr factor of each epoch
    scheduler: torch.optim.lr_scheduler.LambdaLR
    accumulate: int  # batches per optimizer step once warmup is over (nominal batch / --batch-size)
    nw: int  # warmup iterations, -1 for none
    ema: ModelEMA | None  # rank 0 only
    scaler: torch.amp.GradScaler
    compute_loss: Callable
    distiller: Distiller | None  # --teacher: the teacher's outputs as extra targets
    frequency_w: np.ndarray | None  # class frequencies, with --image-weights

    @property
    def save_dir(self) -> Path:
        return Path(self.opt.save_dir)

    @property
    def last(self) -> Path:
        return self.save_dir / "weights/last.pt"

    @property
    def best(self) -> Path:
        return self.save_dir / "weights/best.pt"

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def inspect_labels(opt: argparse.Namespace, hyp: dict, model: DetectionModel, dataset: Any, imgsz: int,
                   plotting: Any) -> None:
    """A new run's first look at its labels: AutoAnchor (anchor heads) and the labels plot."""
    if not opt.noautoanchor and not model.anchor_free:
        check_anchors(model, dataset.labels, dataset.shapes, thr=hyp["anchor_t"], imgsz=imgsz, seed=opt.seed)
    if plotting is not None:
        plot_safely(plotting.plot_labels, np.concatenate(dataset.labels, 0), model.names, Path(opt.save_dir))


def setup_run(hyp: dict, opt: argparse.Namespace, device: torch.device, ctx: DistContext,
              resume_ckpt: dict | None) -> tuple[TrainRun, Progress]:
    """Data, model, loaders, optimizer, EMA and loss, in that order, and where the epochs start."""
    plotting = None
    if not opt.evolve and not opt.noplots:
        from utils.core import plots as plotting  # matplotlib/seaborn/ultralytics: imported only when plotting
    if ctx.is_main:
        LOGGER.info("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in hyp.items()))
    init_seeds(opt.seed + 1 + ctx.rank, deterministic=True)
    with main_process_first(ctx):
        data = check_dataset(opt.data)
    ckpt = start_checkpoint(opt, resume_ckpt)
    model, gs, imgsz = prepare_model(opt, hyp, data, ckpt, device, ctx)
    batch_size = opt.batch_size // ctx.world_size  # per process under DDP
    with main_process_first(ctx):
        train_loader, dataset = build_train_loader(data, imgsz, batch_size, gs, hyp, opt, ctx)
    if batch_size > len(dataset):
        LOGGER.warning(f"WARNING: --batch-size {opt.batch_size} is larger than the {len(dataset)} training "
                       f"images of {opt.data}; training with batch {len(dataset)}")
        batch_size = len(dataset)
    val_loader = None
    if ctx.is_main:  # inputs checked: only now does the run folder appear
        make_run_folder(Path(opt.save_dir) / "weights")
        save_run_settings(Path(opt.save_dir), hyp, opt)
        val_loader = build_val_loader(data, imgsz, batch_size, gs, hyp, opt)
        if not opt.resume:
            inspect_labels(opt, hyp, model, dataset, imgsz, plotting)
    tb = TensorBoardLogger(Path(opt.save_dir), enabled=ctx.is_main and not opt.evolve)  # silent without tensorboard
    distiller = Distiller(load_teacher(opt.teacher, model, device), model, hyp) if opt.teacher else None
    optimizer, lf, scheduler, accumulate = build_optimization(
        model, hyp, opt, distiller.trainable_modules() if distiller is not None else [])
    ema = ModelEMA(model) if ctx.is_main else None
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    progress = Progress(0, 0.0, -1, -1, np.zeros(len(model.names)))
    if opt.resume:
        load_optimization_state(ckpt, optimizer, scaler, ema)
        if distiller is not None:
            distiller.load_adapter_state(ckpt)
        progress = resumed_progress(opt, ckpt, len(model.names), ctx)
    if progress.start_epoch >= opt.epochs:
        raise UserInputError(f"--resume {opt.resume}: all {opt.epochs} epochs already trained, nothing to resume")
    scheduler.last_epoch = progress.start_epoch - 1
    names = model.names
    model = wrap_distributed(model, opt, ctx, device)
    compute_loss = build_loss(model, {**hyp, "label_smoothing": opt.label_smoothing}, imgsz)
    if distiller is not None:
        distiller.attach(model, lambda module: distribute(module, ctx, device))
        if ctx.is_main:
            LOGGER.info(f"Distilling from {opt.teacher}: " + ", ".join(f"{k}={v:g}" for k, v in distiller.gains.items()))
    nb = len(train_loader)
    nw = max(round(hyp["warmup_epochs"] * nb), MIN_WARMUP_ITERS) if hyp["warmup_epochs"] > 0 else -1
    frequency_w = class_frequency_weights(dataset.labels, len(names)) if opt.image_weights else None
    return TrainRun(opt=opt, hyp=hyp, device=device, ctx=ctx, plotting=plotting, data=data, names=names, model=model,
                    gs=gs, imgsz=imgsz, batch_size=batch_size, train_loader=train_loader, dataset=dataset, nb=nb,
                    val_loader=val_loader, tb=tb, optimizer=optimizer, lf=lf, scheduler=scheduler,
                    accumulate=accumulate, nw=nw, ema=ema, scaler=scaler, compute_loss=compute_loss, distiller=distiller,
                    frequency_w=frequency_w), progress


def begin_epoch(run: TrainRun, progress: Progress, epoch: int) -> np.random.Generator:
    """Reseed, close mosaic for the last --close-mosaic epochs, draw --image-weights by the last validation;
    returns the epoch's --multi-scale size stream."""
    opt, ctx = run.opt, run.ctx
    run.model.train()
    # every random stream of the epoch restarts from (seed, epoch, rank): --resume replays it
    init_seeds(epoch_seed(opt.seed, epoch, ctx.rank))
    scale_rng = np.random.default_rng(epoch_seed(opt.seed, epoch, ctx.rank, MULTI_SCALE_STREAM))
    if epoch >= opt.epochs - opt.close_mosaic and run.dataset.mosaic:
        # workers are persistent and hold their own dataset copy: a new loader is how they see the change
        LOGGER.info(f"Closing mosaic and mixup for the last {opt.epochs - epoch} epoch(s) (--close-mosaic)")
        no_mosaic = {**run.hyp, "mosaic": 0.0, "mixup": 0.0}
        with main_process_first(ctx):
            run.train_loader, run.dataset = build_train_loader(run.data, run.imgsz, run.batch_size, run.gs,
                                                               no_mosaic, opt, ctx)
    set_loader_epoch(run.train_loader, epoch)
    if opt.image_weights:  # classes the last validation scored worst are drawn most
        progress.maps = broadcast_from_main(progress.maps, ctx, run.device)  # every rank draws the same epoch
        class_w = epoch_class_weights(run.frequency_w, progress.maps)
        run.train_loader.sampler.set_weights(per_image_weights(run.dataset.labels, class_w))
    return scale_rng


def forward_backward(run: TrainRun, imgs: torch.Tensor, targets: torch.Tensor, epoch: int, i: int) -> torch.Tensor:
    """AMP forward, loss and backward of one batch; returns the (box, obj, cls[, kd_box, kd_cls, kd_feat]) loss
    items. A non-finite loss on any rank stops every rank, naming the hyps as the likely cause."""
    with torch.autocast(device_type=run.device.type, enabled=run.cuda):
        pred = run.model(imgs)
        loss, loss_items = run.compute_loss(pred, targets.to(run.device))
        if run.distiller is not None:
            kd_loss, kd_items = run.distiller(imgs, pred)
            loss, loss_items = loss + kd_loss, torch.cat((loss_items, kd_items))
        if run.ctx.distributed:
            loss *= run.ctx.world_size  # DDP averages gradients across processes
    if any_rank(not torch.isfinite(loss).item(), run.ctx, run.device):
        raise UserInputError(
            f"--hyp {run.opt.hyp}: loss became {loss.item()} at epoch {epoch} batch {i}; training diverged. "
            f"Lower lr0 / warmup_bias_lr or check the labels; {run.last} holds the last good epoch")
    run.scaler.scale(loss).backward()
    return loss_items


def optimizer_step(run: TrainRun) -> None:
    """Step on the accumulated gradients (unscaled, clipped to GRAD_CLIP_NORM), then move the EMA along."""
    run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), max_norm=GRAD_CLIP_NORM)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad()
    if run.ema is not None:
        run.ema.update(run.model)


def train_one_epoch(run: TrainRun, progress: Progress, epoch: int) -> torch.Tensor:
    """One pass over the training set: warmup, --multi-scale, an optimizer step every `accumulate` batches.
    Returns the epoch's mean (box, obj, cls) loss (rank 0 keeps it; other ranks return zeros)."""
    opt, ctx = run.opt, run.ctx
    scale_rng = begin_epoch(run, progress, epoch)
    kd_columns = ("kd_box", "kd_cls", "kd_feat") if run.distiller is not None else ()
    columns = ("box_loss", "obj_loss", "cls_loss") + kd_columns
    mloss = torch.zeros(len(columns), device=run.device)
    pbar = enumerate(run.train_loader)
    if ctx.is_main:
        LOGGER.info(("\n" + "%11s" * (len(columns) + 4)) % ("Epoch", "GPU_mem", *columns, "Instances", "Size"))
        pbar = tqdm(pbar, total=run.nb, bar_format="{l_bar}{bar:10}{r_bar}")
    run.optimizer.zero_grad()
    for i, (imgs, targets, paths, _) in pbar:
        ni = i + run.nb * epoch  # integrated batches since the start of training
        imgs = imgs.to(run.device, non_blocking=True).float() / 255
        # warmup grows the batches per step from 1 to run.accumulate, which it reaches at ni == nw
        accumulate = warmup(run.optimizer, run.hyp, ni, run.nw, run.lf(epoch), opt.batch_size) if ni <= run.nw \
            else run.accumulate
        if opt.multi_scale:
            imgs = resize_batch(imgs, multi_scale_size(run.imgsz, run.gs, scale_rng), run.gs)
        loss_items = forward_backward(run, imgs, targets, epoch, i)
        if ni - progress.last_opt_step >= accumulate:
            optimizer_step(run)
            progress.last_opt_step = ni
        if ctx.is_main:
            mloss = (mloss * i + loss_items) / (i + 1)
            mem = f"{torch.cuda.memory_reserved(run.device) / 1e9 if run.cuda else 0:.3g}G"
            pbar.set_description(("%11s" * 2 + "%11.4g" * (len(columns) + 2)) % (
                f"{epoch}/{opt.epochs - 1}", mem, *mloss.tolist(), targets.shape[0], imgs.shape[-1]))
            if run.plotting is not None and epoch == progress.start_epoch and i < PLOTTED_TRAIN_BATCHES:
                plot_safely(run.plotting.plot_images, imgs, targets, paths, run.save_dir / f"train_batch{i}.jpg",
                            run.names)
    return mloss[:3]  # results.csv keeps yolov5's three train-loss columns


def validate_epoch(run: TrainRun, progress: Progress, epoch: int) -> float:
    """Validate the EMA model (every epoch, or only the last with --noval); returns the epoch's fitness and
    records a new best and whether --patience ran out."""
    opt = run.opt
    run.ema.update_attr(run.model, include=("yaml", "names", "stride"))
    if not opt.noval or epoch + 1 == opt.epochs:
        progress.results = validate.run(
            data=run.data, batch_size=run.batch_size * 2, imgsz=run.imgsz, half=run.cuda, model=run.ema.ema,
            single_cls=opt.single_cls, dataloader=run.val_loader, save_dir=run.save_dir, plots=False,
            compute_loss=run.compute_loss)
        progress.maps = progress.results.maps
    fi = progress.results.fitness()
    if fi >= progress.best_fitness:  # ties count as progress for early stopping, as yolov5's EarlyStopping
        progress.best_epoch = epoch
    progress.best_fitness = max(progress.best_fitness, fi)
    progress.stop = 0 < opt.patience <= epoch - progress.best_epoch
    return fi


def save_checkpoints(run: TrainRun, progress: Progress, epoch: int, is_best: bool) -> None:
    """last.pt (resumable), best.pt when fitness reached a new best, epochN.pt every --save-period epochs."""
    ckpt = build_checkpoint(de_parallel(run.model), ema=run.ema.ema, optimizer=run.optimizer, scaler=run.scaler,
                            epoch=epoch, best_fitness=progress.best_fitness, hyp=run.hyp, opt=run.opt,
                            updates=run.ema.updates, best_epoch=progress.best_epoch,
                            last_opt_step=progress.last_opt_step, maps=progress.maps.tolist(),
                            **({ADAPTERS_KEY: run.distiller.adapter_state()} if run.distiller is not None else {}))
    save_checkpoint(ckpt, run.last)
    if is_best:
        save_checkpoint(ckpt, run.best)
    if run.opt.save_period > 0 and epoch % run.opt.save_period == 0:
        save_checkpoint(ckpt, run.save_dir / f"weights/epoch{epoch}.pt")


def end_epoch(run: TrainRun, progress: Progress, epoch: int, mloss: torch.Tensor, lrs: list[float]) -> None:
    """Rank 0 after each epoch: validate, log results.csv and TensorBoard, save checkpoints, stop early."""
    opt = run.opt
    fi = validate_epoch(run, progress, epoch)
    row = [*mloss.tolist(), *progress.results.csv_row(), *lrs]
    write_results_row(run.save_dir / "results.csv", epoch, row)
    run.tb.log_scalars(RESULTS_COLUMNS[1:], row, epoch)
    if epoch == progress.start_epoch:
        run.tb.log_new_images(epoch)  # labels.jpg, train_batch0..2.jpg
    if not opt.nosave or epoch + 1 == opt.epochs or progress.stop:
        save_checkpoints(run, progress, epoch, is_best=progress.best_fitness == fi)
    if progress.stop:
        LOGGER.info(f"Stopping training early as no improvement observed in last {opt.patience} epochs. "
                    f"Best results observed at epoch {progress.best_epoch}, best model saved as best.pt.\n"
                    f"To update EarlyStopping(patience={opt.patience}) pass a new patience value, "
                    f"i.e. `python train.py --patience 300` or use `--patience 0` to disable EarlyStopping.")


def stop_on_every_rank(stop: bool, ctx: DistContext) -> bool:
    """Rank 0's early-stopping decision, on every rank (only rank 0 validates)."""
    if ctx.distributed:
        flag = [stop]
        dist.broadcast_object_list(flag, 0)
        stop = flag[0]
    return stop


def finish_run(run: TrainRun, progress: Progress, epoch: int, t0: float) -> TrainSummary:
    """Rank 0: strip the optimizer from last/best, validate best.pt (not under --evolve), plot results.csv."""
    final_results, epochs_run = progress.results, epoch - progress.start_epoch + 1
    if run.ctx.is_main:
        LOGGER.info(f"\n{epochs_run} epochs completed in {(time.time() - t0) / 3600:.3f} hours.")
        for f in (run.last, run.best):
            if f.exists():
                finalize_checkpoint(f)
        if run.best.exists() and not run.opt.evolve:  # evolve scores each generation by its last epoch
            LOGGER.info(f"\nValidating {run.best}...")
            final_results = validate.run(data=run.data, batch_size=run.batch_size * 2, imgsz=run.imgsz,
                                         model=load_model(run.best, run.device), single_cls=run.opt.single_cls,
                                         dataloader=run.val_loader, save_dir=run.save_dir, verbose=True,
                                         plots=run.plotting is not None, compute_loss=run.compute_loss)
        if run.plotting is not None:
            plot_safely(run.plotting.plot_results, run.save_dir / "results.csv")
        run.tb.log_new_images(epoch)  # results.png
        run.tb.close()
        LOGGER.info(f"Results saved to {run.save_dir}")
    return TrainSummary(run.save_dir, run.last, run.best, final_results, epochs_run)


def train(hyp: dict, opt: argparse.Namespace, device: torch.device, ctx: DistContext,
          resume_ckpt: dict | None = None) -> TrainSummary:
    """One training run, from data to final validation. Rank 0 logs, validates and saves."""
    run, progress = setup_run(hyp, opt, device, ctx, resume_ckpt)
    t0 = time.time()
    LOGGER.info(f"Image sizes {run.imgsz} train, {run.imgsz} val\nUsing {run.train_loader.num_workers} dataloader "
                f"workers\nLogging results to {run.save_dir}\nStarting training for {opt.epochs} epochs...")
    epoch = progress.start_epoch
    for epoch in range(progress.start_epoch, opt.epochs):
        mloss = train_one_epoch(run, progress, epoch)
        lrs = [group["lr"] for group in run.optimizer.param_groups]
        run.scheduler.step()
        if ctx.is_main:
            end_epoch(run, progress, epoch, mloss, lrs)
        progress.stop = stop_on_every_rank(progress.stop, ctx)
        if progress.stop:
            break
    return finish_run(run, progress, epoch, t0)


def finalize_checkpoint(path: Path) -> None:
    """A finished run's checkpoint: EMA weights as the model, no optimizer state, epoch -1 (not resumable)."""
    ckpt = load_checkpoint(path)
    if ckpt.get("ema"):
        ckpt["model"] = ckpt["ema"]
    ckpt.update(ema=None, optimizer=None, scaler=None, epoch=-1)
    ckpt.pop(ADAPTERS_KEY, None)  # training state like the optimizer's: the model never uses it
    save_checkpoint(ckpt, path)
    LOGGER.info(f"Optimizer stripped from {path}, {path.stat().st_size / 1e6:.1f}MB")


def evolve(hyp: dict, opt: argparse.Namespace, device: torch.device, ctx: DistContext) -> Path:
    """--evolve N: N short runs with mutated hyps (parent = a fitness-weighted pick of the best 5 so far).

    Each generation trains with final-epoch validation only; evolve.csv collects results + hyps, and
    the fittest hyps are written to hyp_evolve.yaml.
    """
    save_dir = Path(opt.save_dir)
    make_run_folder(save_dir)
    evolve_csv, rng = save_dir / "evolve.csv", np.random.default_rng(opt.seed)
    keys = list(hyp)
    rows: list[tuple[float, dict, ValResult]] = []
    for gen in range(opt.evolve):
        if rows:
            top = sorted(rows, key=lambda r: -r[0])[:5]
            w = np.array([r[0] for r in top]) - min(r[0] for r in top) + 1e-6
            parent = top[int(rng.choice(len(top), p=w / w.sum()))][1]
            child = mutate_hyp(parent, rng)
        else:
            child = dict(hyp)
        gen_opt = argparse.Namespace(**{**vars(opt), "save_dir": str(save_dir / f"gen{gen}"), "noval": True,
                                        "nosave": True, "noplots": True})
        LOGGER.info(f"\nevolve: generation {gen + 1}/{opt.evolve}")
        summary = train(child, gen_opt, device, ctx)
        fi = summary.results.fitness()
        rows.append((fi, child, summary.results))
        new = not evolve_csv.exists()
        with open(evolve_csv, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow([*CSV_COLUMNS, "fitness", *keys])
            writer.writerow([f"{x:.5g}" for x in (*summary.results.csv_row(), fi)] + [child[k] for k in keys])
    best_fi, best_hyp, best_results = max(rows, key=lambda r: r[0])
    out = save_dir / "hyp_evolve.yaml"
    header = (f"# PConv-YOLO hyperparameter evolution: best of {len(rows)} generations, fitness {best_fi:.5f}\n"
              f"# results (P, R, mAP50, mAP50-95, val box/obj/cls): "
              f"{', '.join(f'{x:.4g}' for x in best_results.csv_row())}\n")
    out.write_text(header + yaml.safe_dump(best_hyp, sort_keys=False))
    LOGGER.info(f"Hyperparameter evolution finished {len(rows)} generations\nResults saved to {save_dir}\n"
                f"Usage example: $ python train.py --hyp {out}")
    return out


# ---------------------------------------------------------------------------------------------- entry
def run(**kwargs: Any) -> TrainSummary | Path:
    """Programmatic entry: `train.run(data='coco8.yaml', cfg='yolov5n-faster.yaml', imgsz=128, epochs=3)`."""
    opt = parse_opt([])
    unknown = [k for k in kwargs if not hasattr(opt, k)]
    if unknown:
        raise UserInputError(f"unknown train option(s): {', '.join(unknown)}")
    for k, v in kwargs.items():
        setattr(opt, k, v)
    return main_with_options(opt)


def main_with_options(opt: argparse.Namespace, whole_recipe: bool = True) -> TrainSummary | Path:
    """One run from its options; `whole_recipe` as in resume_options (off when the teacher's stage resumes itself)."""
    ctx = DistContext.from_env()
    resume_ckpt = None
    if opt.resume and not opt.evolve:
        opt, resume_ckpt = resume_options(opt, whole_recipe)
    else:
        for flag, value in (("--data", opt.data), ("--hyp", opt.hyp)):
            if not value:
                raise UserInputError(f"{flag}: a file is required")
        if opt.cfg and opt.weights and not Path(opt.weights).is_file():
            raise UserInputError(f"--weights {opt.weights}: checkpoint file not found")
        if opt.epochs < 1:
            raise UserInputError(f"--epochs {opt.epochs}: must be at least 1")
        if opt.pretrain_epochs < 1:
            raise UserInputError(f"--pretrain-epochs {opt.pretrain_epochs}: must be at least 1")
        if opt.teacher_epochs < 0:
            raise UserInputError(f"--teacher-epochs {opt.teacher_epochs}: must be 0 (as --epochs) or more")
        if opt.batch_size < 1:
            raise UserInputError(f"--batch-size {opt.batch_size}: must be at least 1")
        if not 0 <= opt.seed < 2**31:  # numpy's global seed (seed + 1 + rank) must fit in 32 unsigned bits
            raise UserInputError(f"--seed {opt.seed}: must be between 0 and {2**31 - 1}")
        if opt.image_weights and opt.rect:
            raise UserInputError("--image-weights: cannot be combined with --rect (rect batches need a fixed order)")
        task = "evolve" if opt.evolve else "train"
        project = Path(opt.project).parent / "evolve" if opt.evolve and Path(opt.project).name == "train" \
            else Path(opt.project)
        opt.save_dir = str(increment_path(project / opt.name, exist_ok=opt.exist_ok)) if ctx.is_main else ""
        LOGGER.info(f"{task}: " + ", ".join(f"{k}={v}" for k, v in vars(opt).items()))
    hyp = load_hyp(resume_ckpt["hyp"] if resume_ckpt is not None else opt.hyp)
    pretrain_on_images(opt, hyp, ctx, train_stage)
    teacher_for_data(opt, hyp, ctx, train_stage, DEFAULT_HYP, DEFAULT_HYP_AF)
    device = init_distributed(ctx, opt)
    try:
        if opt.evolve:
            return evolve(hyp, opt, device, ctx)
        return train(hyp, opt, device, ctx, resume_ckpt)
    except RuntimeError as e:  # DistError is one too
        cause = lost_peer_cause(e) if ctx.distributed else None
        if cause is None:
            raise
        last = Path(opt.save_dir) / "weights/last.pt" if ctx.is_main else "RUN/weights/last.pt (rank 0's run)"
        raise UserInputError(f"rank {ctx.rank}: lost the other ranks ({cause}): a node or process of the job is "
                             f"gone; start the job again on every node with --resume {last}") from None
    finally:
        if ctx.distributed and dist.is_initialized():
            dist.destroy_process_group()


def train_stage(options: dict[str, Any]) -> TrainSummary | Path:
    """A stage of a distillation run (utils.train.recipe): a run of its own, other options at their defaults."""
    return main_with_options(argparse.Namespace(**{**vars(parse_opt([])), **options}), whole_recipe=False)


def main(argv: list[str] | None = None) -> None:
    main_with_options(parse_opt(argv))


if __name__ == "__main__":
    run_cli(main)
