"""What a run saves, for detect.py and the runner alike: runs/detect/exp, exp2, ... holding annotated images
(same format), annotated videos (mp4v .mp4, the input's size and fps, every frame), labels/<name>.txt in YOLO
format (videos: <name>_<frame>.txt), predictions.csv and crops/<class>/<name>.jpg. Never writes over an
existing run folder. Torch-free, so detect.py writes through it too."""
from __future__ import annotations

import csv
import logging
import os
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Protocol, Sequence
from urllib.parse import urlsplit

import cv2
import numpy as np

from .errors import UserInputError
from .log import LOGGER
from .sources import Frame

CSV_COLUMNS = ("Image Name", "Prediction", "Confidence", "Frame", "x1", "y1", "x2", "y2")  # yolov5's first three
VIDEO_FOURCC = "mp4v"
WRITABLE_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # others are saved as .jpg


class Result(Protocol):
    """What the writer reads from one image's detections: the runner's and the library's Detections both fit."""

    xyxy: np.ndarray
    conf: np.ndarray
    cls: np.ndarray
    names: Sequence[str]

    def __len__(self) -> int: ...
    def yolo_lines(self, save_conf: bool = False) -> list[str]: ...
    def crop(self, i: int) -> np.ndarray: ...  # needed only with save_crop


def increment_path(path: str | Path, exist_ok: bool = False, mkdir: bool = False) -> Path:
    """`path`, or `path2`, `path3`, ... — the first that does not exist yet (yolov5's run folders; a file keeps
    its suffix: best2.onnx). With exist_ok the given path is returned even if it exists (--exist-ok). With mkdir
    the folder is created; one that cannot be (a file in the way, no permission) is a one-line error naming it."""
    path = Path(path)
    if path.exists() and not exist_ok:
        stem, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
        n = 2
        while Path(f"{stem}{n}{suffix}").exists():
            n += 1
        path = Path(f"{stem}{n}{suffix}")
    return make_run_folder(path) if mkdir else path


def make_run_folder(path: str | Path) -> Path:
    """Create a run folder (or one inside it) with its parents: the one rule of every door, so one that cannot be
    made (a file in the way, no permission, /proc) is a one-line error naming it, never a traceback."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserInputError(f"--project {path.parent}: cannot create the run folder {path} "
                             f"({e.strerror or e})") from None
    return path


def safe_stem(path: str) -> str:
    """Output name for a source: a file's stem, a camera index, a URL's last path part or else its host — never
    a URL's credentials, query or fragment."""
    if "://" in path:
        parts = urlsplit(path)
        stem = Path(parts.path).stem or parts.hostname or ""
    else:
        stem = Path(path).stem
    return re.sub(r"[^\w.-]+", "_", stem).strip("._") or "stream"


def unique_name(stem: str, taken: set[str]) -> str:
    """`stem`, or stem_2, stem_3, ... — the first not in `taken` (which it joins)."""
    name, k = stem, 2
    while name in taken:
        name, k = f"{stem}_{k}", k + 1
    taken.add(name)
    return name


