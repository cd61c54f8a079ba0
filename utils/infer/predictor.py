"""The Python API, and the one pre/post-processing path detect.py also uses.

    from utils.infer.predictor import Detector
    detector = Detector("runs/train/exp/weights/best.pt", conf=0.25)
    for result in detector(["data/images/bus.jpg", frame_bgr, pil_image]):
        print(result.xyxy, result.conf, result.cls, [result.names[c] for c in result.cls])
        annotated = result.plot()

Boxes come back in the ORIGINAL image's pixels: the letterbox applied here is undone here, so callers
never see the network's input size.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
import torch
import yaml

from deploy.detector import Detections as RunnerDetections
from deploy.errors import UserInputError
from deploy.imgsz import round_imgsz, warn_far_from_trained
from deploy.postprocess import check_class_ids
from deploy.preprocess import letterbox
from deploy.sources import Frame, is_live_source, open_source
from utils.core.boxes import clip_boxes, non_max_suppression, scale_boxes, xywh_to_xyxy, xyxy_to_xywh, xyxy_to_xywhn
from utils.core.log import LOGGER
from utils.core.torch_utils import select_device
from utils.infer.backend_base import EngineInput
from utils.infer.backends import Backend, load_backend
from utils.infer.tta import predict_augmented
from utils.weights.checkpoint import DEFAULT_IMGSZ

@dataclass
class Detections(RunnerDetections):
    """Detections for one image (the edge runner's result, plus where the image came from). Arrays are numpy:
    xyxy (n, 4) float32 pixels of the original BGR `image`, conf (n,), cls (n,) int."""

    path: str = ""
    input_shape: tuple[int, ...] = ()  # shape of the tensor the network saw, e.g. (1, 3, 384, 640)

    def label(self, i: int, hide_labels: bool = False, hide_conf: bool = False) -> str:
        """Text drawn next to box i."""
        if hide_labels:
            return ""
        name = self.names[self.cls[i]]
        return name if hide_conf else f"{name} {self.conf[i]:.2f}"

    def plot(self, line_width: int | None = None, hide_labels: bool = False, hide_conf: bool = False) -> np.ndarray:
        """A copy of the image with boxes and labels drawn (BGR)."""
        from ultralytics.utils.plotting import Annotator, colors  # cv2 mode: never fetches a font

        annotator = Annotator(self.image.copy(), line_width=line_width, pil=False, example="abc")
        for i in range(len(self)):
            annotator.box_label(self.xyxy[i].tolist(), self.label(i, hide_labels, hide_conf),
                                color=colors(int(self.cls[i]), True))
        return annotator.result()

    def yolo_lines(self, save_conf: bool = False) -> list[str]:
        """YOLO label lines 'cls cx cy w h [conf]', normalised to the original image."""
        h, w = self.image.shape[:2]
        xywhn = xyxy_to_xywhn(self.xyxy.astype(np.float64), w=w, h=h)
        lines = []
        for i in range(len(self)):
            values = [int(self.cls[i]), *xywhn[i].tolist()] + ([float(self.conf[i])] if save_conf else [])
            lines.append(" ".join(f"{v:g}" for v in values))
        return lines

    def crop(self, i: int, gain: float = 1.02, pad: int = 10) -> np.ndarray:
        """Box i cut from the original image, enlarged a little (yolov5's save_one_box margins)."""
        xywh = xyxy_to_xywh(self.xyxy[i:i + 1].astype(np.float64))
        xywh[:, 2:] = xywh[:, 2:] * gain + pad
        x1, y1, x2, y2 = clip_boxes(xywh_to_xyxy(xywh), self.image.shape[:2])[0].astype(int)
        return self.image[y1:y2, x1:x2].copy()


def fraction(name: str, value: float) -> float:
    """A threshold between 0 and 1 (model.conf = 5 is refused where it is set); `name` is the value's for messages."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise UserInputError("must be between 0 and 1", name, value)
    return float(value)


def names_from_data_yaml(path: str | Path) -> list[str]:
    """Class names of a data YAML (list or {id: name}); only `names` is read, split paths need not exist."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError("file not found", "data", path)
    try:
        names = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("names")
    except (yaml.YAMLError, AttributeError) as e:
        raise UserInputError(f"not a data YAML mapping ({type(e).__name__})", "data", path) from None
    if isinstance(names, dict):
        try:
            names = [names[k] for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            raise UserInputError("names keys must be integer class ids", "data", path) from None
    if not isinstance(names, list) or not names:
        raise UserInputError("no 'names' list found", "data", path)
    return [str(n) for n in names]


def as_bgr(image: object, what: str = "image") -> np.ndarray:
    """numpy BGR/grey/BGRA or PIL image → contiguous uint8 BGR (H, W, 3)."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image without importing PIL
        return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    if not isinstance(image, np.ndarray):
        raise UserInputError(f"{what}: expected a path, numpy array or PIL image, got {type(image).__name__}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise UserInputError(f"{what}: expected an (H, W, 3) image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise UserInputError(f"{what}: expected uint8 pixels, got {image.dtype}")
    return np.ascontiguousarray(image)


def default_imgsz(backend: Backend) -> tuple[int, int]:
    """The size a model runs at when no --imgsz is given, for detect.py, torch.hub and val alike: an exported
    file's own size (for a dynamic ONNX, the size stored at export), else the size a .pt checkpoint was trained
    at (its boxes are best there), else 640."""
    if backend.imgsz is not None:
        return tuple(backend.imgsz)
    size = backend.trained_imgsz or DEFAULT_IMGSZ
    return size, size


class Detector:
    """Load a model once; detect objects in images, frames, paths, folders, videos and streams."""

    def __init__(self, weights: str | Path, device: str = "", imgsz: int | Iterable[int] | None = None,
                 conf: float = 0.25, iou: float = 0.45, classes: list[int] | None = None, agnostic: bool = False,
                 max_det: int = 1000, half: bool = False, augment: bool = False, data: str | Path | None = None,
                 warmup: bool = True):
        if max_det < 1:
            raise UserInputError("must be 1 or more", "max_det", max_det)
        self.device = select_device(device)
        self.backend: Backend = load_backend(weights, self.device, half)
        self.names = self._resolve_names(data)
        self._nc: int | None = len(self.names) or None  # None: a file without names; its output tells later
        self.conf, self.iou, self.classes, self.agnostic, self.max_det = conf, iou, classes, agnostic, max_det
        self.imgsz = self._resolve_imgsz(imgsz)
        self.augment = augment and self._tta_possible()
        if warmup:
            self.backend.warmup(self.imgsz)

    @property
    def conf(self) -> float:
        """The confidence threshold; checked on every assignment (hub users set `model.conf` after loading), so a
        bad value fails where it is set, not at the next call."""
        return self._conf

    @conf.setter
    def conf(self, value: float) -> None:
        self._conf = fraction("conf_thres", value)

    @property
    def iou(self) -> float:
        """The NMS IoU threshold; checked on every assignment, as `conf`."""
        return self._iou

    @iou.setter
    def iou(self, value: float) -> None:
        self._iou = fraction("iou_thres", value)

    @property
    def classes(self) -> list[int] | None:
        """The class filter; checked on every assignment, as hub users set `model.classes` after loading."""
        return self._classes

    @classes.setter
    def classes(self, ids: int | list[int] | None) -> None:
        self._classes = check_class_ids(ids, self._nc, self.backend.path)

    def _resolve_names(self, data: str | Path | None) -> list[str]:
        """Names stored in the model win; --data fills in for files exported without them."""
        names = list(self.backend.names)
        if data is not None:
            data_names = names_from_data_yaml(data)
            if not names:
                return data_names
            if data_names != names:
                LOGGER.warning(f"WARNING: --data {data}: class names differ from those stored in the model; "
                               f"using the model's")
        return names

    def _resolve_imgsz(self, imgsz: int | Iterable[int] | None) -> tuple[int, int]:
        """imgsz None (no --imgsz): the model's own size, see default_imgsz. A fixed-size file always runs at its
        size; saying so is only news when the user asked for another one."""
        fixed = None if self.backend.dynamic else self.backend.imgsz
        if imgsz is None:
            return fixed or round_imgsz(default_imgsz(self.backend), self.backend.stride)
        requested = round_imgsz(imgsz, self.backend.stride)
        if fixed is None:
            warn_far_from_trained(requested, default_imgsz(self.backend))
            return requested
        if requested != fixed:
            LOGGER.info(f"{self.backend.path.name} was exported at {list(fixed)}; using that size "
                        f"instead of --imgsz {list(requested)}")
        return fixed

    def _tta_possible(self) -> bool:
        """TTA rescales the input and merges raw predictions, so it needs a dynamic model without NMS inside."""
        if self.backend.end_to_end:
            LOGGER.warning("WARNING: --augment: this model has NMS inside; running without augmentation")
            return False
        if not self.backend.dynamic:
            LOGGER.warning(f"WARNING: --augment needs a model that accepts any input size; "
                           f"{self.backend.kind} model has a fixed size, running without it")
        return self.backend.dynamic

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor | EngineInput, tuple]:
        """BGR image → the letterboxed batch-1 input (a (1, 3, H, W) float RGB [0, 1] tensor, or for an exported
        file its own input array, see Backend.frame_input), and ((ry, rx), (padw, padh))."""
        boxed, box = letterbox(image, self.imgsz)  # deploy's one rule: the whole imgsz, as exported files take it
        ratio_pad = ((box.ratio_y, box.ratio_x), (box.pad_left, box.pad_top))
        frame = self.backend.frame_tensor if self.augment else self.backend.frame_input  # TTA scales a tensor
        return frame(boxed), ratio_pad

    def infer(self, im: torch.Tensor | EngineInput) -> torch.Tensor:
        """(B, N, 5+nc) raw predictions; with --augment, those of the scaled/flipped copies are appended."""
        if not self.augment:
            return self.backend(im)
        return predict_augmented(self.backend, im, self.backend.stride)  # the same views and merge as val

    def postprocess(self, pred: torch.Tensor, input_shape: tuple[int, int], image: np.ndarray,
                    ratio_pad: tuple, path: str = "") -> Detections:
        """NMS on one image's predictions, then boxes back to the original image's pixels."""
        if self.backend.end_to_end:
            det = self._select_end_to_end(pred[0])
        else:
            if self._nc is None:  # no names anywhere: the output's width is the first word on the class count
                self._nc = pred.shape[-1] - 5
                self.classes = self._classes
            det = non_max_suppression(pred, self.conf, self.iou, classes=self.classes, agnostic=self.agnostic,
                                      max_det=self.max_det)[0]
        self._name_unnamed(int(det[:, 5].max()) + 1 if len(det) else 0)
        det[:, :4] = scale_boxes(input_shape, det[:, :4], image.shape[:2], ratio_pad)
        det = det.float().cpu().numpy()
        return Detections(image, det[:, :4].copy(), det[:, 4].copy(), det[:, 5].astype(np.int64), self.names,
                          path=path)

    def _name_unnamed(self, nc: int) -> None:
        """Models without names (and no --data) get 'class0', 'class1', ... — extended in place as ids appear."""
        self.names.extend(f"class{i}" for i in range(len(self.names), nc))

    def _select_end_to_end(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows of a file exported with NMS inside: drop padding and low scores, apply --classes and --max-det."""
        det = rows[rows[:, 4] > self.conf]
        if self.classes is not None:
            det = det[(det[:, 5:6] == torch.tensor(self.classes, device=det.device)).any(1)]
        return det[det[:, 4].argsort(descending=True)][: self.max_det]

    def predict(self, image: np.ndarray, path: str = "") -> Detections:
        """Detect objects in one BGR image; `speed` holds the ms spent in each stage.

        torch runs in the backend's `torch_work` context: one thread around a model another runtime computes on
        the CPU.
        """
        with self.backend.torch_work():
            t0 = self._sync()
            im, ratio_pad = self.preprocess(image)
            t1 = self._sync()
            pred = self.infer(im)
            t2 = self._sync()
            result = self.postprocess(pred, tuple(im.shape[2:]), image, ratio_pad, path)
            t3 = self._sync()
        result.speed = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        result.input_shape = tuple(im.shape)
        return result

    def predict_frames(self, frames: Iterable[Frame]) -> Iterator[tuple[Frame, Detections]]:
        """Detections for each frame of a loader from deploy.sources (detect.py's loop)."""
        for frame in frames:
            yield frame, self.predict(frame.image, frame.path)

    def stream(self, source: str | Path | int, vid_stride: int = 1,
               allow_local_streams: bool = False) -> Iterator[Detections]:
        """Detections one frame at a time from any --source (folder, video, webcam, stream URL...)."""
        loader = open_source(source, vid_stride=vid_stride, allow_local_streams=allow_local_streams)
        for _, result in self.predict_frames(loader):
            yield result

    def __call__(self, source: object) -> list[Detections]:
        """Detect in an image (numpy BGR / PIL), a path (image, folder, glob, video) or a list of these."""
        items = source if isinstance(source, (list, tuple)) else [source]
        results = []
        for item in items:
            if isinstance(item, (str, Path)):
                if is_live_source(str(item)):
                    raise UserInputError(f"{item}: webcams and streams never end; use Detector.stream() for them")
                results.extend(result for _, result in self.predict_frames(open_source(item)))
            else:
                results.append(self.predict(as_bgr(item)))
        return results
