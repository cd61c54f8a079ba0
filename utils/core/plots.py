"""Training plots YOLOv5 users look for: labels.jpg, train/val batch mosaics, results.png.

Drawing uses ultralytics' Annotator in cv2 mode (no font download, safe offline and in threads);
matplotlib runs on the Agg backend so no display is ever needed.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from ultralytics.utils.plotting import Annotator, colors  # noqa: E402

from deploy.errors import UserInputError  # noqa: E402
from utils.core.boxes import xywhn_to_xyxy  # noqa: E402

MAX_CORRELOGRAM_ROWS = 10000  # seaborn's pairplot is slow beyond this; a sample shows the same shape


def plot_labels(labels: np.ndarray, names: list[str], save_dir: str | Path) -> Path:
    """labels.jpg (class histogram, box shapes, centre and size densities) and labels_correlogram.jpg.

    `labels` is every training label stacked, rows [cls, cx, cy, w, h] normalised.
    """
    import seaborn as sns  # slow to import (~1 s); only this plot needs it

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 5)
    cls, boxes = labels[:, 0].astype(int), labels[:, 1:]
    nc = len(names)
    frame = pd.DataFrame(boxes, columns=["x", "y", "width", "height"])

    sample = frame.sample(min(len(frame), MAX_CORRELOGRAM_ROWS), random_state=0)
    if len(sample) > 1:
        grid = sns.pairplot(sample, corner=True, diag_kind="auto", kind="hist", diag_kws=dict(bins=50),
                            plot_kws=dict(pmax=0.9))
        grid.savefig(save_dir / "labels_correlogram.jpg", dpi=200)
        plt.close(grid.figure)

    fig, ax = plt.subplots(2, 2, figsize=(8, 8), tight_layout=True)
    ax = ax.ravel()
    counts = np.bincount(cls, minlength=nc)
    bars = ax[0].bar(range(nc), counts, width=0.8)
    for i, bar in enumerate(bars):
        bar.set_color(np.array(colors(i, bgr=False)) / 255)
    ax[0].set_ylabel("instances")
    if 0 < nc < 30:
        ax[0].set_xticks(range(nc), labels=names, rotation=90, fontsize=8)
    else:
        ax[0].set_xlabel("classes")

    canvas = np.full((1000, 1000, 3), 255, np.uint8)  # up to 1000 boxes centred, to show shapes
    for c, (w, h) in zip(cls[:1000], boxes[:1000, 2:]):
        x1, y1, x2, y2 = (np.array([0.5 - w / 2, 0.5 - h / 2, 0.5 + w / 2, 0.5 + h / 2]) * 1000).astype(int)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colors(int(c), bgr=False), 1)
    ax[1].imshow(canvas)
    ax[1].axis("off")
    ax[2].hist2d(frame["x"], frame["y"], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[2].set(xlabel="x", ylabel="y")
    ax[3].hist2d(frame["width"], frame["height"], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[3].set(xlabel="width", ylabel="height")
    out = save_dir / "labels.jpg"
    fig.savefig(out, dpi=200)
    plt.close(fig)
    return out


def plot_images(
    images: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
    paths: list[str] | None = None,
    fname: str | Path = "images.jpg",
    names: list[str] | None = None,
    max_size: int = 1920,
    max_subplots: int = 16,
    conf_thres: float = 0.25,
) -> Path:
    """Tile a batch into one jpg with its boxes (train_batch0.jpg, val_batch0_labels/_pred.jpg).

    `images` (B, 3, H, W) RGB, uint8 or float in [0, 1]. `targets` rows [img_idx, cls, cx, cy, w, h]
    (+ conf for predictions, shown with the score and only above conf_thres); coordinates normalised
    to the image, or in pixels of the batch image if any exceeds 1.
    """
    images = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    targets = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    targets = targets.reshape(-1, targets.shape[-1] if targets.size else 6)
    if images.max(initial=0) <= 1:
        images = images * 255
    bs, _, h, w = images.shape
    bs = min(bs, max_subplots)
    ns = math.ceil(bs**0.5)  # tiles per side
    scale = min(1.0, max_size / (ns * max(h, w)))
    th, tw = math.ceil(h * scale), math.ceil(w * scale)
    mosaic = np.full((ns * th, ns * tw, 3), 255, np.uint8)
    for i in range(bs):
        x, y = tw * (i % ns), th * (i // ns)
        tile = images[i].transpose(1, 2, 0)[:, :, ::-1].clip(0, 255).astype(np.uint8)  # RGB → BGR
        mosaic[y:y + th, x:x + tw] = cv2.resize(tile, (tw, th)) if scale < 1 else tile
        cv2.rectangle(mosaic, (x, y), (x + tw - 1, y + th - 1), (255, 255, 255), 2)

    annotator = Annotator(mosaic, line_width=max(1, round(min(th, tw) / 200)), pil=False)
    for i in range(bs):
        x, y = tw * (i % ns), th * (i // ns)
        if paths:
            name = Path(paths[i]).name[:40]
            text_h = cv2.getTextSize(name, 0, annotator.sf, annotator.tf)[0][1]
            annotator.text([x + 5, y + 5 + text_h], name, txt_color=(220, 220, 220))  # cv2: xy is bottom-left
        rows = targets[targets[:, 0] == i]
        if not len(rows):
            continue
        has_conf = rows.shape[1] > 6
        normalised = rows[:, 2:6].max() <= 1.01
        boxes = xywhn_to_xyxy(rows[:, 2:6].astype(np.float64), tw if normalised else scale,
                              th if normalised else scale) + np.array([x, y, x, y])
        for row, box in zip(rows, boxes):
            cls = int(row[1])
            conf = float(row[6]) if has_conf else None
            if conf is not None and conf < conf_thres:
                continue
            name = names[cls] if names and 0 <= cls < len(names) else str(cls)
            label = name if conf is None else f"{name} {conf:.1f}"
            annotator.box_label(box.tolist(), label, color=colors(cls, bgr=True))
    out = Path(fname)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), annotator.result())
    return out


def plot_results(file: str | Path = "results.csv") -> Path:
    """results.png beside results.csv: one panel per column against epoch, raw and smoothed."""
    file = Path(file)
    try:
        data = pd.read_csv(file)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise UserInputError(f"{file}: cannot read results ({type(e).__name__})") from None
    data.columns = [c.strip() for c in data.columns]
    if "epoch" not in data.columns or len(data) == 0:
        raise UserInputError(f"{file}: expected an 'epoch' column and at least one row")
    columns = [c for c in data.columns if c != "epoch"]
    ncols = max(1, math.ceil(len(columns) / 2))
    fig, ax = plt.subplots(2, ncols, figsize=(3 * ncols, 6), tight_layout=True, squeeze=False)
    ax = ax.ravel()
    x = data["epoch"].to_numpy()
    for a, col in zip(ax, columns):
        y = data[col].astype(float).to_numpy()
        a.plot(x, y, marker=".", label="results", linewidth=2, markersize=8)
        if len(y) >= 5:
            k = max(3, len(y) // 10) | 1
            smooth = np.convolve(np.pad(y, k // 2, mode="edge"), np.ones(k) / k, mode="valid")
            a.plot(x, smooth, ":", label="smooth", linewidth=2)
        a.set_title(col, fontsize=12)
    for a in ax[len(columns):]:
        a.axis("off")
    ax[0].legend()
    out = file.with_name("results.png")
    fig.savefig(out, dpi=200)
    plt.close(fig)
    return out
