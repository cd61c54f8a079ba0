"""Load an exported file once, then frame → detections in the frame's own pixels (the runner's Python API)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .draw import draw_detections
from .engines import Engine, load_engine
from .errors import MODEL_FILE, UserInputError
from .imgsz import round_imgsz, warn_far_from_trained
from .postprocess import (as_rows, check_class_ids, end_to_end_detections, nms_xyxy, raw_candidates,
                          scale_boxes_to_image, xyxy_to_xywhn)
from .preprocess import letterbox, to_input


@dataclass
class Options:
    """Detection settings (detect.py's flag names and defaults). imgsz None: the size the file was exported at."""

    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int = 1000
    classes: list[int] | None = None
    agnostic_nms: bool = False
    imgsz: list[int] | None = None
    threads: int | None = None
    half: bool = False  # OpenVINO: the runtime's default precision (bf16 where the CPU has it) instead of f32

    def check(self) -> None:
        for name, value in (("conf_thres", self.conf_thres), ("iou_thres", self.iou_thres)):
            if not 0 <= value <= 1:
                raise UserInputError("must be between 0 and 1", name, value)
        if self.max_det < 1:
            raise UserInputError("must be 1 or more", "max_det", self.max_det)
        if self.threads is not None and self.threads < 1:
            raise UserInputError("must be 1 or more", "threads", self.threads)


@dataclass
class Detections:
    """One image's detections: xyxy (n, 4) float32 pixels of `image`, conf (n,), cls (n,) int64."""

    image: np.ndarray
    xyxy: np.ndarray
    conf: np.ndarray
    cls: np.ndarray
    names: tuple[str, ...]
    speed: dict[str, float] = field(default_factory=dict)  # ms: preprocess, inference, postprocess

    def __len__(self) -> int:
        return len(self.cls)

    def summary(self) -> str:
        """'2 persons, 1 bus', or '(no detections)' (detect.py's wording)."""
        if not len(self):
            return "(no detections)"
        classes, counts = np.unique(self.cls, return_counts=True)
        return ", ".join(f"{n} {self.name(c)}{'s' * int(n > 1)}" for c, n in zip(classes, counts))

    def name(self, c: int) -> str:
        return self.names[c] if 0 <= c < len(self.names) else f"class{c}"

    def plot(self, line_width: int | None = None, hide_labels: bool = False, hide_conf: bool = False) -> np.ndarray:
        labels = ["" if hide_labels else self.name(c) if hide_conf else f"{self.name(c)} {p:.2f}"
                  for c, p in zip(self.cls.tolist(), self.conf.tolist())]
        return draw_detections(self.image, self.xyxy, labels, self.cls, line_width)

    def yolo_lines(self, save_conf: bool = False) -> list[str]:
        """'cls cx cy w h [conf]' normalised to the image, as detect.py --save-txt writes them."""
        h, w = self.image.shape[:2]
        xywhn = xyxy_to_xywhn(self.xyxy, w, h)
        lines = []
        for i in range(len(self)):
            values = [int(self.cls[i]), *xywhn[i].tolist()] + ([float(self.conf[i])] if save_conf else [])
            lines.append(" ".join(f"{v:g}" for v in values))
        return lines


def network_input_hw(imgsz: list[int] | None, engine: Engine) -> tuple[int, int]:
    """The size the network runs at for a requested imgsz. A dynamic file runs at imgsz (else its export size)
    under the one imgsz rule; a fixed-size file runs at its own size only, so another imgsz is an error rather
    than a silent resize."""
    if engine.dynamic:
        hw = round_imgsz(engine.info.imgsz if imgsz is None else imgsz, engine.info.stride)
        warn_far_from_trained(hw, engine.info.imgsz)
        return hw
    if imgsz is not None and round_imgsz(imgsz, 1) != engine.input_hw:  # stride 1: checked, never rounded
        (h, w), asked = engine.input_hw, " ".join(map(str, imgsz))
        raise UserInputError(f"{engine.path.name} takes a fixed {h}x{w} input; leave imgsz unset or re-export the "
                             f"file at this size (export.py --imgsz {asked})", "imgsz", asked)
    return engine.input_hw


class Detector:
    """An exported .onnx/.tflite/OpenVINO file plus the pre/post-processing detect.py applies around it."""

    def __init__(self, model: str | Path, opt: Options | None = None):
        self.opt = opt or Options()
        self.opt.check()
        self.engine = load_engine(model, self.opt.threads, self.opt.half)
        self.info = self.engine.info
        self.imgsz = network_input_hw(self.opt.imgsz, self.engine)
        self.opt.classes = check_class_ids(self.opt.classes, len(self.info.names), self.engine.path)

    def warmup(self) -> None:
        """One throw-away run: runtimes allocate and pick kernels on the first call."""
        self.predict(np.full((*self.imgsz, 3), 114, np.uint8))

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        """One image; a file exported with a larger fixed batch gets zero images alongside."""
        if self.engine.batch and self.engine.batch > 1:
            x = np.concatenate([x, np.zeros((self.engine.batch - 1, *x.shape[1:]), x.dtype)])
        return self.engine.run(x)[:1]

    def predict(self, image: np.ndarray) -> Detections:
        """Detect objects in one BGR uint8 image; `speed` holds the ms spent in each stage."""
        t0 = time.perf_counter()
        boxed, box = letterbox(image, self.imgsz)
        x = to_input(boxed, self.engine.layout, self.engine.input_spec)
        t1 = time.perf_counter()
        output = self._run_one(x)
        t2 = time.perf_counter()
        try:
            rows = as_rows(output, len(self.info.names), self.info.nms)
        except ValueError as e:
            raise UserInputError(str(e), MODEL_FILE, self.engine.path) from None
        opt = self.opt
        if self.info.nms:
            xyxy, conf, cls = end_to_end_detections(rows, opt.conf_thres, opt.classes, opt.max_det)
        else:
            xyxy, conf, cls = raw_candidates(rows, opt.conf_thres, opt.classes)
            keep = nms_xyxy(xyxy, conf, cls, opt.iou_thres, opt.max_det, opt.agnostic_nms)
            xyxy, conf, cls = xyxy[keep], conf[keep], cls[keep]
        xyxy = scale_boxes_to_image(xyxy, box, image.shape)
        t3 = time.perf_counter()
        speed = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        return Detections(image, xyxy, conf.astype(np.float32), cls.astype(np.int64), self.info.names, speed)
