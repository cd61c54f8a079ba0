"""Validate a detector on a dataset split: mAP50, mAP50-95, P, R, confusion matrix, curves, speed.

Usage (yolov5's flags):
    python val.py --weights runs/train/exp/weights/best.pt --data data/coco8.yaml --imgsz 640
    python val.py --weights yolov5n.onnx --data coco128.yaml --save-json --verbose

Also called by train.py once per epoch with the live EMA model: `run(data=data_dict, model=ema,
dataloader=val_loader, compute_loss=loss, save_dir=..., plots=...)`, which returns a ValResult
(utils.metrics.val_result: P, R, mAP50, mAP50-95, val losses, per-class mAP50-95, ms per stage, fitness).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from deploy.errors import UserInputError
from deploy.imgsz import round_to_stride
from utils.core.assets import DEMO_DATA, DEMO_WEIGHTS
from utils.core.boxes import non_max_suppression, scale_boxes, xywh_to_xyxy, xyxy_to_xywh, xyxy_to_xywhn
from utils.core.cli import run_cli
from utils.core.log import LOGGER
from utils.data.dataset import check_dataset, create_dataloader, single_cls_names
from utils.infer.backends import Backend, load_backend
from utils.metrics.coco_eval import category_ids, detections_to_coco, evaluate_coco, image_id
from utils.metrics.curves import plot_ap_curves, plot_confusion_matrix
from utils.metrics.ap import (IOU_THRESHOLDS, MATCHING_NOTES, MATCHING_RULES, APResult, ConfusionMatrix, ap_per_class,
                           score_image)
from deploy.cli import add_label_flags, add_run_folder_flags, add_threshold_flags
from deploy.outputs import increment_path, make_run_folder
from utils.core.torch_utils import select_device
from utils.infer.predictor import default_imgsz
from utils.infer.tta import predict_augmented
from utils.metrics.val_result import ValResult

ROOT = Path(__file__).resolve().parent
TASKS = ("train", "val", "test", "speed")
PLOTTED_BATCHES = 3  # val_batch0..2 label / prediction mosaics, as yolov5
TABLE_HEADER = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")
TABLE_ROW = "%22s" + "%11i" * 2 + "%11.3g" * 4


def load_weights(weights: str | Path, device: torch.device, half: bool) -> Backend:
    """The one place val opens a model file, so every format detect supports validates the same way."""
    return load_backend(weights, device, fp16=half)


class _Timer:
    """Accumulated wall time of a code block; synchronises CUDA so GPU work is counted where it happens."""

    def __init__(self, device: torch.device):
        self.device, self.total = device, 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.total += time.perf_counter() - self.start


def _split_paths(data: dict, task: str) -> list[str]:
    split = task if task in ("train", "val", "test") else "val"
    paths = data.get(split)
    if not paths:
        raise UserInputError(f"{data.get('yaml_file', '--data')}: no '{split}' split to validate on "
                             f"(add `{split}: <images folder or list>` or pick another --task)")
    return paths


def _coco_annotations(data: dict, coco_json: str | None) -> Path | None:
    """Annotation file for pycocotools: --coco-json, else the data YAML's `coco_json:` (relative to its `path:`)."""
    if coco_json:
        path = Path(coco_json)
        flag = "--coco-json"
    elif data.get("coco_json"):
        path = Path(data["coco_json"])
        path = path if path.is_absolute() else Path(data.get("path", ".")) / path
        flag = f"{data.get('yaml_file', 'data YAML')}: coco_json"
    else:
        return None
    if not path.is_file():
        raise UserInputError(f"{flag}: COCO annotation file {path} not found")
    return path


def _save_txt(predn: torch.Tensor, shape0: tuple[int, int], save_conf: bool, path: Path) -> None:
    """yolov5 label lines `cls cx cy w h [conf]`, normalised to the original image."""
    h0, w0 = shape0
    xywhn = xyxy_to_xywhn(predn[:, :4], w=w0, h=h0)
    with open(path, "a") as f:
        for box, conf, cls in zip(xywhn.tolist(), predn[:, 4].tolist(), predn[:, 5].tolist()):
            row = (int(cls), *box, conf) if save_conf else (int(cls), *box)
            f.write(("%g " * len(row)).rstrip() % row + "\n")


