"""TensorBoard logging for training runs (yolov5's default tracker): `tensorboard --logdir runs/train`.

On when `torch.utils.tensorboard` imports (the tensorboard package is installed), silently off otherwise,
so training never depends on it. Only the main process (rank 0) should open one. Events go into the run
folder itself, next to results.csv, so each run is one TensorBoard run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2

from utils.core.log import LOGGER

LOGGED_IMAGES = ("labels.jpg", "train_batch*.jpg", "results.png")  # the run's plots worth a look in TensorBoard


class TensorBoardLogger:
    """Scalars per epoch and the run's plot images; every method is a no-op when TensorBoard is missing."""

    def __init__(self, save_dir: Path, enabled: bool = True):
        self.save_dir = Path(save_dir)
        self.writer = _open_writer(self.save_dir) if enabled else None
        self.logged_images: set[str] = set()

    @property
    def active(self) -> bool:
        return self.writer is not None

    def log_scalars(self, names: Iterable[str], values: Iterable[float], step: int) -> None:
        """One scalar per results.csv column name ('train/box_loss', 'metrics/mAP_0.5', 'x/lr0', ...)."""
        if self.writer is None:
            return
        for name, value in zip(names, values):
            self.writer.add_scalar(name, float(value), step)
        self.writer.flush()

    def log_new_images(self, step: int) -> None:
        """Add the run folder's plots (LOGGED_IMAGES) not logged before, e.g. train batches after epoch 0."""
        if self.writer is None:
            return
        for pattern in LOGGED_IMAGES:
            for path in sorted(self.save_dir.glob(pattern)):
                if path.name in self.logged_images:
                    continue
                image = cv2.imread(str(path))
                if image is None:  # a plot that failed half-way; plots never stop training
                    continue
                self.writer.add_image(path.stem, image[:, :, ::-1].copy(), step, dataformats="HWC")
                self.logged_images.add(path.name)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _open_writer(save_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: logging is optional
        return None
    LOGGER.info(f"TensorBoard: start with 'tensorboard --logdir {save_dir.parent}', view at http://localhost:6006/")
    return SummaryWriter(log_dir=str(save_dir))
