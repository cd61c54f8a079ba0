"""Label verification and the label cache: every image decoded once, every row checked, problems
reported one line per file, and the result cached next to the labels (an .npz read with
allow_pickle=False, trusted only if its version and the hash of the file list, sizes and mtimes match).
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from deploy.errors import UserInputError
from utils.core.files import atomic_file
from utils.core.log import LOGGER

CACHE_VERSION = "pconv-yolo-labels-1"
MIN_IMAGE_SIDE = 10
EXIF_ORIENTATION = 0x0112
COORD_TOLERANCE = 1e-3  # overshoot of a normalised coordinate that is clipped instead of rejected


def image_to_label_path(im_file: str) -> str:
    """YOLOv5's rule: the last /images/ becomes /labels/ and the extension becomes .txt."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, sep, tail = im_file.rpartition(sa)
    base = f"{head}{sb}{tail}" if sep else im_file
    return str(Path(base).with_suffix(".txt"))


# -------------------------------------------------------------------------------- label verification
@dataclass
class VerificationReport:
    """What the scan found: counts per outcome and one line per problem file (file: reason)."""

    found: int = 0
    missing: int = 0
    empty: int = 0
    corrupt: int = 0
    duplicate: int = 0
    orphan: int = 0
    messages: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.found} labels found, {self.missing} missing, {self.empty} empty, "
                f"{self.corrupt} corrupt (skipped), {self.duplicate} with duplicate rows removed, "
                f"{self.orphan} labels without image")


def verify_sample(args: tuple[str, str, int | None]) -> tuple:
    """Check one image + label pair; runs in a worker process.

    Returns (im_file, labels (n,5) float32 or None if corrupt, (w, h), status, message) with status
    one of found / missing / empty / corrupt, and found-with-duplicates reported in the message.
    """
    im_file, lb_file, nc = args
    try:
        with _pil_open(im_file) as im:
            im.load()  # decodes every byte: truncated files fail here, not mid-training
            w, h = im.size
            if im.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # shown rotated by 90°, as cv2 loads it
                w, h = h, w
    except Exception as e:  # whatever a broken file makes the decoder raise, it is one corrupt sample
        return im_file, None, (0, 0), "corrupt", f"{im_file}: image unreadable ({short_error(e)}), skipped"
    if w < MIN_IMAGE_SIDE or h < MIN_IMAGE_SIDE:
        return im_file, None, (w, h), "corrupt", f"{im_file}: image {w}x{h} smaller than {MIN_IMAGE_SIDE} px, skipped"

    if not os.path.isfile(lb_file):
        return im_file, np.zeros((0, 5), np.float32), (w, h), "missing", ""
    try:
        text = Path(lb_file).read_bytes().decode("utf-8-sig")  # tolerate the BOM Windows editors add
    except UnicodeDecodeError:
        return im_file, None, (w, h), "corrupt", f"{lb_file}: label file is not UTF-8 text, image skipped"
    except OSError as e:
        return im_file, None, (w, h), "corrupt", f"{lb_file}: label unreadable ({short_error(e)}), image skipped"
    rows, problem = _parse_label_text(text, nc)
    if problem:
        return im_file, None, (w, h), "corrupt", f"{lb_file}: {problem}, image skipped"
    if not len(rows):
        return im_file, rows, (w, h), "empty", ""
    _, first = np.unique(rows, axis=0, return_index=True)
    if len(first) < len(rows):
        n_dup = len(rows) - len(first)
        return im_file, rows[np.sort(first)], (w, h), "found", f"{lb_file}: {n_dup} duplicate rows removed"
    return im_file, rows, (w, h), "found", ""


def _pil_open(path: str) -> Image.Image:
    """PIL's own Image.open. Importing ultralytics swaps in an opener that tries to pip-install a HEIF
    plugin whenever a file is not an image — exactly what label verification feeds it."""
    patches = sys.modules.get("ultralytics.utils.patches")
    return getattr(patches, "_image_open", Image.open)(path)


