"""Plots of validation metrics: PR / F1 / P / R curves and the confusion matrix (PNG files, yolov5 names)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from utils.metrics import CONF_GRID, APResult  # noqa: E402

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
    """Heat map of a ConfusionMatrix.matrix; columns (true classes) normalised to sum to 1 by default."""
    import seaborn as sn  # imported here: seaborn is slow to import and only this plot needs it

    nc = len(names)
    array = matrix / (matrix.sum(0).reshape(1, -1) + 1e-9) if normalize else matrix.astype(float)
    array[array < 0.005] = np.nan  # blank cells instead of a sea of 0.00
    ticks = [*names, "background"] if nc < 30 else "auto"
    fig, ax = plt.subplots(1, 1, figsize=(12, 9), tight_layout=True)
    sn.set_theme(font_scale=1.0 if nc < 50 else 0.8)
    sn.heatmap(array, ax=ax, annot=nc < 30, annot_kws={"size": 8}, cmap="Blues", fmt=".2f" if normalize else ".0f",
               square=True, vmin=0.0, xticklabels=ticks, yticklabels=ticks).set_facecolor((1, 1, 1))
    ax.set(xlabel="True", ylabel="Predicted", title="Confusion Matrix" + (" (normalised)" if normalize else ""))
    fig.savefig(path, dpi=250)
    plt.close(fig)
    return path
