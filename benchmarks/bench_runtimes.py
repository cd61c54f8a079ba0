"""Latency in the runtimes and precisions users deploy with: ONNX Runtime fp32 / int8, OpenVINO f32 / default /
int8, TFLite (XNNPACK) fp32 / int8 — our zoo beside ultralytics' models, each exported by its own exporter.

Ours go through `export.run` (what `python export.py --include onnx openvino tflite --int8` writes); the peers
through ultralytics' `YOLO(...).export(format=onnx | openvino | litert, int8=...)`. ultralytics has no int8
ONNX, so the peers' "ort int8" file is their ONNX quantized by the same onnxruntime quantizer as ours
(utils.infer.exporters.quantize_onnx: static QDQ, per-channel, the head's decode kept float). "ov default" is the
fp32 IR with OpenVINO's own precision choice (bf16 on CPUs with AVX512-BF16 or AMX), "ov f32" forces f32,
"ov int8" is the int8 IR at the default choice for its float parts. Models are random-init at --nc classes
(latency does not depend on the weights) unless --weights gives a trained checkpoint (then each exported
file's held-out mAP50-95 is measured on --val-data too, for ours and peers alike through val.py's scorer).

Each (cell, model) is timed in its own child process that imports only numpy and the runtime (so its peak
memory is the runtime's), on --threads threads (default 2), batch 1; models alternate inside each cell and
the sweep repeats --rounds times (median of the rounds' medians). Stop other work while it runs: load moves ratios.

    python benchmarks/bench_runtimes.py                                      # the zoo + yolov5nu, yolo11n at 640
    python benchmarks/bench_runtimes.py --models yolov5n yolov5n-pconv-lite2-af --peers yolov5nu --imgsz 320
    python benchmarks/bench_runtimes.py --weights yolov5n-af=runs/train/exp/weights/best.pt \\
        yolov5nu=runs/peer/weights/best.pt --val-data data/shapes3.yaml --imgsz 320
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_runtimes.py` puts only benchmarks/ on the path
    sys.path.insert(0, str(ROOT))

# torch-free, as the timing child must be
from benchmarks.common import peer_backend  # noqa: E402
from deploy.engines import Engine, OnnxEngine, OpenVINOEngine, TFLiteEngine, openvino_xml_in  # noqa: E402
from models.zoo import DEPLOY, PEERS  # noqa: E402
from utils.core.system import cpu_flags, cpu_name, peak_rss_mb  # noqa: E402

CELLS = ("ort fp32", "ort int8", "ov f32", "ov default", "ov int8", "tflite fp32", "tflite int8")


# ------------------------------------------------------------------------------------------------ export
def calibration_yaml(data: Path, folder: Path) -> Path:
    """The data YAML with absolute split paths: ultralytics resolves relative ones under its own datasets dir."""
    import yaml

    from utils.data.dataset import check_dataset

    d = check_dataset(data)
    out = folder / "calibration.yaml"
    out.write_text(yaml.safe_dump({"path": str(Path(d["train"][0]).parent), "train": d["train"], "val": d["val"],
                                   "names": dict(enumerate(d["names"]))}))
    return out


def export_ours(name: str, weights: Path | None, size: int, nc: int, calib: Path, folder: Path) -> dict[str, Path]:
    """{cell: file} for one of our models, written by export.run exactly as a user's export would be."""
    import export
    from models.yolo import DetectionModel
    from utils.weights.checkpoint import build_checkpoint, save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    if weights is None:
        import torch

        torch.manual_seed(0)
        model = DetectionModel(f"{name}.yaml", nc=nc)
        model.names = [f"class{i}" for i in range(nc)]
        weights = save_checkpoint(build_checkpoint(model), folder / f"{Path(name).name}.pt")
    out = export.run(weights=str(weights), include=["onnx", "openvino", "tflite"], int8=True, data=str(calib),
                     imgsz=[size], verify=False, project=str(folder), name="export", exist_ok=True)
    files = {f.label: f.path for f in out["files"]}
    return {"ort fp32": files["onnx"], "ort int8": files["onnx int8"], "ov f32": files["openvino"],
            "ov default": files["openvino"], "ov int8": files["openvino int8"], "tflite fp32": files["tflite"],
            "tflite int8": files["tflite int8"]}


