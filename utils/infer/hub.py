"""What torch.hub.load returns: a Detector that takes YOLOv5's hub calls and answers with YOLOv5's results object.

Why: scripts written for YOLOv5's hub do `results = model(imgs, size=640)`, then `results.print()`, `.save()`,
`.crop()`, `.show()`, `.render()`, `.pandas().xyxy[0]`, `results.xyxy[0]` (an n x 6 tensor), `.xywhn` ... They must
run unchanged. YOLOv5 reads numpy images as RGB there (its docs: `cv2.imread(f)[..., ::-1]`), where the Detector's
own API takes OpenCV's BGR frames, so the hub model converts; paths and PIL images need no care. Beyond YOLOv5's
API, results can be indexed and iterated: each item is the Detector's per-image Detections.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch

from deploy.errors import UserInputError
from deploy.outputs import Viewer, increment_path, make_run_folder
from utils.core.boxes import xyxy_to_xywh
from utils.core.log import LOGGER
from utils.infer.predictor import Detections, Detector

XYXY_COLUMNS = ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]
XYWH_COLUMNS = ["xcenter", "ycenter", "width", "height", "confidence", "class", "name"]


class Results:
    """YOLOv5's hub `Detections`: per image, boxes as (n, 6) tensors [x, y, x|w, y|h, conf, cls] in four
    layouts (xyxy, xywh and both normalised by the image's width and height), the images (RGB, `ims`), their
    file names, and the printing, saving, cropping and plotting YOLOv5 offers."""

    def __init__(self, detections: list[Detections], shape: tuple[int, ...]):
        self.detections = detections
        self.names = detections[0].names if detections else []
        self.ims = [d.image[:, :, ::-1] for d in detections]  # RGB views, as YOLOv5 keeps them
        self.files = [Path(d.path).name if d.path else f"image{i}.jpg" for i, d in enumerate(detections)]
        self.n, self.s = len(detections), shape
        self.xyxy = [torch.from_numpy(np.concatenate((d.xyxy, d.conf[:, None], d.cls[:, None]), 1).astype(np.float32))
                     for d in detections]
        self.pred = self.xyxy
        self.xywh = [xyxy_to_xywh(x) for x in self.xyxy]  # the first four columns; conf and cls kept
        gains = [torch.tensor([w, h, w, h, 1.0, 1.0]) for h, w in (d.image.shape[:2] for d in detections)]
        self.xyxyn = [x / g for x, g in zip(self.xyxy, gains)]
        self.xywhn = [x / g for x, g in zip(self.xywh, gains)]
        speeds = [d.speed for d in detections if d.speed]
        self.t = tuple(sum(s[k] for s in speeds) / max(len(speeds), 1) for k in ("preprocess", "inference", "postprocess"))
        self.times = self.t

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Detections:
        return self.detections[i]

    def __iter__(self) -> Iterator[Detections]:
        return iter(self.detections)

    def __str__(self) -> str:
        lines = [f"image {i + 1}/{self.n}: {d.image.shape[0]}x{d.image.shape[1]} {d.summary()}"
                 for i, d in enumerate(self.detections)]
        lines.append("Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape %s" % (*self.t, self.s))
        return "\n".join(lines)

    __repr__ = __str__

    def print(self) -> None:
        LOGGER.info(str(self))

    def render(self, labels: bool = True) -> list[np.ndarray]:
        """The images with their boxes drawn (RGB); `ims` becomes them, as in YOLOv5."""
        self.ims = [d.plot(hide_labels=not labels)[:, :, ::-1] for d in self.detections]
        return self.ims

    def show(self, labels: bool = True) -> None:
        """Each image with its boxes in a window; without a display, one warning (save() still works)."""
        viewer = Viewer(True, LOGGER)
        for name, d in zip(self.files, self.detections):
            viewer.show(name, d.plot(hide_labels=not labels))

    def save(self, labels: bool = True, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False) -> Path:
        """The images with their boxes drawn, into save_dir (incremented: exp, exp2 ... unless exist_ok)."""
        folder = increment_path(save_dir, exist_ok=exist_ok, mkdir=True)
        for name, d in zip(self.files, self.detections):
            cv2.imwrite(str(folder / name), d.plot(hide_labels=not labels))
        LOGGER.info(f"Saved {self.n} image{'s' * (self.n > 1)} to {folder.resolve()}")
        return folder

    def crop(self, save: bool = True, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False) -> list[dict]:
        """Every box cut out of its image: YOLOv5's list of {'box', 'conf', 'cls', 'label', 'im'} (im BGR, as
        YOLOv5's); with save, written to save_dir/crops/<class>/<file>."""
        folder = increment_path(save_dir, exist_ok=exist_ok, mkdir=True) if save else None
        crops = []
        for name, d, boxes in zip(self.files, self.detections, self.xyxy):
            for i in range(len(d)):
                crop = d.crop(i)
                label = d.label(i)
                crops.append({"box": boxes[i, :4], "conf": boxes[i, 4], "cls": boxes[i, 5], "label": label, "im": crop})
                if folder is not None:
                    target = make_run_folder(folder / "crops" / d.name(int(d.cls[i])))
                    cv2.imwrite(str(increment_path(target / name)), crop)
        if folder is not None:
            LOGGER.info(f"Saved results to {folder.resolve()}")
        return crops

    def pandas(self) -> "Results":
        """A copy whose xyxy, xywh, xyxyn, xywhn are lists of DataFrames with YOLOv5's columns (and class names)."""
        import copy

        import pandas as pd

        out = copy.copy(self)
        for attr, columns in (("xyxy", XYXY_COLUMNS), ("xyxyn", XYXY_COLUMNS), ("xywh", XYWH_COLUMNS),
                              ("xywhn", XYWH_COLUMNS)):
            frames = []
            for rows in getattr(self, attr):
                frame = pd.DataFrame(rows.tolist(), columns=columns[:6])
                frame["class"] = frame["class"].astype(int)
                frame["name"] = [self.names[c] for c in frame["class"]]
                frames.append(frame)
            setattr(out, attr, frames)
        return out

    def tolist(self) -> list["Results"]:
        """One Results per image (YOLOv5's tolist)."""
        return [Results([d], self.s) for d in self.detections]


class HubDetector(Detector):
    """The Detector with YOLOv5's hub call: `model(ims, size=640, augment=False)` -> Results; numpy images are
    RGB there (YOLOv5's rule), paths, folders and PIL images as everywhere."""

    def __call__(self, ims: object, size: int | tuple[int, int] | None = None, augment: bool | None = None,
                 profile: bool = False) -> Results:
        """`profile` is accepted so YOLOv5 scripts passing it run; the stage times are always in `Results.t`."""
        items = list(ims) if isinstance(ims, (list, tuple)) else [ims]
        items = [np.ascontiguousarray(im[..., ::-1]) if isinstance(im, np.ndarray) and im.ndim == 3 else im
                 for im in items]
        kept = self.imgsz, self.augment
        try:
            if size is not None:
                self.imgsz = self._resolve_imgsz(size)
            if augment is not None:
                self.augment = augment and self._tta_possible()
            detections = super().__call__(items)
        finally:
            self.imgsz, self.augment = kept
        if not detections:
            raise UserInputError(f"{ims}: no images found")
        return Results(detections, detections[0].input_shape)
