"""FLOPS profiler: FLOPs, memory access, latency and achieved FLOPS per layer, per operator and per model.

Usage:
    python flops.py --cfg models/yolov5n.yaml models/yolov5n-faster.yaml --imgsz 640 --device cpu
    python flops.py --weights runs/train/exp/weights/best.pt --backends pytorch onnx
    python flops.py --ops --ops-only --imgsz 640          # the paper's Table 1 on this device

Writes results.md, CSV tables and plots to runs/benchmark/exp*. Latencies are medians of --runs, models
interleaved round by round; compare numbers only within one run on one machine.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

import torch

from deploy.errors import UserInputError
from deploy.imgsz import round_imgsz
from models.fasternet import PCONV_MODES
from models.yolo import DetectionModel
from utils.core.log import LOGGER
from utils.weights.checkpoint import load_model
from utils.profile.profiler import (RUNTIMES, TIMERS, ModelProfile, iter_backends, markdown_table, operator_benchmark,
                                    prepare_model, profile_models, whole_model_rows)
from deploy.cli import add_run_folder_flags
from deploy.outputs import increment_path
from utils.core.system import cpu_name, peak_rss_mb
from utils.core.torch_utils import select_device, torch_threads

ROOT = Path(__file__).resolve().parent
LAYER_COLUMNS = ["layer", "from", "module", "n", "params", "GFLOPs", "MB", "FLOP/B", "ms", "GFLOPS"]
MODEL_COLUMNS = ["model", "backend", "params", "GFLOPs", "ms", "min_ms", "GFLOPS", "img/s", "peak_MB", "forward_MB",
                 "build_s", "note"]


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="FLOPs, memory access, latency and achieved FLOPS of models")
    parser.add_argument("--cfg", nargs="*", default=[], help="model YAML(s), e.g. models/yolov5n.yaml")
    parser.add_argument("--weights", nargs="*", default=[], help="checkpoint(s) (.pt) to profile")
    parser.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="inference size (pixels)")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size")
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or cpu")
    parser.add_argument("--runs", type=int, default=30, help="timed repetitions; latencies are their median")
    parser.add_argument("--warmup", type=int, default=5, help="untimed repetitions first")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch, ONNX Runtime and TFLite")
    parser.add_argument("--timer", default="wall", choices=TIMERS,
                        help="wall: latency on a quiet machine; cpu: process CPU time, load-proof, needs --threads 1")
    parser.add_argument("--backends", nargs="+", default=list(RUNTIMES), choices=RUNTIMES,
                        help="whole-model rows to time")
    parser.add_argument("--pconv-mode", default="auto", choices=PCONV_MODES,
                        help="PConv forward path for the PyTorch rows")
    parser.add_argument("--ops", action="store_true", help="also run the operator micro-benchmark (paper Table 1)")
    parser.add_argument("--ops-only", action="store_true", help="run only the operator micro-benchmark")
    parser.add_argument("--no-layers", action="store_true", help="skip the per-layer / per-operator profile")
    parser.add_argument("--noplots", action="store_true", help="save no plots")
    add_run_folder_flags(parser, str(ROOT / "runs/benchmark"))
    return parser.parse_args(argv)


def check_opt(opt: argparse.Namespace) -> None:
    opt.imgsz = round_imgsz(opt.imgsz, 32)[0]  # the one --imgsz rule: rounded up to a multiple of 32, with a warning
    for flag in ("batch_size", "runs", "threads"):
        if getattr(opt, flag) < 1:
            raise UserInputError(f"--{flag.replace('_', '-')} {getattr(opt, flag)}: must be at least 1")
    if opt.timer == "cpu" and opt.threads != 1:
        raise UserInputError(f"--timer cpu: CPU time equals latency only on one thread; add --threads 1 "
                             f"(got --threads {opt.threads})")
    if opt.warmup < 0:
        raise UserInputError(f"--warmup {opt.warmup}: must not be negative")
    for w in opt.weights:
        if not Path(w).is_file():
            raise UserInputError(f"--weights {w}: file not found")


def load_models(opt: argparse.Namespace, device: torch.device) -> dict[str, torch.nn.Module]:
    """Every --cfg and --weights entry, prepared for inference and named by its file stem."""
    models: dict[str, torch.nn.Module] = {}
    sources = [(c, lambda c=c: DetectionModel(c)) for c in opt.cfg]
    sources += [(w, lambda w=w: load_model(w)) for w in opt.weights]
    for source, build in sources:
        name = Path(source).stem
        while name in models:
            name += "'"
        models[name] = prepare_model(build(), device, opt.pconv_mode)
    return models


def device_line(device: torch.device, threads: int) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    load = ", load average %.1f %.1f %.1f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    return (f"{name} ({cpu_name()}, {os.cpu_count()} cores{load}), {threads} threads, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def options_line(opt: argparse.Namespace) -> str:
    keys = ("cfg", "weights", "imgsz", "batch_size", "device", "runs", "warmup", "threads", "timer", "backends",
            "pconv_mode")
    return ", ".join(f"{k}={getattr(opt, k)}" for k in keys)


def write_csv(rows: list[dict], path: Path) -> Path:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def profile_sections(profiles: list[ModelProfile], save_dir: Path) -> list[str]:
    """Markdown per model: layer table and operator-type table; CSVs of layers, operator types and modules."""
    layers, operators, modules, md = [], [], [], []
    for p in profiles:
        layer_ms = sum(r["ms"] for r in p.layer_rows)
        layer_flops = sum(r["GFLOPs"] for r in p.layer_rows)
        md.append(f"### {p.name}: {p.params:,} params, {p.flops / 1e9:.2f} GFLOPs (FlopCounterMode), "
                  f"layers sum to {layer_flops:.2f} GFLOPs and {layer_ms:.1f} ms "
                  f"({layer_flops / layer_ms * 1e3 if layer_ms else 0:.1f} GFLOPS)\n")
        rows = [{**r, "% time": 100 * r["ms"] / layer_ms if layer_ms else 0.0} for r in p.layer_rows]
        md.append(markdown_table(rows, LAYER_COLUMNS + ["% time"], digits=3))
        op_rows = sorted(p.op_rows(), key=lambda r: -r["ms"])
        md.append(f"\nOperator types of {p.name} (each op timed alone, synchronised; median over passes):\n")
        md.append(markdown_table(op_rows, digits=3))
        layers += [{"model": p.name, **r} for r in rows]
        operators += [{"model": p.name, **r} for r in op_rows]
        modules += [{"model": p.name, **r} for r in p.module_rows()]
    write_csv(layers, save_dir / "layers.csv")
    write_csv(operators, save_dir / "operators.csv")
    write_csv(modules, save_dir / "modules.csv")
    return md


def run(**kwargs) -> Path:
    """Profile the models (and/or operators) in kwargs (parse_opt's keys); returns the run folder."""
    opt = parse_opt([])
    for k, v in kwargs.items():
        if not hasattr(opt, k):
            raise UserInputError(f"flops.run: unknown option {k!r}")
        setattr(opt, k, v)
    check_opt(opt)
    if not opt.cfg and not opt.weights:
        opt.cfg = ["yolov5n.yaml"]
    t_start = time.perf_counter()
    device = select_device(opt.device, opt.batch_size)
    if opt.timer == "cpu" and device.type != "cpu":
        raise UserInputError(f"--timer cpu: only for --device cpu (got {device})")
    models = {} if opt.ops_only else load_models(opt, device)  # bad files fail before a run folder exists
    with torch_threads(opt.threads):
        save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok, mkdir=True)
        md = [f"# Benchmark at {opt.imgsz}x{opt.imgsz}, batch {opt.batch_size}\n",
              f"Device: {device_line(device, opt.threads)}  \nOptions: {options_line(opt)}\n"]
        md += benchmark_sections(opt, models, device, save_dir)
        md.append(f"\nWall time {time.perf_counter() - t_start:.1f} s; process peak RSS {peak_rss_mb():.0f} MB.\n")
        (save_dir / "results.md").write_text("\n".join(md), encoding="utf-8")
    LOGGER.info("\n".join(md))
    LOGGER.info(f"Results saved to {save_dir}")
    return save_dir


