"""The stages a distillation run may go through before its student's own epochs, each a training run of its own
inside the student's run folder, so that one command (and one --resume) takes a user from a pretrained file to
the fast model:
- RUN/pretrain (`--pretrain-images DIR`): the student, with the teacher's classes, learns the pretrained teacher's
  outputs on a folder of unlabeled images (task losses off, distillation alone), so what the teacher knows about
  its own classes reaches the student before the user's labels do; the student then starts from it (--weights);
- RUN/teacher: a teacher that knows every class of --data by name (persons in the COCO yolov5n.pt a user
  downloaded) is cut down to them, nothing trained; one that does not is fine-tuned on --data; the student distils
  from that folder's best.pt.
Each stage is resumable like any run; one finished is reused, never trained again; each logs what it cost.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from deploy.errors import UserInputError
from deploy.outputs import make_run_folder
from utils.core.log import LOGGER
from utils.data.dataset import check_dataset, single_cls_names
from utils.train.distributed import DistContext
from utils.train.run_log import save_run_settings
from utils.weights.checkpoint import build_checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint
from utils.weights.classes import class_subset, known_class_indices

PRETRAIN_RUN, TEACHER_RUN = "pretrain", "teacher"  # stage folders inside the student's run, in the order they run
TASK_GAINS = ("box", "obj", "cls", "dfl")  # the label losses' gains: 0 while pretraining on unlabeled images
RunStage = Callable[[dict[str, Any]], Any]  # train.py's run on these options (unset ones at their defaults)


def run_stage(opt: argparse.Namespace, hyp: dict, name: str, options: dict[str, Any], run: RunStage,
              what: str) -> Path:
    """Stage `name` of the student run `opt`: trained with `options` when new, resumed when cut, skipped when
    finished. Returns the stage's weights folder."""
    student_run = Path(opt.save_dir)
    weights = student_run / name / "weights"
    make_run_folder(student_run)
    save_run_settings(student_run, hyp, opt)  # what a --resume during the stage continues with
    last, t0 = weights / "last.pt", time.time()
    if last.exists() and load_checkpoint(last)["epoch"] < 0:
        LOGGER.info(f"{name}: already done, reusing {weights}")
        return weights
    if last.exists():
        LOGGER.info(f"{name}: resuming from {last}")
        run({"resume": str(last), "device": opt.device})
    else:
        LOGGER.info(f"{name}: {what}, in {student_run / name}")
        run({**vars(opt), **options, "project": str(student_run), "name": name, "exist_ok": True, "resume": False,
             "evolve": None})
    LOGGER.info(f"{name}: took {(time.time() - t0) / 60:.1f} min in this process (its epochs: "
                f"{student_run / name / 'results.csv'})")
    return weights


def teacher_names(path: str) -> tuple[dict, list[str]]:
    """A --teacher file's checkpoint and class names; a missing file is named."""
    if not Path(path).is_file():
        raise UserInputError(f"--teacher {path}: checkpoint not found")
    ckpt = load_checkpoint(path)
    return ckpt, list(ckpt.get("names") or [])


