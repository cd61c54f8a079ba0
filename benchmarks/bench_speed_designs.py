"""Speed designs against the YOLOv5 baseline and the plain C3 -> C3Faster swap, in ONNX Runtime on the CPU.

Usage:
    python benchmarks/bench_speed_designs.py [--scales n s] [--designs pconv-lite] [--peers yolov5nu]
                                             [--runs 30] [--threads 2] [--profile]

For each scale it times yolov5{scale} (baseline), yolov5{scale}-faster (plain swap) and every
yolov5{scale}-{design} YAML: fused, eval, batch 1, exported by export.py's ONNX exporter (TorchScript-based,
opset 17), run by ONNX Runtime on the CPU; PyTorch (checks, FLOPs) runs on `--threads` threads as well.
Two timers per model, interleaved round by round (order alternating):
- `wall`: ONNX Runtime as users run it (default session options, `--threads` intra-op threads), wall clock;
- `cpu`: a second session with thread spinning off, timed by this process's CPU time. On a shared box
  (other jobs time-slicing the cores) the wall clock mostly measures the neighbours; CPU time measures the
  work the model needs and stays comparable. Both are reported; on a quiet machine they rank models alike.
`--profile` adds ONNX Runtime's own per-node profile, summed per part of the network (stem, stride-2
downsamplers, CSP blocks, SPPF, neck 1x1s, Detect, glue) and per operator type — where the time goes.
`--peers yolov5nu` times ultralytics' yolov5nu (built from its YAML through the ultralytics library, random
init, nothing downloaded) beside the n scale: the anchor-free designs aim at <= 0.65x of its latency.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_speed_designs.py` puts only benchmarks/ on the path
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import (add_timing_args, check_timing_args, export_onnx, onnx_max_diff,  # noqa: E402
                               peer_model, zoo_model)
from deploy.engines import OnnxEngine  # noqa: E402
from deploy.outputs import increment_path  # noqa: E402
from models.yolo import DetectionModel  # noqa: E402
from models.zoo import PEERS  # noqa: E402
from utils.core.cli import run_cli  # noqa: E402
from utils.core.log import LOGGER  # noqa: E402
from utils.core.system import cpu_name, current_rss_mb, peak_rss_mb  # noqa: E402
from utils.core.torch_utils import count_params, model_flops  # noqa: E402

CSP_TYPES = ("C3", "C3Faster", "C3_Faster")
ACTIVATION_OPS = ("QuickGelu", "Sigmoid", "Mul", "Relu", "HardSigmoid", "Gelu")
COPY_OPS = ("Concat", "Split", "Slice", "Transpose", "Reshape", "ReorderInput", "ReorderOutput", "Resize", "Upsample")


@dataclass
class Candidate:
    """One model under test: its ONNX file, two sessions (see module doc) and the times gathered."""

    name: str
    role: str  # 'baseline', 'plain swap', 'design' or 'peer'
    scale: str
    params: int
    gflops: float
    onnx_path: Path
    row_parts: list[str]  # per YAML row: which part of the network it is (for the profile)
    max_diff: float
    wall_session: OnnxEngine | None = None
    cpu_session: OnnxEngine | None = None
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    session_mb: float = 0.0  # resident memory its two sessions added, warmed up


def load_average() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def row_parts(model: DetectionModel) -> list[str]:
    """Name the part each YAML row belongs to: strided Convs before the first CSP row are the stem."""
    parts, seen_csp = [], False
    for m in model.model:
        seen_csp |= m.type in CSP_TYPES
        if m.type == "Conv":
            strided = m.conv.stride[0] > 1
            parts.append(("downsampler" if seen_csp else "stem") if strided else "neck 1x1 conv")
        elif m.type in CSP_TYPES:
            parts.append("CSP block")
        elif m.type in ("SPPF", "Detect"):
            parts.append(m.type)
        else:
            parts.append("upsample/concat")
    return parts


def prepare_zoo_model(name: str, role: str, scale: str, imgsz: int, threads: int, tmp: Path) -> Candidate:
    model = zoo_model(name, flag="--designs/--scales")
    path = export_onnx(model, imgsz, tmp / f"{name}.onnx")
    return Candidate(name, role, scale, count_params(model), model_flops(model, imgsz), path, row_parts(model),
                     onnx_max_diff(model, OnnxEngine(path, threads, spinning=False), imgsz))


def prepare_ultralytics_peer(name: str, imgsz: int, threads: int, tmp: Path) -> Candidate | None:
    """Ultralytics' model built from its own YAML (random init), used as a library; None if unavailable."""
    try:
        model = peer_model(name)
    except ImportError:
        LOGGER.warning(f"--peers {name}: ultralytics is not installed, skipped")
        return None
    path = export_onnx(model, imgsz, tmp / f"{name}.onnx")
    return Candidate(name, "peer", "n", count_params(model), model_flops(model, imgsz), path, [],
                     onnx_max_diff(model, OnnxEngine(path, threads, spinning=False), imgsz))


