"""What a run saves, in detect.py's layout: runs/detect/exp, exp2, ... holding annotated images (same format),
annotated videos (mp4v .mp4, the input's size and fps, every frame) and labels/<name>.txt in YOLO format
(videos: <name>_<frame>.txt). Never writes over an existing run folder."""
from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import cv2
import numpy as np

from .detector import Detections
from .errors import UserInputError
from .log import LOGGER
from .sources import Frame

VIDEO_FOURCC = "mp4v"
WRITABLE_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def increment_path(path: Path, exist_ok: bool = False) -> Path:
    """`path`, or path2, path3, ... — the first that does not exist yet (created)."""
    if path.exists() and not exist_ok:
        n = 2
        while Path(f"{path}{n}").exists():
            n += 1
        path = Path(f"{path}{n}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserInputError(f"--project {path.parent}: cannot create the run folder ({e.strerror or e})") from None
    return path


def safe_stem(path: str) -> str:
    """Output name for a source: a file's stem, a URL's last path part, a camera index."""
    stem = Path(path.split("://", 1)[-1].split("?")[0]).stem
    return re.sub(r"[^\w.-]+", "_", stem).strip("._") or "stream"


class ResultWriter:
    """Annotated images/videos and label files for one run."""

    def __init__(self, save_dir: Path, save_txt: bool, save_conf: bool):
        self.save_dir, self.save_txt, self.save_conf = save_dir, save_txt, save_conf
        self.stems: dict[str, str] = {}
        self.videos: dict[str, cv2.VideoWriter] = {}
        self.labels_written = 0
        if save_txt:
            (save_dir / "labels").mkdir(parents=True, exist_ok=True)

    def stem_for(self, path: str) -> str:
        """One output name per input (two 'a.jpg' in different folders become a and a_2)."""
        if path not in self.stems:
            stem, name, k = safe_stem(path), safe_stem(path), 2
            while name in self.stems.values():
                name, k = f"{stem}_{k}", k + 1
            self.stems[path] = name
        return self.stems[path]

    def write(self, frame: Frame, result: Detections, annotated: np.ndarray | None) -> None:
        stem = self.stem_for(frame.path)
        if annotated is not None:
            if frame.kind == "image":
                suffix = Path(frame.path).suffix.lower()
                cv2.imwrite(str(self.save_dir / (stem + (suffix if suffix in WRITABLE_IMAGE_SUFFIXES else ".jpg"))),
                            annotated)
            else:
                self._video(frame, stem, annotated).write(annotated)
        if self.save_txt:
            lines = result.yolo_lines(self.save_conf)
            if lines:  # like yolov5: no file for an image without detections
                name = stem if frame.kind == "image" else f"{stem}_{frame.index}"
                (self.save_dir / "labels" / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
                self.labels_written += 1

    def _video(self, frame: Frame, stem: str, image: np.ndarray) -> cv2.VideoWriter:
        if frame.path not in self.videos:
            h, w = image.shape[:2]
            path = self.save_dir / f"{stem}.mp4"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), frame.fps, (w, h))
            if not writer.isOpened():
                raise UserInputError(f"{path}: cannot open a video writer ({VIDEO_FOURCC}, {w}x{h}, {frame.fps} fps)")
            self.videos[frame.path] = writer
        return self.videos[frame.path]

    def close(self) -> None:
        for writer in self.videos.values():
            writer.release()


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
