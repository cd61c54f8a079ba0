"""Augmentations: boxes must follow their objects through mosaic, affine, perspective and flips."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from utils.core.boxes import xywhn_to_xyxy
from utils.data import augment
from utils.data.dataset import YOLODataset

# one distinct, saturated colour per class (BGR), far from the grey pad and the black background
CLASS_BGR = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255)]
RECTS = [(10, 8, 50, 30), (60, 40, 90, 60), (5, 30, 40, 70), (50, 5, 80, 50)]  # x1, y1, x2, y2 in 96x80


def colour_blobs(img_rgb: np.ndarray, bgr: tuple[int, int, int]) -> list[np.ndarray]:
    """Boxes (x1, y1, x2, y2) of the separate patches of that colour in an RGB image."""
    diff = np.abs(img_rgb.astype(int) - np.array(bgr[::-1])).max(2)
    n, _, stats, _ = cv2.connectedComponentsWithStats((diff < 60).astype(np.uint8), connectivity=8)
    return [np.array([x, y, x + w, y + h], float) for x, y, w, h, area in stats[1:] if area > 4]


def touches_border(box: np.ndarray, size: int = 128) -> bool:
    return bool(box[0] <= 0.5 or box[1] <= 0.5 or box[2] >= size - 0.5 or box[3] >= size - 0.5)


def on_object(box: np.ndarray, blob: np.ndarray, tol: float = 3.0) -> bool:
    """A label fits its patch tightly; if the object was cut by the image edge after rotation, the
    label (from the rotated corners, as in YOLOv5) may be looser than what is left, but must contain it."""
    if np.abs(box - blob).max() < tol:
        return True
    contains = (box[:2] <= blob[:2] + tol).all() and (box[2:] >= blob[2:] - tol).all()
    return contains and touches_border(box) and touches_border(blob)


@pytest.fixture(scope="module")
def colour_dataset(tmp_path_factory):
    """4 PNGs (lossless colours), each with one solid rectangle of its class colour."""
    root = tmp_path_factory.mktemp("colours")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for c, ((x1, y1, x2, y2), bgr) in enumerate(zip(RECTS, CLASS_BGR)):
        im = np.zeros((80, 96, 3), np.uint8)
        im[y1:y2, x1:x2] = bgr
        cv2.imwrite(str(root / "images" / f"c{c}.png"), im)
        row = f"{c} {(x1 + x2) / 2 / 96} {(y1 + y2) / 2 / 80} {(x2 - x1) / 96} {(y2 - y1) / 80}\n"
        (root / "labels" / f"c{c}.txt").write_text(row)
    return root


def test_boxes_follow_objects_through_mosaic_affine_flips(colour_dataset):
    hyp = dict(mosaic=1.0, mixup=0.0, degrees=15, translate=0.1, scale=0.5, shear=5, perspective=0.0005,
               hsv_h=0, hsv_s=0, hsv_v=0, fliplr=0.5, flipud=0.5)
    ds = YOLODataset(str(colour_dataset / "images"), imgsz=128, augment=True, hyp=hyp, nc=4, seed=7, workers=1)
    checked = 0
    for _ in range(6):
        for i in range(len(ds)):
            img, targets, _, _ = ds[i]
            assert img.shape == (3, 128, 128)
            rgb = img.permute(1, 2, 0).numpy()
            for c, bgr in enumerate(CLASS_BGR):
                rows = targets[targets[:, 1] == c, 2:].numpy() * 128
                boxes = np.stack((rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2,
                                  rows[:, 0] + rows[:, 2] / 2, rows[:, 1] + rows[:, 3] / 2), 1)
                blobs = colour_blobs(rgb, bgr)
                for box in boxes:
                    assert any(on_object(box, blob) for blob in blobs), f"class {c}: {box} not on {blobs}"
                    checked += 1
                for blob in blobs:  # an unlabelled patch is only the sliver of an object cropped away
                    if not any(on_object(box, blob) for box in boxes):
                        assert touches_border(blob)
    assert checked > 20


def test_boxes_tight_through_mosaic_scale_translate_flips(colour_dataset):
    """Without rotation a box stays exactly on its (possibly cropped) object."""
    hyp = dict(mosaic=1.0, translate=0.2, scale=0.5, hsv_h=0, hsv_s=0, hsv_v=0, fliplr=0.5, flipud=0.5)
    ds = YOLODataset(str(colour_dataset / "images"), imgsz=128, augment=True, hyp=hyp, nc=4, seed=3, workers=1)
    for _ in range(4):
        for i in range(len(ds)):
            img, targets, _, _ = ds[i]
            rgb = img.permute(1, 2, 0).numpy()
            for cls, cx, cy, w, h in targets[:, 1:].numpy() * [1, 128, 128, 128, 128]:
                box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                blobs = colour_blobs(rgb, CLASS_BGR[int(cls)])
                assert min(np.abs(box - b).max() for b in blobs) < 2.0


def test_flips_move_label_with_pixels(colour_dataset):
    im = cv2.imread(str(colour_dataset / "images" / "c0.png"))
    labels = np.array([[0, 30 / 96, 19 / 80, 40 / 96, 22 / 80]], np.float32)
    for flip in (augment.flip_lr, augment.flip_ud):
        out, lb = flip(im, labels)
        (found,) = colour_blobs(out[:, :, ::-1], CLASS_BGR[0])
        box = xywhn_to_xyxy(lb[:, 1:], 96, 80)[0]
        np.testing.assert_allclose(box, found, atol=0.5)
        back, lb2 = flip(out, lb)
        assert np.array_equal(back, im) and np.allclose(lb2, labels)


def test_letterbox_shapes_ratio_and_padding():
    im = np.zeros((48, 96, 3), np.uint8)
    out, ratio, pad = augment.letterbox(im, 64)
    assert out.shape == (64, 64, 3) and ratio == (64 / 96, 32 / 48) and pad == (0, 16)
    assert (out[:16] == 114).all() and (out[16:48] == 0).all()
    out, ratio, pad = augment.letterbox(im, 192, scaleup=False)
    assert out.shape == (192, 192, 3) and ratio == (1.0, 1.0) and pad == (48, 72)
    out, _, pad = augment.letterbox(im, 128, auto=True, stride=32)
    assert out.shape == (64, 128, 3) and pad == (0, 0)
    out, _, _ = augment.letterbox(np.zeros((50, 70, 3), np.uint8), (64, 96))
    assert out.shape == (64, 96, 3)


def test_random_perspective_drops_degenerate_boxes():
    rng = np.random.default_rng(0)
    im = np.zeros((100, 100, 3), np.uint8)
    labels = np.array([[0, 10, 10, 60, 60], [1, 90, 90, 95, 95]], np.float32)
    out, kept = augment.random_perspective(im, labels.copy(), rng, degrees=0, translate=0, scale=0, shear=0,
                                           border=(-25, -25))
    assert out.shape == (50, 50, 3)
    # the centre crop keeps the big box (clipped to the crop) and loses the small one outside it
    assert kept[:, 0].tolist() == [0]
    np.testing.assert_allclose(kept[0, 1:], [0, 0, 35, 35], atol=1e-4)


def test_box_candidates_rules():
    before = np.array([[0, 0, 100, 100]] * 4, float).T
    after = np.array([[0, 0, 100, 100], [0, 0, 1.5, 100], [0, 0, 20, 20], [0, 0, 50, 50]], float).T
    assert augment.box_candidates(before, after).tolist() == [True, False, False, True]


def test_mosaic4_places_four_images_and_labels():
    rng = np.random.default_rng(1)
    ims = [np.full((64, 64, 3), 10 * (i + 1), np.uint8) for i in range(4)]
    lbs = [np.array([[i, 0, 0, 64, 64]], np.float32) for i in range(4)]
    canvas, labels = augment.mosaic4(ims, lbs, 64, rng)
    assert canvas.shape == (128, 128, 3) and labels.shape == (4, 5)
    for c, x1, y1, x2, y2 in labels:
        x1, y1, x2, y2 = (int(round(v)) for v in (x1, y1, x2, y2))
        if x2 > x1 and y2 > y1:
            assert (canvas[y1:y2, x1:x2] == 10 * (int(c) + 1)).all()


def test_hsv_jitter_is_seeded_and_zero_gain_is_identity():
    im = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    same = im.copy()
    augment.augment_hsv(same, np.random.default_rng(0), 0, 0, 0)
    assert np.array_equal(same, im)
    a, b = im.copy(), im.copy()
    augment.augment_hsv(a, np.random.default_rng(5), 0.015, 0.7, 0.4)
    augment.augment_hsv(b, np.random.default_rng(5), 0.015, 0.7, 0.4)
    assert np.array_equal(a, b) and not np.array_equal(a, im)


def test_mixup_blends_and_keeps_both_label_sets():
    im1, im2 = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)
    out, labels = augment.mixup(im1, np.ones((2, 5), np.float32), im2, np.zeros((1, 5), np.float32),
                                np.random.default_rng(0))
    assert labels.shape == (3, 5) and 60 < out.mean() < 140


def test_multi_scale_hook():
    rng = np.random.default_rng(0)
    sizes = {augment.multi_scale_size(64, 32, rng) for _ in range(50)}
    assert all(s % 32 == 0 and 32 <= s <= 96 for s in sizes) and len(sizes) > 1
    batch = torch.rand(2, 3, 64, 96)
    out = augment.resize_batch(batch, 128, 32)
    assert out.shape == (2, 3, 96, 128)
    assert augment.resize_batch(batch, 96, 32) is batch
