"""--source → frames: images, folders, globs, .txt lists, videos, webcams, stream URLs and .streams files.

Every loader yields `Frame`s holding the ORIGINAL BGR image; letterboxing belongs to the consumer, so boxes can
be scaled back to exactly what the user gave. Files are read in order, decoded by a thread a few frames ahead of
the consumer, so decoding the next frame overlaps the model's work on this one; an unreadable one is skipped with a
warning unless it is the only one (then there is nothing to do: an error). Cameras and streams are read by a
background thread that keeps only the newest frame, so a slow model or board drops frames instead of falling
further and further behind. Stream URLs are checked before anything connects: only http(s)/rtsp/rtmp, and
hosts that resolve to private, loopback or link-local addresses are refused unless the user allows local
streams, so a URL given to a server-side detector cannot be used to reach internal services (SSRF).
Torch-free: the runner reads its sources here, and detect.py and the Python API read theirs here too.
"""
from __future__ import annotations

import glob
import ipaddress
import math
import queue
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from .errors import UserInputError
from .log import LOGGER

IMG_FORMATS = frozenset({"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm"})
VID_FORMATS = frozenset({"asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv"})
STREAM_SCHEMES = frozenset({"http", "https", "rtsp", "rtmp"})
DEFAULT_FPS = 30.0  # for videos and streams that report none (or nonsense)
READ_AHEAD = 2  # frames a file source decodes ahead of its consumer (0: decode in the consumer's thread)


@dataclass
class Frame:
    """One image handed to the detector, with what the writer needs to name and encode its output."""

    path: str  # file path, (credential-free) URL or camera index as the user gave it
    image: np.ndarray  # original BGR frame, (H, W, 3) uint8
    index: int  # frame number within its video or stream, 1-based; 0 for still images
    info: str  # progress prefix for the console line, e.g. "video 1/1 (3/60) /x/a.mp4:"
    kind: str  # "image", "video" or "stream"
    source_index: int = 0  # position of this file / stream in the source list
    fps: float = 0.0  # frames per second of the frames yielded (after --vid-stride); 0 for images
    frame_count: int = 0  # frames the video will yield (0 when unknown)


class Capture(Protocol):
    """The part of cv2.VideoCapture the live reader uses; tests pass fakes with the same methods."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop_id: int) -> float: ...
    def release(self) -> None: ...


CaptureFactory = Callable[[Any], Capture]
Resolver = Callable[..., list]


def open_capture(factory: CaptureFactory, source: str | int) -> Capture:
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
    """A capture's reported frame rate, or DEFAULT_FPS where it reports none or nonsense."""
    return fps if math.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS


def suffix_of(path: str | Path) -> str:
    """Lower-case extension without the dot ('JPG' and 'jpg' are the same format)."""
    return Path(path).suffix[1:].lower()


def read_image(path: str | Path) -> np.ndarray | None:
    """Decode an image file to BGR, or None when it is unreadable (works for non-ASCII paths too)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return image if image is not None and image.size else None


def redact_url(url: str) -> str:
    """URL without user:password, for console lines and file names."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def is_stream_url(source: str) -> bool:
    """True for anything shaped like scheme://..., whatever the scheme (checked later)."""
    return "://" in source


def is_live_source(source: str) -> bool:
    """Camera index, stream URL or .streams file: sources that have no end."""
    return source.isdigit() or is_stream_url(source) or source.lower().endswith(".streams")


def check_stream_url(url: str, allow_local: bool = False, resolve: Resolver = socket.getaddrinfo) -> str:
    """Refuse URLs that could reach internal services; return the URL unchanged when it is safe.

    Every address the host resolves to must be public unless `allow_local` (--allow-local-streams).
    The check runs on resolved addresses, so '127.1', '2130706433' and '::ffff:127.0.0.1' are caught too.
    """
    try:
        parts = urlsplit(url)
    except ValueError as e:  # e.g. an unclosed IPv6 bracket; the text may hold credentials, so it is not echoed
        raise UserInputError(f"--source: not a valid URL ({e})") from None
    shown = redact_url(url)
    scheme = parts.scheme.lower()
    if scheme not in STREAM_SCHEMES:
        raise UserInputError(f"--source {shown}: unsupported URL scheme '{scheme}' (use one of: "
                             f"{', '.join(sorted(STREAM_SCHEMES))})")
    host = parts.hostname
    if not host:
        raise UserInputError(f"--source {shown}: URL has no host")
    try:
        infos = resolve(host, None)
    except (socket.gaierror, UnicodeError, OSError) as e:
        raise UserInputError(f"--source {shown}: cannot resolve host '{host}' ({e})") from None
    if allow_local:
        return url
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        mapped = getattr(address, "ipv4_mapped", None)
        address = mapped or address
        if not address.is_global or address.is_multicast:
            raise UserInputError(
                f"--source {shown}: host '{host}' resolves to non-public address {address}; "
                f"refused (pass --allow-local-streams to read streams on your own network)")
    return url