def _predictions_as_targets(preds: list[torch.Tensor], max_boxes: int = 15) -> torch.Tensor:
    """NMS outputs as plot rows [img_idx, cls, cx, cy, w, h, conf] in letterboxed pixels."""
    rows = []
    for i, det in enumerate(preds):
        det = det[:max_boxes].cpu()
        rows.append(torch.cat((torch.full((len(det), 1), i), det[:, 5:6], xyxy_to_xywh(det[:, :4]), det[:, 4:5]), 1))
    return torch.cat(rows, 0) if rows else torch.zeros((0, 7))


def _plot_batch(im: torch.Tensor, targets: torch.Tensor, paths: list[str], fname: Path, names: list[str]) -> None:
    from utils.core.plots import plot_images  # the data engineer's mosaics; imported late to keep val light

    plot_images(im, targets, paths, fname, names)


def _print_results(result: APResult, seen: int, nt: np.ndarray, images_per_class: np.ndarray,
                   names: list[str], per_class: bool) -> None:
    LOGGER.info(TABLE_HEADER)
    LOGGER.info(TABLE_ROW % ("all", seen, nt.sum(), result.mp, result.mr, result.map50, result.map))
    if nt.sum() == 0:
        LOGGER.warning("WARNING: no labels found in the validation set, cannot compute metrics without labels")
    if per_class:
        for i, c in enumerate(result.classes):
            LOGGER.info(TABLE_ROW % (names[c], images_per_class[c], nt[c], result.p[i], result.r[i],
                                     result.ap50[i], result.ap50_95[i]))


class _Scorer:
    """Collects what each validated image contributes: TP flags, confusion counts, txt / json outputs."""

    def __init__(self, nc: int, cat_ids: list[int], confusion: bool, txt_dir: Path | None, save_conf: bool,
                 save_json: bool, matching: str = "coco"):
        self.nc, self.cat_ids, self.txt_dir, self.save_conf, self.save_json = nc, cat_ids, txt_dir, save_conf, save_json
        self.matching = matching
        self.confusion = ConfusionMatrix(nc=nc) if confusion else None
        self.stats: list[tuple] = []  # (tp (n, 10), conf (n,), pred cls (n,), label cls (m,)) per image
        self.json_rows: list[dict] = []
        self.image_ids: list[int | str] = []

    def add(self, pred: torch.Tensor, labels: torch.Tensor, im_hw: tuple[int, int], path: Path,
            shape0: tuple[int, int], ratio_pad: tuple) -> None:
        """pred (n, 6) x1y1x2y2 conf cls and labels (m, 5) cls cx cy w h, both in letterboxed pixels."""
        predn = scale_boxes(im_hw, pred[:, :4].clone(), shape0, ratio_pad)
        predn = torch.cat((predn, pred[:, 4:]), 1)
        tbox = scale_boxes(im_hw, xywh_to_xyxy(labels[:, 1:5]), shape0, ratio_pad)
        labelsn = torch.cat((labels[:, 0:1], tbox), 1)
        if self.confusion is not None:
            self.confusion.process_batch(predn, labelsn)
        self.stats.append(tuple(x.cpu() for x in score_image(predn, labelsn, self.matching)))
        self.image_ids.append(image_id(path))
        if self.txt_dir is not None:
            _save_txt(predn, shape0, self.save_conf, self.txt_dir / f"{path.stem}.txt")
        if self.save_json:
            self.json_rows += detections_to_coco(predn, self.image_ids[-1], self.cat_ids)

    def result(self) -> tuple[APResult, np.ndarray, np.ndarray]:
        """AP result, labels per class and images per class over everything added."""
        if self.stats:
            tp, conf, pred_cls, target_cls = (torch.cat(x, 0).numpy() for x in zip(*self.stats))
        else:
            tp, conf, pred_cls, target_cls = np.zeros((0, len(IOU_THRESHOLDS)), bool), *(np.zeros(0),) * 3
        labels_per_class = np.bincount(target_cls.astype(int), minlength=self.nc)
        present = [np.unique(s[3].numpy().astype(int)) for s in self.stats]
        images_per_class = np.bincount(np.concatenate(present) if present else np.zeros(0, int), minlength=self.nc)
        return ap_per_class(tp, conf, pred_cls, target_cls), labels_per_class, images_per_class


