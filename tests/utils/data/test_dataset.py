"""Data YAML checks, label verification on real broken files, the label cache and the dataloader."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist
import ultralytics.utils.patches  # noqa: F401  # the worst case: it replaces PIL's Image.open (see _pil_open)
from PIL import Image

from deploy.errors import UserInputError
from utils.core.log import LOGGER
from utils.data.dataset import YOLODataset, check_dataset, create_dataloader, set_loader_epoch
from utils.data.labels import cache_path_for, image_to_label_path, load_label_cache

GOOD_ROW = "1 0.5 0.5 0.5 0.5\n"
RECT_BGR = (40, 200, 60)


def write_image(path: Path, w: int = 64, h: int = 48) -> np.ndarray:
    """A grey image with a green rectangle over its centre half (the GOOD_ROW box)."""
    im = np.full((h, w, 3), 128, np.uint8)
    im[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = RECT_BGR
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), im)
    return im


def write_label(root: Path, stem: str, content: str | bytes) -> Path:
    p = root / "labels" / "train" / f"{stem}.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def build_bad_tree(root: Path) -> dict[str, str]:
    """One folder holding every bad-input kind beside good samples; returns stem → expected outcome."""
    img_dir = root / "images" / "train"
    outcome = {}

    def good(stem: str, label: str | bytes | None = GOOD_ROW, kept: str = "kept") -> None:
        write_image(img_dir / f"{stem}.jpg")
        if label is not None:
            write_label(root, stem, label)
        outcome[stem] = kept

    good("good_a")
    good("good_b", "0 0.25 0.25 0.1 0.1\n2 0.75 0.75 0.2 0.2\n")
    good("missing_label", None)
    good("empty_label", "")
    good("duplicate_rows", GOOD_ROW + GOOD_ROW + "0 0.2 0.2 0.1 0.1\n")
    good("polygon_row", "0 0.1 0.1 0.5 0.1 0.5 0.6\n")
    good("tiny_overshoot", "0 0.5 0.5 1.0004 0.2\n")
    good("utf8_bom_crlf", "\ufeff0 0.5 0.5 0.2 0.2\r\n1 0.2 0.2 0.1 0.1\r\n")
    bad_labels = {
        "four_columns": ("0 0.5 0.5 0.2\n", "4 columns"),
        "six_columns": ("0 0.5 0.5 0.2 0.2 0.9\n", "6 columns"),
        "class_too_big": ("3 0.5 0.5 0.2 0.2\n", "class id 3 outside [0, 2]"),
        "class_negative": ("-1 0.5 0.5 0.2 0.2\n", "class id -1 outside"),
        "class_fraction": ("1.5 0.5 0.5 0.2 0.2\n", "class id 1.5 is not an integer"),
        "nan_coord": ("0 nan 0.5 0.2 0.2\n", "NaN or infinite"),
        "inf_coord": ("0 0.5 inf 0.2 0.2\n", "NaN or infinite"),
        "negative_coord": ("0 -0.2 0.5 0.2 0.2\n", "not normalised"),
        "coord_above_one": ("0 0.5 1.5 0.2 0.2\n", "not normalised"),
        "zero_area": ("0 0.5 0.5 0 0.2\n", "zero-area box"),
        "non_utf8": (b"0 0.5 0.5 0.2 0.2 \xff\xfe\n", "not UTF-8"),
    }
    for stem, (label, reason) in bad_labels.items():
        good(stem, label, kept=reason)

    # images that cannot be used
    (img_dir / "zero_byte.jpg").write_bytes(b"")
    (img_dir / "text_as_jpg.jpg").write_text("this is not an image\n")
    full = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))[1]
    (img_dir / "truncated.jpg").write_bytes(full.tobytes()[: len(full) // 2])
    write_image(img_dir / "too_small.jpg", 8, 8)
    for stem, reason in (("zero_byte", "image unreadable"), ("text_as_jpg", "image unreadable"),
                         ("truncated", "image unreadable"), ("too_small", "smaller than 10 px")):
        write_label(root, stem, GOOD_ROW)
        outcome[stem] = reason

    # unusual but valid image encodings
    base = write_image(root / "scratch.png")
    assert cv2.imwrite(str(img_dir / "gray.png"), cv2.cvtColor(base, cv2.COLOR_BGR2GRAY))
    assert cv2.imwrite(str(img_dir / "rgba.png"), cv2.cvtColor(base, cv2.COLOR_BGR2BGRA))
    assert cv2.imwrite(str(img_dir / "sixteen_bit.png"), base.astype(np.uint16) * 257)
    for stem in ("gray", "rgba", "sixteen_bit"):
        write_label(root, stem, GOOD_ROW)
        outcome[stem] = "kept"

    write_label(root, "orphan", GOOD_ROW)  # a label whose image is gone
    return outcome


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    outcome = build_bad_tree(root)
    ds = YOLODataset(str(root / "images" / "train"), imgsz=64, batch_size=4, nc=3, workers=2)
    return root, outcome, ds


def test_every_good_sample_is_kept(bad_tree):
    root, outcome, ds = bad_tree
    kept = sorted(Path(f).stem for f in ds.im_files)
    assert kept == sorted(s for s, o in outcome.items() if o == "kept")
    assert len(ds) == len(ds.labels) == len(ds.shapes) == len(ds.label_files)
    assert ds.label_files[0] == str(root / "labels" / "train" / f"{Path(ds.im_files[0]).stem}.txt")


@pytest.mark.parametrize("stem,reason", [
    ("truncated", "image unreadable"), ("zero_byte", "cannot identify image file"),
    ("text_as_jpg", "cannot identify image file"),
    ("too_small", "smaller than 10 px"), ("four_columns", "4 columns"), ("six_columns", "6 columns"),
    ("class_too_big", "class id 3 outside [0, 2]"), ("class_negative", "class id -1 outside"),
    ("class_fraction", "class id 1.5 is not an integer"), ("nan_coord", "NaN or infinite"),
    ("inf_coord", "NaN or infinite"), ("negative_coord", "not normalised"),
    ("coord_above_one", "not normalised"), ("zero_area", "zero-area box"), ("non_utf8", "not UTF-8"),
    ("duplicate_rows", "1 duplicate rows removed"), ("orphan", "label without image"),
])
def test_report_names_bad_file_and_reason(bad_tree, stem, reason):
    _, _, ds = bad_tree
    lines = [m for m in ds.report.messages if f"{stem}." in m]
    assert len(lines) == 1, ds.report.messages
    assert reason in lines[0]


def test_report_counts(bad_tree):
    _, outcome, ds = bad_tree
    r = ds.report
    assert (r.missing, r.empty, r.duplicate, r.orphan) == (1, 1, 1, 1)
    assert r.corrupt == sum(o != "kept" for o in outcome.values()) == 15
    assert r.found == len(ds) - 2
    assert "15 corrupt" in r.summary()


def labels_of(ds: YOLODataset, stem: str) -> np.ndarray:
    return ds.labels[[Path(f).stem for f in ds.im_files].index(stem)]


def test_label_rows_cleaned(bad_tree):
    _, _, ds = bad_tree
    np.testing.assert_allclose(labels_of(ds, "duplicate_rows"), [[1, .5, .5, .5, .5], [0, .2, .2, .1, .1]])
    np.testing.assert_allclose(labels_of(ds, "polygon_row"), [[0, 0.3, 0.35, 0.4, 0.5]], atol=1e-6)
    clipped = labels_of(ds, "tiny_overshoot")
    assert clipped[0, 3] <= 1.0 and clipped[0, 1] - clipped[0, 3] / 2 >= 0
    assert labels_of(ds, "utf8_bom_crlf")[:, 0].tolist() == [0, 1]
    assert labels_of(ds, "missing_label").shape == (0, 5) and labels_of(ds, "empty_label").shape == (0, 5)
    assert all(lb.dtype == np.float32 and lb.shape[1] == 5 for lb in ds.labels)


@pytest.mark.parametrize("stem", ["gray", "rgba", "sixteen_bit"])
def test_unusual_encodings_load_as_8bit_rgb(bad_tree, stem):
    _, _, ds = bad_tree
    img, targets, _, _ = ds[[Path(f).stem for f in ds.im_files].index(stem)]
    assert img.dtype == torch.uint8 and img.shape == (3, 64, 64)
    cx, cy = 32, 32  # box centre after letterboxing 64x48 → 64x64
    centre = img[:, cy, cx].tolist()
    if stem == "gray":
        assert max(centre) - min(centre) <= 1  # same value in all three channels
    else:
        assert centre == pytest.approx(list(RECT_BGR[::-1]), abs=3)  # RGB order, 8-bit range
    assert targets.shape == (1, 6)


def test_exif_rotated_image(tmp_path):
    """Stored 64x48 with orientation 6 → displayed 48x64: sizes and pixels follow the display."""
    img_dir = tmp_path / "images" / "train"
    img_dir.mkdir(parents=True)
    stored = np.full((48, 64, 3), 128, np.uint8)
    stored[0:12, 0:16] = RECT_BGR  # top-left in storage → top-right once rotated 90° clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored[:, :, ::-1]).save(img_dir / "rot.jpg", exif=exif, quality=100)
    write_label(tmp_path, "rot", "0 0.875 0.166667 0.25 0.333333\n")  # (36..48, 0..16) in 48x64
    ds = YOLODataset(str(img_dir), imgsz=64, nc=1, workers=1)
    assert ds.shapes.tolist() == [[48, 64]]
    img, targets, _, shapes = ds[0]
    assert shapes[0] == (64, 48)
    padw = shapes[1][1][0]
    x = int(padw + 0.875 * 48)
    assert img[:, 8, x].tolist() == pytest.approx(list(RECT_BGR[::-1]), abs=6)
    assert img[:, 40, x].tolist() == pytest.approx([128] * 3, abs=6)


def test_zero_valid_images_is_fatal(tmp_path):
    img_dir = tmp_path / "images" / "train"
    img_dir.mkdir(parents=True)
    (img_dir / "a.jpg").write_bytes(b"")
    (img_dir / "b.jpg").write_text("nope")
    with pytest.raises(UserInputError, match="no valid images among 2"):
        YOLODataset(str(img_dir), imgsz=64, nc=1, workers=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserInputError, match="no images found"):
        YOLODataset(str(empty), imgsz=64, nc=1, workers=1)


# ------------------------------------------------------------------------------------------- data YAML
def make_yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "data.yaml"
    p.write_text(text)
    return p


@pytest.fixture
def small_tree(tmp_path):
    for split in ("train", "val"):
        for i in range(3):
            write_image(tmp_path / "ds" / "images" / split / f"{split}{i}.jpg")
            write_label(tmp_path / "ds", f"{split}{i}", GOOD_ROW) if split == "train" else None
    vlab = tmp_path / "ds" / "labels" / "val"
    vlab.mkdir(parents=True)
    for i in range(3):
        (vlab / f"val{i}.txt").write_text(GOOD_ROW)
    return tmp_path


def test_check_dataset_resolves_relative_to_yaml(small_tree):
    (small_tree / "ds" / "val.txt").write_text("./images/val/val0.jpg\nimages/val/val1.jpg\n")
    y = make_yaml(small_tree, "path: ds\ntrain: images/train\nval: [val.txt]\nnames: {0: cat, 1: dog}\n")
    d = check_dataset(y)
    root = (small_tree / "ds").resolve()
    assert d["train"] == [str(root / "images" / "train")]
    assert d["val"] == [str(root / "val.txt")] and d["test"] is None
    assert d["names"] == ["cat", "dog"] and d["nc"] == 2
    assert d["yaml_file"] == str(y.resolve()) and d["path"] == str(root)
    _, ds = create_dataloader(d["val"], 64, 2, 32, workers=0, nc=d["nc"])
    assert [Path(f).name for f in ds.im_files] == ["val0.jpg", "val1.jpg"]


@pytest.mark.parametrize("text,message", [
    ("path: ds\nval: images/val\nnames: [a, b]\n", "missing key(s) train"),
    ("path: ds\ntrain: images/train\nval: images/val\n", "missing key(s) names"),
    ("path: ds\ntrain: images/nope\nval: images/val\nnames: [a, b]\n", "train path 'images/nope' does not exist"),
    ("path: elsewhere\ntrain: images/train\nval: images/val\nnames: [a, b]\n", "does not exist"),
    ("path: ds\ntrain: images/train\nval: images/val\nnc: 3\nnames: [a, b]\n", "nc is 3 but names lists 2"),
    ("path: ds\ntrain: images/train\nval: images/val\nnames: {0: a, 2: b}\n", "without gaps"),
    ("- just\n- a list\n", "expected a mapping"),
    ("train: [unclosed\n", "not valid YAML"),
])
def test_check_dataset_errors_name_the_yaml(small_tree, text, message):
    y = make_yaml(small_tree, text)
    with pytest.raises(UserInputError) as e:
        check_dataset(y)
    assert str(y) in str(e.value) and message in str(e.value)


def test_check_dataset_missing_file(tmp_path):
    with pytest.raises(UserInputError, match="nothere.yaml: data YAML not found"):
        check_dataset(tmp_path / "nothere.yaml")


def test_image_to_label_path_uses_last_images_folder():
    p = str(Path("/d/images/set/images/a.b.JPG"))
    assert image_to_label_path(p) == str(Path("/d/images/set/labels/a.b.txt"))


# ----------------------------------------------------------------------------------------------- cache
def test_cache_reused_invalidated_and_never_trusted(small_tree, caplog):
    img_dir = str(small_tree / "ds" / "images" / "train")
    label = small_tree / "ds" / "labels" / "train" / "train0.txt"
    YOLODataset(img_dir, imgsz=64, nc=2, workers=1)
    cache = cache_path_for([str(label)])
    assert cache.name == "train.pconv.cache" and cache.is_file()

    LOGGER.propagate = True
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER.name):
            YOLODataset(img_dir, imgsz=64, nc=2, workers=1)
        assert "labels from cache" in caplog.text

        label.write_text("0 0.5 0.5 0.25 0.25\n1 0.1 0.1 0.1 0.1\n")  # edited → size/mtime change
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=LOGGER.name):
            ds = YOLODataset(img_dir, imgsz=64, nc=2, workers=1)
        assert "labels from cache" not in caplog.text
        assert len(ds.labels[0]) == 2

        for foreign in (b"garbage bytes", None):
            if foreign is None:  # a pickled object array must be refused, not unpickled
                with open(cache, "wb") as f:
                    np.save(f, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
            else:
                cache.write_bytes(foreign)
            assert load_label_cache(cache, "any") is None
            ds = YOLODataset(img_dir, imgsz=64, nc=2, workers=1)
            assert len(ds) == 3
            assert load_label_cache(cache, "x") is None and np.load(cache, allow_pickle=False)["version"]
    finally:
        LOGGER.propagate = False


def test_unwritable_cache_location_warns_and_continues(small_tree, caplog):
    cache = small_tree / "ds" / "labels" / "train.pconv.cache"
    cache.mkdir()  # a folder where the file should go: writing fails even for root
    LOGGER.propagate = True
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER.name):
            ds = YOLODataset(str(small_tree / "ds" / "images" / "train"), imgsz=64, nc=2, workers=1)
    finally:
        LOGGER.propagate = False
    assert len(ds) == 3
    assert "label cache not written" in caplog.text
    assert not list(cache.parent.glob("*.tmp"))


# ------------------------------------------------------------------------------------------ dataloader
def test_batch_contract_and_rect_shapes(tmp_path):
    sizes = [(64, 32), (64, 48), (40, 64), (64, 64), (30, 64)]  # (w, h)
    for i, (w, h) in enumerate(sizes):
        write_image(tmp_path / "images" / "val" / f"im{i}.jpg", w, h)
        lbl = tmp_path / "labels" / "val" / f"im{i}.txt"
        lbl.parent.mkdir(parents=True, exist_ok=True)
        lbl.write_text(GOOD_ROW)
    loader, ds = create_dataloader(str(tmp_path / "images" / "val"), 64, 2, 32, rect=True, pad=0.5,
                                   workers=0, nc=2)
    ar = ds.shapes[:, 1] / ds.shapes[:, 0]
    assert (np.diff(ar) >= 0).all()  # sorted by aspect ratio
    seen = 0
    for imgs, targets, paths, shapes in loader:
        assert imgs.dtype == torch.uint8 and imgs.shape[1] == 3 and imgs.shape[2] % 32 == 0 == imgs.shape[3] % 32
        assert targets.dtype == torch.float32 and targets.shape[1] == 6
        assert targets[:, 0].tolist() == list(range(len(paths)))  # one box per image
        for j, ((h0, w0), ((ry, rx), (padw, padh))) in enumerate(shapes):
            w, h = ds.shapes[seen + j]
            assert (h0, w0) == (h, w)
            # the box, mapped back with shapes, lands on the original centre half
            cx, cy, bw, bh = targets[j, 2:].tolist()
            x1 = (cx - bw / 2) * imgs.shape[3]
            y1 = (cy - bh / 2) * imgs.shape[2]
            assert (x1 - padw) / rx == pytest.approx(w0 / 4, abs=1)
            assert (y1 - padh) / ry == pytest.approx(h0 / 4, abs=1)
        seen += len(paths)
    assert seen == 5


def test_same_seed_same_first_batch_with_workers(small_tree):
    hyp = dict(mosaic=1.0, mixup=0.5, degrees=10, translate=0.1, scale=0.5, shear=2, hsv_h=0.015,
               hsv_s=0.7, hsv_v=0.4, fliplr=0.5, flipud=0.5)
    src = str(small_tree / "ds" / "images" / "train")

    def first(seed: int):
        loader, _ = create_dataloader(src, 64, 3, 32, hyp=hyp, augment=True, workers=2, shuffle=True,
                                      seed=seed, nc=2)
        return next(iter(loader))

    a, b, c = first(3), first(3), first(4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (3, 3, 64, 64) and a[3] == [None] * 3  # mosaic samples carry no shapes


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_loads_the_same_however_many_epochs_came_before(small_tree, workers):
    """Order and augmentation of epoch e are functions of (seed, e): a loader that starts at epoch 1, as a
    resumed run does, gives the batches an unbroken one gave in its epoch 1 (and epoch 1 differs from 0)."""
    hyp = dict(mosaic=1.0, mixup=0.5, translate=0.1, scale=0.5, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, fliplr=0.5)
    src = str(small_tree / "ds" / "images" / "train")

    def epochs(*numbers: int) -> list[list]:
        loader, _ = create_dataloader(src, 64, 1, 32, hyp=hyp, augment=True, workers=workers, shuffle=True, seed=3,
                                      nc=2)
        out = []
        for epoch in numbers:
            set_loader_epoch(loader, epoch)
            out.append([(imgs, targets, paths) for imgs, targets, paths, _ in loader])
        return out

    unbroken, resumed = epochs(0, 1), epochs(1)[0]
    assert [b[2] for b in resumed] == [b[2] for b in unbroken[1]]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(resumed, unbroken[1]))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(unbroken[0], unbroken[1]))


def test_mosaic_partners_come_from_the_whole_set_from_an_epochs_start(tmp_path, monkeypatch):
    """Partners drawn only from images decoded lately would repeat a handful of pictures at each epoch's start."""
    for i in range(40):
        write_image(tmp_path / "images" / f"im{i}.jpg", 32, 32)
        write_label(tmp_path, f"im{i}", GOOD_ROW)
    ds = YOLODataset(str(tmp_path / "images"), 32, batch_size=16, augment=True, hyp=dict(mosaic=1.0), nc=2, seed=0)
    loaded: list[int] = []
    original = ds.load_image
    monkeypatch.setattr(ds, "load_image", lambda i: (loaded.append(i), original(i))[1])
    ds.set_epoch(0)
    fresh = 0
    for index in range(12):  # each mosaic loads its own image, then its three partners
        start = len(loaded)
        ds[index]
        seen_before = set(loaded[:start]) | {index}
        fresh += sum(i not in seen_before for i in loaded[start + 1:start + 4])
    assert loaded[::4] == list(range(12))
    assert fresh >= 15  # of 36 partners; drawn from the images already loaded this epoch, at most the first 3