T = TypeVar("T")


class ReadAhead(Generic[T]):
    """Runs an iterator in a thread `depth` items ahead of its consumer, in order: a video's next frame decodes
    (OpenCV releases the GIL) while the consumer runs the model on this one.

    What the iterator raises is raised in the consumer at the same point of the sequence. close() stops the
    thread and waits for it, which closes the iterator there (a generator's `finally` releases its capture in the
    thread that used it); the consumer then sees the end.
    """

    _ITEM, _END, _ERROR = range(3)

    def __init__(self, items: Iterator[T], depth: int, name: str = "read-ahead"):
        self.queue: queue.Queue = queue.Queue(max(depth, 1))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, args=(items,), name=name, daemon=True)
        self.thread.start()

    def _produce(self, items: Iterator[T]) -> None:
        end: tuple[int, BaseException | None] = (self._END, None)
        try:
            for item in items:
                if not self._put((self._ITEM, item)):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            end = (self._ERROR, e)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        self._put(end)

    def _put(self, entry: tuple) -> bool:
        """Queue `entry` unless stopped first (a full queue is waited on, with a look at `stop` every 0.1 s)."""
        while not self.stop.is_set():
            try:
                self.queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        while True:
            try:
                kind, value = self.queue.get(timeout=0.1)
                break
            except queue.Empty:
                if self.stop.is_set():
                    raise StopIteration from None
        if kind == self._ITEM:
            return value
        self.close()
        if kind == self._ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop reading ahead; returns once the thread has ended (its iterator closed)."""
        self.stop.set()
        while True:  # free the queue so a pending put sees `stop`
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        if self.thread is not threading.current_thread():
            self.thread.join()


class FileSource:
    """Images and videos from a list of files, in order; videos yield every --vid-stride-th frame.

    An unreadable file is skipped with a warning naming it, unless it is the only file (then it is an error,
    since there would be nothing left to process). Files are decoded `read_ahead` frames ahead of the consumer by
    a ReadAhead thread (0: in the consumer's thread).
    """

    def __init__(self, files: list[Path], vid_stride: int = 1, read_ahead: int = READ_AHEAD):
        self.files = files
        self.vid_stride = vid_stride
        self.read_ahead = read_ahead
        self._readers: set[ReadAhead] = set()

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Frame]:
        if self.read_ahead < 1:
            yield from self._frames()
            return
        reader = ReadAhead(self._frames(), self.read_ahead, name="file reader")
        self._readers.add(reader)
        try:
            yield from reader
        finally:  # also when the consumer stops early: the generator is closed, the thread stopped
            reader.close()
            self._readers.discard(reader)

    def _frames(self) -> Iterator[Frame]:
        for i, file in enumerate(self.files):
            if suffix_of(file) in VID_FORMATS:
                yield from self._video_frames(i, file)
            else:
                yield from self._image_frame(i, file)

    def _unreadable(self, file: Path, what: str) -> None:
        message = f"--source {file}: cannot read {what} (corrupt or unsupported encoding)"
        if len(self.files) == 1:
            raise UserInputError(message)
        LOGGER.warning(f"WARNING: {message}, skipped")

    def _image_frame(self, i: int, file: Path) -> Iterator[Frame]:
        image = read_image(file)
        if image is None:
            self._unreadable(file, "image")
            return
        yield Frame(str(file), image, 0, f"image {i + 1}/{len(self)} {file}:", "image", source_index=i)

    def _video_frames(self, i: int, file: Path) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(file))
        try:
            ok, image = cap.read() if cap.isOpened() else (False, None)
            if not ok or image is None:
                self._unreadable(file, "video")
                return
            fps = valid_fps(cap.get(cv2.CAP_PROP_FPS))
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            count = math.ceil(total / self.vid_stride) if total > 0 else 0
            n = 1
            while ok and image is not None:
                if (n - 1) % self.vid_stride == 0:
                    yield Frame(str(file), image, n, f"video {i + 1}/{len(self)} ({n}/{total}) {file}:", "video",
                                source_index=i, fps=fps / self.vid_stride, frame_count=count)
                ok, image = cap.read()
                n += 1
        finally:
            cap.release()

    def close(self) -> None:
        """Stop the reading threads of iterations still open (their videos are released)."""
        for reader in list(self._readers):
            reader.close()


class _NewestFrameReader:
    """Reads one camera/stream in a daemon thread, keeping only the newest frame.

    A failed read is reported and the capture re-opened up to `retries` times (the counter resets after a
    good frame), then the reader finishes so the consumer can end cleanly.
    """

    def __init__(self, source: str | int, name: str, capture: Capture, factory: CaptureFactory, vid_stride: int,
                 retries: int, retry_delay: float, changed: threading.Condition, stop: threading.Event):
        self.source, self.name, self.factory = source, name, factory
        self.path = str(source) if isinstance(source, int) else redact_url(source)
        self.vid_stride, self.retries, self.retry_delay = vid_stride, retries, retry_delay
        self.changed, self.stop = changed, stop
        self.latest: tuple[np.ndarray, int] | None = None  # (frame, frame number)
        self.sequence = 0  # bumped on every new frame, so the consumer sees what is new
        self.done = False
        self.capture = capture  # the thread owns it once started (and swaps it on reconnect)
        self.thread = threading.Thread(target=self._run, name=f"reader {name}", daemon=True)

    def _run(self) -> None:
        cap, n, failures = self.capture, 0, 0
        try:
            while not self.stop.is_set():
                ok, image = cap.read()
                if ok and image is not None:
                    failures, n = 0, n + 1
                    if (n - 1) % self.vid_stride == 0:
                        with self.changed:
                            self.latest, self.sequence = (image, n), self.sequence + 1
                            self.changed.notify_all()
                    continue
                failures += 1
                if failures > self.retries:
                    LOGGER.warning(f"WARNING: {self.name}: stream ended (no frames after {self.retries} retries)")
                    break
                LOGGER.warning(f"WARNING: {self.name}: frame read failed, reconnecting ({failures}/{self.retries})")
                cap.release()
                if self.stop.wait(self.retry_delay):
                    break
                cap = self.capture = open_capture(self.factory, self.source)
        except Exception as e:  # a broken capture backend must end the stream, not hang the consumer
            LOGGER.warning(f"WARNING: {self.name}: stream reader failed: {e}")
        finally:
            cap.release()
            with self.changed:
                self.done = True
                self.changed.notify_all()


class LiveSource:
    """Webcams and stream URLs, each read by its own newest-frame thread; ends when every stream has ended.

    `capture_factory` builds the capture from a source (cv2.VideoCapture by default); tests inject fakes.
    """

    def __init__(self, sources: list[str | int], vid_stride: int = 1,
                 capture_factory: CaptureFactory = cv2.VideoCapture, retries: int = 3, retry_delay: float = 1.0):
        self.changed = threading.Condition()
        self.stop = threading.Event()
        self.readers: list[_NewestFrameReader] = []
        self.fps: list[float] = []
        for source in sources:
            name = f"camera {source}" if isinstance(source, int) else redact_url(source)
            cap = open_capture(capture_factory, source)
            if not cap.isOpened():
                for opened in [cap] + [r.capture for r in self.readers]:
                    opened.release()
                if isinstance(source, int):
                    raise UserInputError(f"--source {source}: camera {source} could not be opened (no such device?)")
                raise UserInputError(f"--source {name}: stream could not be opened")
            self.fps.append(valid_fps(cap.get(cv2.CAP_PROP_FPS)) / vid_stride)
            self.readers.append(_NewestFrameReader(source, name, cap, capture_factory, vid_stride, retries,
                                                   retry_delay, self.changed, self.stop))
        for reader in self.readers:
            reader.thread.start()

    def __len__(self) -> int:
        return len(self.readers)

    def __iter__(self) -> Iterator[Frame]:
        seen = [0] * len(self.readers)
        try:
            while True:
                with self.changed:
                    while not self._has_new(seen) and not all(r.done for r in self.readers):
                        self.changed.wait(timeout=0.5)
                    fresh = []
                    for i, reader in enumerate(self.readers):
                        if reader.sequence > seen[i] and reader.latest is not None:
                            seen[i] = reader.sequence
                            fresh.append((i, reader, *reader.latest))
                if not fresh:
                    return
                for i, reader, image, n in fresh:
                    yield Frame(reader.path, image, n, f"{i + 1}/{len(self)}: {reader.name}:", "stream",
                                source_index=i, fps=self.fps[i])
        finally:
            self.close()

    def _has_new(self, seen: list[int]) -> bool:
        return any(r.sequence > s for r, s in zip(self.readers, seen))

    def close(self) -> None:
        """Stop the reader threads (they release their captures)."""
        self.stop.set()
        for reader in self.readers:
            if reader.thread.is_alive():
                reader.thread.join(timeout=2.0)


def _files_from_folder(folder: Path) -> list[Path]:
    """Every image/video below `folder` (recursive; extensions matched case-insensitively)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and suffix_of(p) in IMG_FORMATS | VID_FORMATS)