def _open_for_cli(weights: str | Path | None, device: torch.device, half: bool, imgsz: int | None,
                  augment: bool) -> tuple[Backend, int]:
    """The model behind --weights and the input size it will run at (a stride multiple, or its export size);
    imgsz None: the model's own size, as detect.py picks it."""
    if weights is None:
        raise UserInputError("--weights: give a model file to validate (.pt, .torchscript, .onnx, .tflite, "
                             "OpenVINO .xml or its folder)")
    backend = load_weights(weights, device, half)
    if backend.dynamic:
        return backend, round_to_stride(imgsz or default_imgsz(backend)[0], backend.stride)
    fixed = backend.imgsz
    if fixed[0] != fixed[1]:
        raise UserInputError(f"--weights {weights}: exported at {fixed[1]}x{fixed[0]}; val needs a square "
                             f"input, re-export with a single --imgsz")
    if imgsz is not None and imgsz != fixed[0]:  # only news when the user asked for another size
        LOGGER.warning(f"WARNING: --imgsz {imgsz}: {backend.path.name} takes {fixed[0]} only, using that")
    if augment:
        raise UserInputError(f"--augment: {backend.path.name} has a fixed input size; TTA needs a .pt model")
    return backend, fixed[0]


def _check_numbers(task: str, conf_thres: float, iou_thres: float, max_det: int, batch_size: int,
                   matching: str = "coco") -> None:
    """Flag values that would otherwise fail deep inside NMS, the dataloader or the scorer."""
    if task not in TASKS:
        raise UserInputError(f"--task {task}: expected one of {', '.join(TASKS)}")
    if matching not in MATCHING_RULES:
        raise UserInputError(f"--matching {matching}: expected one of {', '.join(MATCHING_RULES)}")
    for flag, value in (("--conf-thres", conf_thres), ("--iou-thres", iou_thres)):
        if not 0.0 <= value <= 1.0:
            raise UserInputError(f"{flag} {value}: must be between 0 and 1")
    for flag, value in (("--max-det", max_det), ("--batch-size", batch_size)):
        if value < 1:
            raise UserInputError(f"{flag} {value}: must be at least 1")


def _class_names(model_names: list[str], data: dict, single_cls: bool, source: str) -> list[str]:
    """Names for the table and plots; the model and the data YAML must agree on the class count."""
    if single_cls:
        return single_cls_names(data["names"])
    if model_names and len(model_names) != data["nc"]:
        raise UserInputError(f"{source}: model has {len(model_names)} classes but {data.get('yaml_file')} "
                             f"has {data['nc']}; pass the data YAML the model was trained on")
    return list(model_names) or list(data["names"])


@dataclass
class _Target:
    """What one validation runs: the model (train.py's live DetectionModel, or the Backend behind --weights), where
    and how it runs, its class names, and where the batches come from and the outputs go."""

    model: Any
    training: bool  # a live model from train.py: its loader and folder are the caller's, losses can be computed
    device: torch.device
    half: bool
    stride: int
    names: list[str]
    n_outputs: int  # classes the head predicts, to check each output's columns against
    single_cls: bool
    source: str  # how error messages name the model
    weights_stem: str  # names the --save-json file
    imgsz: int | None = None  # the CLI's input size (train.py's loader has its own)
    split_paths: list[str] | None = None  # the CLI's images to validate on
    save_dir: Path = Path()
    dataloader: Any = None

    def torch_work(self) -> contextlib.AbstractContextManager:
        """The context val's torch work runs in: the backend's (one thread beside a runtime computing on the CPU);
        train.py's live model is torch's own work and keeps every thread."""
        return contextlib.nullcontext() if self.training else self.model.torch_work()


def _live_target(model: torch.nn.Module, data: dict, single_cls: bool, half: bool, dataloader: Any,
                 save_dir: Path) -> _Target:
    """train.py's EMA model, put in eval mode (run() restores its mode), with the loader train.py built."""
    device = next(model.parameters()).device
    names = _class_names(list(model.names), data, single_cls, "model")
    # autocast, not model.half(): the EMA weights must stay float32
    return _Target(model.eval(), True, device, half and device.type == "cuda", int(max(model.stride)), names,
                   int(getattr(model, "nc", len(names))), single_cls, "model", "last", save_dir=save_dir,
                   dataloader=dataloader)


