"""Run a detector on images, folders, globs, .txt lists, videos, webcams and streams (yolov5's detect.py flags).

Usage:
    python detect.py --weights best.pt --source data/images           # folder (recursive)
                                                 --source clip.mp4 --vid-stride 2
                                                 --source 0                      # webcam
                                                 --source 'rtsp://host/stream'   # public stream URL
                                                 --source cams.streams           # several streams
    python detect.py --weights best.onnx --source data/images --save-txt --save-csv --save-crop

Results go to this repository's runs/detect/exp, exp2, ... (like train/val/export; --project elsewhere):
annotated images and videos (same size and fps as the input, every processed frame written), labels/*.txt
(YOLO format), predictions.csv and crops/<class>/.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # allow `python /path/to/detect.py` from anywhere
    sys.path.append(str(ROOT))

from deploy.cli import add_detect_flags, checked_line_thickness  # noqa: E402  (torch-free pieces shared with the edge runner)
from deploy.errors import UserInputError  # noqa: E402
from deploy.outputs import ResultWriter, Viewer  # noqa: E402
from deploy.outputs import increment_path  # noqa: E402
from deploy.sources import open_source  # noqa: E402
from utils.core.assets import DEMO_WEIGHTS, SAMPLES  # noqa: E402
from utils.core.cli import run_cli  # noqa: E402
from utils.core.log import LOGGER  # noqa: E402
from utils.infer.predictor import Detector  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """yolov5's detect.py flags (plus --allow-local-streams)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", nargs="+", type=str, default=[str(DEMO_WEIGHTS)],
                   help="model file(s): .pt, .torchscript, .onnx, .tflite; several = ensemble (default: the demo)")
    p.add_argument("--source", type=str, default=str(SAMPLES),
                   help="file/dir/glob/.txt/.streams/URL/camera index (default: shipped images + video)")
    p.add_argument("--data", type=str, default=None, help="data YAML, for class names a model file lacks")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=None,
                   help="inference size h,w (default: the size a .pt was trained at or a file exported at, else 640)")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--save-csv", action="store_true", help="save results to predictions.csv")
    p.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes to crops/<class>/")
    p.add_argument("--augment", action="store_true", help="augmented inference (scales + flip)")
    p.add_argument("--half", action="store_true", help="FP16 inference on CUDA; OpenVINO: its default reduced precision (bf16)")
    add_detect_flags(p, project=str(ROOT / "runs/detect"), line_thickness=3)
    return p.parse_args(argv)


def detect(opt: argparse.Namespace) -> Path:
    """Run the whole detection job described by `opt`; return the run folder."""
    opt.line_thickness = checked_line_thickness(opt.line_thickness)
    if not opt.weights:
        raise UserInputError("--weights: give a model file (.pt, .torchscript, .onnx or .tflite)")
    detector = Detector(opt.weights, device=opt.device, imgsz=opt.imgsz, conf=opt.conf_thres, iou=opt.iou_thres,
                        classes=opt.classes, agnostic=opt.agnostic_nms, max_det=opt.max_det, half=opt.half,
                        augment=opt.augment, data=opt.data)
    loader = open_source(opt.source, vid_stride=opt.vid_stride, allow_local_streams=opt.allow_local_streams)
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok, mkdir=True)
    writer = ResultWriter(save_dir, opt.save_txt, opt.save_conf, opt.save_csv, opt.save_crop)
    viewer = Viewer(opt.view_img, LOGGER)
    totals, seen, shape = defaultdict(float), 0, ()
    try:
        for frame, result in detector.predict_frames(loader):
            seen += 1
            shape = result.input_shape
            for stage, ms in result.speed.items():
                totals[stage] += ms
            LOGGER.info(f"{frame.info} {shape[2]}x{shape[3]} {result.summary()}, {result.speed['inference']:.1f}ms")
            drawn = None
            if not opt.nosave or viewer.enabled:
                drawn = result.plot(opt.line_thickness, opt.hide_labels, opt.hide_conf)
            writer.write(frame, result, None if opt.nosave else drawn)
            viewer.show(f"{frame.source_index}: {frame.path}", drawn)
            if viewer.quit:
                break
    finally:
        writer.close()
        viewer.close()
        loader.close()
    if seen:
        LOGGER.info("Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape %s"
                    % (totals["preprocess"] / seen, totals["inference"] / seen, totals["postprocess"] / seen, shape))
    saved = f", {writer.labels_written} labels saved to {save_dir / 'labels'}" if opt.save_txt else ""
    LOGGER.info(f"Results saved to {save_dir}{saved}")
    return save_dir


def run(**kwargs) -> Path:
    """detect.py as a function: run(weights='best.pt', source='data/images', conf_thres=0.1, ...)."""
    opt = parse_opt([])
    unknown = sorted(set(kwargs) - set(vars(opt)))
    if unknown:
        raise UserInputError(f"run(): unknown option(s) {', '.join(unknown)}")
    vars(opt).update(kwargs)
    return detect(opt)


def main(argv: list[str] | None = None) -> Path:
    return detect(parse_opt(argv))


if __name__ == "__main__":
    run_cli(main)