def _files_from_list(list_file: Path) -> list[Path]:
    """Paths listed one per line in a .txt file; relative ones are relative to the .txt's folder."""
    files = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line) if Path(line).is_absolute() else list_file.parent / line
        if not path.exists():
            raise UserInputError(f"--source {list_file}: listed file {line} does not exist")
        files.append(path)
    return files


def _check_file_types(files: list[Path], source: str) -> list[Path]:
    for file in files:
        if suffix_of(file) not in IMG_FORMATS | VID_FORMATS:
            raise UserInputError(f"--source {file}: unsupported file type '{file.suffix}' (images: "
                                 f"{', '.join(sorted(IMG_FORMATS))}; videos: {', '.join(sorted(VID_FORMATS))})")
    if not files:
        raise UserInputError(f"--source {source}: no images or videos found")
    return files


def _live_sources(source: str, allow_local: bool, resolve: Resolver) -> list[str | int] | None:
    """Camera index, URL or .streams file → list of live sources; None when `source` is not live."""
    if source.isdigit():
        return [int(source)]
    if is_stream_url(source):
        return [check_stream_url(source, allow_local, resolve)]
    if source.lower().endswith(".streams"):
        path = Path(source)
        if not path.is_file():
            raise UserInputError(f"--source {source}: file not found")
        lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines()]
        entries = [s for s in lines if s and not s.startswith("#")]
        if not entries:
            raise UserInputError(f"--source {source}: no streams listed")
        return [int(s) if s.isdigit() else check_stream_url(s, allow_local, resolve) for s in entries]
    return None


