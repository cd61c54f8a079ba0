"""End to end on a video, what users run: `python -m deploy.run` and detect.py on our exported files against
ultralytics' `YOLO(<its export>).predict(video, stream=True)` on its yolov5nu, format by format.

    python benchmarks/bench_video_pipeline.py                       # every pipeline and format, 640, 2 rounds
    python benchmarks/bench_video_pipeline.py --imgsz 320 --frames 30 --formats onnx tflite --rounds 1
    python benchmarks/bench_video_pipeline.py --pipelines deploy.run ultralytics --threads 4

Our model (--model, random init) and the peer (--peer, built from ultralytics' YAML, random init) have their class
convs scaled to their features on the video's first frame and one bias set so that --candidates boxes per 640²
frame clear --conf-thres: NMS then sees the work of a trained model on a busy scene, alike for both (the rows
give the boxes kept per frame). Ours are exported by export.run (what export.py writes), the peer's by
ultralytics' own exporter (onnx, openvino, litert; int8 where ultralytics offers it: not for ONNX).

Each (pipeline, format) runs in a fresh process, rounds alternating the order so background load hits all
alike, drawing and saving off: what is measured is decode + preprocess + inference + NMS. Per row, median over
rounds: FPS = frames / wall of the frame loop (after the model is loaded and warmed up); the per-stage ms (ours
from the runners' own timers, the decode wait from a wrapper around their source; ultralytics' from
`Results.speed`, its decode the loop's remainder); the network alone (the same file, batch 1, timed by
bench_runtimes' child) and FPS / (1000 / that ms), the share of the network's own speed the pipeline keeps;
peak RSS and wall of the process. Exported files stay in --workdir, so each row's command reproduces it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_video_pipeline.py` puts only benchmarks/ on the path
    sys.path.insert(0, str(ROOT))

# torch-free, as the deploy.run child must be
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import command_line, machine, publish, run_measured  # noqa: E402
from deploy.engines import default_threads  # noqa: E402
from deploy.errors import UserInputError  # noqa: E402
from deploy.preprocess import letterbox  # noqa: E402
from utils.core.cli import run_cli  # noqa: E402
from utils.core.log import LOGGER  # noqa: E402

PIPELINES = ("deploy.run", "detect.py", "ultralytics")
FORMATS = ("pt", "onnx", "onnx int8", "openvino", "openvino half", "openvino int8", "tflite", "tflite int8")
DEFAULT_FORMATS = tuple(f for f in FORMATS if f != "openvino half")  # --half: OpenVINO's own precision (bf16)
SUPPORTS = {"deploy.run": set(FORMATS) - {"pt"}, "detect.py": set(FORMATS),
            "ultralytics": {"onnx", "openvino", "openvino int8", "tflite", "tflite int8"}}
PEER_EXPORT = {"onnx": ("onnx", False), "openvino": ("openvino", False), "openvino int8": ("openvino", True),
               "tflite": ("litert", False), "tflite int8": ("litert", True)}  # label -> ultralytics format, int8
PEER_OF = {"openvino half": "openvino"}  # the ultralytics row a format of ours is compared with, where not its own
# bench_runtimes' cell that opens a file as the pipeline does: ours in OpenVINO run f32 unless --half, the peer's at
# OpenVINO's own precision (ultralytics passes no precision hint)
OURS_CELL = {"onnx": "ort fp32", "onnx int8": "ort int8", "openvino": "ov f32", "openvino half": "ov default",
             "openvino int8": "ov f32", "tflite": "tflite fp32", "tflite int8": "tflite int8"}
PEER_CELL = {**OURS_CELL, "openvino": "ov default", "openvino int8": "ov int8"}
STAGES = ("decode", "preprocess", "inference", "postprocess")
SPEED_LINE = re.compile(r"([\d.]+)ms pre-process, ([\d.]+)ms inference, ([\d.]+)ms NMS")
RESULT_TAG = "BENCH_RESULT "


# ------------------------------------------------------------------------------------------------ children
class LoopProbe:
    """Wraps a runner's source and result writer (the names its module calls): the frame loop's wall, from the
    first frame asked for to the source's end, the time spent waiting for frames, and the boxes written."""

    def __init__(self, runner: Any):
        self.frames, self.boxes, self.wait_s, self.start, self.end = 0, 0, 0.0, 0.0, 0.0
        open_source, writer, probe = runner.open_source, runner.ResultWriter, self

        class CountingWriter(writer):
            def write(self, frame: Any, result: Any, annotated: Any) -> None:
                probe.boxes += len(result)
                super().write(frame, result, annotated)

        runner.open_source = lambda *args, **kwargs: TimedSource(open_source(*args, **kwargs), self)
        runner.ResultWriter = CountingWriter


