"""Throughput against batch size and input size, runtime by runtime: our model beside ultralytics' yolov5nu.

    python benchmarks/bench_scaling.py        # 320/480/640 x batch 1/4/16; ORT fp32, OpenVINO f32/default, TFLite
    python benchmarks/bench_scaling.py --sizes 320 --batches 1 4 --cells "ort fp32" "ov f32" --rounds 1

Why: batch-1 latency (bench_runtimes) is what a camera sees; a server or an offline job batches frames, and how
img/s grows with batch and falls with input size differs between models and runtimes. Each (size, batch) gets its
own files with the batch fixed in them — ours from export.run (export.py --imgsz S --batch-size B), the peer's
from ultralytics' exporter (imgsz=S, batch=B) — since a fixed shape is what each runtime plans best; a cell whose
export fails says so in the table. Both models are random init (speed does not depend on the weights). Every
(model, cell, size, batch) is timed in a fresh child by bench_runtimes' timing child (numpy and the runtime only:
its peak RSS is the runtime's), models alternating inside each cell, --rounds times (median). Reported: ms per
batch, img/s = batch x 1000 / ms, its growth over batch 1, peak RSS, and ours against the peer per cell.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_scaling.py` puts only benchmarks/ on the path
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_video_pipeline import peer_export, save_report  # noqa: E402
from benchmarks.common import command_line, machine  # noqa: E402
from deploy.errors import UserInputError  # noqa: E402
from utils.core.cli import run_cli  # noqa: E402
from utils.core.log import LOGGER  # noqa: E402

CELLS = ("ort fp32", "ov f32", "ov default", "tflite fp32")  # bench_runtimes' names: the engine each opens
FORMAT_OF = {"ort fp32": "onnx", "ov f32": "openvino", "ov default": "openvino", "tflite fp32": "tflite"}
PEER_FORMAT = {"onnx": "onnx", "openvino": "openvino", "tflite": "litert"}


def export_ours(opt: argparse.Namespace, formats: list[str], folder: Path) -> dict[str, str]:
    """{"format size batch": file or "failed: ..."} for our model, export.run writing each (size, batch)."""
    import torch

    import export
    from models.yolo import DetectionModel, find_model_yaml
    from utils.weights.checkpoint import build_checkpoint, save_checkpoint

    cfg = find_model_yaml(f"{opt.model}.yaml")
    if not cfg.is_file():
        raise UserInputError(f"--model {opt.model}: no models/{opt.model}.yaml")
    torch.manual_seed(0)
    weights = save_checkpoint(build_checkpoint(DetectionModel(cfg, nc=80)), folder / f"{Path(opt.model).name}.pt")
    files = {}
    for size in opt.sizes:
        for batch in opt.batches:
            keys = [f"{fmt} {size} {batch}" for fmt in formats]
            try:
                out = export.run(weights=str(weights), include=formats, imgsz=[size], batch_size=batch, verify=False,
                                 project=str(folder), name=f"{size}-b{batch}", exist_ok=True)
                files.update({f"{f.fmt} {size} {batch}": str(f.path) for f in out["files"]})
            except Exception as e:  # one shape the exporter cannot write is a table cell, not the end of the run
                files.update({key: f"failed: {first_line(e)}" for key in keys})
    return files


def export_peer(opt: argparse.Namespace, formats: list[str], folder: Path) -> dict[str, str]:
    """The same keys for the peer, each file from ultralytics' own exporter."""
    from ultralytics import YOLO

    peer = YOLO(f"{opt.peer}.yaml")  # 80 classes, random init: nothing downloaded
    files = {}
    for size in opt.sizes:
        for batch in opt.batches:
            for fmt in formats:
                try:
                    path = peer_export(peer, PEER_FORMAT[fmt], False, folder / f"{size}-b{batch}-{fmt}", size, batch,
                                       None)
                    files[f"{fmt} {size} {batch}"] = str(path)
                except Exception as e:  # as in export_ours
                    files[f"{fmt} {size} {batch}"] = f"failed: {first_line(e)}"
    return files


def first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"


def measure(opt: argparse.Namespace, files: dict[str, dict[str, str]]) -> list[dict]:
    """Each (model, cell, size, batch) timed in a fresh child; models alternate inside a cell, --rounds times."""
    from benchmarks.bench_runtimes import timed_in_child

    timing = argparse.Namespace(runs=opt.runs, warmup=opt.warmup, threads=opt.threads)
    samples: dict[tuple, list[dict]] = {}
    for r in range(opt.rounds):
        for cell, size, batch in itertools.product(opt.cells, opt.sizes, opt.batches):
            for model in list(files) if r % 2 == 0 else list(files)[::-1]:
                file = files[model][f"{FORMAT_OF[cell]} {size} {batch}"]
                res = {"error": file} if file.startswith("failed:") else timed_in_child(cell, Path(file), timing)
                samples.setdefault((model, cell, size, batch), []).append(res)
                LOGGER.info(f"round {r + 1}/{opt.rounds} {model} {cell} {size} b{batch}: "
                            + (res["error"] if "error" in res else f"{res['median_ms']:.1f} ms"))
    return [summary(key, runs) for key, runs in samples.items()]