def benchmark_sections(opt: argparse.Namespace, models: dict[str, torch.nn.Module], device: torch.device,
                       save_dir: Path) -> list[str]:
    """Run what opt asks for, write its CSVs and plots, return the markdown sections."""
    md, model_rows, profiles, op_rows = [], [], [], []
    if models:
        backends = tuple(iter_backends(tuple(opt.backends)))
        LOGGER.info(f"Timing {', '.join(models)} on {', '.join(backends)} ({opt.runs} runs each)")
        model_rows = whole_model_rows(models, opt.imgsz, device, backends, opt.runs, opt.warmup, opt.batch_size,
                                      opt.threads, opt.timer)
        md += ["\n## Whole models\n", markdown_table(model_rows, MODEL_COLUMNS),
               "\nms: median latency (min_ms: the fastest run); GFLOPS: GFLOPs / latency; peak_MB: process peak "
               "RSS during warm-up forwards (CUDA: max allocated); forward_MB: its rise over the RSS before them.\n"]
        write_csv(model_rows, save_dir / "models.csv")
        if not opt.no_layers:
            LOGGER.info("Profiling layers and operators")
            profiles = profile_models(models, opt.imgsz, device, opt.runs, opt.warmup, opt.batch_size, opt.timer)
            md += ["\n## Per layer (PyTorch eager, fused)\n"] + profile_sections(profiles, save_dir)
    if opt.ops or opt.ops_only:
        LOGGER.info("Running the operator micro-benchmark")
        op_rows = operator_benchmark(opt.imgsz, device, opt.runs, opt.warmup, opt.batch_size, opt.timer)
        md += ["\n## Operators (paper Table 1; YOLOv5-s backbone stage shapes)\n", markdown_table(op_rows, digits=3)]
        write_csv(op_rows, save_dir / "ops_benchmark.csv")
    if not opt.noplots:
        save_plots(model_rows, profiles, op_rows, save_dir)
    return md


def save_plots(model_rows: list[dict], profiles: list[ModelProfile], op_rows: list[dict], save_dir: Path) -> None:
    from utils.profile.charts import plot_latency_vs_flops, plot_layer_flops, plot_operator_benchmark

    if model_rows:
        plot_latency_vs_flops(model_rows, save_dir / "latency_vs_flops.png")
    if profiles:
        plot_layer_flops([{"model": p.name, **r} for p in profiles for r in p.layer_rows], save_dir / "layer_flops.png")
    if op_rows:
        plot_operator_benchmark(op_rows, save_dir / "ops_benchmark.png")


def main(argv: list[str] | None = None) -> None:
    run(**vars(parse_opt(argv)))


if __name__ == "__main__":
    from utils.core.cli import run_cli

    run_cli(main)