def _file_target(weights: Any, data: dict, task: str, device: str, batch_size: int, half: bool, imgsz: int | None,
                 augment: bool, single_cls: bool) -> _Target:
    """The model behind --weights (one file or an ensemble), opened on --device at the size it will run at."""
    ensemble = isinstance(weights, (list, tuple))
    source = f"--weights {' '.join(map(str, weights)) if ensemble else weights}"
    split_paths = _split_paths(data, task)  # a missing split is news before a model is loaded
    torch_device = select_device(device, batch_size)
    backend, imgsz = _open_for_cli(weights, torch_device, half, imgsz, augment)
    names = _class_names(backend.names, data, single_cls, source)
    return _Target(backend, False, torch_device, backend.fp16, backend.stride, names,
                   len(backend.names) or data["nc"], single_cls, source,
                   "ensemble" if ensemble else backend.path.stem, imgsz=imgsz, split_paths=split_paths)


def _open_run_folder(t: _Target, task: str, batch_size: int, workers: int, save_dir: Path, save_txt: bool) -> None:
    """The CLI's loader (rect batches for a dynamic model) and run folder, then a warm-up on an accelerator."""
    pad, rect = (0.5, True) if task != "speed" and t.model.dynamic else (0.0, False)
    t.dataloader = create_dataloader(t.split_paths, t.imgsz, batch_size, t.stride, pad=pad, rect=rect,
                                     workers=workers, single_cls=t.single_cls, prefix=f"{task}: ",
                                     nc=len(t.names))[0]
    t.save_dir = save_dir
    make_run_folder(save_dir / "labels" if save_txt else save_dir)
    if t.device.type != "cpu":
        t.model.warmup((t.imgsz, t.imgsz))


def _predict(t: _Target, im: torch.Tensor, targets: torch.Tensor, augment: bool, compute_loss: Any,
             loss: torch.Tensor) -> torch.Tensor:
    """Raw predictions for one batch (TTA with --augment); with compute_loss, adds the batch's losses to `loss`."""
    with torch.inference_mode(), torch.autocast(t.device.type, enabled=t.half and t.training):
        if augment:
            preds, train_out = predict_augmented(t.model, im, t.stride), None
        elif compute_loss is not None:
            preds, train_out = t.model(im, raw=True)
        else:
            preds, train_out = t.model(im), None
        if train_out is not None:
            loss += compute_loss([x.float() for x in train_out], targets)[1]
    if preds.shape[-1] != 5 + t.n_outputs:
        raise UserInputError(f"{t.source}: model output has {preds.shape[-1]} columns per box, expected "
                             f"5 + {t.n_outputs} classes (files exported with --nms hold final boxes; val needs "
                             f"an export without --nms)")
    return preds


def _score_batches(t: _Target, scorer: _Scorer, nms: tuple[float, float, int], augment: bool, compute_loss: Any,
                   plots: bool, verbose: bool) -> tuple[list[_Timer], torch.Tensor]:
    """Every batch through the model and NMS into the scorer; returns the (pre-process, inference, NMS) timers and
    the summed (box, obj, cls) losses."""
    conf_thres, iou_thres, max_det = nms
    timers = [_Timer(t.device), _Timer(t.device), _Timer(t.device)]
    loss = torch.zeros(3, device=t.device)
    pbar = tqdm(t.dataloader, desc=TABLE_HEADER, bar_format="{l_bar}{bar:10}{r_bar}",
                disable=t.training and not verbose)
    with t.torch_work():
        for batch_i, (im, targets, paths, shapes) in enumerate(pbar):
            with timers[0]:
                im = im.to(t.device, non_blocking=True)
                im = (im.half() if t.half and not t.training else im.float()) / 255
                targets = targets.to(t.device)
                height, width = im.shape[2:]
            with timers[1]:
                preds = _predict(t, im, targets, augment, compute_loss, loss)
            targets[:, 2:] *= torch.tensor((width, height, width, height), device=t.device)
            if t.single_cls:  # also when the caller's loader kept the classes
                targets[:, 1] = 0
            with timers[2]:
                preds = non_max_suppression(preds.float(), conf_thres, iou_thres, multi_label=True,
                                            agnostic=t.single_cls, max_det=max_det)
            for si, pred in enumerate(preds):
                if t.single_cls:
                    pred[:, 5] = 0
                scorer.add(pred, targets[targets[:, 0] == si, 1:], (height, width), Path(paths[si]), *shapes[si])
            if plots and batch_i < PLOTTED_BATCHES:
                _plot_batch(im, targets, paths, t.save_dir / f"val_batch{batch_i}_labels.jpg", t.names)
                _plot_batch(im, _predictions_as_targets(preds), paths, t.save_dir / f"val_batch{batch_i}_pred.jpg",
                            t.names)
    return timers, loss


