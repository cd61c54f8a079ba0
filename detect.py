"""Run a detector on images, folders, globs, .txt lists, videos, webcams and streams (yolov5's detect.py flags).

Usage:
    python detect.py --weights best.pt --source data/images           # folder (recursive)
                                                 --source clip.mp4 --vid-stride 2
                                                 --source 0                      # webcam
                                                 --source 'rtsp://host/stream'   # public stream URL
                                                 --source cams.streams           # several streams
    python detect.py --weights best.onnx --source data/images --save-txt --save-csv --save-crop

Results go to runs/detect/exp, exp2, ...: annotated images and videos (same size and fps as the input,
every processed frame written), labels/*.txt (YOLO format), predictions.csv and crops/<class>/.
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # allow `python /path/to/detect.py` from anywhere
    sys.path.append(str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from deploy.outputs import Viewer  # noqa: E402  (torch-free, shared with the edge runner)
from utils.assets import DEMO_WEIGHTS, SAMPLES  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import UserInputError  # noqa: E402
from utils.log import LOGGER  # noqa: E402
from utils.infer.predictor import Detections, Detector  # noqa: E402
from utils.runs import increment_path  # noqa: E402
from utils.data.sources import Frame, open_source  # noqa: E402

CSV_COLUMNS = ("Image Name", "Prediction", "Confidence", "Frame", "x1", "y1", "x2", "y2")
VIDEO_FOURCC = "mp4v"
WRITABLE_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # others are saved as .jpg


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
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--view-img", action="store_true", help="show results in a window (when a display exists)")
    p.add_argument("--save-txt", action="store_true", help="save results to labels/*.txt (YOLO format)")
    p.add_argument("--save-csv", action="store_true", help="save results to predictions.csv")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes to crops/<class>/")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    p.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    p.add_argument("--augment", action="store_true", help="augmented inference (scales + flip)")
    p.add_argument("--project", default="runs/detect", help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--line-thickness", default=3, type=int, help="bounding box thickness (pixels)")
    p.add_argument("--hide-labels", action="store_true", help="hide labels")
    p.add_argument("--hide-conf", action="store_true", help="hide confidences")
    p.add_argument("--half", action="store_true", help="FP16 inference on CUDA; OpenVINO: its default reduced precision (bf16)")
    p.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride")
    p.add_argument("--allow-local-streams", action="store_true",
                   help="allow stream URLs on private/loopback/link-local addresses (off: no SSRF)")
    return p.parse_args(argv)


def safe_stem(path: str) -> str:
    """File-name stem for a source: a file's stem, a URL's last path part, a camera index."""
    stem = Path(urlsplit(path).path).stem if "://" in path else Path(path).stem
    return re.sub(r"[^\w.-]+", "_", stem).strip("._") or "stream"


class ResultWriter:
    """Everything a run saves: annotated images/videos, labels, predictions.csv, crops. Never overwrites."""

    def __init__(self, save_dir: Path, opt: argparse.Namespace):
        self.save_dir, self.opt = save_dir, opt
        self.used_names: set[str] = set()
        self.crop_names: dict[str, set[str]] = defaultdict(set)  # class folder → crop stems written
        self.stems: dict[tuple[str, int], str] = {}  # (path, source_index) → output stem
        self.videos: dict[tuple[str, int], cv2.VideoWriter] = {}
        self.labels_written = 0
        self.csv_file = None
        if opt.save_txt:
            (save_dir / "labels").mkdir(parents=True, exist_ok=True)
        if opt.save_csv:
            self.csv_file = open(save_dir / "predictions.csv", "w", newline="", encoding="utf-8")
            self.csv = csv.writer(self.csv_file)
            self.csv.writerow(CSV_COLUMNS)

    def _unique(self, stem: str, taken: set[str]) -> str:
        name, k = stem, 2
        while name in taken:
            name, k = f"{stem}_{k}", k + 1
        taken.add(name)
        return name

    def stem_for(self, frame: Frame) -> str:
        """One output stem per input (two 'a.jpg' in different folders become a and a_2)."""
        key = (frame.path, frame.source_index)
        if key not in self.stems:
            self.stems[key] = self._unique(safe_stem(frame.path), self.used_names)
        return self.stems[key]

    def write(self, frame: Frame, result: Detections, annotated: np.ndarray | None) -> None:
        stem = self.stem_for(frame)
        if annotated is not None:
            if frame.kind == "image":
                suffix = Path(frame.path).suffix.lower()
                suffix = suffix if suffix in WRITABLE_IMAGE_SUFFIXES else ".jpg"
                cv2.imwrite(str(self.save_dir / f"{stem}{suffix}"), annotated)
            else:
                self._video_writer(frame, stem, annotated).write(annotated)
        label_stem = stem if frame.kind == "image" else f"{stem}_{frame.index}"
        if self.opt.save_txt:
            lines = result.yolo_lines(self.opt.save_conf)
            if lines:  # yolov5 writes no file for an image without detections
                (self.save_dir / "labels" / f"{label_stem}.txt").write_text("\n".join(lines) + "\n")
                self.labels_written += 1
        if self.csv_file is not None:
            for i in range(len(result)):
                x1, y1, x2, y2 = (f"{v:.1f}" for v in result.xyxy[i])
                self.csv.writerow([Path(frame.path).name, result.names[result.cls[i]], f"{result.conf[i]:.4f}",
                                   frame.index, x1, y1, x2, y2])
        if self.opt.save_crop:
            self._save_crops(result, label_stem)

    def _save_crops(self, result: Detections, stem: str) -> None:
        for i in range(len(result)):
            folder = self.save_dir / "crops" / safe_stem(result.names[result.cls[i]])
            folder.mkdir(parents=True, exist_ok=True)
            crop = result.crop(i)
            if crop.size:
                cv2.imwrite(str(folder / f"{self._unique(stem, self.crop_names[folder.name])}.jpg"), crop)

    def _video_writer(self, frame: Frame, stem: str, image: np.ndarray) -> cv2.VideoWriter:
        key = (frame.path, frame.source_index)
        if key not in self.videos:
            h, w = image.shape[:2]
            path = self.save_dir / f"{stem}.mp4"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), frame.fps, (w, h))
            if not writer.isOpened():
                raise UserInputError(f"{path}: cannot open a video writer ({VIDEO_FOURCC}, {w}x{h}, {frame.fps} fps)")
            self.videos[key] = writer
        return self.videos[key]

    def close(self) -> None:
        for writer in self.videos.values():
            writer.release()
        if self.csv_file is not None:
            self.csv_file.close()


def detect(opt: argparse.Namespace) -> Path:
    """Run the whole detection job described by `opt`; return the run folder."""
    if not opt.weights:
        raise UserInputError("--weights: give a model file (.pt, .torchscript, .onnx or .tflite)")
    detector = Detector(opt.weights, device=opt.device, imgsz=opt.imgsz, conf=opt.conf_thres, iou=opt.iou_thres,
                        classes=opt.classes, agnostic=opt.agnostic_nms, max_det=opt.max_det, half=opt.half,
                        augment=opt.augment, data=opt.data)
    loader = open_source(opt.source, vid_stride=opt.vid_stride, allow_local_streams=opt.allow_local_streams)
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok, mkdir=True)
    writer, viewer = ResultWriter(save_dir, opt), Viewer(opt.view_img, LOGGER)
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
        if loader.is_live:
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
