"""What `train.py --resume` continues: the interrupted run's options and checkpoint, or, when the cut came inside
one of a distillation run's stages (utils.train.recipe: RUN/pretrain, RUN/teacher) before the student's own
epochs, the whole run from its opt.yaml."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from deploy.errors import UserInputError
from utils.core.yaml_io import read_yaml_mapping
from utils.train.recipe import PRETRAIN_RUN, TEACHER_RUN
from utils.weights.checkpoint import load_checkpoint


def latest_last_checkpoint(search_dir: Path) -> Path:
    """The most recently written last*.pt under search_dir (what a bare --resume continues)."""
    candidates = sorted(search_dir.glob("**/last*.pt"), key=os.path.getmtime) if search_dir.is_dir() else []
    if not candidates:
        raise UserInputError(f"--resume: no last.pt found under {search_dir} to resume; "
                             f"give a checkpoint path or start a new run")
    return candidates[-1]


def restored_options(opt: argparse.Namespace, defaults: argparse.Namespace,
                     whole_recipe: bool = True) -> tuple[argparse.Namespace, dict | None]:
    """Options of the interrupted run, restored from its last.pt, so the same schedule continues (`defaults`: the
    CLI's, to tell a flag given again from one left out). With `whole_recipe`, a stage cut inside a distillation
    run (utils.train.recipe) resumes as that whole run (no checkpoint: the stage finishes, then the student
    starts)."""
    last = Path(opt.resume) if isinstance(opt.resume, str) else latest_last_checkpoint(Path(opt.project))
    student_run = interrupted_stage_run(last) if whole_recipe else None
    if student_run is not None:
        return student_options(opt, student_run), None  # its stages resume first
    ckpt = load_checkpoint(last)
    if ckpt.get("epoch", -1) < 0 or ckpt.get("optimizer") is None:
        raise UserInputError(f"--resume {last}: this run already finished all its epochs, nothing to resume; "
                             f"start a new run with --weights {last} to train further")
    saved = ckpt.get("opt") or {}
    restored = argparse.Namespace(**{**vars(opt), **saved})
    restored.resume, restored.weights, restored.cfg = str(last), str(last), ""
    restored.save_dir = str(last.parent.parent)
    restored.device = opt.device or saved.get("device", "")  # the machine may have changed
    # the loader's worker count shapes the augmentation streams: keep the run's, unless another is asked for
    restored.workers = saved.get("workers", opt.workers) if opt.workers == defaults.workers else opt.workers
    # each node of a multi-node job may keep its data elsewhere: a --data given again names this node's copy
    restored.data = saved.get("data", opt.data) if opt.data == defaults.data else opt.data
    return restored, ckpt


def interrupted_stage_run(last: Path) -> Path | None:
    """The student's run folder when `last` is a stage's checkpoint and the student's own epochs have not begun:
    resuming it means resuming the whole recipe."""
    run = last.parent.parent.parent
    if last.parent.parent.name in (PRETRAIN_RUN, TEACHER_RUN) and (run / "opt.yaml").is_file() \
            and not (run / "weights/last.pt").exists():
        return run
    return None


def student_options(opt: argparse.Namespace, student_run: Path) -> argparse.Namespace:
    """A run cut during one of its stages: its own options from its opt.yaml, not resuming (its epochs have not
    begun), in its folder; the stages then resume or skip by what their folders hold."""
    saved = read_yaml_mapping(student_run / "opt.yaml", f"--resume {student_run}", "expected the run's options")
    restored = argparse.Namespace(**{**vars(opt), **saved})
    restored.resume, restored.save_dir, restored.hyp = False, str(student_run), str(student_run / "hyp.yaml")
    restored.device = opt.device or saved.get("device", "")
    return restored