def _summarise(t: _Target, scorer: _Scorer, timers: list[_Timer], verbose: bool, matching: str,
               batch_size: int) -> tuple[APResult, tuple[float, float, float]]:
    """The metrics table (per class with --verbose, or for a CLI run over fewer than 50 classes) and, for a CLI
    run, the matching rule and speed lines; returns the AP result and ms per image of each stage."""
    result, labels_per_class, images_per_class = scorer.result()
    seen, nc = len(scorer.image_ids), len(t.names)
    _print_results(result, seen, labels_per_class, images_per_class, t.names,
                   per_class=(verbose or (nc < 50 and not t.training)) and nc > 1 and len(result.classes) > 0)
    times = tuple(timer.total / max(seen, 1) * 1e3 for timer in timers)
    if not t.training:
        LOGGER.info(f"mAP matching: {matching} ({MATCHING_NOTES[matching]})")
        LOGGER.info(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape "
                    f"{(batch_size, 3, t.imgsz, t.imgsz)}" % times)
    return result, times


def _save_outputs(t: _Target, scorer: _Scorer, result: APResult, plots: bool, save_json: bool,
                  annotations: Path | None, matching: str) -> None:
    """Confusion matrix and AP curves (plots), the COCO json checked by pycocotools (save_json)."""
    if plots:
        plot_confusion_matrix(scorer.confusion.matrix, t.names, t.save_dir / "confusion_matrix.png")
        plot_ap_curves(result, t.names, t.save_dir)
    if save_json:
        _write_and_check_json(scorer.json_rows, t.save_dir / f"{t.weights_stem}_predictions.json", annotations,
                              ours=(result.map, result.map50), img_ids=scorer.image_ids, matching=matching)


def run(
    data: str | Path | dict = DEMO_DATA,
    weights: str | Path | list[str | Path] | Backend | None = None,
    batch_size: int = 32,
    imgsz: int | None = None,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    task: str = "val",
    device: str = "",
    workers: int = 8,
    single_cls: bool = False,
    augment: bool = False,
    verbose: bool = False,
    save_txt: bool = False,
    save_conf: bool = False,
    save_json: bool = False,
    coco_json: str | None = None,
    project: str | Path = ROOT / "runs/val",
    name: str = "exp",
    exist_ok: bool = False,
    half: bool = False,
    model: torch.nn.Module | None = None,
    dataloader: Any = None,
    save_dir: str | Path = "",
    plots: bool = True,
    compute_loss: Any = None,
    matching: str = "coco",
) -> ValResult:
    """Validate `weights` (CLI) or a live `model` (training); the metrics come back by name, with the fitness
    train.py picks best.pt by (ValResult: P, R, mAP50, mAP50-95, val losses, per-class mAP50-95, ms per stage).

    matching picks which detections are TPs: "coco" (pycocotools' rule, its mAP) or "yolo" (yolov5's, to compare).
    """
    _check_numbers(task, conf_thres, iou_thres, max_det, batch_size, matching)
    if isinstance(weights, (list, tuple)) and len(weights) == 1:  # --weights a.pt; a.pt b.pt is an ensemble
        weights = weights[0]
    if task == "speed" and model is None:  # yolov5's speed benchmark: deployment thresholds, nothing saved
        conf_thres, iou_thres, save_json, plots = 0.25, 0.45, False, False
    data = data if isinstance(data, dict) else check_dataset(data)
    if model is not None:  # called by train.py: a live DetectionModel (EMA), the loader already built
        was_training = model.training
        t = _live_target(model, data, single_cls, half, dataloader, Path(save_dir))
        if plots or save_json:
            make_run_folder(t.save_dir)
    else:
        t = _file_target(weights, data, task, device, batch_size, half, imgsz, augment, single_cls)
    annotations = _coco_annotations(data, coco_json) if save_json else None
    if not t.training:  # the run folder only once the inputs, loader flags and labels included, are known good
        run_dir = increment_path(Path(project) / name, exist_ok=exist_ok)
        _open_run_folder(t, task, batch_size, workers, run_dir, save_txt)

    scorer = _Scorer(len(t.names), category_ids(list(data["names"])), confusion=plots,
                     txt_dir=t.save_dir / "labels" if save_txt else None, save_conf=save_conf, save_json=save_json,
                     matching=matching)
    timers, loss = _score_batches(t, scorer, (conf_thres, iou_thres, max_det), augment, compute_loss, plots, verbose)
    result, times = _summarise(t, scorer, timers, verbose, matching, batch_size)
    _save_outputs(t, scorer, result, plots, save_json, annotations, matching)
    if t.training:
        model.train(was_training)
    elif plots or save_txt or save_json:  # a run that wrote nothing (export's mAP column) points at no folder
        saved = f"\n{len(list((t.save_dir / 'labels').glob('*.txt')))} labels saved to {t.save_dir / 'labels'}" \
            if save_txt else ""
        LOGGER.info(f"Results saved to {t.save_dir}{saved}")
    n_batches = max(len(t.dataloader), 1)
    return ValResult.from_ap(result, len(t.names), tuple((loss.cpu() / n_batches).tolist()), times)