def test_negative_workers_is_a_clear_error(small_tree):
    with pytest.raises(UserInputError, match=r"^--workers -1: must be 0 \(load in the main process\) or more$"):
        create_dataloader(str(small_tree / "ds" / "images" / "train"), 64, 2, 32, workers=-1, nc=2)


def test_distributed_sampler_splits_the_data(small_tree, tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loader, ds = create_dataloader(str(small_tree / "ds" / "images" / "train"), 64, 2, 32, rank=0,
                                       workers=0, shuffle=True, seed=1, nc=2)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        loader.sampler.set_epoch(0)
        paths = [p for batch in loader for p in batch[2]]
        assert sorted(paths) == sorted(ds.im_files)
    finally:
        dist.destroy_process_group()


def test_ram_and_disk_caches_give_same_pixels(small_tree):
    src = str(small_tree / "ds" / "images" / "train")
    _, plain = create_dataloader(src, 64, 2, 32, workers=0, nc=2)
    _, cached = create_dataloader(src, 64, 2, 32, workers=0, nc=2, cache="ram")
    assert all(im is not None for im in cached.ims)
    assert torch.equal(plain[1][0], cached[1][0])
    _, on_disk = create_dataloader(src, 64, 2, 32, workers=0, nc=2, cache="disk")
    npy = Path(on_disk.npy_files[1])
    assert npy.is_file() and np.load(npy).shape == (48, 64, 3)
    assert torch.equal(plain[1][0], on_disk[1][0])
    with pytest.raises(UserInputError, match="--cache"):
        create_dataloader(src, 64, 2, 32, workers=0, nc=2, cache="gpu")


def test_disk_cache_interrupted_mid_write_leaves_no_npy_to_trust(small_tree, monkeypatch):
    """A --cache disk run stopped while writing a .npy must not leave a partial file the next run loads."""
    src = str(small_tree / "ds" / "images" / "train")
    real_save = np.save

    def save_half_then_fail(f, arr, **kw):
        with open(f, "wb") if isinstance(f, (str, Path)) else contextlib.nullcontext(f) as out:
            out.write(b"\x93NUMPY half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "save", save_half_then_fail)
    _, ds = create_dataloader(src, 64, 2, 32, workers=0, nc=2, cache="disk")
    assert not any(Path(f).exists() for f in ds.npy_files)
    assert not list(Path(ds.npy_files[0]).parent.glob("*.tmp"))
    monkeypatch.setattr(np, "save", real_save)
    _, plain = create_dataloader(src, 64, 2, 32, workers=0, nc=2)
    _, again = create_dataloader(src, 64, 2, 32, workers=0, nc=2, cache="disk")
    assert torch.equal(plain[1][0], again[1][0]) and all(Path(f).is_file() for f in again.npy_files)


def test_single_cls_collapses_classes(small_tree):
    _, ds = create_dataloader(str(small_tree / "ds" / "images" / "train"), 64, 2, 32, workers=0, nc=2,
                              single_cls=True)
    assert all((lb[:, 0] == 0).all() for lb in ds.labels)