def export_peer(name: str, weights: Path | None, size: int, calib: Path, folder: Path) -> dict[str, Path]:
    """{cell: file} for an ultralytics model, each format from ultralytics' own exporter."""
    from ultralytics import YOLO

    from utils.data.dataset import check_dataset
    from utils.infer.exporters import calibration_batches, quantize_onnx

    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(folder):  # ultralytics writes a YAML-built model's files into the working directory
        model = YOLO(str(weights)) if weights else YOLO(f"{name}.yaml")  # a YAML-built peer has 80 classes
        common = dict(imgsz=size, batch=1, verbose=False)
        files = {"ort fp32": model.export(format="onnx", simplify=True, **common),
                 "ov f32": model.export(format="openvino", **common),
                 "ov int8": model.export(format="openvino", int8=True, data=str(calib), **common),
                 "tflite fp32": model.export(format="litert", **common),
                 "tflite int8": model.export(format="litert", int8=True, data=str(calib), **common)}
        files = {cell: Path(f).resolve() for cell, f in files.items()}
    files["ov default"] = files["ov f32"]
    files["ort int8"] = quantize_onnx(files["ort fp32"], folder / f"{name}-int8.onnx",
                                      calibration_batches(check_dataset(calib), (size, size), 1), model.model)
    return files


# ------------------------------------------------------------------------------------------------ timing
def cell_engine(cell: str, path: Path, threads: int) -> Engine:
    """The runner's engine for one cell's file: ONNX Runtime alone in its process (spinning, its default), OpenVINO
    with the latency hint and f32 forced only in "ov f32", TFLite as it comes."""
    if cell.startswith("ort"):
        return OnnxEngine(path, threads)
    if cell.startswith("ov"):
        return OpenVINOEngine(openvino_xml_in(path), threads, precision="f32" if cell == "ov f32" else None,
                              latency=True)
    return TFLiteEngine(path, threads)


def time_file(cell: str, path: Path, runs: int, warmup: int, threads: int) -> dict:
    """Child process: open `path` in the cell's runtime (numpy + that runtime only), time batch-1 inference."""
    import numpy as np

    t0 = time.perf_counter()
    engine = cell_engine(cell, path, threads)
    x = np.random.rand(*engine.input_shape).astype(engine.input_spec.dtype)
    precision = cell.split()[1]
    if engine.compute:  # OpenVINO's own choice: the ops left float run in it
        precision = f"int8 + {engine.compute}" if cell == "ov int8" else engine.compute
    for _ in range(warmup):
        engine.run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        engine.run(x)
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": float(np.median(times)), "wall_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(),
            "compute": precision}


