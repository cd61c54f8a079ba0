"""deploy/ runner vs detect.py, end to end on a video with the same exported files (ONNX, TFLite), one run.

Usage: python benchmarks/bench_deploy.py [--source data/videos/people_6s.mp4] [--model yolov5n-faster]
                                         [--imgsz 640] [--formats onnx tflite] [--rounds 2] [--threads 2]

An untrained models/<model>.yaml (nc=80; speed does not depend on the weights) has its head biases set so that
~100 boxes per frame survive NMS at --conf-thres 0.25, as busy as a trained model on a crowded scene; it is
exported once per format with export.py's code. Then each (runner, format) pair runs the whole job in a
fresh process — read the video, letterbox, infer, NMS, draw, write the annotated .mp4 and the labels —
rounds alternating the order so the machine's background load hits both alike. Reported per pair (median
over rounds): process wall time (interpreter start, imports, model load and all frames), the run's own
wall time (model load + frames), throughput = frames / run time, peak RSS of the process, and the
number of boxes written (equal boxes show both runners did the same work).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_deploy.py` puts only benchmarks/ on the path
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

from benchmarks.common import run_measured  # noqa: E402
from deploy.errors import UserInputError  # noqa: E402
from deploy.outputs import increment_path  # noqa: E402
from utils.core.cli import run_cli  # noqa: E402
from utils.core.log import LOGGER  # noqa: E402
from utils.core.system import cpu_name  # noqa: E402

RUNNERS = ("deploy", "detect.py")
HEAD_BIAS = -4.0  # objectness/class logit bias of the untrained head: ~1500 candidates, ~100 kept per frame

CHILD_REPORT = """
def report(t0, save_dir):
    print("BENCH " + json.dumps({"run_s": time.perf_counter() - t0, "save_dir": str(save_dir)}))
"""
DEPLOY_CHILD = """import json, sys, time
from deploy.run import main
""" + CHILD_REPORT + """
t0 = time.perf_counter()
report(t0, main(["--model", sys.argv[1], "--source", sys.argv[2], "--conf-thres", sys.argv[3], "--threads", sys.argv[4],
                 "--project", sys.argv[5], "--name", "run", "--save-txt"]))
"""
DETECT_CHILD = """import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[4]))
import detect
""" + CHILD_REPORT + """
t0 = time.perf_counter()
report(t0, detect.run(weights=[sys.argv[1]], source=sys.argv[2], conf_thres=float(sys.argv[3]), device="cpu",
                      project=sys.argv[5], name="run", save_txt=True))
