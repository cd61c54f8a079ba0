"""deploy/sources.py: files in order with unreadable ones skipped, video frames with their fps, and the live
reader that hands over only the newest frame."""
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from deploy.errors import UserInputError
from deploy.sources import LiveSource, open_source

ROOT = Path(__file__).resolve().parents[2]


class FakeCapture:
    """Yields frames 1..n (each image filled with its number), then fails; never opens when n is 0."""

    def __init__(self, n: int):
        self.n, self.k, self.released = n, 0, threading.Event()

    def isOpened(self) -> bool:
        return self.n > 0

    def read(self):
        if self.k >= self.n:
            return False, None
        self.k += 1
        return True, np.full((8, 8, 3), self.k, np.uint8)

    def get(self, prop: int) -> float:
        return 25.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        self.released.set()


def test_live_source_hands_over_only_the_newest_frame():
    capture = FakeCapture(40)
    source = LiveSource(0, capture_factory=lambda _: capture)
    source.thread.join(timeout=10)  # the reader has read every frame before the consumer asks for one
    frames = list(source)
    assert [f.index for f in frames] == [40] and int(frames[0].image[0, 0, 0]) == 40
    assert frames[0].kind == "stream" and frames[0].fps == 25.0 and capture.released.is_set()


def test_camera_that_does_not_open_is_an_error():
    with pytest.raises(UserInputError, match="--source 3: camera 3 could not be opened"):
        open_source("3", capture_factory=lambda _: FakeCapture(0))
    with pytest.raises(UserInputError, match="stream could not be opened"):
        open_source("rtsp://camera.local/live", capture_factory=lambda _: FakeCapture(0))


def test_missing_real_camera_prints_only_our_error(capfd):
    """cv2.VideoCapture(99) logs every backend it tried (and a C++ exception) to stderr; only our line may show."""
    level = cv2.utils.logging.getLogLevel()
    with pytest.raises(UserInputError, match="^--source 99: camera 99 could not be opened"):
        open_source("99")
    assert capfd.readouterr() == ("", "") and cv2.utils.logging.getLogLevel() == level


def test_folder_in_order_skipping_unreadable_files(tmp_path):
    (tmp_path / "sub").mkdir()
    shutil.copy(ROOT / "data/images/bus.jpg", tmp_path / "sub" / "b.jpg")
    shutil.copy(ROOT / "data/images/zidane.jpg", tmp_path / "a.jpg")
    (tmp_path / "c.png").write_bytes(b"broken")
    (tmp_path / "notes.txt").write_text("ignored")
    frames = list(open_source(str(tmp_path)))
    assert [Path(f.path).name for f in frames] == ["a.jpg", "b.jpg"]
    assert frames[0].image.shape == (720, 1280, 3) and frames[1].kind == "image"


def test_video_frames_keep_the_file_fps():
    frames = []
    for frame in open_source(str(ROOT / "data/videos/people_6s.mp4")):
        frames.append(frame)
        if len(frames) == 3:
            break
    assert [f.index for f in frames] == [1, 2, 3]
    assert frames[0].fps == 10.0 and frames[0].image.shape == (432, 768, 3) and frames[0].kind == "video"