class TimedSource:
    """A source whose iteration LoopProbe times; length and close() are the wrapped source's."""

    def __init__(self, inner: Any, probe: LoopProbe):
        self.inner, self.probe = inner, probe

    def __len__(self) -> int:
        return len(self.inner)

    def close(self) -> None:
        self.inner.close()

    def __iter__(self) -> Iterator[Any]:
        probe = self.probe
        probe.start = time.perf_counter()
        frames = iter(self.inner)
        while True:
            t = time.perf_counter()
            try:
                frame = next(frames)
            except StopIteration:
                break
            probe.wait_s += time.perf_counter() - t
            probe.frames += 1
            yield frame
        probe.end = time.perf_counter()


class SpeedLine(logging.Handler):
    """Keeps a runner's closing 'Speed: ...' line: its own per-stage means."""

    def __init__(self):
        super().__init__()
        self.match: re.Match | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.match = SPEED_LINE.search(record.getMessage()) or self.match


def run_ours(spec: dict) -> dict:
    """Child: deploy.run or detect.py through its own main() on the command line a user types, drawing and saving
    off; decode wait and loop wall from LoopProbe, the other stages from the runner's Speed line."""
    if spec["pipeline"] == "deploy.run":
        import deploy.run as runner

        argv = ["--model", spec["file"]] + (["--threads", str(spec["threads"])] if spec["threads"] else [])
    else:
        import torch

        if spec["threads"]:
            torch.set_num_threads(spec["threads"])  # detect.py's runtimes take torch's thread count
        import detect as runner

        argv = ["--weights", spec["file"], "--imgsz", str(spec["imgsz"]), "--device", "cpu"]
    argv += ["--source", spec["source"], "--nosave", "--conf-thres", str(spec["conf"]), "--iou-thres",
             str(spec["iou"]), "--project", spec["project"], "--name", "run", *spec["flags"]]
    probe, speed = LoopProbe(runner), SpeedLine()
    for name in ("deploy", "pconv_yolo"):  # the runner's logger and the project's
        logging.getLogger(name).addHandler(speed)
    runner.main(argv)
    if not probe.frames or speed.match is None:
        raise RuntimeError(f"{spec['pipeline']} ran no frames or printed no Speed line")
    n = probe.frames
    pre, inf, post = (float(v) for v in speed.match.groups())
    return {"frames": n, "loop_s": probe.end - probe.start, "boxes": probe.boxes / n, "decode": probe.wait_s * 1e3 / n,
            "preprocess": pre, "inference": inf, "postprocess": post}


def run_ultralytics(spec: dict) -> dict:
    """Child: YOLO(file).predict(video, stream=True) after one warm-up call (ours warm up before their loop too),
    ultralytics' defaults but for our NMS settings; decode is the loop's time outside its three timed stages."""
    import torch
    from ultralytics import YOLO

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    model = YOLO(spec["file"], task="detect")
    cap = cv2.VideoCapture(spec["source"])
    h, w = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    cap.release()
    settings = dict(imgsz=spec["imgsz"], conf=spec["conf"], iou=spec["iou"], max_det=1000, save=False)
    model.predict(np.full((h, w, 3), 114, np.uint8), verbose=False, **settings)
    totals: dict[str, float] = defaultdict(float)
    frames = boxes = 0
    start = time.perf_counter()
    for result in model.predict(spec["source"], stream=True, **settings):
        frames, boxes = frames + 1, boxes + len(result.boxes)
        for stage, ms in result.speed.items():
            totals[stage] += ms
    loop_s = time.perf_counter() - start
    stages = {stage: totals[stage] / frames for stage in STAGES[1:]}
    return {"frames": frames, "loop_s": loop_s, "boxes": boxes / frames,
            "decode": loop_s * 1e3 / frames - sum(stages.values()), **stages}


def time_pt(spec: dict) -> dict:
    """Child: the .pt through detect.py's backend alone, batch 1 (bench_runtimes' child times exported files)."""
    import torch

    from utils.infer.backends import load_backend

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    backend = load_backend(spec["file"], "cpu")
    x = torch.rand(1, 3, spec["imgsz"], spec["imgsz"])
    times = []
    with torch.no_grad():
        for i in range(spec["warmup"] + spec["runs"]):
            t = time.perf_counter()
            backend(x)
            times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(times[spec["warmup"]:]), "compute": "fp32 (torch)"}


