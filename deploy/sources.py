"""--source → frames: an image, a video, a folder or glob of them, a camera index or a stream URL.

Files are read in order; an unreadable one is skipped with a warning unless it is the only one (then there
is nothing to do: an error). Cameras and streams are read by a background thread that keeps only the
newest frame, so a slow board drops frames instead of falling further and further behind the camera.
"""
from __future__ import annotations

import glob
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from .errors import UserInputError
from .log import LOGGER

IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".avi", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".wmv"})
STREAM_SCHEMES = ("http://", "https://", "rtsp://", "rtmp://")
DEFAULT_FPS = 30.0
CaptureFactory = Callable[[Any], Any]  # cv2.VideoCapture or a test's fake with isOpened/read/get/release


@dataclass
class Frame:
    """One image to detect in, with what the writer needs to name and encode its output."""

    path: str  # file path, URL or camera index as given
    image: np.ndarray  # original BGR (H, W, 3) uint8
    index: int  # 1-based frame number in a video/stream; 0 for images
    info: str  # console prefix, e.g. "video 1/1 (3/60) clip.mp4:"
    kind: str  # "image", "video" or "stream"
    fps: float = 0.0


def open_capture(factory: CaptureFactory, source: str | int) -> Any:
    """factory(source) with OpenCV's own log silenced: a camera that is not there makes it print a block
    (every backend it tried, a C++ exception text) above the one line that says what happened."""
    log = cv2.utils.logging
    previous = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        return factory(source)
    finally:
        log.setLogLevel(previous)


def valid_fps(fps: float) -> float:
    return fps if math.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS


class FileSource:
    """Images and videos from a list of files."""

    is_live = False

    def __init__(self, files: list[Path]):
        self.files = files

    def _unreadable(self, file: Path, what: str) -> None:
        message = f"--source {file}: cannot read {what} (corrupt or unsupported encoding)"
        if len(self.files) == 1:
            raise UserInputError(message)
        LOGGER.warning(f"WARNING: {message}, skipped")

    def __iter__(self) -> Iterator[Frame]:
        n = len(self.files)
        for i, file in enumerate(self.files):
            if file.suffix.lower() in VIDEO_SUFFIXES:
                yield from self._video(file, f"video {i + 1}/{n}")
                continue
            image = cv2.imdecode(np.fromfile(str(file), np.uint8), cv2.IMREAD_COLOR) if file.stat().st_size else None
            if image is None:
                self._unreadable(file, "image")
                continue
            yield Frame(str(file), image, 0, f"image {i + 1}/{n} {file}:", "image")

    def _video(self, file: Path, prefix: str) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(file))
        try:
            ok, image = cap.read() if cap.isOpened() else (False, None)
            if not ok:
                self._unreadable(file, "video")
                return
            fps, total = valid_fps(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            k = 1
            while ok:
                yield Frame(str(file), image, k, f"{prefix} ({k}/{total}) {file}:", "video", fps)
                ok, image = cap.read()
                k += 1
        finally:
            cap.release()

    def close(self) -> None:
        """Nothing to stop: videos are released as they end."""


class LiveSource:
    """One camera or stream, read in a daemon thread that keeps only the newest frame; ends when reads fail."""

    is_live = True

    def __init__(self, source: str | int, capture_factory: CaptureFactory = cv2.VideoCapture):
        self.path = str(source)
        self.capture = open_capture(capture_factory, source)
        if not self.capture.isOpened():
            self.capture.release()
            what = f"camera {source} could not be opened (no such device?)" if isinstance(source, int) \
                else "stream could not be opened"
            raise UserInputError(f"--source {source}: {what}")
        self.fps = valid_fps(self.capture.get(cv2.CAP_PROP_FPS))
        self.newest: tuple[np.ndarray, int] | None = None
        self.done = False
        self.changed = threading.Condition()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, name=f"reader {source}", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                ok, image = self.capture.read()
                if not ok or image is None:
                    LOGGER.warning(f"WARNING: {self.path}: stream ended")
                    break
                n += 1
                with self.changed:
                    self.newest = (image, n)
                    self.changed.notify_all()
        finally:
            self.capture.release()
            with self.changed:
                self.done = True
                self.changed.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        last = 0
        try:
            while True:
                with self.changed:
                    while not self.done and (self.newest is None or self.newest[1] == last):
                        self.changed.wait(timeout=0.5)
                    if self.newest is None or self.newest[1] == last:
                        return
                    image, last = self.newest
                yield Frame(self.path, image, last, f"1/1: {self.path}:", "stream", self.fps)
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2.0)


def _media_files(paths: list[Path], source: str) -> list[Path]:
    files = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
    if not files:
        raise UserInputError(f"--source {source}: no images or videos found")
    return files


def open_source(source: str | int, capture_factory: CaptureFactory = cv2.VideoCapture) -> FileSource | LiveSource:
    """Camera index, stream URL, existing file or folder (recursive), else a glob pattern."""
    source = str(source).strip()
    if source.isdigit():
        return LiveSource(int(source), capture_factory)
    if source.lower().startswith(STREAM_SCHEMES):
        return LiveSource(source, capture_factory)
    path = Path(source)
    if path.is_dir():
        return FileSource(_media_files(sorted(p for p in path.rglob("*") if p.is_file()), source))
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
            raise UserInputError(f"--source {source}: unsupported file type '{path.suffix}' (images: "
                              f"{', '.join(sorted(IMAGE_SUFFIXES))}; videos: {', '.join(sorted(VIDEO_SUFFIXES))})")
        return FileSource([path])
    if glob.has_magic(source):
        return FileSource(_media_files(sorted(Path(p) for p in glob.glob(source, recursive=True)
                                              if Path(p).is_file()), source))
    raise UserInputError(f"--source {source}: file or folder not found")
