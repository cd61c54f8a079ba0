"""COCO-format JSON for detections and ground truth, and evaluation with pycocotools.

val.py --save-json writes predictions COCO's way (image_id from a numeric file stem, category ids
through the 80→91 map for COCO) so they can be scored by the official tool; when an annotation file
is known, pycocotools' mAPs are printed beside ours as an independent check.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from deploy.errors import UserInputError
from utils.core.boxes import xyxy_to_xywh

COCO_UNUSED_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # ids COCO's 2014 paper listed but never annotated
COCO80_TO_91 = [i for i in range(1, 91) if i not in COCO_UNUSED_IDS]


def is_coco_names(names: list[str]) -> bool:
    """The 80 COCO classes in COCO order (as coco.yaml / coco128.yaml / coco8.yaml list them)."""
    return len(names) == 80 and names[0] == "person" and names[2] == "car" and names[79] == "toothbrush"


def category_ids(names: list[str]) -> list[int]:
    """Class index → COCO category id: the 80→91 map for COCO datasets, identity otherwise."""
    return list(COCO80_TO_91) if is_coco_names(names) else list(range(len(names)))


def image_id(path: str | Path) -> int | str:
    """COCO image id from a file name: the number for 000000000139.jpg, else the stem itself."""
    stem = Path(path).stem
    return int(stem) if stem.isnumeric() else stem


def detections_to_coco(det: torch.Tensor | np.ndarray, img_id: int | str, cat_ids: list[int]) -> list[dict]:
    """Rows x1 y1 x2 y2 conf cls in original-image pixels → COCO result dicts (bbox as x, y, w, h)."""
    det = det.cpu().numpy() if isinstance(det, torch.Tensor) else np.asarray(det)
    xywh = xyxy_to_xywh(det[:, :4].astype(np.float64))
    xywh[:, :2] -= xywh[:, 2:] / 2  # centre → top-left corner
    return [{"image_id": img_id, "category_id": cat_ids[int(c)], "bbox": [round(float(v), 3) for v in box],
             "score": round(float(s), 5)} for box, s, c in zip(xywh, det[:, 4], det[:, 5])]


def yolo_ground_truth(split: str | Path | list, nc: int) -> list[tuple[int | str, int, int, np.ndarray]]:
    """(image_id, width, height, labels cls x1 y1 x2 y2 in pixels) per image of a split, for labels_to_coco_gt.

    Labels are read as the dataloader reads them (utils.data.labels.verify_sample: EXIF-rotated size, duplicate rows
    dropped, corrupt pairs skipped); an image without labels stays, so detections on it count as FPs.
    """
    from utils.data.dataset import find_image_files
    from utils.data.labels import image_to_label_path, verify_sample

    out = []
    for f in find_image_files(split):
        _, rows, (w, h), _, _ = verify_sample((f, image_to_label_path(f), nc))
        if rows is None:
            continue
        rows = rows.astype(np.float64)
        xyxy = np.stack(((rows[:, 1] - rows[:, 3] / 2) * w, (rows[:, 2] - rows[:, 4] / 2) * h,
                         (rows[:, 1] + rows[:, 3] / 2) * w, (rows[:, 2] + rows[:, 4] / 2) * h), 1)
        out.append((image_id(f), w, h, np.concatenate((rows[:, :1], xyxy), 1)))
    return out


def labels_to_coco_gt(images: list[tuple[int | str, int, int, np.ndarray]], cat_ids: list[int],
                      names: list[str]) -> dict:
    """Ground truth as a COCO annotation dict from (image_id, width, height, labels cls x1 y1 x2 y2 px) tuples.

    Lets datasets in YOLO format be scored by pycocotools (and our metrics be checked against it).
    """
    anns, out_images = [], []
    for img_id, w, h, labels in images:
        out_images.append({"id": img_id, "width": int(w), "height": int(h), "file_name": str(img_id)})
        for cls, x1, y1, x2, y2 in np.asarray(labels, dtype=np.float64).reshape(-1, 5):
            bw, bh = x2 - x1, y2 - y1
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat_ids[int(cls)],
                         "bbox": [x1, y1, bw, bh], "area": bw * bh, "iscrowd": 0})
    return {"images": out_images, "annotations": anns,
            "categories": [{"id": cid, "name": n} for cid, n in zip(cat_ids, names)]}


def evaluate_coco(gt: dict | str | Path, detections: list[dict], img_ids: list | None = None) -> dict:
    """Score COCO result dicts against annotations with pycocotools; returns mAP50-95, mAP50 and its summary text.

    img_ids restricts scoring to the images that were validated (a subset of a big annotation file).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not isinstance(gt, dict):
        try:
            gt = json.loads(Path(gt).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserInputError(f"{gt}: cannot read COCO annotation json ({e.__class__.__name__}: {e})") from e
    if not detections:
        return {"map": 0.0, "map50": 0.0, "summary": "no detections"}
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        try:
            coco_dt = coco_gt.loadRes(detections)
        except AssertionError as e:
            raise UserInputError("COCO annotation json: predictions name image ids it does not contain "
                                 "(image ids come from numeric file stems, e.g. 000000000139.jpg → 139)") from e
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if img_ids is not None:
            ev.params.imgIds = list(img_ids)
        ev.evaluate()
        ev.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            ev.summarize()
    return {"map": float(ev.stats[0]), "map50": float(ev.stats[1]), "summary": summary.getvalue()}
