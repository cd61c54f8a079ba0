"""deploy/sources.py, the one reader of --source for detect.py, the Python API and the runner: real files
(shipped images, videos written with cv2), fake captures for live input, and the stream-URL safety check."""
from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from deploy.errors import UserInputError
from deploy.sources import FileSource, LiveSource, ReadAhead, check_stream_url, open_source, redact_url

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "data" / "images"
PUBLIC = lambda host, port: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 0))]  # noqa: E731


def write_video(path: Path, frames: int, size=(64, 48), fps=12.0) -> Path:
    """A small mjpg .avi whose frame i is filled with grey level 10*i (so frames are identifiable)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 10 * i, np.uint8))
    writer.release()
    return path


class FakeCapture:
    """Stands in for cv2.VideoCapture: yields `frames` numbered frames, then read() fails."""

    def __init__(self, frames: int = 0, opened: bool = True, fps: float = 25.0, delay: float = 0.0):
        self.remaining, self.opened, self.fps, self.delay = frames, opened, fps, delay
        self.count, self.released = 0, False

    def isOpened(self) -> bool:
        return self.opened

    def read(self):
        if self.delay:
            threading.Event().wait(self.delay)
        if not self.opened or self.remaining == 0:
            return False, None
        self.remaining -= 1
        self.count += 1
        return True, np.full((32, 40, 3), self.count, np.uint8)

    def get(self, prop_id):
        return self.fps if prop_id == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        self.released = True


def test_folder_recursive_case_insensitive_skips_corrupt(tmp_path, log_lines):
    (tmp_path / "sub").mkdir()
    shutil.copy(IMAGES / "bus.jpg", tmp_path / "sub" / "BUS.JPG")
    shutil.copy(IMAGES / "zidane.jpg", tmp_path / "zidane.jpg")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "notes.md").write_text("ignored")
    (tmp_path / "notes.txt").write_text("ignored: inside a folder a .txt is not a list of files")
    frames = list(open_source(tmp_path))
    assert [Path(f.path).name for f in frames] == ["BUS.JPG", "zidane.jpg"]
    assert frames[0].image.shape == (1080, 810, 3) and frames[0].image.dtype == np.uint8
    assert frames[1].image.shape == (720, 1280, 3)
    assert all(f.kind == "image" and f.index == 0 for f in frames)
    assert frames[1].info.startswith("image 3/3 ") and frames[1].info.endswith("zidane.jpg:")
    assert any("broken.png" in m and "skipped" in m for m in log_lines())


def test_single_corrupt_image_is_an_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(UserInputError, match="bad.jpg: cannot read image"):
        list(open_source(bad))


def test_glob_and_txt_list(tmp_path):
    shutil.copy(IMAGES / "bus.jpg", tmp_path / "a.jpg")
    shutil.copy(IMAGES / "zidane.jpg", tmp_path / "b.jpg")
    assert [Path(f.path).name for f in open_source(str(tmp_path / "*.jpg"))] == ["a.jpg", "b.jpg"]
    listing = tmp_path / "list.txt"
    listing.write_text("b.jpg\n\n# comment\n" + str(tmp_path / "a.jpg") + "\n")
    assert [Path(f.path).name for f in open_source(listing)] == ["b.jpg", "a.jpg"]
    listing.write_text("missing.jpg\n")
    with pytest.raises(UserInputError, match="missing.jpg does not exist"):
        open_source(listing)
    with pytest.raises(UserInputError, match="no images or videos found"):
        open_source(str(tmp_path / "*.png"))


def test_path_with_glob_and_shell_characters_is_literal(tmp_path):
    odd = tmp_path / "a [b] *$(x);.jpg"
    shutil.copy(IMAGES / "bus.jpg", odd)
    frames = list(open_source(odd))
    assert len(frames) == 1 and frames[0].path == str(odd)


def test_bad_paths(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        open_source(tmp_path / "nope.jpg")
    doc = tmp_path / "doc.pdf"
    doc.write_bytes(b"%PDF")
    with pytest.raises(UserInputError, match=r"doc.pdf: unsupported file type '\.pdf'"):
        open_source(doc)
    with pytest.raises(UserInputError, match="no images or videos"):
        open_source(tmp_path)
    with pytest.raises(UserInputError, match="--vid-stride 0"):
        open_source(IMAGES, vid_stride=0)


def test_video_every_frame_and_stride(tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=10)
    frames = list(open_source(video))
    assert [f.index for f in frames] == list(range(1, 11))
    assert frames[0].kind == "video" and frames[0].fps == pytest.approx(12.0) and frames[0].frame_count == 10
    assert frames[3].image.shape == (48, 64, 3) and abs(int(frames[3].image.mean()) - 30) <= 3
    assert frames[2].info.endswith(f"video 1/1 (3/10) {video}:")
    strided = list(open_source(video, vid_stride=3))
    assert [f.index for f in strided] == [1, 4, 7, 10]
    assert strided[0].fps == pytest.approx(4.0) and strided[0].frame_count == 4
    assert abs(int(strided[2].image.mean()) - 60) <= 3


def test_shipped_video_with_stride():
    frames = list(open_source(ROOT / "data" / "videos" / "people_6s.mp4", vid_stride=20))
    assert [f.index for f in frames] == [1, 21, 41] and frames[0].kind == "video"
    assert frames[0].image.shape == (432, 768, 3) and frames[0].fps == pytest.approx(0.5)  # 10 fps in


def test_corrupt_video_is_an_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    with pytest.raises(UserInputError, match="bad.mp4: cannot read video"):
        list(open_source(bad))


def test_folder_mixing_images_and_video(tmp_path):
    shutil.copy(IMAGES / "bus.jpg", tmp_path / "a.jpg")
    write_video(tmp_path / "b.avi", frames=3)
    kinds = [(f.kind, f.source_index, f.index) for f in FileSource([tmp_path / "a.jpg", tmp_path / "b.avi"])]
    assert kinds == [("image", 0, 0), ("video", 1, 1), ("video", 1, 2), ("video", 1, 3)]


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "file reader"]


@pytest.mark.timeout(30)
def test_read_ahead_yields_the_frames_of_a_plain_read_in_order(tmp_path):
    shutil.copy(IMAGES / "bus.jpg", tmp_path / "a.jpg")
    files = [tmp_path / "a.jpg", write_video(tmp_path / "b.avi", frames=12), write_video(tmp_path / "c.avi", frames=5)]
    for stride in (1, 3):
        plain = list(FileSource(files, stride, read_ahead=0))
        ahead = list(FileSource(files, stride, read_ahead=2))
        assert [(f.path, f.index, f.info) for f in ahead] == [(f.path, f.index, f.info) for f in plain]
        assert all(np.array_equal(a.image, b.image) for a, b in zip(ahead, plain))
    levels = [int(f.image[0, 0, 0]) for f in ahead if f.path.endswith("b.avi")]
    assert np.allclose(levels, [0, 30, 60, 90], atol=4)  # frames 1, 4, 7, 10 (MJPG keeps grey levels within a few)
    assert not reader_threads()  # each iteration's thread ended with it


@pytest.mark.timeout(30)
def test_read_ahead_stops_cleanly_when_the_consumer_stops(tmp_path):
    earlier = set(reader_threads())  # an earlier test's reader may still be ending while this one starts

    def ours() -> list:
        return [t for t in reader_threads() if t not in earlier]

    video = write_video(tmp_path / "clip.avi", frames=25)
    source = FileSource([video])
    frames = iter(source)
    assert [next(frames).index for _ in range(3)] == [1, 2, 3]
    assert len(ours()) == 1
    source.close()  # what the runners' `finally` does
    assert not ours() and list(frames) == []
    for frame in source:  # a loop left early: closing the generator stops its thread too
        if frame.index == 2:
            break
    assert not ours()


@pytest.mark.timeout(30)
def test_read_ahead_raises_the_readers_error_in_the_consumer(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(UserInputError, match="bad.mp4: cannot read video"):
        list(FileSource([bad]))
    assert not reader_threads()

    def items():
        yield 1
        yield 2
        raise RuntimeError("capture broke")

    reader = ReadAhead(items(), depth=1)
    assert next(reader) == 1 and next(reader) == 2
    with pytest.raises(RuntimeError, match="capture broke"):
        next(reader)
    assert not reader.thread.is_alive()


@pytest.mark.timeout(30)
def test_fake_webcam_frames_then_failure_ends_cleanly(log_lines):
    captures = []

    def factory(source):
        # first open: 5 frames then failure; every reconnect finds the camera gone
        captures.append(FakeCapture(frames=5 if not captures else 0, opened=not captures, delay=0.005))
        return captures[-1]

    frames = list(open_source("0", capture_factory=factory, retries=2, retry_delay=0.01))
    numbers = [f.index for f in frames]
    assert numbers and numbers == sorted(set(numbers)) and numbers[-1] == 5  # newest frame always delivered
    assert all(f.kind == "stream" and f.path == "0" and f.fps == 25.0 for f in frames)
    assert int(frames[-1].image[0, 0, 0]) == 5
    assert len(captures) == 3 and all(c.released for c in captures)  # opened once, reconnected twice
    messages = log_lines()
    assert any("camera 0: frame read failed, reconnecting (1/2)" in m for m in messages)
    assert any("camera 0: stream ended" in m for m in messages)


@pytest.mark.timeout(30)
def test_newest_frame_only_when_consumer_is_slow():
    source = LiveSource([0], capture_factory=lambda s: FakeCapture(frames=200), retries=0, retry_delay=0)
    seen = []
    for frame in source:
        seen.append(frame.index)
        threading.Event().wait(0.02)  # the reader outruns us: frames in between are dropped, not queued
    assert seen[-1] == 200 and len(seen) < 200 and seen == sorted(seen)


@pytest.mark.timeout(30)
def test_live_source_hands_over_only_the_newest_frame():
    capture = FakeCapture(frames=40)
    source = LiveSource([0], capture_factory=lambda _: capture, retries=0)
    source.readers[0].thread.join(timeout=10)  # the reader has read every frame before the consumer asks for one
    frames = list(source)
    assert [f.index for f in frames] == [40] and int(frames[0].image[0, 0, 0]) == 40
    assert frames[0].kind == "stream" and frames[0].fps == 25.0 and capture.released


@pytest.mark.timeout(30)
def test_streams_file_reads_every_stream(tmp_path):
    listing = tmp_path / "cams.streams"
    listing.write_text("0\nrtsp://user:secret@cam.example.com/live\n")
    source = open_source(listing, capture_factory=lambda s: FakeCapture(frames=3, delay=0.002), retries=0,
                         retry_delay=0, resolve=PUBLIC)
    frames = list(source)
    paths = {f.path for f in frames}
    assert paths == {"0", "rtsp://cam.example.com/live"}  # credentials never reach logs or file names
    assert {f.source_index for f in frames} == {0, 1}
    for i in (0, 1):
        assert [f.index for f in frames if f.source_index == i][-1] == 3


def test_camera_or_stream_that_does_not_open():
    with pytest.raises(UserInputError, match="^--source 3: camera 3 could not be opened"):
        open_source("3", capture_factory=lambda s: FakeCapture(opened=False))
    with pytest.raises(UserInputError, match="^--source rtsp://cam.example.com/live: stream could not be opened"):
        open_source("rtsp://u:p@cam.example.com/live", capture_factory=lambda s: FakeCapture(opened=False),
                    resolve=PUBLIC)


def test_missing_real_camera_prints_only_our_error(capfd):
    """cv2.VideoCapture(99) logs every backend it tried (and a C++ exception) to stderr; only our line may show."""
    level = cv2.utils.logging.getLogLevel()
    with pytest.raises(UserInputError, match="^--source 99: camera 99 could not be opened"):
        open_source("99", retries=0)
    assert capfd.readouterr() == ("", "") and cv2.utils.logging.getLogLevel() == level


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "rtsp://127.0.0.1:8554/cam", "http://localhost/x.mjpg",
    "http://10.1.2.3/stream", "http://[::1]/s", "http://[::ffff:127.0.0.1]/s", "http://2130706433/s",
    "rtmp://192.168.1.5/live"])
def test_private_and_link_local_urls_refused(url):
    with pytest.raises(UserInputError, match="non-public address.*--allow-local-streams"):
        check_stream_url(url)
    with pytest.raises(UserInputError, match="non-public address"):
        open_source(url, capture_factory=lambda s: pytest.fail("must not connect"))
    assert check_stream_url(url, allow_local=True) == url


def test_url_schemes_and_hosts():
    with pytest.raises(UserInputError, match="unsupported URL scheme 'file'"):
        check_stream_url("file:///etc/passwd")
    with pytest.raises(UserInputError, match="unsupported URL scheme 'ftp'"):
        check_stream_url("ftp://example.com/a.mp4")
    with pytest.raises(UserInputError, match="URL has no host"):
        check_stream_url("http:///path")

    def unresolvable(host, port):
        raise socket.gaierror("Name or service not known")

    with pytest.raises(UserInputError, match="cannot resolve host 'no.such.host'"):
        check_stream_url("https://no.such.host/s", resolve=unresolvable)
    mixed = lambda host, port: [(2, 1, 6, "", ("93.184.216.34", 0)), (2, 1, 6, "", ("10.0.0.7", 0))]
    with pytest.raises(UserInputError, match="10.0.0.7"):  # one private answer is enough to refuse
        check_stream_url("https://rebind.example/s", resolve=mixed)
    assert redact_url("rtsp://u:p@cam.example.com:554/x") == "rtsp://cam.example.com:554/x"
    with pytest.raises(UserInputError, match="^--source: not a valid URL"):
        open_source("rtsp://user:secret@[::1/live", capture_factory=lambda s: pytest.fail("must not connect"))


@pytest.mark.timeout(30)
def test_allowed_local_stream_reads_through_factory():
    opened = []

    def factory(source):
        opened.append(source)
        return FakeCapture(frames=2, delay=0.002)

    frames = list(open_source("rtsp://127.0.0.1:8554/cam", allow_local_streams=True, capture_factory=factory,
                              retries=0, retry_delay=0))
    assert opened == ["rtsp://127.0.0.1:8554/cam"] and frames[-1].index == 2


def test_streams_file_with_one_dead_stream_releases_the_others(tmp_path):
    listing = tmp_path / "cams.streams"
    listing.write_text("0\n1\n")
    made = []

    def factory(source):
        made.append(FakeCapture(frames=3, opened=source == 0))
        return made[-1]

    with pytest.raises(UserInputError, match="camera 1 could not be opened"):
        open_source(listing, capture_factory=factory)
    assert len(made) == 2 and all(c.released for c in made)