def child_main(spec: dict) -> None:
    jobs = {"deploy.run": run_ours, "detect.py": run_ours, "ultralytics": run_ultralytics, "bound pt": time_pt}
    print(RESULT_TAG + json.dumps(jobs[spec["pipeline"]](spec)), flush=True)


def in_child(spec: dict) -> dict:
    """`spec` run by this script in a fresh interpreter; its result, process wall and own peak RSS."""
    child = run_measured([__file__, "--child", json.dumps(spec)])
    lines = [line for line in child.output.splitlines() if line.startswith(RESULT_TAG)]
    if child.returncode or not lines:
        tail = [line for line in child.output.splitlines() if line.strip()][-1:] or ["no output"]
        return {"error": tail[0][:200]}
    return {**json.loads(lines[-1][len(RESULT_TAG):]), "wall_s": child.wall_s, "peak_rss_mb": child.peak_mb}


def network_alone(label: str, file: Path, peer: bool, opt: argparse.Namespace) -> dict:
    """The file timed alone, batch 1: bench_runtimes' timing child with the engine the pipeline opens."""
    if label == "pt":
        return in_child({"pipeline": "bound pt", "file": str(file), "imgsz": opt.imgsz, "threads": opt.threads,
                         "runs": opt.bound_runs, "warmup": opt.bound_warmup})
    from benchmarks.bench_runtimes import timed_in_child

    cell = (PEER_CELL if peer else OURS_CELL)[label]
    timing = argparse.Namespace(runs=opt.bound_runs, warmup=opt.bound_warmup, threads=opt.threads or default_threads())
    return timed_in_child(cell, file, timing)


# ------------------------------------------------------------------------------------------------ models
def make_busy(model: Any, convs: list, frame: Any, conf: float, candidates: int) -> None:
    """Class convs scaled to their features on `frame` (an untrained backbone's are tiny, so plain weights would
    score every cell alike), then one bias for all so that `candidates` cells' best class clears `conf`."""
    import torch

    features: dict[int, Any] = {}
    hooks = [conv.register_forward_hook(lambda m, x, y, i=i: features.__setitem__(i, x[0]))
             for i, conv in enumerate(convs)]
    with torch.no_grad():
        try:
            model(frame)
        finally:
            for hook in hooks:
                hook.remove()
        best = []
        for i, conv in enumerate(convs):
            conv.weight.normal_(0, 1 / (float(features[i].std()) * conv.in_channels ** 0.5))
            best.append(torch.nn.functional.conv2d(features[i], conv.weight).amax(1).flatten())
        ranked = torch.cat(best).sort(descending=True).values
        bias = math.log(conf / (1 - conf)) - float(ranked[min(candidates, len(ranked) - 1)])
        for conv in convs:
            conv.bias.fill_(bias)


def first_frame(source: str, imgsz: int) -> Any:
    """The video's first frame as both models take it: letterboxed, RGB, (1, 3, imgsz, imgsz) in [0, 1]."""
    import torch

    ok, image = cv2.VideoCapture(source).read()
    if not ok:
        raise UserInputError(f"--source {source}: cannot read a frame")
    boxed = letterbox(image, (imgsz, imgsz))[0]
    return torch.from_numpy(np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255


def export_ours(opt: argparse.Namespace, frame: Any, folder: Path, calib: Path | None) -> dict[str, Path]:
    """{format: file} of our busy-headed model, written by export.run as `python export.py` writes them."""
    import torch

    import export
    from models.yolo import DetectionModel, detection_head, find_model_yaml
    from utils.weights.checkpoint import build_checkpoint, save_checkpoint

    cfg = find_model_yaml(f"{opt.model}.yaml")
    if not cfg.is_file():
        raise UserInputError(f"--model {opt.model}: no models/{opt.model}.yaml")
    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=80).eval()
    if not model.anchor_free:
        raise UserInputError(f"--model {opt.model}: an anchor-free model (bench_deploy.py times anchor heads)")
    make_busy(model, [branch[-1] for branch in detection_head(model).cls], frame, opt.conf_thres, opt.target)
    weights = save_checkpoint(build_checkpoint(model), folder / f"{Path(opt.model).name}.pt")
    formats = [f for f in opt.formats if f != "pt"]
    include = sorted({f.split()[0] for f in formats})
    files: dict[str, Path] = {"pt": weights}
    if include:
        int8 = any(f.endswith("int8") for f in formats)
        out = export.run(weights=str(weights), include=include, imgsz=[opt.imgsz], int8=int8,
                         data=str(calib) if int8 else None, verify=False, project=str(folder), name="export",
                         exist_ok=True)
        files.update({f.label: f.path for f in out["files"]})
    if "openvino" in files:
        files["openvino half"] = files["openvino"]
    return files