def summary(key: tuple, runs: list[dict]) -> dict:
    model, cell, size, batch = key
    row: dict[str, Any] = {"model": model, "cell": cell, "imgsz": size, "batch": batch}
    ok = [r for r in runs if "median_ms" in r]
    if not ok:
        return {**row, "error": runs[0]["error"]}
    ms = statistics.median(r["median_ms"] for r in ok)
    return {**row, "ms": ms, "img_s": batch * 1e3 / ms, "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
            "compute": ok[0]["compute"]}


def report(opt: argparse.Namespace, rows: list[dict], header: str) -> str:
    """A long table (one row per timing) and a pivot: per (cell, size), ours against the peer at each batch."""
    index = {(r["model"], r["cell"], r["imgsz"], r["batch"]): r for r in rows}
    lines = [header, "", "| model | runtime | imgsz | batch | computes in | ms / batch | img/s | img/s vs batch 1 | "
             "peak RSS MB |", "|---" * 9 + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['cell']} | {r['imgsz']} | {r['batch']} | failed: {r['error']} |"
                         + " |" * 4)
            continue
        one = index.get((r["model"], r["cell"], r["imgsz"], 1), {}).get("img_s")
        growth = f"{r['img_s'] / one:.2f}" if one else "—"
        lines.append(f"| {r['model']} | {r['cell']} | {r['imgsz']} | {r['batch']} | {r['compute']} | {r['ms']:.1f} | "
                     f"{r['img_s']:.1f} | {growth} | {r['peak_rss_mb']:.0f} |")
    lines += ["", "img/s, ours / peer: " + f"{opt.model} / {opt.peer}", "",
              "| runtime | imgsz | " + " | ".join(f"batch {b}" for b in opt.batches) + " |",
              "|---|---|" + "---|" * len(opt.batches)]
    for cell in opt.cells:
        for size in opt.sizes:
            cells = []
            for b in opt.batches:
                ours, peer = (index.get((m, cell, size, b), {}).get("img_s") for m in (opt.model, opt.peer))
                ratio = f" ({ours / peer:.2f}x)" if ours and peer else ""
                cells.append(f"{ours or 0:.1f} / {peer or 0:.1f}{ratio}" if ours or peer else "—")
            lines.append(f"| {cell} | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="yolov5n-lite2-fasterneck-af", help="our model YAML in models/")
    p.add_argument("--peer", default="yolov5nu", help="ultralytics model YAML")
    p.add_argument("--sizes", nargs="+", type=int, default=[320, 480, 640], help="square input sizes (multiples of 32)")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16])
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    p.add_argument("--runs", type=int, default=10, help="timed batches per child")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="threads of every runtime")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--reuse-exports", action="store_true", help="time the files a previous run listed in WORKDIR")
    p.add_argument("--workdir", default=str(ROOT / "runs/benchmark/scaling"), help="exported files")
    p.add_argument("--out", default=None, help="markdown table (default: WORKDIR/scaling.md; JSON beside it)")
    opt = p.parse_args(argv)
    opt.argv = list(sys.argv[1:] if argv is None else argv)
    bad = [s for s in opt.sizes if s < 32 or s % 32] + [b for b in opt.batches if b < 1]
    if bad or min(opt.rounds, opt.runs, opt.threads) < 1:
        raise UserInputError(f"--sizes {opt.sizes} --batches {opt.batches}: sizes multiples of 32, batches, --rounds, "
                             f"--runs and --threads at least 1")
    return opt


def main(argv: list[str] | None = None) -> list[dict]:
    opt = parse_opt(argv)
    t0 = time.perf_counter()
    workdir = Path(opt.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    formats = sorted({FORMAT_OF[c] for c in opt.cells})
    index = workdir / "files.json"
    files: dict[str, dict[str, str]] = json.loads(index.read_text()) if opt.reuse_exports and index.is_file() else {}
    for model, export_files in ((opt.peer, export_peer), (opt.model, export_ours)):
        wanted = [f"{fmt} {s} {b}" for fmt in formats for s in opt.sizes for b in opt.batches]
        if any(key not in files.get(model, {}) for key in wanted):
            files[model] = {**files.get(model, {}), **export_files(opt, formats, workdir / model)}
    index.write_text(json.dumps(files, indent=2))
    files = {model: files[model] for model in (opt.peer, opt.model)}  # a reused index may list others
    export_s = time.perf_counter() - t0
    rows = measure(opt, files)
    header = (f"{machine()}; {opt.threads} threads, {opt.runs} runs x {opt.rounds} rounds (median); each file with its "
              f"batch and size fixed at export; random init; export {export_s:.0f} s, total "
              f"{time.perf_counter() - t0:.0f} s\n{command_line('bench_scaling.py', opt.argv)}")
    save_report(report(opt, rows, header), rows, Path(opt.out) if opt.out else workdir / "scaling.md")
    return rows


if __name__ == "__main__":
    run_cli(main)
