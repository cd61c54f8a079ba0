"""Build data/shapes3: a small 3-class detection set (ellipse, quad, triangle) on real photo backgrounds.

Why: from scratch on 2 CPU cores, real-photo sets as small as coco128 teach every model almost nothing
(held-out mAP50-95 ~0.01, where seed noise is as large as model differences), so they cannot rank heads or
backbones. Here a nano model reaches mAP50-95 ~0.4-0.6 in a CPU hour, like the small held-out set of
../shared/docs/measured-notes.md, so a 0.02 difference is signal. Boxes are exact (taken from each shape's
visible pixels after occlusion), sizes span 8-140 px at 320 so all three pyramid levels get work, and the
look varies (colour, photo texture, outline, transparency, blur, noise, partial occlusion), so box precision,
not classification, is what separates models. Train backgrounds are crops of coco128-person's train images,
val backgrounds of its val images: no pixel of a val image was seen in training.

Usage: python data/scripts/make_shapes3.py --dst data/shapes3   (deterministic: same seed, same files)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

NAMES = ("ellipse", "quad", "triangle")
WIDTH, HEIGHT = 320, 256
MIN_VISIBLE = 0.5  # a shape with less than this share of its pixels left visible gets no label (mostly hidden)


def background(rng: np.random.Generator, photos: list[Path]) -> np.ndarray:
    """A random crop of a random photo, resized to the canvas size."""
    im = cv2.imread(str(photos[rng.integers(len(photos))]))
    h, w = im.shape[:2]
    scale = rng.uniform(0.5, 1.0)
    ch, cw = max(8, int(h * scale)), max(8, int(w * scale))
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return cv2.resize(im[y0:y0 + ch, x0:x0 + cw], (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


def shape_mask(rng: np.random.Generator, cls: int, size: float, centre: tuple[float, float]) -> np.ndarray:
    """A filled uint8 mask of one shape of class `cls`, long side ~`size` px, randomly rotated."""
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    cx, cy = centre
    angle = rng.uniform(0, 360)
    if cls == 0:
        axes = (int(size / 2), int(size / 2 * rng.uniform(0.5, 1.0)))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, angle, 0, 360, 255, -1, cv2.LINE_AA)
        return mask
    if cls == 1:
        w, h = size, size * rng.uniform(0.5, 1.0)
        pts = cv2.boxPoints(((cx, cy), (w, h), angle))
    else:
        r = size / 2
        base = np.deg2rad(angle + np.array([0.0, 120.0, 240.0]) + rng.uniform(-20, 20, 3))
        pts = np.stack([cx + r * np.cos(base), cy + r * np.sin(base)], 1)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return mask


def paint(rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray, photos: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Blend one shape into a copy of the canvas (solid colour, photo texture or outline, some opacity); return it
    and the mask actually drawn."""
    style = rng.choice(["solid", "texture", "outline"], p=[0.55, 0.3, 0.15])
    if style == "outline":
        mask = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8), iterations=int(rng.integers(1, 3)))
    if style == "texture":
        fill = background(rng, photos).astype(np.float32)
    else:
        colour = rng.integers(0, 256, 3).astype(np.float32)
        shade = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0), WIDTH, dtype=np.float32)[None, :, None]
        fill = np.broadcast_to(colour * shade, canvas.shape)
    alpha = (mask.astype(np.float32) / 255 * rng.uniform(0.65, 1.0))[..., None]
    return canvas * (1 - alpha) + fill * alpha, mask


def make_image(rng: np.random.Generator, photos: list[Path]) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """One image and its YOLO rows (class, cx, cy, w, h normalised), boxes from the shapes' visible pixels."""
    canvas = background(rng, photos).astype(np.float32)
    owner = np.full((HEIGHT, WIDTH), -1, np.int16)  # which shape is on top at each pixel
    shapes = []
    for _ in range(int(rng.integers(1, 9))):
        cls = int(rng.integers(len(NAMES)))
        size = float(np.exp(rng.uniform(np.log(8), np.log(140))))
        centre = (rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT))
        canvas_next, mask = paint(rng, canvas, shape_mask(rng, cls, size, centre), photos)
        if (mask > 127).sum() < 12:
            continue
        canvas = canvas_next
        owner[mask > 127] = len(shapes)
        shapes.append((cls, int((mask > 127).sum())))
    rows = []
    for i, (cls, area) in enumerate(shapes):
        ys, xs = np.nonzero(owner == i)
        if len(xs) < MIN_VISIBLE * area:
            continue
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        rows.append((cls, (x0 + x1) / 2 / WIDTH, (y0 + y1) / 2 / HEIGHT, (x1 - x0) / WIDTH, (y1 - y0) / HEIGHT))
    canvas += rng.normal(0, rng.uniform(0, 6), canvas.shape)
    if rng.random() < 0.3:
        canvas = cv2.GaussianBlur(canvas, (3, 3), 0)
    return np.clip(canvas, 0, 255).astype(np.uint8), rows


def make_split(dst: Path, split: str, photos: list[Path], n: int, seed: int, quality: int) -> int:
    """Write n images and labels of one split; return the number of boxes."""
    rng = np.random.default_rng(seed)
    (dst / "images" / split).mkdir(parents=True, exist_ok=True)
    (dst / "labels" / split).mkdir(parents=True, exist_ok=True)
    n_boxes = 0
    for i in range(n):
        im, rows = make_image(rng, photos)
        stem = f"{split}_{i:04d}"
        cv2.imwrite(str(dst / "images" / split / f"{stem}.jpg"), im, [cv2.IMWRITE_JPEG_QUALITY, quality])
        text = "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in rows)
        (dst / "labels" / split / f"{stem}.txt").write_text(text)
        n_boxes += len(rows)
    return n_boxes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backgrounds", default="data/coco128-person/images", help="folder with train/ and val/ photos")
    p.add_argument("--dst", default="data/shapes3")
    p.add_argument("--train", type=int, default=200, help="number of train images")
    p.add_argument("--val", type=int, default=100, help="number of val images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", type=int, default=80, help="JPEG quality")
    opt = p.parse_args()
    dst = Path(opt.dst)
    for k, (split, n) in enumerate((("train", opt.train), ("val", opt.val))):
        photos = sorted((Path(opt.backgrounds) / split).glob("*.jpg"))
        if not photos:
            raise SystemExit(f"error: {Path(opt.backgrounds) / split}: no .jpg backgrounds")
        n_boxes = make_split(dst, split, photos, n, opt.seed + k, opt.quality)
        print(f"{split}: {n} images, {n_boxes} boxes -> {dst / 'images' / split}")


if __name__ == "__main__":
    main()