class ResultWriter:
    """Everything a run saves: annotated images/videos, labels/*.txt, predictions.csv, crops/<class>/.
    Two inputs with one name (a.jpg in two folders) get a and a_2; nothing is written over."""

    def __init__(self, save_dir: Path, save_txt: bool = False, save_conf: bool = False, save_csv: bool = False,
                 save_crop: bool = False):
        self.save_dir, self.save_txt, self.save_conf, self.save_crop = save_dir, save_txt, save_conf, save_crop
        self.used_names: set[str] = set()
        self.crop_names: dict[str, set[str]] = defaultdict(set)  # class folder → crop stems written
        self.stems: dict[tuple[str, int], str] = {}  # (path, source_index) → output stem
        self.videos: dict[tuple[str, int], cv2.VideoWriter] = {}
        self.labels_written = 0
        self.csv_file = None
        if save_txt:
            (save_dir / "labels").mkdir(parents=True, exist_ok=True)
        if save_csv:
            self.csv_file = open(save_dir / "predictions.csv", "w", newline="", encoding="utf-8")
            self.csv = csv.writer(self.csv_file)
            self.csv.writerow(CSV_COLUMNS)

    def stem_for(self, frame: Frame) -> str:
        """One output stem per input, kept for every frame of a video or stream."""
        key = (frame.path, frame.source_index)
        if key not in self.stems:
            self.stems[key] = unique_name(safe_stem(frame.path), self.used_names)
        return self.stems[key]

    def write(self, frame: Frame, result: Result, annotated: np.ndarray | None) -> None:
        """Save what was asked for one frame; `annotated` None: no image/video (--nosave)."""
        stem = self.stem_for(frame)
        if annotated is not None:
            if frame.kind == "image":
                suffix = Path(frame.path).suffix.lower()
                suffix = suffix if suffix in WRITABLE_IMAGE_SUFFIXES else ".jpg"
                cv2.imwrite(str(self.save_dir / f"{stem}{suffix}"), annotated)
            else:
                self._video_writer(frame, stem, annotated).write(annotated)
        label_stem = stem if frame.kind == "image" else f"{stem}_{frame.index}"
        if self.save_txt:
            lines = result.yolo_lines(self.save_conf)
            if lines:  # like yolov5: no file for an image without detections
                (self.save_dir / "labels" / f"{label_stem}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
                self.labels_written += 1
        if self.csv_file is not None:
            for i in range(len(result)):
                x1, y1, x2, y2 = (f"{v:.1f}" for v in result.xyxy[i])
                self.csv.writerow([Path(frame.path).name, result.names[result.cls[i]], f"{result.conf[i]:.4f}",
                                   frame.index, x1, y1, x2, y2])
        if self.save_crop:
            self._save_crops(result, label_stem)

    def _save_crops(self, result: Result, stem: str) -> None:
        for i in range(len(result)):
            folder = self.save_dir / "crops" / safe_stem(result.names[result.cls[i]])
            folder.mkdir(parents=True, exist_ok=True)
            crop = result.crop(i)
            if crop.size:
                cv2.imwrite(str(folder / f"{unique_name(stem, self.crop_names[folder.name])}.jpg"), crop)

    def _video_writer(self, frame: Frame, stem: str, image: np.ndarray) -> cv2.VideoWriter:
        key = (frame.path, frame.source_index)
        if key not in self.videos:
            h, w = image.shape[:2]
            path = self.save_dir / f"{stem}.mp4"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), frame.fps, (w, h))
            if not writer.isOpened():
                raise UserInputError(f"{path}: cannot open a video writer ({VIDEO_FOURCC}, {w}x{h}, {frame.fps} fps)")
            self.videos[key] = writer
        return self.videos[key]

    def close(self) -> None:
        for writer in self.videos.values():
            writer.release()
        if self.csv_file is not None:
            self.csv_file.close()


def display_available() -> bool:
    """True where a window can open; cv2.imshow without a display aborts the whole process."""
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class Viewer:
    """--view-img: a live window, disabled with one warning where none can open (no display, headless OpenCV).
    Torch-free, so detect.py uses it too, passing its own logger."""

    def __init__(self, enabled: bool, logger: logging.Logger = LOGGER):
        self.enabled, self.logger = enabled and display_available(), logger
        if enabled and not self.enabled:
            self.logger.warning("WARNING: --view-img: no display found (DISPLAY is not set); saving results only")
        self.quit = False

    def show(self, name: str, image: np.ndarray) -> None:
        if not self.enabled:
            return
        try:
            cv2.imshow(name, image)
            self.quit = cv2.waitKey(1) & 0xFF == ord("q")
        except cv2.error as e:
            self.logger.warning(f"WARNING: --view-img: cannot open a window ({str(e).strip().splitlines()[-1]}); "
                                f"saving results only")
            self.enabled = False

    def close(self) -> None:
        if self.enabled:
            cv2.destroyAllWindows()
