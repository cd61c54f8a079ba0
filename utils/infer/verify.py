"""Check an exported file against PyTorch: the same letterboxed real images through both, the largest output
differences, CPU latency and file size, as rows of the summary table export.py prints.

The mAP column is not filled here: it runs val.run, and a library module does not import a CLI. export.py
scores the rows it asks mAP for (see export.verify).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from utils.core.assets import ROOT
from utils.core.log import LOGGER
from utils.data.dataset import find_image_files
from utils.infer.exporters import ExportedFile, in_batches, letterboxed_batch, written_files

PARITY_IMAGES = 8  # val images compared per file: enough to meet every anchor, few enough to stay fast
SHIPPED_IMAGES = (ROOT / "data/images/bus.jpg", ROOT / "data/images/zidane.jpg")  # without --data
REL_DIFF_FLOOR = 1e-3  # |reference| below this counts as this in the relative difference


@dataclass
class Parity:
    """Largest differences between an exported file's outputs and PyTorch's on the same images."""

    max_abs: float
    max_rel: float
    images: int


@dataclass
class Reference:
    """PyTorch's side of every comparison: the export-form model and the letterboxed batches each file runs."""

    model: nn.Module
    batches: list[np.ndarray]

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        """The model's output on one batch, sent to the model's device and dtype."""
        weight = next(self.model.parameters())
        with torch.inference_mode():
            return self.model(torch.from_numpy(x).to(weight.device, weight.dtype))


def parity_images(data: dict | None) -> list[str]:
    """Real images for the output comparison: the val split's first few, else the shipped samples."""
    if data is not None:
        files = find_image_files(data["val"])[:PARITY_IMAGES]
        if files:
            return files
    return [str(f) for f in SHIPPED_IMAGES]


def parity_batches(data: dict | None, imgsz: tuple[int, int], batch: int) -> list[np.ndarray]:
    """parity_images letterboxed to the export size, in batches of the exported batch size."""
    return in_batches(letterboxed_batch(parity_images(data), imgsz), batch)


def compare_outputs(exported: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max |a − b|, max |a − b| / max(|b|, REL_DIFF_FLOOR)) over all elements."""
    diff = np.abs(exported.astype(np.float64) - reference.astype(np.float64))
    rel = diff / np.maximum(np.abs(reference.astype(np.float64)), REL_DIFF_FLOOR)
    return float(diff.max(initial=0.0)), float(rel.max(initial=0.0))


def check_parity(run_exported: Callable[[np.ndarray], np.ndarray], ref: Reference) -> Parity:
    """Run the same batches through the exported file and PyTorch; a (B, C, N) output (the other layout some
    converters produce) is compared transposed, any other shape mismatch is an error."""
    max_abs = max_rel = 0.0
    for x in ref.batches:
        expected = ref(x).float().cpu().numpy()
        out = np.asarray(run_exported(x), dtype=np.float32)
        if out.shape != expected.shape and out.ndim == 3 and out.shape == expected.transpose(0, 2, 1).shape:
            out = out.transpose(0, 2, 1)
        if out.shape != expected.shape:
            raise RuntimeError(f"exported output shape {out.shape} differs from PyTorch's {expected.shape}")
        a, r = compare_outputs(out, expected)
        max_abs, max_rel = max(max_abs, a), max(max_rel, r)
    return Parity(max_abs, max_rel, sum(len(b) for b in ref.batches))


def median_latency_ms(fn: Callable[[np.ndarray], Any], x: np.ndarray, runs: int = 10, warmup: int = 2) -> float:
    """Median wall time of fn(x) in ms after a few warm-up calls (lazy init, delegate setup)."""
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def file_size_mb(path: Path) -> float:
    return os.path.getsize(path) / 1e6


def pytorch_row(weights: Path, ref: Reference) -> dict[str, Any]:
    """The table's first row: the checkpoint itself, the baseline every file is compared with."""
    return {"format": "pytorch", "file": weights.name, "size_mb": file_size_mb(weights), "max_abs": 0.0,
            "max_rel": 0.0, "latency_ms": median_latency_ms(ref, ref.batches[0]), "map50_95": None}


def file_row(f: ExportedFile, backend: Callable[[np.ndarray], torch.Tensor], ref: Reference) -> dict[str, Any]:
    """One file's row: parity against PyTorch (also logged), size of what it wrote (sidecars aside), latency."""
    parity = check_parity(lambda x: backend(x).cpu().numpy(), ref)
    LOGGER.info(f"{f.label}: max abs diff {parity.max_abs:.3g}, max rel diff {parity.max_rel:.3g} vs PyTorch "
                f"on {parity.images} letterboxed image(s)")
    shown = f"{f.path.parent.name}/{f.path.name}" if f.fmt == "openvino" else f.path.name
    return {"format": f.label, "file": shown, "max_abs": parity.max_abs, "max_rel": parity.max_rel,
            "size_mb": sum(file_size_mb(p) for p in written_files(f.path) if p.suffix != ".json"),
            "latency_ms": median_latency_ms(backend, ref.batches[0]), "map50_95": None}


def format_table(rows: list[dict[str, Any]]) -> str:
    """The summary table, whole file names included: it is what users copy."""
    w = max([len("File"), *(len(r["file"]) for r in rows)]) + 1
    fw = max([13, *(len(r["format"]) for r in rows)]) + 1  # 'torchscript fp16' is longer than the usual labels
    header = f"{'Format':<{fw}}{'File':<{w}}{'Size MB':>9}{'max abs':>11}{'max rel':>11}{'mAP50-95':>10}{'CPU ms':>9}"
    lines = [header]
    for r in rows:
        m = f"{r['map50_95']:.4g}" if r["map50_95"] is not None else "-"
        lines.append(f"{r['format']:<{fw}}{r['file']:<{w}}{r['size_mb']:>9.2f}{r['max_abs']:>11.3g}"
                     f"{r['max_rel']:>11.3g}{m:>10}{r['latency_ms']:>9.1f}")
    return "\n".join(lines)