def export_peer(opt: argparse.Namespace, frame: Any, folder: Path, calib: Path | None) -> dict[str, Path]:
    """{format: file} of the busy-headed peer, each written by ultralytics' exporter into a folder of its own."""
    import torch
    from ultralytics import YOLO

    peer = YOLO(f"{opt.peer}.yaml")  # 80 classes, random init: nothing downloaded
    torch.manual_seed(0)
    model = peer.model.eval()
    make_busy(model, [branch[-1] for branch in model.model[-1].cv3], frame, opt.conf_thres, opt.target)
    return {label: peer_export(peer, *PEER_EXPORT[label], folder / label.replace(" ", "-"), opt.imgsz, 1, calib)
            for label in opt.formats if label in PEER_EXPORT}


def peer_export(peer: Any, fmt: str, int8: bool, folder: Path, imgsz: int, batch: int, calib: Path | None) -> Path:
    """One file from ultralytics' exporter (`peer` a YOLO), written into `folder`: ultralytics writes a YAML-built
    model's files into the working folder, under one name per format."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = {"int8": True, "data": str(calib)} if int8 else {}
    with contextlib.chdir(folder):
        return Path(peer.export(format=fmt, imgsz=imgsz, batch=batch, verbose=False, **extra)).resolve()


# ------------------------------------------------------------------------------------------------ the runs
def video_info(path: str) -> dict:
    cap = cv2.VideoCapture(path)
    info = {"frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), "fps": cap.get(cv2.CAP_PROP_FPS),
            "size": (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))}
    cap.release()
    return info


def clip(source: str, frames: int, path: Path) -> str:
    """The first `frames` frames of `source` as an .mp4 (mp4v) every pipeline reads; `source` itself when 0."""
    if frames <= 0:
        return source
    info, cap = video_info(source), cv2.VideoCapture(source)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), info["fps"] or 30.0, info["size"])
    for _ in range(frames):
        ok, image = cap.read()
        if not ok:
            break
        writer.write(image)
    writer.release()
    cap.release()
    return str(path)


def pipeline_rows(opt: argparse.Namespace) -> list[tuple[str, str]]:
    return [(p, f) for f in opt.formats for p in opt.pipelines if f in SUPPORTS[p]]


def measure(opt: argparse.Namespace, files: dict[str, dict[str, Path]], video: str, workdir: Path) -> dict:
    """Every row's pipeline and every file's network-alone timing, each in its own child, rounds alternating."""
    rows = pipeline_rows(opt)
    bounds = sorted({(p == "ultralytics", f) for p, f in rows})
    jobs = [("row", key) for key in rows] + [("bound", key) for key in bounds]
    results: dict[tuple, list[dict]] = defaultdict(list)
    for r in range(opt.rounds):
        for kind, key in jobs if r % 2 == 0 else jobs[::-1]:
            if kind == "bound":
                peer, label = key
                res = network_alone(label, files["peer" if peer else "ours"][label], peer, opt)
            else:
                pipeline, label = key
                file = files["peer" if pipeline == "ultralytics" else "ours"][label]
                res = in_child({"pipeline": pipeline, "file": str(file), "source": video, "imgsz": opt.imgsz,
                                "conf": opt.conf_thres, "iou": opt.iou_thres, "threads": opt.threads,
                                "flags": ["--half"] if label == "openvino half" else [],
                                "project": str(workdir / "runs")})
            results[(kind, *key)].append(res)
            LOGGER.info(f"round {r + 1}/{opt.rounds} {kind} {' '.join(map(str, key))}: {outcome(res)}")
    return results


def outcome(res: dict) -> str:
    if "error" in res:
        return f"failed: {res['error']}"
    return f"{res['frames'] / res['loop_s']:.1f} FPS" if "frames" in res else f"{res['median_ms']:.1f} ms"


def summarize(opt: argparse.Namespace, results: dict) -> list[dict]:
    """One row per (pipeline, format): medians over the rounds that ran, the network alone beside it."""
    out = []
    for pipeline, label in pipeline_rows(opt):
        runs = [r for r in results[("row", pipeline, label)] if "error" not in r]
        bound = [r for r in results[("bound", pipeline == "ultralytics", label)] if "error" not in r]
        row: dict[str, Any] = {"pipeline": pipeline, "format": label}
        if not runs:
            row["error"] = results[("row", pipeline, label)][0]["error"]
            out.append(row)
            continue
        fps = statistics.median(r["frames"] / r["loop_s"] for r in runs)
        row.update(frames=runs[0]["frames"], boxes=statistics.median(r["boxes"] for r in runs), fps=fps,
                   peak_rss_mb=max(r["peak_rss_mb"] or 0 for r in runs),
                   wall_s=statistics.median(r["wall_s"] for r in runs),
                   **{s: statistics.median(r[s] for r in runs) for s in STAGES})
        if bound:
            row["bound_ms"] = statistics.median(r["median_ms"] for r in bound)
            row["compute"] = bound[0]["compute"]
            row["kept"] = fps * row["bound_ms"] / 1e3  # FPS / (1000 / network ms)
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------------ report
def fmt(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def command_of(row: dict, files: dict, video: str, opt: argparse.Namespace) -> str:
    """What a user types to run this row's pipeline (saving off)."""
    pipeline, label = row["pipeline"], row["format"]
    file = files["peer" if pipeline == "ultralytics" else "ours"][label]
    threads = f" --threads {opt.threads}" if opt.threads else ""
    if pipeline == "deploy.run":
        return f"python -m deploy.run --model {file} --source {video} --nosave{threads}" + \
               (" --half" if label == "openvino half" else "")
    if pipeline == "detect.py":
        return (f"python detect.py --weights {file} --source {video} --imgsz {opt.imgsz} --device cpu --nosave"
                + (" --half" if label == "openvino half" else ""))
    return (f"python -c \"from ultralytics import YOLO; [0 for r in YOLO('{file}', task='detect').predict("
            f"'{video}', stream=True, imgsz={opt.imgsz}, iou={opt.iou_thres}, max_det=1000)]\"")


