"""Metrics on hand-built cases with exactly known AP, and agreement with pycocotools (coco8, synthetic sets)."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.metrics.coco_eval import (COCO80_TO_91, category_ids, detections_to_coco, evaluate_coco, image_id,
                             labels_to_coco_gt)
from utils.metrics.curves import plot_ap_curves, plot_confusion_matrix
from utils.metrics.ap import ConfusionMatrix, ap_per_class, match_predictions, score_image
from utils.metrics.val_result import CSV_COLUMNS, ValResult

ROOT = Path(__file__).resolve().parents[3]


def _evaluate(images, matching="coco"):
    """images: list of (detections (n,6) x1y1x2y2 conf cls, labels (m,5) cls x1y1x2y2) → APResult, as val scores."""
    stats = []
    for det, lab in images:
        det = torch.tensor(det, dtype=torch.float32).view(-1, 6)
        lab = torch.tensor(lab, dtype=torch.float32).view(-1, 5)
        stats.append([x.numpy() for x in score_image(det, lab, matching)])
    return ap_per_class(*(np.concatenate(x) for x in zip(*stats)))


def _pycocotools(images, nc=2, size=(640, 480)):
    """pycocotools' (mAP50-95, mAP50) for the same images as _evaluate takes."""
    names = [f"c{i}" for i in range(nc)]
    gt = labels_to_coco_gt([(i, *size, np.asarray(lab, float).reshape(-1, 5)) for i, (_, lab) in enumerate(images)],
                           list(range(nc)), names)
    rows = [r for i, (det, _) in enumerate(images) for r in detections_to_coco(np.asarray(det, float).reshape(-1, 6),
                                                                                 i, list(range(nc)))]
    res = evaluate_coco(gt, rows)
    return res["map"], res["map50"]


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
    # four jittered duplicates (IoU 0.95, 0.90, 0.86, 0.82) rank above the exact box (IoU 1)
    dups = [[10 + d, 10, 50 + d, 50, 0.9 - 0.01 * d, 0] for d in (1, 2, 3, 4)]
    det = torch.tensor([*dups, [*BOX_A, 0.5, 0]], dtype=torch.float32)
    lab = torch.tensor([[0, *BOX_A]], dtype=torch.float32)
    # COCO: in score order, the best-scoring duplicate takes the label
    tp = match_predictions(det, lab)
    assert tp[0].all() and not tp[1:].any(), "IoU 39/41 = 0.951 reaches every threshold"
    np.testing.assert_allclose(_evaluate([(det.tolist(), [[0, *BOX_A]])]).ap, 1.0)
    # yolov5: the exact (highest IoU) box takes it, so the four duplicates above it are FPs
    tp = match_predictions(det, lab, matching="yolo")
    assert tp[:, 0].tolist() == [False, False, False, False, True]
    assert tp.sum(0).tolist() == [1] * 10
    np.testing.assert_allclose(_evaluate([(det.tolist(), [[0, *BOX_A]])], "yolo").ap, 0.2)  # precision 1/5


def test_coco_rule_gives_the_label_to_the_higher_score_as_pycocotools_does():
    # one label; a 0.9-score box at IoU 0.6 and a 0.8-score box at IoU 0.9
    images = [([[0, 0, 100, 60, 0.9, 0], [0, 0, 100, 90, 0.8, 0]], [[0, 0, 0, 100, 100]])]
    coco, yolo = _evaluate(images), _evaluate(images, "yolo")
    assert coco.map50 == pytest.approx(1.0), "TP first, then an FP"
    assert yolo.map50 == pytest.approx(0.5), "yolov5: the IoU-0.9 box takes the label, the top box is an FP"
    assert (coco.map, coco.map50) == pytest.approx(_pycocotools(images), abs=1e-9)


def test_iou_tie_goes_to_the_later_label_as_pycocotools_does():
    # the first box overlaps both labels at IoU 2/3; the second only the first label (IoU 0.82): it is a TP
    # only if the tie handed the first box the later label
    images = [([[2, 0, 12, 10, 0.9, 0], [-1, 0, 9, 10, 0.8, 0]], [[0, 0, 0, 10, 10], [0, 4, 0, 14, 10]])]
    tp = match_predictions(*(torch.tensor(x, dtype=torch.float32) for x in images[0]))
    assert tp[:, 0].tolist() == [True, True]
    assert (_evaluate(images).map, _evaluate(images).map50) == pytest.approx(_pycocotools(images), abs=1e-9)


def test_only_the_100_best_detections_per_image_and_class_count_as_in_pycocotools():
    # 100 confident misses of class 0 push its one hit (scored lowest) out; 100 of class 1 do not touch class 1's
    misses = [[300 + i, 300, 310 + i, 310, 0.9, 0] for i in range(100)]
    images = [([*misses, [*BOX_A, 0.5, 0], *[[*m[:5], 1] for m in misses], [*BOX_B, 0.95, 1]],
               [[0, *BOX_A], [1, *BOX_B]])]
    coco, yolo = _evaluate(images), _evaluate(images, "yolo")
    np.testing.assert_allclose(coco.ap[:, 0], [0.0, 1.0])
    assert yolo.ap[0, 0] == pytest.approx(1 / 101), "yolov5 scores every detection"
    assert (coco.map, coco.map50) == pytest.approx(_pycocotools(images), abs=1e-9)