def open_source(source: str | Path | int, vid_stride: int = 1, allow_local_streams: bool = False,
                capture_factory: CaptureFactory = cv2.VideoCapture, retries: int = 3, retry_delay: float = 1.0,
                resolve: Resolver = socket.getaddrinfo) -> FileSource | LiveSource:
    """Turn a --source value into a loader that yields `Frame`s.

    Order of interpretation: camera index, URL, .streams file, existing file/folder, .txt list, glob pattern.
    An existing path wins over a glob, so file names containing '*' or '[' still work.
    """
    if vid_stride < 1:
        raise UserInputError(f"--vid-stride {vid_stride}: must be 1 or more")
    source = str(source).strip()
    live = _live_sources(source, allow_local_streams, resolve)
    if live is not None:
        return LiveSource(live, vid_stride, capture_factory, retries, retry_delay)
    path = Path(source)
    if path.is_dir():
        files = _files_from_folder(path)
    elif path.is_file() and suffix_of(path) == "txt":
        files = _files_from_list(path)
    elif path.is_file():
        files = [path]
    elif glob.has_magic(source):
        files = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        files = [f for f in files if suffix_of(f) in IMG_FORMATS | VID_FORMATS]
    else:
        raise UserInputError(f"--source {source}: file or folder not found")
    return FileSource(_check_file_types(files, source), vid_stride)
