"""What a training run folder records besides checkpoints: results.csv in yolov5's layout (appended per epoch,
cut back to the last checkpointed epoch on --resume) and the run's hyp.yaml / opt.yaml."""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from utils.metrics.val_result import CSV_COLUMNS

RESULTS_COLUMNS = ("epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", *CSV_COLUMNS,
                   "x/lr0", "x/lr1", "x/lr2")


def write_results_row(csv_file: Path, epoch: int, values: list[float]) -> None:
    """Append one epoch to results.csv in yolov5's layout (header padded to 20 characters)."""
    new = not csv_file.exists()
    with open(csv_file, "a") as f:
        if new:
            f.write(",".join(f"{c:>20s}" for c in RESULTS_COLUMNS) + "\n")
        f.write(",".join(f"{v:>20.5g}" for v in [epoch, *values]) + "\n")


def truncate_results(csv_file: Path, last_epoch: int) -> None:
    """Drop rows after `last_epoch` (an epoch logged but not checkpointed before a kill is redone)."""
    if not csv_file.exists():
        return
    lines = csv_file.read_text().splitlines()
    kept = lines[:1] + [ln for ln in lines[1:] if ln.strip() and int(float(ln.split(",")[0])) <= last_epoch]
    csv_file.write_text("\n".join(kept) + "\n")


def save_run_settings(save_dir: Path, hyp: dict, opt: argparse.Namespace) -> None:
    """hyp.yaml and opt.yaml beside the weights: what --resume and a reader need to rerun the same training."""
    (save_dir / "hyp.yaml").write_text(yaml.safe_dump(hyp, sort_keys=False))
    (save_dir / "opt.yaml").write_text(yaml.safe_dump(
        {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opt).items()}, sort_keys=False))