def time_models(candidates: list[Candidate], imgsz: int, threads: int, warmup: int, runs: int) -> None:
    """Interleave the models round by round (order alternating) so background load hits all alike."""
    feed = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    for c in candidates:
        before = current_rss_mb()
        c.wall_session = OnnxEngine(c.onnx_path, threads)
        c.cpu_session = OnnxEngine(c.onnx_path, threads, spinning=False)
        for _ in range(warmup):
            c.wall_session.run(feed)
            c.cpu_session.run(feed)
        c.session_mb = current_rss_mb() - before
    for r in range(runs):
        for c in candidates if r % 2 == 0 else reversed(candidates):
            t0 = time.perf_counter()
            c.wall_session.run(feed)
            c.wall_ms.append((time.perf_counter() - t0) * 1e3)
            c0 = time.process_time()
            c.cpu_session.run(feed)
            c.cpu_ms.append((time.process_time() - c0) * 1e3)


def node_profile(c: Candidate, imgsz: int, threads: int, runs: int) -> tuple[dict[str, float], dict[str, float]]:
    """ONNX Runtime's per-node kernel times (ms per run), summed by network part and by operator kind."""
    engine = OnnxEngine(c.onnx_path, threads, spinning=False, profile=True)
    feed = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    for _ in range(runs):
        engine.run(feed)
    trace = Path(engine.session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    by_part, by_op = defaultdict(float), defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        ms = e["dur"] / 1e3 / runs
        row = re.match(r"/model\.(\d+)/", e["name"])
        if not c.row_parts:
            part = "whole model (peer, not split)"
        else:
            part = c.row_parts[int(row.group(1))] if row else "graph glue (layout reorders)"
        by_part[part] += ms
        op = e.get("args", {}).get("op_name", "?")
        kind = "Conv" if op in ("Conv", "FusedConv", "NchwcConv") else (
            "activation" if op in ACTIVATION_OPS else "copy/layout" if op in COPY_OPS else "other")
        by_op[kind] += ms
    return dict(by_part), dict(by_op)


def summary_rows(candidates: list[Candidate], peer: Candidate | None) -> list[str]:
    baselines = {c.scale: c for c in candidates if c.role == "baseline"}
    lines = ["| scale | model | role | params (M) | GFLOPs | ORT wall median ms | wall min ms | wall vs base "
             "| ORT CPU ms | CPU vs base | GFLOPS (wall) | img/s | sessions' RSS MB | vs yolov5nu (CPU) | ORT max diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in candidates:
        base = baselines.get(c.scale) if c.role != "peer" else None
        wall, cpu = statistics.median(c.wall_ms), statistics.median(c.cpu_ms)
        wall_ratio = f"{wall / statistics.median(base.wall_ms):.3f}x" if base else "—"
        cpu_ratio = f"{cpu / statistics.median(base.cpu_ms):.3f}x" if base else "—"
        vs_peer = f"{cpu / statistics.median(peer.cpu_ms):.3f}x" if peer and c.scale == "n" else "—"
        lines.append(f"| {c.scale} | {c.name} | {c.role} | {c.params / 1e6:.3f} | {c.gflops:.2f} | {wall:.1f} | "
                     f"{min(c.wall_ms):.1f} | {wall_ratio} | {cpu:.1f} | {cpu_ratio} | {c.gflops / wall * 1e3:.0f} | "
                     f"{1e3 / wall:.1f} | {c.session_mb:.0f} | {vs_peer} | {c.max_diff:.1e} |")
    return lines


def profile_tables(profiles: dict[str, tuple[dict, dict]]) -> list[str]:
    lines = []
    for title, index in (("network part", 0), ("operator kind", 1)):
        keys = sorted({k for p in profiles.values() for k in p[index]})
        lines += ["", f"ONNX Runtime kernel time per {title} (ms per run, % of the model's total):", "",
                  "| " + title + " | " + " | ".join(profiles) + " |", "|---" * (len(profiles) + 1) + "|"]
        for k in keys:
            cells = []
            for p in profiles.values():
                total = sum(p[index].values())
                v = p[index].get(k, 0.0)
                cells.append(f"{v:.2f} ({100 * v / total:.0f}%)")
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        lines.append("| total | " + " | ".join(f"{sum(p[index].values()):.2f}" for p in profiles.values()) + " |")
    return lines


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=["n", "s"], help="YOLOv5 scales to compare")
    parser.add_argument("--designs", nargs="+", default=["pconv-lite"],
                        help="design suffixes: models/yolov5{scale}-{design}.yaml")
    parser.add_argument("--peers", nargs="*", default=[PEERS[0]], help="ultralytics models timed beside n")
    add_timing_args(parser, runs=30, warmup=3, threads_help="threads for ONNX Runtime (intra-op) and PyTorch")
    parser.add_argument("--profile", action="store_true", help="add ONNX Runtime's per-node profile")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    opt = check_timing_args(parse_opt(argv))
    torch.set_num_threads(opt.threads)
    start, load_start = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory() as tmp:
        candidates = []
        for scale in opt.scales:
            roles = [(f"yolov5{scale}", "baseline"), (f"yolov5{scale}-faster", "plain swap")]
            roles += [(f"yolov5{scale}-{d}", "design") for d in opt.designs]
            candidates += [prepare_zoo_model(n, r, scale, opt.imgsz, opt.threads, Path(tmp)) for n, r in roles]
        peers = [p for name in (opt.peers if "n" in opt.scales else [])
                 if (p := prepare_ultralytics_peer(name, opt.imgsz, opt.threads, Path(tmp)))]
        candidates += peers
        time_models(candidates, opt.imgsz, opt.threads, opt.warmup, opt.runs)
        profiles = ({c.name: node_profile(c, opt.imgsz, opt.threads, max(opt.runs // 3, 5)) for c in candidates}
                    if opt.profile else {})
    wall = time.perf_counter() - start
    inferences = sum(len(c.wall_ms) + len(c.cpu_ms) for c in candidates)
    header = (f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; onnxruntime {ort.__version__}, torch "
              f"{torch.__version__}; {opt.imgsz}x{opt.imgsz}, batch 1, fused, {opt.threads} threads; medians of "
              f"{opt.runs} interleaved rounds; load average at start {load_start}, at end {load_average()}.")
    footer = (f"wall time {wall:.1f} s, {inferences} inferences ({inferences / wall:.1f} img/s overall), "
              f"process peak RSS {peak_rss_mb():.0f} MB")
    text = "\n".join([header, "", *summary_rows(candidates, peers[0] if peers else None),
                      *profile_tables(profiles), "", footer])
    save_dir = increment_path(Path(opt.project) / opt.name, mkdir=True)
    (save_dir / "speed_designs.md").write_text(text + "\n")
    LOGGER.info(f"{text}\nsaved {save_dir / 'speed_designs.md'}")


if __name__ == "__main__":
    run_cli(main)
