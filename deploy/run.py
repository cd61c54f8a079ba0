"""Command line: run an exported .onnx/.tflite/OpenVINO model on images, videos, a webcam or a stream, without torch.

    python -m deploy.run --model best.tflite --source 0 --view-img         # webcam
    python -m deploy.run --model best.onnx --source clip.mp4 --save-txt    # video → runs/detect/exp/clip.mp4
    python -m deploy.run --model best-int8.tflite --source images/ --conf-thres 0.4 --classes 0
    python -m deploy.run --model best_openvino_model --source images/ --half  # OpenVINO, bf16 where the CPU has it

Flags and outputs follow detect.py. Bad input prints one `error: ...` line and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

from .detector import Detector, Options
from .errors import UserInputError
from .log import LOGGER
from .outputs import ResultWriter, Viewer, increment_path
from .sources import open_source


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deploy.run", description=__doc__.split("\n")[0])
    p.add_argument("--model", "--weights", dest="model", required=True,
                   help="exported .onnx, .tflite or OpenVINO .xml (or its *_openvino_model folder)")
    p.add_argument("--source", default="0", help="image, video, folder, glob, camera index (0) or stream URL")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=None,
                   help="inference size h w (default: the size the file was exported at)")
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    p.add_argument("--classes", nargs="+", type=int, help="keep only these classes: --classes 0 2 3")
    p.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the runtime (default: all cores)")
    p.add_argument("--half", action="store_true",
                   help="OpenVINO: its runtime's default precision (bf16 on CPUs with AVX512-BF16/AMX) instead of f32")
    p.add_argument("--view-img", action="store_true", help="show results in a window (when a display exists)")
    p.add_argument("--save-txt", action="store_true", help="save results to labels/*.txt (YOLO format)")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--project", default="runs/detect", help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--line-thickness", type=int, default=None, help="box thickness in pixels (default: by image size)")
    p.add_argument("--hide-labels", action="store_true", help="hide labels")
    p.add_argument("--hide-conf", action="store_true", help="hide confidences")
    return p.parse_args(argv)


def detect(opt: argparse.Namespace) -> Path:
    """Run the whole job described by `opt`; return the run folder."""
    detector = Detector(opt.model, Options(opt.conf_thres, opt.iou_thres, opt.max_det, opt.classes,
                                           opt.agnostic_nms, opt.imgsz, opt.threads, opt.half))
    info = detector.info
    LOGGER.info(f"{opt.model}: {detector.engine.__class__.__name__[:-6]} {detector.engine.precision}, input "
                f"{detector.imgsz[0]}x{detector.imgsz[1]} {detector.engine.layout}, {len(info.names)} classes"
                f"{', NMS in the graph' if info.nms else ''}")
    source = open_source(opt.source)
    save_dir = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
    writer, viewer = ResultWriter(save_dir, opt.save_txt, opt.save_conf), Viewer(opt.view_img)
    detector.warmup()
    totals, seen = defaultdict(float), 0
    start = time.perf_counter()
    try:
        for frame in source:
            result = detector.predict(frame.image)
            seen += 1
            for stage, ms in result.speed.items():
                totals[stage] += ms
            LOGGER.info(f"{frame.info} {detector.imgsz[0]}x{detector.imgsz[1]} {result.summary()}, "
                        f"{result.speed['inference']:.1f}ms")
            drawn = None
            if not opt.nosave or viewer.enabled:
                drawn = result.plot(opt.line_thickness, opt.hide_labels, opt.hide_conf)
            writer.write(frame, result, None if opt.nosave else drawn)
            viewer.show(frame.path, drawn)
            if viewer.quit:
                break
    finally:
        writer.close()
        viewer.close()
        source.close()
    elapsed = time.perf_counter() - start
    if seen:
        LOGGER.info(f"Speed: {totals['preprocess'] / seen:.1f}ms pre-process, {totals['inference'] / seen:.1f}ms "
                    f"inference, {totals['postprocess'] / seen:.1f}ms NMS per image at shape "
                    f"(1, 3, {detector.imgsz[0]}, {detector.imgsz[1]})")
        LOGGER.info(f"FPS: {seen / elapsed:.1f} end-to-end ({seen} frames in {elapsed:.2f}s: read, detect, draw, save)")
    saved = f", {writer.labels_written} labels saved to {save_dir / 'labels'}" if opt.save_txt else ""
    LOGGER.info(f"Results saved to {save_dir}{saved}")
    return save_dir


def run_cli(main: Callable[[], object]) -> None:
    """Bad input → `error: <message>` on stderr and exit status 2, never a traceback."""
    try:
        main()
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def main(argv: list[str] | None = None) -> Path:
    return detect(parse_opt(argv))


if __name__ == "__main__":
    run_cli(main)