def goals(rows: list[dict]) -> list[str]:
    """deploy.run against ultralytics in each format (goal >= 1.5x) and against its own network (goal >= 0.9)."""
    ok = {(r["pipeline"], r["format"]): r for r in rows if "error" not in r}
    lines = ["| format | deploy.run FPS | ultralytics FPS | deploy.run / ultralytics (goal >= 1.5) | "
             "deploy.run FPS / network bound (goal >= 0.9) |", "|---|---|---|---|---|"]
    for (pipeline, label), ours in ok.items():
        if pipeline != "deploy.run":
            continue
        peer = ok.get(("ultralytics", PEER_OF.get(label, label)))
        ratio = ours["fps"] / peer["fps"] if peer else None
        lines.append(f"| {label} | {ours['fps']:.1f} | {fmt(peer and peer['fps'])} | {against(ratio, 1.5)} | "
                     f"{against(ours.get('kept'), 0.9)} |")
    return lines


def against(value: float | None, goal: float) -> str:
    return "—" if value is None else f"{value:.2f} {'met' if value >= goal else 'missed'}"


def report(opt: argparse.Namespace, rows: list[dict], files: dict, video: str, info: dict) -> str:
    """The markdown --out holds: setup, the rows, the goals, the commands."""
    threads = (f"{opt.threads} threads for our runners" if opt.threads else
               f"our runners at their default ({default_threads()} threads)")
    lines = [f"{opt.model} (ours) vs {opt.peer} (ultralytics), random init with busy heads ({opt.candidates} "
             f"candidates per 640² frame at conf {opt.conf_thres}), {opt.imgsz}x{opt.imgsz}, NMS IoU {opt.iou_thres}, "
             f"{Path(video).name} ({info['frames']} frames {info['size'][0]}x{info['size'][1]} @ {info['fps']:g} fps)",
             f"{machine()}; {threads}; ultralytics at its "
             f"own (ONNX Runtime and OpenVINO all cores, LiteRT cpu_count - 1); network alone at "
             f"{opt.threads or default_threads()} threads, {opt.bound_runs} runs; rounds: {opt.rounds} (median), "
             "each row in a fresh process, order alternating; decode: ours the wait for the next frame, "
             "ultralytics' the loop's time outside its timed stages",
             command_line("bench_video_pipeline.py", opt.argv), "",
             "| pipeline | format | computes in | frames | boxes/frame | FPS | ms/frame | decode ms | preprocess ms | "
             "inference ms | NMS ms | network alone ms | FPS / (1000 / network ms) | peak RSS MB | process wall s |",
             "|---" * 15 + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['pipeline']} | {r['format']} | failed: {r['error']} |" + " |" * 12)
            continue
        lines.append(f"| {r['pipeline']} | {r['format']} | {r.get('compute', '—')} | {r['frames']} | "
                     f"{r['boxes']:.0f} | {r['fps']:.1f} | {1e3 / r['fps']:.1f} | "
                     + " | ".join(fmt(r[s]) for s in STAGES)
                     + f" | {fmt(r.get('bound_ms'))} | {fmt(r.get('kept'), 2)} | {r['peak_rss_mb']:.0f} | "
                     f"{r['wall_s']:.1f} |")
    lines += ["", *goals(rows), "", "| pipeline | format | command (one row, saving off) |", "|---|---|---|"]
    lines += [f"| {r['pipeline']} | {r['format']} | `{command_of(r, files, video, opt)}` |" for r in rows]
    return "\n".join(lines)