def _synthetic_set(rng, strong, n_images=40, nc=3, size=(640, 480)):
    """Labels on n_images and detections: strong = every label found (jitter 3 %, scores 0.7-1) plus a few weak
    misses; weak = 6 loose boxes around each label (jitter 25 %, scores 0.01-0.5) plus many random boxes."""
    images = []
    for _ in range(n_images):
        n = int(rng.integers(1, 9))
        wh = rng.uniform(20, 200, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * (np.array(size) - wh)
        labels = np.concatenate((rng.integers(0, nc, (n, 1)), xy, xy + wh), 1)
        copies, jitter, scores = (1, 0.03, (0.7, 1.0)) if strong else (6, 0.25, (0.01, 0.5))
        src = np.repeat(labels, copies, 0)
        boxes = src[:, 1:] + rng.normal(0, jitter, (len(src), 4)) * np.tile(src[:, 3:] - src[:, 1:3], 2)
        n_fp = int(rng.integers(1, 4)) if strong else int(rng.integers(10, 40))
        fxy = rng.uniform(0, 1, (n_fp, 2)) * size
        fp = np.concatenate((fxy, fxy + rng.uniform(10, 150, (n_fp, 2))), 1)
        conf = np.concatenate((rng.uniform(*scores, len(src)), rng.uniform(0.0, 0.6 if strong else 0.5, n_fp)))
        cls = np.concatenate((src[:, 0], rng.integers(0, nc, n_fp)))
        images.append((np.concatenate((np.concatenate((boxes, fp)), conf[:, None], cls[:, None]), 1), labels))
    return images


@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong"])
def test_map_agrees_with_pycocotools_on_synthetic_weak_and_strong_detectors(strong):
    images = _synthetic_set(np.random.default_rng(int(strong)), strong)
    coco, yolo = _evaluate(images), _evaluate(images, "yolo")
    theirs = _pycocotools(images, nc=3)
    assert 0.02 < theirs[0] and (theirs[0] > 0.6 if strong else theirs[0] < 0.3), theirs
    assert coco.map == pytest.approx(theirs[0], abs=0.005) and coco.map50 == pytest.approx(theirs[1], abs=0.005)
    if not strong:  # the yolov5 rule is what misses here: overlapping low-score boxes steal labels from better ones
        assert theirs[1] - yolo.map50 > 0.02, (yolo.map50, theirs)


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


def _val_result(map50: float, map50_95: float) -> ValResult:
    return ValResult(0.5, 0.4, map50, map50_95, (0.1, 0.2, 0.3), np.zeros(2), (1.0, 2.0, 3.0))


def test_fitness_weights_map50_and_map():
    assert _val_result(0.6, 0.3).fitness() == pytest.approx(0.1 * 0.6 + 0.9 * 0.3)
    assert (_val_result(1.0, 0.0).fitness(), _val_result(0.0, 1.0).fitness()) == pytest.approx((0.1, 0.9))
    assert ValResult.zeros().fitness() == 0.0


def test_csv_row_is_results_csv_metric_columns_in_order():
    row = _val_result(0.6, 0.3).csv_row()
    assert len(row) == len(CSV_COLUMNS)
    assert dict(zip(CSV_COLUMNS, row)) == {"metrics/precision": 0.5, "metrics/recall": 0.4, "metrics/mAP_0.5": 0.6,
                                           "metrics/mAP_0.5:0.95": 0.3, "val/box_loss": 0.1, "val/obj_loss": 0.2,
                                           "val/cls_loss": 0.3}
    assert ValResult.zeros().csv_row() == (0.0,) * 7


def test_from_ap_gives_classes_without_labels_the_overall_map():
    # class 0 found exactly (AP 1), class 1 missed (AP 0), class 2 has no labels: it gets the overall 0.5
    ap = _evaluate([([*BOX_A, 0.9, 0], [[0, *BOX_A], [1, *BOX_B]])])
    r = ValResult.from_ap(ap, 3, (0.1, 0.2, 0.3), (1.0, 2.0, 3.0))
    assert (r.map50, r.map50_95) == pytest.approx((0.5, 0.5))
    assert r.maps.tolist() == pytest.approx([1.0, 0.0, 0.5])
    assert (r.losses, r.times) == ((0.1, 0.2, 0.3), (1.0, 2.0, 3.0))


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
        results, stats = [], []
        for img_id, w, h, labels in gt_images:
            det = _perturbed_detections(labels, w, h, 80, rng)
            results += detections_to_coco(det, img_id, cat_ids)
            det_t, lab_t = torch.tensor(det, dtype=torch.float32), torch.tensor(labels, dtype=torch.float32)
            stats.append([x.numpy() for x in score_image(det_t, lab_t)])
        ours = ap_per_class(*(np.concatenate(x) for x in zip(*stats)))
        theirs = evaluate_coco(gt, results)
        assert 0.2 < theirs["map"] < 0.9, "the perturbation should leave a mAP far from 0 and 1"
        gaps += [abs(ours.map - theirs["map"]), abs(ours.map50 - theirs["map50"])]
    assert max(gaps) < 0.005, gaps