def timed_in_child(cell: str, path: Path, opt: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", cell, str(path), "--runs", str(opt.runs), "--warmup", str(opt.warmup),
           "--threads", str(opt.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- accuracy
def file_map(cell: str, path: Path, peer: bool, val_data: Path, size: int) -> float:
    """mAP50-95 of one exported file with val.py's scorer (COCO matching); a peer's output is renamed to ours."""
    import val
    from utils.infer.backends import load_backend

    backend = load_backend(path, "cpu", fp16=cell == "ov default")
    if peer:
        backend = peer_backend(backend)
    with tempfile.TemporaryDirectory() as tmp:
        return val.run(data=str(val_data), weights=backend, imgsz=size, batch_size=1, workers=0, plots=False,
                       project=tmp, half=cell == "ov default").map50_95


# ------------------------------------------------------------------------------------------------ report
def report(rows: list[dict], models: list[str], peer: str, header: str) -> str:
    """Markdown: one row per model, each cell 'ms (ratio to the peer in the same cell)', then best vs best."""
    ms = {(r["model"], r["cell"]): r["median_ms"] for r in rows if "median_ms" in r}
    lines = [header, "", "| model | " + " | ".join(CELLS) + " | best cell | best vs " + peer + "'s best |",
             "|---" * (len(CELLS) + 3) + "|"]
    peer_best = min((ms[(peer, c)] for c in CELLS if (peer, c) in ms), default=None)
    for m in models:
        cells = []
        for c in CELLS:
            if (m, c) not in ms:
                cells.append("—")
                continue
            ratio = f" ({ms[(m, c)] / ms[(peer, c)]:.2f}x)" if (peer, c) in ms and m != peer else ""
            cells.append(f"{ms[(m, c)]:.1f}{ratio}")
        mine = {c: ms[(m, c)] for c in CELLS if (m, c) in ms}
        best = min(mine, key=mine.get) if mine else None
        vs = f"{mine[best] / peer_best:.2f}x" if best and peer_best else "—"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {best} {mine.get(best, 0):.1f} | {vs} |")
    lines += ["", "| model | cell | computes in | ms | img/s | peak MB | child wall s | mAP50-95 |", "|---" * 8 + "|"]
    for r in rows:
        if "median_ms" not in r:
            lines.append(f"| {r['model']} | {r['cell']} | — | failed: {r['error']} | | | | |")
            continue
        m = f"{r['map50_95']:.4f}" if r.get("map50_95") is not None else "—"
        lines.append(f"| {r['model']} | {r['cell']} | {r['compute']} | {r['median_ms']:.1f} | "
                     f"{1e3 / r['median_ms']:.1f} | {r['peak_rss_mb']:.0f} | {r['wall_s']:.1f} | {m} |")
    return "\n".join(lines)


def parse_weights(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"error: --weights {item}: give NAME=PATH to an existing checkpoint")
        out[name] = Path(path)
    return out


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", default=list(DEPLOY), help="our model YAMLs (models/, ablations/ too)")
    p.add_argument("--peers", nargs="*", default=list(PEERS), help="ultralytics models; the first is the reference")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--nc", type=int, default=80, help="classes of our random-init models (peers' YAMLs have 80)")
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    p.add_argument("--data", default=str(ROOT / "data/coco128-person.yaml"), help="int8 calibration images (train split)")
    p.add_argument("--weights", nargs="*", default=[], help="NAME=checkpoint.pt: trained models (ours or peers)")
    p.add_argument("--val-data", default=None, help="data YAML for the held-out mAP of files with --weights")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=2, help="threads of every runtime")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="0: export only (time later with --reuse-exports)")
    p.add_argument("--reuse-exports", action="store_true", help="time the files a previous run exported to --out")
    p.add_argument("--out", default=str(ROOT / "runs/benchmark/runtimes"), help="folder for files, JSON, table")
    p.add_argument("--child", nargs=2, metavar=("CELL", "FILE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    opt = parse_opt(argv)
    if opt.child:
        print(json.dumps(time_file(opt.child[0], Path(opt.child[1]), opt.runs, opt.warmup, opt.threads)))
        return

    t_start = time.perf_counter()
    weights = parse_weights(opt.weights)
    out = Path(opt.out)
    out.mkdir(parents=True, exist_ok=True)
    calib = calibration_yaml(Path(opt.data), out)
    index = out / "files.json"  # what was exported, so --reuse-exports can time again without re-exporting
    files: dict[str, dict[str, Path]] = {}
    if opt.reuse_exports and index.is_file():
        files = {m: {c: Path(f) for c, f in cells.items()} for m, cells in json.loads(index.read_text()).items()}
    for name in opt.peers:
        if name not in files:
            files[name] = export_peer(name, weights.get(name), opt.imgsz, calib, out / "peers" / name)
    for name in opt.models:
        if name not in files:
            files[name] = export_ours(name, weights.get(name), opt.imgsz, opt.nc, calib, out / "ours" / name)
    index.write_text(json.dumps({m: {c: str(f) for c, f in cells.items()} for m, cells in files.items()}, indent=2))
    export_s = time.perf_counter() - t_start
    models = [*opt.peers, *opt.models]
    samples: dict[tuple[str, str], list[dict]] = {}
    for _ in range(opt.rounds):
        for cell in opt.cells:
            for name in models:  # models alternate inside each cell, so drift hits them alike
                samples.setdefault((name, cell), []).append(timed_in_child(cell, files[name][cell], opt))
    rows = []
    for (name, cell), runs in samples.items():
        ok = [r for r in runs if "median_ms" in r]
        if not ok:
            rows.append({"model": name, "cell": cell, "error": runs[0]["error"]})
            continue
        row = {"model": name, "cell": cell, "median_ms": statistics.median(r["median_ms"] for r in ok),
               "peak_rss_mb": max(r["peak_rss_mb"] for r in ok), "wall_s": statistics.mean(r["wall_s"] for r in ok),
               "compute": ok[0]["compute"], "file": str(files[name][cell])}
        if name in weights and opt.val_data:
            row["map50_95"] = file_map(cell, files[name][cell], name in opt.peers, Path(opt.val_data), opt.imgsz)
        rows.append(row)
    header = (f"CPU: {cpu_name()} (flags: {' '.join(cpu_flags()) or 'none of interest'}), {opt.threads} threads, "
              f"batch 1, {opt.imgsz}x{opt.imgsz}, {opt.runs} runs x {opt.rounds} rounds, median; ms (ratio to "
              f"{models[0]} in the same cell); export {export_s:.0f} s, total wall {time.perf_counter() - t_start:.0f} s"
              f"\nCommand: python benchmarks/bench_runtimes.py {' '.join(sys.argv[1:])}")
    table = report(rows, models, models[0], header)
    print(table)
    (out / "runtimes.md").write_text(table + "\n")
    (out / "runtimes.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