def _parse_label_text(text: str, nc: int | None) -> tuple[np.ndarray, str]:
    """Rows 'cls cx cy w h' (or 'cls x1 y1 x2 y2 ...' polygons → box) → (n,5) float32, or a problem."""
    boxes = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            return np.zeros((0, 5), np.float32), f"line {lineno}: non-numeric value"
        n = len(values)
        if n != 5 and (n < 7 or n % 2 == 0):
            return np.zeros((0, 5), np.float32), f"line {lineno}: {n} columns, expected 5 (cls cx cy w h) or a polygon"
        if not all(math.isfinite(v) for v in values):
            return np.zeros((0, 5), np.float32), f"line {lineno}: NaN or infinite value"
        cls = values[0]
        if cls != int(cls):
            return np.zeros((0, 5), np.float32), f"line {lineno}: class id {parts[0]} is not an integer"
        if nc is None and cls < 0:
            return np.zeros((0, 5), np.float32), f"line {lineno}: class id {parts[0]} is negative"
        if nc is not None and not 0 <= cls < nc:
            return np.zeros((0, 5), np.float32), f"line {lineno}: class id {parts[0]} outside [0, {nc - 1}]"
        coords = np.array(values[1:], dtype=np.float64)
        if (coords < -COORD_TOLERANCE).any() or (coords > 1 + COORD_TOLERANCE).any():
            return np.zeros((0, 5), np.float32), f"line {lineno}: coordinates not normalised to [0, 1]"
        if n == 5:
            cx, cy, bw, bh = coords
            x1, y1, x2, y2 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
        else:
            xs, ys = coords[0::2], coords[1::2]
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
        x1, x2 = np.clip((x1, x2), 0, 1)
        y1, y2 = np.clip((y1, y2), 0, 1)
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            return np.zeros((0, 5), np.float32), f"line {lineno}: zero-area box"
        boxes.append((cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1))
    return np.array(boxes, dtype=np.float32).reshape(-1, 5), ""


def short_error(e: Exception) -> str:
    """The first line of an error message, for one-line reports."""
    return str(e).splitlines()[0][:120] if str(e) else type(e).__name__


def files_hash(files: list[str]) -> str:
    """Hash of paths, sizes and mtimes: any added, removed, or edited file invalidates the cache."""
    h = hashlib.sha256()
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}\0missing\n".encode())
    return h.hexdigest()


def cache_path_for(label_files: list[str]) -> Path:
    """labels/train/a.txt → labels/train.pconv.cache: beside the label folder like YOLOv5's train.cache,
    but a different name, so neither project overwrites the other's cache."""
    return Path(label_files[0]).parent.with_suffix(".pconv.cache")


