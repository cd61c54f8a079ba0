"""Label verification as a user meets it: a split without a labels folder, --single-cls on any class ids."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from utils.data.dataset import YOLODataset


def write_images(folder: Path, n: int = 3) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"im{i}.jpg"), np.full((48, 64, 3), 100 + 40 * i, np.uint8))


def test_split_without_labels_folder_is_background_with_one_warning(tmp_path, log_text):
    """As yolov5: the images still count (as background); the warning names the missing folder, and no
    cache is attempted inside it (which used to add an '[Errno 2] ... not writable' line)."""
    images = tmp_path / "ds" / "images" / "train"
    write_images(images)
    ds = YOLODataset(str(images), imgsz=64, nc=1, workers=1, prefix="train: ")
    assert len(ds) == 3 and all(len(lb) == 0 for lb in ds.labels)
    warnings = [r.getMessage() for r in log_text.records if r.levelno >= logging.WARNING]
    assert warnings == [f"train: WARNING: labels folder {tmp_path / 'ds' / 'labels' / 'train'} does not exist: "
                        f"the 3 images in {images} are background (labels go in a 'labels' folder beside "
                        f"'images', see docs/data.md)"]
    assert not (tmp_path / "ds" / "labels").exists()  # nothing created on the user's disk
