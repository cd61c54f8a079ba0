"""Command line: run an exported .onnx/.tflite/OpenVINO model on images, videos, a webcam or a stream, without torch.

    python -m deploy.run --model best.tflite --source 0 --view-img         # webcam
    python -m deploy.run --model best.onnx --source clip.mp4 --save-txt    # video → runs/detect/exp/clip.mp4
    python -m deploy.run --model best-int8.tflite --source images/ --conf-thres 0.4 --classes 0
    python -m deploy.run --model best_openvino_model --source images/ --half  # OpenVINO, bf16 where the CPU has it

Flags and outputs follow detect.py. Bad input prints one `error: ...` line and exits with status 2.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

from .cli import add_detect_flags, checked_line_thickness, run_cli
from .detector import Detector, Options
from .log import LOGGER
from .outputs import ResultWriter, Viewer, increment_path
from .sources import open_source


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deploy.run", description=__doc__.split("\n")[0])
    p.add_argument("--model", "--weights", dest="model", required=True,
                   help="exported .onnx, .tflite or OpenVINO .xml (or its *_openvino_model folder)")
    p.add_argument("--source", default="0",
                   help="image, video, folder, glob, .txt list, camera index (0), stream URL or .streams file")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=None,
                   help="inference size h w (default: the size the file was exported at)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the runtime (default: all cores)")
    p.add_argument("--half", action="store_true",
                   help="OpenVINO: its runtime's default precision (bf16 on CPUs with AVX512-BF16/AMX) instead of f32")
    add_detect_flags(p, project="runs/detect", line_thickness=None)  # runs/ beside the device's working folder
    return p.parse_args(argv)


def detect(opt: argparse.Namespace) -> Path:
    """Run the whole job described by `opt`; return the run folder."""
    opt.line_thickness = checked_line_thickness(opt.line_thickness)
    detector = Detector(opt.model, Options(opt.conf_thres, opt.iou_thres, opt.max_det, opt.classes,
                                           opt.agnostic_nms, opt.imgsz, opt.threads, opt.half))
    info = detector.info
    LOGGER.info(f"{opt.model}: {detector.engine.__class__.__name__[:-6]} {detector.engine.precision}, input "
                f"{detector.imgsz[0]}x{detector.imgsz[1]} {detector.engine.layout}, {len(info.names)} classes"
                f"{', NMS in the graph' if info.nms else ''}")
    source = open_source(opt.source, vid_stride=opt.vid_stride, allow_local_streams=opt.allow_local_streams)
    save_dir = increment_path(Path(opt.project) / opt.name, opt.exist_ok, mkdir=True)
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
    shown = save_dir.resolve()  # absolute, as detect.py says it: the user may not know where runs/ went
    saved = f", {writer.labels_written} labels saved to {shown / 'labels'}" if opt.save_txt else ""
    LOGGER.info(f"Results saved to {shown}{saved}")
    return save_dir


def main(argv: list[str] | None = None) -> Path:
    return detect(parse_opt(argv))


if __name__ == "__main__":
    run_cli(main, {"model file": "--model"})