def load_label_cache(path: Path, expected_hash: str) -> dict | None:
    """Return the cache if it is ours, intact and current; anything else means rebuild (never trusted)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["version"]) != CACHE_VERSION or str(z["hash"]) != expected_hash:
                return None
            data = {k: z[k] for k in ("im_files", "labels", "counts", "shapes", "status", "messages", "report")}
        n = len(data["im_files"])
        sizes_agree = all(len(data[k]) == n for k in ("counts", "shapes", "status", "messages"))
        if not sizes_agree or data["counts"].sum() != len(data["labels"]) or data["labels"].shape[1:] != (5,):
            return None
        return data
    except Exception:  # a foreign or corrupt file of any kind only means "rebuild"
        return None


def save_label_cache(path: Path, hash_: str, data: dict) -> None:
    """Write whole or not at all; an unwritable label folder only costs a rescan next time."""
    try:
        with atomic_file(path) as f:  # a file object, so numpy does not append .npz
            np.savez(f, version=np.array(CACHE_VERSION), hash=np.array(hash_), **data)
    except OSError as e:
        LOGGER.warning(f"WARNING: label cache not written, {path.parent} is not writable ({short_error(e)})")


def scan_labels(im_files: list[str], label_files: list[str], nc: int | None, prefix: str = "",
                workers: int = 2) -> tuple[list[str], list[np.ndarray], np.ndarray, VerificationReport]:
    """Verify every sample (cache first), log the report, and return only the usable samples.

    nc None accepts any non-negative class id: --single-cls, where yolov5 maps every class to 0.
    """
    cache_file = cache_path_for(label_files)
    orphans = _orphan_labels(label_files)
    h = files_hash(im_files + label_files + orphans) + f"-nc{nc}"
    cached = load_label_cache(cache_file, h)
    if cached is None:
        cached = _scan(im_files, label_files, nc, prefix, workers)
        if cache_file.parent.is_dir():  # no labels folder at all is said below, once, in its own words
            save_label_cache(cache_file, h, cached)
    else:
        LOGGER.info(f"{prefix}labels from cache {cache_file}")

    status = cached["status"].tolist()
    messages = cached["messages"].tolist()
    report = VerificationReport(*(int(x) for x in cached["report"]))
    report.orphan = len(orphans)
    report.messages = [m for m in messages if m] + [f"{f}: label without image, ignored" for f in orphans]
    splits = np.cumsum(cached["counts"])[:-1]
    all_labels = np.split(cached["labels"].astype(np.float32), splits)
    keep = [i for i, s in enumerate(status) if s != "corrupt"]
    LOGGER.info(f"{prefix}{report.summary()}")
    for m in report.messages:
        LOGGER.warning(f"{prefix}WARNING: {m}")
    absent = _absent_label_folders(im_files, label_files)
    for folder, (n, images) in absent.items():  # yolov5 goes on with these images as background; so do we
        LOGGER.warning(f"{prefix}WARNING: labels folder {folder} does not exist: the {n} images in {images} are "
                       f"background (labels go in a 'labels' folder beside 'images', see docs/data.md)")
    if keep and not absent and not any(len(all_labels[i]) for i in keep):
        LOGGER.warning(f"{prefix}WARNING: no labels found next to {Path(im_files[0]).parent}: every image is "
                       f"background (labels go in a 'labels' folder beside 'images', see docs/data.md)")
    if not keep:
        raise UserInputError(f"{prefix}{Path(im_files[0]).parent}: no valid images among {len(im_files)} "
                             f"({report.corrupt} corrupt); see the warnings above")
    files = [str(cached["im_files"][i]) for i in keep]
    return files, [all_labels[i] for i in keep], cached["shapes"][keep].astype(np.int64), report


def _scan(im_files: list[str], label_files: list[str], nc: int | None, prefix: str, workers: int) -> dict:
    """Run verify_sample over all pairs in worker processes, with a progress bar."""
    args = [(f, lb, nc) for f, lb in zip(im_files, label_files)]
    desc = f"{prefix}Scanning {Path(label_files[0]).parent}"
    if workers > 1 and len(args) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(args))) as ex:
            results = list(tqdm(ex.map(verify_sample, args, chunksize=8), total=len(args), desc=desc))
    else:
        results = [verify_sample(a) for a in tqdm(args, desc=desc)]
    labels = [r[1] if r[1] is not None else np.zeros((0, 5), np.float32) for r in results]
    status = [r[3] for r in results]
    report = [sum(s == k for s in status) for k in ("found", "missing", "empty", "corrupt")]
    report.append(sum("duplicate rows removed" in r[4] for r in results))
    return dict(
        im_files=np.array(im_files),
        labels=np.concatenate(labels, 0) if labels else np.zeros((0, 5), np.float32),
        counts=np.array([len(lb) for lb in labels], dtype=np.int64),
        shapes=np.array([r[2] for r in results], dtype=np.int64).reshape(-1, 2),
        status=np.array(status),
        messages=np.array([r[4] for r in results]),
        report=np.array(report, dtype=np.int64),
    )


def _absent_label_folders(im_files: list[str], label_files: list[str]) -> dict[Path, tuple[int, Path]]:
    """Label folders that do not exist → (how many images point there, the images' folder)."""
    exists: dict[Path, bool] = {}
    absent: dict[Path, tuple[int, Path]] = {}
    for im, lb in zip(im_files, label_files):
        folder = Path(lb).parent
        if folder not in exists:
            exists[folder] = folder.is_dir()
        if not exists[folder]:
            absent[folder] = (absent.get(folder, (0,))[0] + 1, Path(im).parent)
    return absent


def _orphan_labels(label_files: list[str]) -> list[str]:
    """Label files in the scanned label folders that no image points at (often a renamed image)."""
    expected = set(label_files)
    folders = {Path(f).parent for f in label_files}
    return sorted(str(p) for d in folders if d.is_dir() for p in d.glob("*.txt") if str(p) not in expected)


# ------------------------------------------------------------------------------------------ dataset
