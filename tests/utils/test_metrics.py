"""Metrics on hand-built cases with exactly known AP, and agreement with pycocotools on coco8."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.coco_eval import (COCO80_TO_91, category_ids, detections_to_coco, evaluate_coco, image_id,
                             labels_to_coco_gt)
from utils.metric_plots import plot_ap_curves, plot_confusion_matrix
from utils.metrics import ConfusionMatrix, ap_per_class, fitness, match_predictions

ROOT = Path(__file__).resolve().parents[2]


def _evaluate(images):
    """images: list of (detections (n,6) x1y1x2y2 conf cls, labels (m,5) cls x1y1x2y2) → APResult."""
    tps, confs, pcls, tcls = [], [], [], []
    for det, lab in images:
        det, lab = torch.tensor(det, dtype=torch.float32).view(-1, 6), torch.tensor(lab, dtype=torch.float32).view(-1, 5)
        tps.append(match_predictions(det, lab).numpy())
        confs.append(det[:, 4].numpy())
        pcls.append(det[:, 5].numpy())
        tcls.append(lab[:, 0].numpy())
    return ap_per_class(np.concatenate(tps), np.concatenate(confs), np.concatenate(pcls), np.concatenate(tcls))


BOX_A, BOX_B, FAR = [10, 10, 50, 50], [60, 60, 100, 120], [200, 200, 240, 240]


def test_perfect_detections_give_ap_one():
    res = _evaluate([([[*BOX_A, 0.9, 0], [*BOX_B, 0.8, 1]], [[0, *BOX_A], [1, *BOX_B]]),
                     ([[*BOX_B, 0.7, 0]], [[0, *BOX_B]])])
    assert res.classes.tolist() == [0, 1]
    np.testing.assert_allclose(res.ap, 1.0)
    assert (res.map50, res.map, res.mp, res.mr) == pytest.approx((1.0, 1.0, 1.0, 1.0))


def test_one_false_positive_above_the_true_positive_halves_ap():
    # ranked FP (precision 0) then TP (precision 1/2 at recall 1): envelope 0.5 everywhere
    res = _evaluate([([[*FAR, 0.9, 0], [*BOX_A, 0.8, 0]], [[0, *BOX_A]])])
    np.testing.assert_allclose(res.ap, 0.5)
    assert res.r[0] == pytest.approx(1.0) and res.p[0] == pytest.approx(0.5)


def test_a_missed_object_stops_the_envelope_at_half_recall():
    # 2 labels, 1 exact detection: precision 1 up to recall 0.5 → 51 of 101 recall points
    res = _evaluate([([[*BOX_A, 0.9, 0]], [[0, *BOX_A], [0, *BOX_B]])])
    np.testing.assert_allclose(res.ap, 51 / 101)
    assert res.p[0] == pytest.approx(1.0) and res.r[0] == pytest.approx(0.5)


def test_class_confusion_scores_zero_and_lands_off_the_diagonal():
    det, lab = [[*BOX_A, 0.9, 1]], [[0, *BOX_A]]
    res = _evaluate([(det, lab)])
    assert res.classes.tolist() == [0], "classes without labels are not scored"
    assert res.map == 0.0 and res.map50 == 0.0
    cm = ConfusionMatrix(nc=2)
    cm.process_batch(torch.tensor(det, dtype=torch.float32), torch.tensor(lab, dtype=torch.float32))
    expected = np.zeros((3, 3), dtype=int)
    expected[1, 0] = 1  # predicted 1, true 0
    np.testing.assert_array_equal(cm.matrix, expected)


def test_crowd_of_duplicates_gives_one_true_positive():
    # four jittered duplicates rank above the exact box: only the exact (highest IoU) one is a TP
    dups = [[10 + d, 10, 50 + d, 50, 0.9 - 0.01 * d, 0] for d in (1, 2, 3, 4)]
    det = torch.tensor([*dups, [*BOX_A, 0.5, 0]], dtype=torch.float32)
    tp = match_predictions(det, torch.tensor([[0, *BOX_A]], dtype=torch.float32))
    assert tp[:, 0].tolist() == [False, False, False, False, True]
    assert tp.sum(0).tolist() == [1] * 10
    res = _evaluate([(det.tolist(), [[0, *BOX_A]])])
    np.testing.assert_allclose(res.ap, 0.2)  # TP at rank 5: precision 1/5 at recall 1


def test_iou_thresholds_count_where_the_overlap_reaches():
    # IoU 0.7 → TP at 0.50, 0.55, 0.60, 0.65, 0.70 and FP above: AP50 = 1, AP50-95 = 0.5
    tp = match_predictions(torch.tensor([[0, 0, 10, 7, 0.9, 0.0]]), torch.tensor([[0.0, 0, 0, 10, 10]]))
    assert tp[0].tolist() == [True] * 5 + [False] * 5
    res = _evaluate([([[0, 0, 10, 7, 0.9, 0]], [[0, 0, 0, 10, 10]])])
    assert res.map50 == pytest.approx(1.0) and res.map == pytest.approx(0.5)


def test_no_detections_and_no_labels_are_handled():
    assert match_predictions(torch.zeros(0, 6), torch.tensor([[0.0, *BOX_A]])).shape == (0, 10)
    assert match_predictions(torch.tensor([[*BOX_A, 0.5, 0.0]]), torch.zeros(0, 5)).sum() == 0
    res = ap_per_class(np.zeros((0, 10), bool), np.zeros(0), np.zeros(0), np.array([0, 0, 1]))
    assert res.map == 0.0 and res.mp == 0.0 and res.ap.shape == (2, 10)
    cm = ConfusionMatrix(nc=2)
    cm.process_batch(None, torch.tensor([[1.0, *BOX_A]]))
    cm.process_batch(torch.tensor([[*BOX_B, 0.9, 0.0]]), torch.zeros(0, 5))
    assert cm.matrix[2, 1] == 1 and cm.matrix[0, 2] == 1 and cm.matrix.sum() == 2
    tp, fp = cm.tp_fp()
    assert tp.tolist() == [0, 0] and fp.tolist() == [1, 0]


def test_confusion_matrix_ignores_low_confidence_and_counts_fp_fn():
    cm = ConfusionMatrix(nc=2, conf=0.25, iou_thres=0.45)
    det = torch.tensor([[*BOX_A, 0.9, 0], [*FAR, 0.8, 1], [*BOX_B, 0.1, 1]], dtype=torch.float32)
    lab = torch.tensor([[0, *BOX_A], [1, *BOX_B]], dtype=torch.float32)
    cm.process_batch(det, lab)
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]


def test_fitness_weights_map50_and_map():
    assert fitness([0.5, 0.4, 0.6, 0.3]) == pytest.approx(0.1 * 0.6 + 0.9 * 0.3)
    np.testing.assert_allclose(fitness(np.array([[0, 0, 1.0, 0.0], [0, 0, 0.0, 1.0]])), [0.1, 0.9])


def test_plots_are_written(tmp_path):
    res = _evaluate([([[*BOX_A, 0.9, 0], [*FAR, 0.6, 1], [*BOX_B, 0.5, 1]], [[0, *BOX_A], [1, *BOX_B]])])
    paths = plot_ap_curves(res, ["cat", "dog"], tmp_path)
    cm = ConfusionMatrix(nc=2)
    cm.matrix[:] = [[3, 1, 0], [0, 2, 1], [1, 0, 0]]
    paths.append(plot_confusion_matrix(cm.matrix, ["cat", "dog"], tmp_path / "confusion_matrix.png"))
    for p in paths:
        img = cv2.imread(str(p))
        assert img is not None and img.shape[0] > 500 and img.std() > 1, p


def _coco8_val_gt():
    """(image_id, w, h, labels cls x1y1x2y2 in pixels) for the shipped coco8 val split."""
    out = []
    for img_path in sorted((ROOT / "data/coco8/images/val").glob("*.jpg")):
        h, w = cv2.imread(str(img_path)).shape[:2]
        rows = np.loadtxt(ROOT / "data/coco8/labels/val" / f"{img_path.stem}.txt", ndmin=2)
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        xyxy = np.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), 1)
        out.append((image_id(img_path), w, h, np.concatenate((rows[:, :1], xyxy), 1)))
    return out


def _perturbed_detections(labels, w, h, nc, rng):
    """Jitter every label box, drop ~20%, add random false positives; random-ish scores."""
    keep = labels[rng.random(len(labels)) > 0.2]
    boxes = keep[:, 1:].copy()
    size = np.concatenate((boxes[:, 2:] - boxes[:, :2],) * 2, 1)
    boxes += rng.normal(0, 0.08, boxes.shape) * size
    scores = rng.uniform(0.3, 1.0, len(keep))
    n_fp = rng.integers(1, 5)
    fp_xy = rng.uniform(0, 1, (n_fp, 2)) * [w, h]
    fp_wh = rng.uniform(10, 120, (n_fp, 2))
    fp = np.concatenate((fp_xy, fp_xy + fp_wh), 1)
    det = np.concatenate((np.concatenate((boxes, fp)), np.concatenate((scores, rng.uniform(0, 1, n_fp)))[:, None],
                          np.concatenate((keep[:, 0], rng.integers(0, nc, n_fp)))[:, None]), 1)
    return det


def test_map_agrees_with_pycocotools_on_perturbed_coco8_val():
    names = [f"class{i}" for i in range(80)]
    names[0], names[2], names[79] = "person", "car", "toothbrush"
    cat_ids = category_ids(names)
    assert cat_ids == COCO80_TO_91 and cat_ids[79] == 90 and len(set(cat_ids)) == 80
    gt_images = _coco8_val_gt()
    gt = labels_to_coco_gt(gt_images, cat_ids, names)
    rng = np.random.default_rng(0)
    gaps = []
    for trial in range(3):
        results, tps, confs, pcls, tcls = [], [], [], [], []
        for img_id, w, h, labels in gt_images:
            det = _perturbed_detections(labels, w, h, 80, rng)
            results += detections_to_coco(det, img_id, cat_ids)
            det_t, lab_t = torch.tensor(det, dtype=torch.float32), torch.tensor(labels, dtype=torch.float32)
            tps.append(match_predictions(det_t, lab_t).numpy())
            confs.append(det[:, 4])
            pcls.append(det[:, 5])
            tcls.append(labels[:, 0])
        ours = ap_per_class(np.concatenate(tps), np.concatenate(confs), np.concatenate(pcls), np.concatenate(tcls))
        theirs = evaluate_coco(gt, results)
        assert 0.2 < theirs["map"] < 0.9, "the perturbation should leave a mAP far from 0 and 1"
        gaps += [abs(ours.map - theirs["map"]), abs(ours.map50 - theirs["map50"])]
    assert max(gaps) < 0.02, gaps
