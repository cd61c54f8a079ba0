"""What the benchmark scripts share, each piece a call into the library rather than a copy of it: the timing
flags and their checks, the zoo and peer models, ONNX files written by the exporter users get (run by
deploy/'s engines, the runner's own adapters), the adapter that gives an ultralytics model our output layout, and children whose peak memory is
their own.

Torch-free at import: timing children (bench_runtimes) and the trainers' parent (bench_train) import this
module without paying for torch; the helpers that need it import it when called.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.engines import OnnxEngine
from deploy.errors import UserInputError
from deploy.imgsz import round_imgsz

ROOT = Path(__file__).resolve().parents[1]
STRIDE = 32  # the largest stride of every zoo and peer model: --imgsz is rounded up to a multiple of it
PEAK_TAG = "BENCH_PEAK_RSS_MB "
# A `python -c` program: runs a script with its argv as `python` would, then prints the peak memory of this
# process, however the script ends.
REPORT_PEAK = f"""import os, runpy, sys
sys.argv, sys.path[0] = sys.argv[1:], os.path.dirname(os.path.abspath(sys.argv[1]))
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    sys.path.append({str(ROOT)!r})
    from utils.core.system import peak_rss_mb
    print({PEAK_TAG!r} + str(peak_rss_mb()), flush=True)
"""


# ------------------------------------------------------------------------------------------- flags
def add_timing_args(parser: argparse.ArgumentParser, runs: int, warmup: int, threads_help: str) -> None:
    """--imgsz, --threads, --warmup, --runs, --project, --name: the flags of the scripts that time models in rounds."""
    parser.add_argument("--imgsz", type=int, default=640, help="square input size, rounded up to a multiple of 32")
    parser.add_argument("--threads", type=int, default=2, help=threads_help)
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed rounds")
    parser.add_argument("--runs", type=int, default=runs, help="timed rounds (each runs every model once)")
    parser.add_argument("--project", default=str(ROOT / "runs" / "benchmark"), help="save to project/name")
    parser.add_argument("--name", default="exp", help="save to project/name")


def check_timing_args(opt: argparse.Namespace) -> argparse.Namespace:
    """--imgsz by the one rule (deploy.imgsz: rounded up to a multiple of 32, with a warning); counts checked."""
    opt.imgsz = round_imgsz(opt.imgsz, STRIDE)[0]
    for flag, least in (("threads", 1), ("runs", 1), ("warmup", 0)):
        if getattr(opt, flag) < least:
            raise UserInputError(f"--{flag} {getattr(opt, flag)}: must be at least {least}")
    return opt


# ------------------------------------------------------------------------------------------- models
def zoo_model(name: str, flag: str = "--models") -> Any:
    """models/<name>.yaml ('ablations/x' too) at random init, fused, eval. Seeded: latency does not depend
    on the weights, and every script then times the same ones."""
    import torch

    from models.yolo import DetectionModel, find_model_yaml

    cfg = find_model_yaml(f"{name}.yaml")
    if not cfg.is_file():
        raise UserInputError(f"{flag} {name}: no models/{name}.yaml")
    torch.manual_seed(0)
    return DetectionModel(cfg).fuse().eval()


def peer_model(name: str) -> Any:
    """Ultralytics' <name>.yaml built by its own library (random init, nothing downloaded), fused, eval, its
    head in ONNX-export form: one output tensor, as ultralytics' own ONNX export writes it."""
    from ultralytics import YOLO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = YOLO(f"{name}.yaml").model.fuse(verbose=False).eval()
    for m in model.modules():
        if type(m).__name__ == "Detect":
            m.export, m.format = True, "onnx"
    return model


