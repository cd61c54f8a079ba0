"""Plots of validation metrics: PR / F1 / P / R curves and the confusion matrix (PNG files, yolov5 names)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from utils.metrics.ap import CONF_GRID, APResult  # noqa: E402

MAX_LEGEND_CLASSES = 20  # beyond this a per-class legend is unreadable; draw classes grey, unlabelled


def _class_lines(ax, x: np.ndarray, ys: np.ndarray, labels: list[str]) -> None:
    labelled = len(ys) <= MAX_LEGEND_CLASSES
    for y, label in zip(ys, labels):
        ax.plot(x, y, linewidth=1, label=label if labelled else None, color=None if labelled else "grey")


def plot_pr_curve(result: APResult, names: list[str], path: Path) -> Path:
    """Precision against recall at IoU 0.5 per class, with the mean and mAP@0.5 in the legend."""
    fig, ax = plt.subplots(1, 1, figsize=(9, 6), tight_layout=True)
    labels = [f"{names[c]} {a:.3f}" for c, a in zip(result.classes, result.ap50)]
    _class_lines(ax, CONF_GRID, result.pr_curve, labels)
    if len(result.pr_curve):
        ax.plot(CONF_GRID, result.pr_curve.mean(0), linewidth=3, color="blue",
                label=f"all classes {result.map50:.3f} mAP@0.5")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1), title="Precision-Recall Curve")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    fig.savefig(path, dpi=250)
    plt.close(fig)
    return path


def plot_metric_curve(curve: np.ndarray, classes: np.ndarray, names: list[str], path: Path, ylabel: str) -> Path:
    """One metric (F1, precision or recall) against confidence per class, the mean's peak in the legend."""
    fig, ax = plt.subplots(1, 1, figsize=(9, 6), tight_layout=True)
    _class_lines(ax, CONF_GRID, curve, [names[c] for c in classes])
    if len(curve):
        mean = curve.mean(0)
        i = int(mean.argmax())
        ax.plot(CONF_GRID, mean, linewidth=3, color="blue",
                label=f"all classes {mean[i]:.2f} at {CONF_GRID[i]:.3f}")
    ax.set(xlabel="Confidence", ylabel=ylabel, xlim=(0, 1), ylim=(0, 1), title=f"{ylabel}-Confidence Curve")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    fig.savefig(path, dpi=250)
    plt.close(fig)
    return path


def plot_ap_curves(result: APResult, names: list[str], save_dir: Path) -> list[Path]:
    """The four yolov5 curve files: PR_curve.png, F1_curve.png, P_curve.png, R_curve.png."""
    save_dir = Path(save_dir)
    return [plot_pr_curve(result, names, save_dir / "PR_curve.png"),
            plot_metric_curve(result.f1_curve, result.classes, names, save_dir / "F1_curve.png", "F1"),
            plot_metric_curve(result.p_curve, result.classes, names, save_dir / "P_curve.png", "Precision"),
            plot_metric_curve(result.r_curve, result.classes, names, save_dir / "R_curve.png", "Recall")]


def plot_confusion_matrix(matrix: np.ndarray, names: list[str], path: Path, normalize: bool = True) -> Path:
    """Heat map of a ConfusionMatrix.matrix; columns (true classes) normalised to sum to 1 by default.

    Plain matplotlib: seaborn's heatmap looks the same but importing it (scipy.stats) costs seconds.
    """
    nc = len(names)
    array = matrix / (matrix.sum(0).reshape(1, -1) + 1e-9) if normalize else matrix.astype(float)
    array = np.where(array < 0.005, np.nan, array)  # blank cells instead of a sea of 0.00
    fig, ax = plt.subplots(1, 1, figsize=(12, 9), tight_layout=True)
    image = ax.imshow(array, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if nc < 30:  # labelled ticks and cell values only while they stay legible
        ticks = [*names, "background"]
        ax.set_xticks(range(nc + 1), ticks, rotation=90)
        ax.set_yticks(range(nc + 1), ticks)
        vmax = np.nanmax(array) if np.isfinite(array).any() else 1.0
        for (i, j), v in np.ndenumerate(array):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}" if normalize else f"{v:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if v > 0.6 * vmax else "black")
    ax.set(xlabel="True", ylabel="Predicted", title="Confusion Matrix" + (" (normalised)" if normalize else ""))
    fig.savefig(path, dpi=250)
    plt.close(fig)
    return path