def save_report(table: str, rows: list[dict], out: Path) -> None:
    """The markdown table to stdout and `out` (common.publish), the rows as JSON beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    publish(table, out)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", default=str(ROOT.parent / "shared/media/people_6s.mp4"), help="video file")
    p.add_argument("--model", default="yolov5n-lite2-fasterneck-af", help="our anchor-free model YAML in models/")
    p.add_argument("--peer", default="yolov5nu", help="ultralytics model YAML")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    p.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS), choices=FORMATS)
    p.add_argument("--frames", type=int, default=0, help="first N frames only (re-encoded mp4v); 0: the whole video")
    p.add_argument("--rounds", type=int, default=2, help="runs per row, order alternating")
    p.add_argument("--threads", type=int, default=None, help="our runners' threads (default: theirs, every core)")
    p.add_argument("--conf-thres", type=float, default=0.25)
    p.add_argument("--iou-thres", type=float, default=0.45)
    p.add_argument("--candidates", type=int, default=1000,
                   help="boxes per 640² frame over --conf-thres (scaled by the frame's area)")
    p.add_argument("--data", default=str(ROOT / "data/coco128-person.yaml"), help="int8 calibration images")
    p.add_argument("--bound-runs", type=int, default=20, help="timed runs of each file alone")
    p.add_argument("--bound-warmup", type=int, default=5)
    p.add_argument("--workdir", default=str(ROOT / "runs/benchmark/video_pipeline"), help="exported files, clip")
    p.add_argument("--out", default=None, help="markdown table (default: WORKDIR/video_pipeline.md; JSON beside it)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    opt = p.parse_args(argv)
    opt.argv = list(sys.argv[1:] if argv is None else argv)
    return opt


def main(argv: list[str] | None = None) -> list[dict]:
    opt = parse_opt(argv)
    if opt.child:
        child_main(json.loads(opt.child))
        return []
    if not Path(opt.source).is_file():
        raise UserInputError(f"--source {opt.source}: video not found")
    if opt.rounds < 1 or opt.imgsz < 32 or opt.imgsz % 32:
        raise UserInputError(f"--rounds {opt.rounds} --imgsz {opt.imgsz}: rounds >= 1, imgsz a multiple of 32")
    opt.target = max(1, round(opt.candidates * (opt.imgsz / 640) ** 2))
    workdir = Path(opt.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    video = clip(opt.source, opt.frames, workdir / "clip.mp4")
    frame = first_frame(video, opt.imgsz)
    calib = None
    if any(f.endswith("int8") for f in opt.formats):
        from benchmarks.bench_runtimes import calibration_yaml

        calib = calibration_yaml(Path(opt.data), workdir)
    ours = {"deploy.run", "detect.py"} & set(opt.pipelines)
    files = {"ours": export_ours(opt, frame, workdir / "ours", calib) if ours else {},
             "peer": export_peer(opt, frame, workdir / "peer", calib) if "ultralytics" in opt.pipelines else {}}
    rows = summarize(opt, measure(opt, files, video, workdir))
    save_report(report(opt, rows, files, video, video_info(video)), rows,
                Path(opt.out) if opt.out else workdir / "video_pipeline.md")
    return rows


if __name__ == "__main__":
    run_cli(main)