def export_onnx(model: Any, imgsz: int, path: Path, dynamic: bool = False) -> Path:
    """`model` as a batch-1 ONNX file written by the library's exporter (utils.infer.exporters.export_onnx, what
    export.py writes): ours in exporter form first (prepare_for_export), a peer as peer_model left it. `dynamic`:
    any batch and size (the GPU script's batch 32)."""
    import torch

    from models.yolo import DetectionModel
    from utils.infer.exporters import export_onnx as write_onnx
    from utils.infer.exporters import prepare_for_export

    if isinstance(model, DetectionModel):
        model = prepare_for_export(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is the library's choice, and it warns
        return write_onnx(model.float().cpu(), torch.rand(1, 3, imgsz, imgsz), path, metadata={}, dynamic=dynamic)


def onnx_max_diff(model: Any, engine: OnnxEngine, imgsz: int) -> float:
    """Largest |ONNX Runtime - PyTorch| on one random image: the file computes what the model does."""
    import numpy as np
    import torch

    x = torch.rand(1, 3, imgsz, imgsz)
    with torch.no_grad():
        expected = model(x)
    expected = expected[0] if isinstance(expected, (tuple, list)) else expected
    return float(np.abs(engine.run(x.numpy()) - expected.numpy()).max())


def peer_backend(peer: Any, device: Any = "cpu") -> Any:
    """An ultralytics model read through our Backend with our output layout, so val.py scores it as it scores
    ours: a live model (nn.Module, e.g. its best.pt's) or an exported file's Backend (utils.infer.backends).

    Ultralytics gives (B, 4 + nc, N): cx cy w h, then class probabilities, no objectness; ours is (B, N, 5 + nc)
    with an objectness column, which anchor-free heads fix at 1 (models/heads.py). Its TFLite files hold boxes
    divided by the input size (one int8 scale then fits boxes and scores). The class is made here, on use:
    utils.infer.backends imports torch, which this module's importers need not.
    """
    import torch

    from utils.infer.backends import Backend, ModelBackend

    class PeerBackend(Backend):
        kind = "peer"

        def __init__(self, inner: Backend, names: list[str]):
            super().__init__(inner.path, inner.device)
            self.inner, self.names = inner, names
            self.stride, self.imgsz, self.trained_imgsz = inner.stride, inner.imgsz, inner.trained_imgsz
            self.fixed_batch, self.dynamic = inner.fixed_batch, inner.dynamic

        def _forward(self, im: torch.Tensor) -> torch.Tensor:
            y = self.inner._forward(im)
            y = torch.as_tensor(y[0] if isinstance(y, (list, tuple)) else y).float()
            channels_last = y.shape[2] == 4 + len(self.names) != y.shape[1]  # else ultralytics' channels first
            if not channels_last:
                y = y.transpose(1, 2)
            boxes = y[..., :4]
            if self.inner.kind == "tflite":
                h, w = im.shape[2:]
                boxes = boxes * boxes.new_tensor([w, h, w, h])
            return torch.cat((boxes, torch.ones_like(y[..., :1]), y[..., 4:]), -1)

    if isinstance(peer, Backend):
        return PeerBackend(peer, list(peer.names))
    names = peer.names  # ultralytics keeps {index: name}
    return PeerBackend(ModelBackend(peer, device), [names[i] for i in sorted(names)] if isinstance(names, dict)
                       else list(names))


# ------------------------------------------------------------------------------------------- children
@dataclass
class Measured:
    """A finished child: exit status, wall seconds, its own peak memory in MB (None if it could not say), output."""

    returncode: int
    wall_s: float
    peak_mb: float | None
    output: str


def run_measured(args: list[str], log: Path | None = None, env: dict[str, str] | None = None) -> Measured:
    """`python *args` (a script and its argv, or -c CODE) in a fresh interpreter started for it, in the repository
    root: its wall time and the peak memory it reports of itself at its end (why: utils.core.system.peak_rss_mb).
    Output, stdout and stderr together, goes to `log` as it comes when given. -c CODE is written to a script
    first, so the child only ever runs files."""
    with tempfile.TemporaryDirectory(prefix="bench_child_") as tmp:
        if args and args[0] == "-c":
            script = Path(tmp) / "child.py"
            script.write_text(args[1])
            args = [str(script), *args[2:]]
        return _run_reporting_peak([sys.executable, "-c", REPORT_PEAK, *args], log, env)


def _run_reporting_peak(cmd: list[str], log: Path | None, env: dict[str, str] | None) -> Measured:
    t0 = time.perf_counter()
    if log is None:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        text = proc.stdout
    else:
        with open(log, "w") as f:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        text = log.read_text(errors="replace")
    wall = time.perf_counter() - t0
    lines = text.splitlines()
    peaks = [float(line[len(PEAK_TAG):]) for line in lines if line.startswith(PEAK_TAG)]
    output = "\n".join(line for line in lines if not line.startswith(PEAK_TAG))
    return Measured(proc.returncode, wall, peaks[-1] if peaks else None, output)


def publish(table: str, out: str | Path = "") -> None:
    """A benchmark's markdown table to stdout, and to `out` when given (the file a doc's numbers are copied from)."""
    print(table)
    if out:
        Path(out).write_text(table + "\n")


def machine() -> str:
    """The CPU and the flags that move ratios (AMX, VNNI, BF16), as every table names them."""
    from utils.core.system import cpu_flags, cpu_name

    return f"CPU: {cpu_name()} (flags: {' '.join(cpu_flags()) or 'none of interest'})"


def command_line(script: str, argv: list[str]) -> str:
    """The line that reproduces a table: `Command: python benchmarks/<script> <argv>`."""
    import shlex

    return f"Command: python benchmarks/{script} {shlex.join(argv)}"