def _write_and_check_json(rows: list[dict], path: Path, annotations: Path | None,
                          ours: tuple[float, float], img_ids: list, matching: str = "coco") -> dict | None:
    """Write COCO detections; with an annotation file, print pycocotools' mAPs beside ours."""
    path.write_text(json.dumps(rows))
    LOGGER.info(f"Saving {path} ({len(rows)} detections)")
    if annotations is None:
        return None
    LOGGER.info(f"Evaluating pycocotools mAP against {annotations}")
    coco = evaluate_coco(annotations, rows, img_ids=img_ids)
    LOGGER.info(coco["summary"].rstrip())
    LOGGER.info(f"pycocotools mAP50-95 {coco['map']:.4f}  mAP50 {coco['map50']:.4f}   "
                f"(ours, {matching} matching: {ours[0]:.4f}  {ours[1]:.4f})")
    return coco


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Validate a PConv-YOLO model on a dataset split")
    parser.add_argument("--data", type=str, default=str(DEMO_DATA), help="dataset.yaml path (default: the demo's)")
    parser.add_argument("--weights", nargs="+", type=str, default=[str(DEMO_WEIGHTS)],
                        help="model path(s): .pt checkpoint, .torchscript, .onnx or .tflite; several = ensemble "
                             "(default: the demo model)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size")
    parser.add_argument("--imgsz", "--img", "--img-size", type=int, default=None,
                        help="inference size (pixels; default: the size a .pt was trained at or a file "
                             "exported at, else 640)")
    add_threshold_flags(parser, conf=0.001, iou=0.6, max_det=300)  # validation scores every box down to 0.001
    parser.add_argument("--task", default="val", help="train, val, test or speed")
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    parser.add_argument("--workers", type=int, default=8, help="max dataloader workers")
    parser.add_argument("--single-cls", action="store_true", help="treat as single-class dataset")
    parser.add_argument("--augment", action="store_true", help="augmented inference (TTA)")
    parser.add_argument("--verbose", action="store_true", help="report mAP by class")
    add_label_flags(parser)
    parser.add_argument("--save-json", action="store_true", help="save a COCO-JSON results file")
    parser.add_argument("--coco-json", type=str, default=None,
                        help="COCO annotation json to score --save-json results with pycocotools "
                             "(default: the data YAML's coco_json key, if any)")
    add_run_folder_flags(parser, str(ROOT / "runs/val"))
    parser.add_argument("--half", action="store_true",
                        help="FP16 inference on CUDA; OpenVINO: its default reduced precision (bf16)")
    parser.add_argument("--matching", choices=MATCHING_RULES, default=MATCHING_RULES[0],
                        help="TP matching: coco = pycocotools' rule and maxDets=100 (its mAP), yolo = yolov5's "
                             "highest-IoU-first rule (to compare with yolov5 / ultralytics numbers)")
    opt = parser.parse_args(argv)
    opt.save_json |= bool(opt.coco_json)
    opt.save_txt |= opt.save_conf
    return opt


def main(argv: list[str] | None = None) -> None:
    opt = parse_opt(argv)
    run(**vars(opt))  # several --weights validate as one ensemble, as in yolov5


if __name__ == "__main__":
    run_cli(main)
