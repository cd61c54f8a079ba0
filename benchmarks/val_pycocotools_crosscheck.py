"""Our mAP (utils.metrics.ap) against pycocotools on the same detections, on a YOLO-format dataset's val split.

Ground truth: the YOLO labels turned into a COCO annotation dict. Detections: the ground truth perturbed
(boxes jittered by a fraction of their size, some dropped, random false positives, random scores), at
several noise levels and seeds. Prints both mAP50-95 and mAP50 per trial, the largest gap, and the
wall time / throughput / peak memory of each evaluator.

    python benchmarks/val_pycocotools_crosscheck.py                      # data/coco128-person.yaml
    python benchmarks/val_pycocotools_crosscheck.py --matching yolo      # yolov5's rule, for comparison
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/val_pycocotools_crosscheck.py` puts only benchmarks/ on the path
    sys.path.insert(0, str(ROOT))

from utils.metrics.coco_eval import (category_ids, detections_to_coco, evaluate_coco, labels_to_coco_gt,  # noqa: E402
                             yolo_ground_truth)
from utils.core.system import cpu_name, peak_rss_mb  # noqa: E402
from utils.data.dataset import check_dataset  # noqa: E402
from utils.metrics.ap import MATCHING_RULES, ap_per_class, score_image  # noqa: E402


def perturb(labels: np.ndarray, w: int, h: int, nc: int, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """Detections x1 y1 x2 y2 conf cls: jittered labels (20% dropped) plus 1-6 random false positives."""
    keep = labels[rng.random(len(labels)) > 0.2]
    boxes = keep[:, 1:] + rng.normal(0, jitter, (len(keep), 4)) * np.tile(keep[:, 3:5] - keep[:, 1:3], 2)
    n_fp = int(rng.integers(1, 7))
    xy = rng.uniform(0, 1, (n_fp, 2)) * [w, h]
    fp = np.concatenate((xy, xy + rng.uniform(10, 150, (n_fp, 2))), 1)
    conf = np.concatenate((rng.uniform(0.2, 1.0, len(keep)), rng.uniform(0.0, 0.9, n_fp)))
    cls = np.concatenate((keep[:, 0], rng.integers(0, nc, n_fp)))
    return np.concatenate((np.concatenate((boxes, fp)), conf[:, None], cls[:, None]), 1)


def ours(gt: list[tuple], dets: list[np.ndarray], matching: str = "coco") -> tuple[float, float]:
    stats = [[x.numpy() for x in score_image(torch.tensor(d, dtype=torch.float32),
                                             torch.tensor(g[3], dtype=torch.float32), matching)]
             for g, d in zip(gt, dets)]
    res = ap_per_class(*(np.concatenate(x) for x in zip(*stats)))
    return res.map, res.map50


def timed(fn, *args, trace_memory: bool = False):
    """Result, wall seconds, and peak Python-heap bytes (traced in a second call: tracing slows Python ~5x)."""
    t0 = time.perf_counter()
    out = fn(*args)
    dt = time.perf_counter() - t0
    peak = 0
    if trace_memory:
        tracemalloc.start()
        fn(*args)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return out, dt, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data/coco128-person.yaml"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jitters", type=float, nargs="+", default=[0.03, 0.08, 0.15])
    parser.add_argument("--matching", choices=MATCHING_RULES, default=MATCHING_RULES[0], help="our TP rule")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    opt = parser.parse_args()
    torch.set_num_threads(opt.threads)
    data = check_dataset(opt.data)
    gt = yolo_ground_truth(data[opt.split], data["nc"])
    cat_ids = category_ids(data["names"])
    gt_json = labels_to_coco_gt(gt, cat_ids, data["names"])
    n_labels = sum(len(g[3]) for g in gt)
    print(f"{opt.data} {opt.split}: {len(gt)} images, {n_labels} labels; COCO category map: "
          f"{'80→91' if cat_ids[-1] == 90 else 'identity'}")
    print(f"{'jitter':>7} {'seed':>5} {'ours mAP50-95':>14} {'coco mAP50-95':>14} {'ours mAP50':>11} "
          f"{'coco mAP50':>11} {'|gap| max':>10}")
    gaps, t_ours, t_coco, m_ours, m_coco = [], [], [], [], []
    for jitter in opt.jitters:
        for seed in range(opt.seeds):
            rng = np.random.default_rng(seed)
            dets = [perturb(g[3], g[1], g[2], data["nc"], rng, jitter) for g in gt]
            rows = [r for g, d in zip(gt, dets) for r in detections_to_coco(d, g[0], cat_ids)]
            (o_map, o_map50), dt_o, mem_o = timed(ours, gt, dets, opt.matching, trace_memory=not gaps)
            coco, dt_c, mem_c = timed(evaluate_coco, gt_json, rows, trace_memory=not gaps)
            gap = max(abs(o_map - coco["map"]), abs(o_map50 - coco["map50"]))
            gaps.append(gap)
            t_ours.append(dt_o)
            t_coco.append(dt_c)
            m_ours.append(mem_o)
            m_coco.append(mem_c)
            print(f"{jitter:7.2f} {seed:5d} {o_map:14.4f} {coco['map']:14.4f} {o_map50:11.4f} {coco['map50']:11.4f} "
                  f"{gap:10.4f}")
    print(f"largest |ours ({opt.matching} matching) - pycocotools| over {len(gaps)} trials: {max(gaps):.4f} "
          f"(limit 0.005)")
    n = len(gt)
    for name, t, m in (("ours (utils.metrics.ap)", t_ours, m_ours), ("pycocotools", t_coco, m_coco)):
        print(f"{name:22s} wall {np.median(t) * 1e3:8.1f} ms/eval (median)  {n / np.median(t):8.0f} images/s  "
              f"peak traced memory {max(m) / 2**20:6.1f} MiB")
    print(f"process peak RSS {peak_rss_mb():.0f} MiB; "
          f"CPU: {cpu_name()}, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
