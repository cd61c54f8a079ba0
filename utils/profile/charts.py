"""Seaborn figures for the FLOPS profiler: where FLOPs and latency part ways."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def plot_latency_vs_flops(model_rows: list[dict], path: Path) -> Path:
    """Zoo scatter: GFLOPs on x, median latency on y, one colour per backend, points named by model."""
    df = pd.DataFrame([r for r in model_rows if r.get("ms") == r.get("ms") and "ms" in r])
    fig, ax = plt.subplots(figsize=(7, 5))
    if not df.empty:
        sns.scatterplot(data=df, x="GFLOPs", y="ms", hue="backend", style="backend", s=80, ax=ax)
        for _, r in df.iterrows():
            ax.annotate(r["model"], (r["GFLOPs"], r["ms"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set(xlabel="GFLOPs (2 x MACs)", ylabel="latency (ms, median)", title="Latency vs FLOPs")
    ax.grid(alpha=0.3)
    return save(fig, path)


def plot_layer_flops(layer_rows: list[dict], path: Path) -> Path:
    """Achieved GFLOPS of each YAML row, one bar colour per model: the rows far below the rest are the slow ones."""
    df = pd.DataFrame(layer_rows)
    bars = df["layer"].nunique() * max(df["model"].nunique(), 1)
    fig, ax = plt.subplots(figsize=(min(max(8.0, 0.12 * bars), 24.0), 4.5))
    sns.barplot(data=df, x="layer", y="GFLOPS", hue="model", ax=ax)
    ax.set(xlabel="layer (YAML row)", ylabel="achieved GFLOPS", title="Achieved FLOPS per layer")
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


def plot_operator_benchmark(op_rows: list[dict], path: Path) -> Path:
    """Table-1 operators: achieved GFLOPS at each backbone stage."""
    df = pd.DataFrame(op_rows)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    sns.barplot(data=df, x="stage", y="GFLOPS", hue="operator", ax=ax)
    ax.set(xlabel="feature map (channels@HxW)", ylabel="achieved GFLOPS", title="Operator FLOPS (paper Table 1)")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


def save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