"""


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", default=str(ROOT / "data/videos/people_6s.mp4"), help="video file")
    p.add_argument("--model", default="yolov5n-faster", help="model YAML name in models/")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--formats", nargs="+", default=["onnx", "tflite"], choices=["onnx", "tflite"])
    p.add_argument("--conf-thres", type=float, default=0.25)
    p.add_argument("--rounds", type=int, default=2, help="runs per (runner, format), order alternating")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of every runtime")
    p.add_argument("--project", default=str(ROOT / "runs/benchmark"))
    p.add_argument("--name", default="deploy")
    return p.parse_args(argv)


def export_files(model_name: str, imgsz: int, formats: list[str], folder: Path, source: str) -> dict[str, Path]:
    """Untrained model whose head is scaled to its features on the video's first frame (an untrained backbone's
    features are ~1e-6, so plain biases would put the same score on every grid cell), exported with export.py."""
    import torch

    import export
    from models.yolo import DetectionModel
    from utils.data.augment import letterbox
    from utils.weights.checkpoint import build_checkpoint, save_checkpoint

    image = letterbox(cv2.VideoCapture(source).read()[1], (imgsz, imgsz))[0]
    frame = torch.from_numpy(image[:, :, ::-1].transpose(2, 0, 1).copy()).float()[None] / 255

    torch.manual_seed(0)
    model = DetectionModel(ROOT / f"models/{model_name}.yaml", nc=80).eval()
    detect_head = model.model[-1]
    features = []
    hooks = [conv.register_forward_hook(lambda m, x, y: features.append(x[0])) for conv in detect_head.m]
    with torch.no_grad():
        model(frame)
        for hook in hooks:
            hook.remove()
        for conv, x in zip(detect_head.m, features):  # logits of std ~1 that vary over the image, mean HEAD_BIAS
            conv.weight.normal_(0, 1 / (float(x.std()) * conv.in_channels ** 0.5))
            conv.bias.normal_(HEAD_BIAS, 0.5)
            conv.weight.view(detect_head.na, -1, *conv.weight.shape[1:])[:, :4] *= 0.1  # anchor-sized boxes
            conv.bias.view(detect_head.na, -1)[:, :4] = 0
    weights = save_checkpoint(build_checkpoint(model), folder / f"{model_name}.pt")
    files = export.run(weights=str(weights), include=formats, imgsz=[imgsz], verify=False)["files"]  # beside .pt
    return {f.fmt: f.path for f in files}


def count_outputs(save_dir: Path) -> tuple[int, int]:
    """(frames in the annotated video, boxes in the label files)."""
    cap = cv2.VideoCapture(str(next(save_dir.glob("*.mp4"))))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    boxes = sum(len(p.read_text().splitlines()) for p in (save_dir / "labels").glob("*.txt"))
    return frames, boxes


def one_run(runner: str, model: Path, opt: argparse.Namespace, project: Path) -> dict:
    """A fresh process: its wall time and own peak RSS (common.run_measured); the run time reported by the child."""
    code = DEPLOY_CHILD if runner == "deploy" else DETECT_CHILD
    child = run_measured(["-c", code, str(model), opt.source, str(opt.conf_thres), str(opt.threads), str(project)])
    lines = [line for line in child.output.splitlines() if line.startswith("BENCH ")]
    if child.returncode or not lines:
        raise RuntimeError(f"{runner} {model.name} failed:\n{child.output[-2000:]}")
    result = json.loads(lines[-1][6:])
    frames, boxes = count_outputs(Path(result["save_dir"]))
    return {"process_s": child.wall_s, "run_s": result["run_s"], "frames": frames, "boxes": boxes,
            "peak_rss_mb": child.peak_mb}


def main(argv: list[str] | None = None) -> dict:
    opt = parse_opt(argv)
    if not Path(opt.source).is_file():
        raise UserInputError(f"--source {opt.source}: video not found")
    cap = cv2.VideoCapture(opt.source)
    n_in, fps_in, size_in = int(cap.get(7)), cap.get(5), (int(cap.get(3)), int(cap.get(4)))
    cap.release()
    save_dir = increment_path(Path(opt.project) / opt.name, mkdir=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = export_files(opt.model, opt.imgsz, opt.formats, Path(tmp), opt.source)
        pairs = [(runner, fmt) for fmt in opt.formats for runner in RUNNERS]
        results: dict[tuple[str, str], list[dict]] = {pair: [] for pair in pairs}
        for r in range(opt.rounds):
            for runner, fmt in pairs if r % 2 == 0 else pairs[::-1]:
                res = one_run(runner, files[fmt], opt, Path(tmp) / f"{runner}-{fmt}-{r}")
                results[(runner, fmt)].append(res)
                LOGGER.info(f"round {r + 1}: {runner:<9} {fmt:<6} {res['frames']} frames in {res['run_s']:.2f}s run "
                            f"({res['process_s']:.2f}s process), {res['boxes']} boxes, {res['peak_rss_mb']:.0f} MB")
    rows = []
    for (runner, fmt), runs in results.items():
        run_s = statistics.median(x["run_s"] for x in runs)
        rows.append({"runner": runner, "format": fmt, "frames": runs[0]["frames"], "boxes": runs[0]["boxes"],
                     "process_s": statistics.median(x["process_s"] for x in runs), "run_s": run_s,
                     "fps": runs[0]["frames"] / run_s,
                     "peak_rss_mb": max(x["peak_rss_mb"] for x in runs)})
    header = (f"{opt.model} @{opt.imgsz}, {Path(opt.source).name} ({n_in} frames {size_in[0]}x{size_in[1]} @ "
              f"{fps_in:.0f} fps), conf {opt.conf_thres}, {opt.threads} threads, {cpu_name()}, "
              f"median of {opt.rounds} rounds")
    table = [f"| runner | format | frames | boxes | process wall s | run wall s | FPS (run) | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    table += [f"| {x['runner']} | {x['format']} | {x['frames']} | {x['boxes']} | {x['process_s']:.2f} | "
              f"{x['run_s']:.2f} | {x['fps']:.1f} | {x['peak_rss_mb']:.0f} |" for x in rows]
    for fmt in opt.formats:
        ours, ref = (next(x for x in rows if x["runner"] == k and x["format"] == fmt) for k in RUNNERS)
        table.append(f"\n{fmt}: deploy is {ref['run_s'] / ours['run_s']:.2f}x detect.py's speed (run), "
                     f"{ref['process_s'] / ours['process_s']:.2f}x end to end with start-up, "
                     f"{ours['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x its peak memory")
    report = header + "\n\n" + "\n".join(table)
    LOGGER.info("\n" + report)
    (save_dir / "results.md").write_text(report + "\n", encoding="utf-8")
    (save_dir / "results.json").write_text(json.dumps({"setup": header, "rows": rows}, indent=2), encoding="utf-8")
    LOGGER.info(f"Saved {save_dir / 'results.md'}")
    return {"rows": rows, "save_dir": save_dir}


if __name__ == "__main__":
    run_cli(main)