def pretrain_on_images(opt: argparse.Namespace, hyp: dict, ctx: DistContext, run: RunStage) -> None:
    """--pretrain-images: the student (the teacher's classes) learns the teacher's outputs alone on those images
    for --pretrain-epochs; the student's own run then starts from it (opt.weights)."""
    if not opt.pretrain_images or opt.resume:
        return
    if not opt.teacher or not opt.cfg:
        raise UserInputError("--pretrain-images: the student learns a --teacher's outputs there; give --teacher and --cfg")
    if ctx.distributed:
        raise UserInputError("--pretrain-images: the pretraining stage runs on one process; run this command without "
                             "torchrun (or pretrain first and pass --weights RUN/pretrain/weights/last.pt)")
    if not Path(opt.pretrain_images).exists():
        raise UserInputError(f"--pretrain-images {opt.pretrain_images}: no such folder or list of images")
    _, names = teacher_names(opt.teacher)
    folder = Path(opt.save_dir)
    make_run_folder(folder)
    images = str(Path(opt.pretrain_images).resolve())
    data = folder / f"{PRETRAIN_RUN}-data.yaml"
    data.write_text(yaml.safe_dump({"train": images, "val": images, "names": dict(enumerate(names))}, sort_keys=False))
    gains = folder / f"{PRETRAIN_RUN}-hyp.yaml"
    gains.write_text(yaml.safe_dump({**hyp, **{k: 0.0 for k in TASK_GAINS if k in hyp}}, sort_keys=False))
    weights = run_stage(opt, hyp, PRETRAIN_RUN, {
        "data": str(data), "hyp": str(gains), "epochs": opt.pretrain_epochs, "noval": True, "single_cls": False,
        "pretrain_images": ""}, run, f"learning {opt.teacher}'s {len(names)}-class outputs on {images}, no labels")
    opt.weights = str(weights / "last.pt")


def teacher_for_data(opt: argparse.Namespace, hyp: dict, ctx: DistContext, run: RunStage, default_hyp: Path,
                     default_hyp_af: Path) -> None:
    """A --teacher whose class names differ from --data's: cut down to them when it knows them all, else fine-tuned
    on --data (RUN/teacher: --teacher-epochs, --teacher-hyp or the scratch hyp of its head kind); opt.teacher names
    RUN/teacher's best.pt from here on (opt.yaml and last.pt keep it, so a --resume of the student reuses it)."""
    if not opt.teacher or opt.resume:
        return
    ckpt, known = teacher_names(opt.teacher)
    data = check_dataset(opt.data)
    names = single_cls_names(data["names"]) if opt.single_cls else list(data["names"])
    if known == names:
        return
    knows_them = known_class_indices(known, names) is not None
    if ctx.distributed:  # a stage writes files before the process group exists: one process makes the teacher
        first = "cut it down once without torchrun (it writes RUN/teacher/weights/best.pt)" if knows_them else \
            f"fine-tune it first (python train.py --weights {opt.teacher} --data {opt.data})"
        raise UserInputError(f"--teacher {opt.teacher}: its classes are not --data's; under torchrun {first} and pass "
                             f"that best.pt")
    if knows_them:
        opt.teacher = str(teacher_of_known_classes(opt, ckpt, known, names))
        return
    teacher_hyp = opt.teacher_hyp or (default_hyp_af if model_from_checkpoint(ckpt, opt.teacher).anchor_free
                                      else default_hyp)
    weights = run_stage(opt, hyp, TEACHER_RUN, {
        "weights": opt.teacher, "cfg": "", "teacher": "", "hyp": str(teacher_hyp), "pretrain_images": "",
        "epochs": opt.teacher_epochs or opt.epochs}, run,
        f"{opt.teacher} knows {len(known)} other classes; fine-tuning it on {opt.data} ({len(names)} "
        f"class{'es' if len(names) != 1 else ''}), then distilling from it")
    opt.teacher = str(weights / "best.pt")
    LOGGER.info(f"Distilling from the fine-tuned teacher {opt.teacher}")


def teacher_of_known_classes(opt: argparse.Namespace, ckpt: dict, known: list[str], names: list[str]) -> Path:
    """RUN/teacher/weights/best.pt: a --teacher that knows every class of --data by name, cut down to them (its
    outputs for them unchanged, nothing trained); reused when there."""
    best = Path(opt.save_dir) / TEACHER_RUN / "weights" / "best.pt"
    if not best.exists():
        make_run_folder(best.parent)
        model = class_subset(ckpt, names, opt.teacher)
        save_checkpoint(build_checkpoint(model, opt={"weights": opt.teacher}), best)
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    LOGGER.info(f"teacher: {opt.teacher} knows {shown} among its {len(known)} classes; distilling from its outputs "
                f"for them ({best}), no fine-tuning")
    return best
