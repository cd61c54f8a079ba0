"""Plots: batch mosaics draw boxes where the targets say; labels.jpg and results.png get written."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from ultralytics.utils.plotting import colors

from deploy.errors import UserInputError
from utils.core.plots import plot_images, plot_labels, plot_results


def colour_fraction(strip: np.ndarray, bgr: tuple[int, int, int]) -> float:
    """Share of rows of a narrow vertical strip that hold the colour somewhere (a 1-px line)."""
    return float((np.abs(strip.astype(int) - np.array(bgr)).max(-1) < 40).any(1).mean())


@pytest.mark.parametrize("normalised", [True, False])
def test_plot_images_draws_boxes_in_their_tile(tmp_path, normalised):
    imgs = torch.full((3, 3, 64, 96), 128, dtype=torch.uint8)
    # image 1, class 5: box x 24..72, y 16..48 (pixels of the 96x64 image)
    box = [48 / 96, 32 / 64, 48 / 96, 32 / 64] if normalised else [48, 32, 48, 32]
    targets = torch.tensor([[1, 5, *box]], dtype=torch.float32)
    out = plot_images(imgs, targets, ["a.jpg", "b.jpg", "c.jpg"], tmp_path / "train_batch0.png",
                      names=[f"n{i}" for i in range(6)])
    im = cv2.imread(str(out))
    assert im.shape == (128, 192, 3)  # 2x2 tiles of 96x64
    x0 = 96  # tile 1 is top-right
    colour = colors(5, bgr=True)
    assert colour_fraction(im[30:46, x0 + 23:x0 + 26], colour) > 0.8  # left edge of the box
    assert colour_fraction(im[30:46, x0 + 70:x0 + 73], colour) > 0.8  # right edge
    assert colour_fraction(im[30:46, x0 + 40:x0 + 56], colour) == 0  # the inside stays clear
    assert colour_fraction(im[30:46, 23:26], colour) == 0  # nothing in tile 0
    assert (im[100:120, 100:180] == 255).all()  # unused 4th tile is white


def test_plot_images_skips_low_confidence_predictions(tmp_path):
    imgs = np.full((1, 3, 64, 64), 0.5, np.float32)
    preds = np.array([[0, 3, 0.5, 0.5, 0.5, 0.5, 0.9], [0, 7, 0.5, 0.5, 0.8, 0.8, 0.1]], np.float32)
    im = cv2.imread(str(plot_images(imgs, preds, fname=tmp_path / "val_batch0_pred.png", conf_thres=0.25)))
    assert im.shape == (64, 64, 3)
    assert colour_fraction(im[24:40, 15:18], colors(3, bgr=True)) > 0.8
    assert colour_fraction(im[24:40, 5:8], colors(7, bgr=True)) == 0


def test_plot_labels_writes_both_figures(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.concatenate((rng.integers(0, 3, (40, 1)), rng.uniform(0.1, 0.9, (40, 4))), 1)
    out = plot_labels(labels, ["a", "b", "c"], tmp_path)
    assert out == tmp_path / "labels.jpg"
    for name in ("labels.jpg", "labels_correlogram.jpg"):
        im = cv2.imread(str(tmp_path / name))
        assert im is not None and min(im.shape[:2]) > 400


def test_plot_results_reads_yolov5_csv(tmp_path):
    cols = ["epoch", "train/box_loss", "metrics/mAP_0.5", "x/lr0"]
    frame = pd.DataFrame({c: np.linspace(0, 1, 6) if c != "epoch" else np.arange(6) for c in cols})
    frame.columns = [f"{c:>20s}" for c in frame.columns]  # yolov5 pads its column names
    csv = tmp_path / "results.csv"
    frame.to_csv(csv, index=False)
    out = plot_results(csv)
    assert out == tmp_path / "results.png" and cv2.imread(str(out)) is not None

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(UserInputError, match="bad.csv: expected an 'epoch' column"):
        plot_results(bad)
    with pytest.raises(UserInputError, match="missing.csv: cannot read results"):
        plot_results(tmp_path / "missing.csv")
