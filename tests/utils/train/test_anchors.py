"""Autoanchor: BPR of anchors on label sizes, and a refit that lands in Detect.anchors in stride order."""
import numpy as np
import torch

from models.heads import Detect
from utils.train.anchors import anchor_metrics, check_anchors, kmeans_anchors, label_wh

YOLOV5_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def head_with_anchors(anchors_px):
    head = Detect(nc=2, anchors=anchors_px, ch=[4, 4, 4])
    head.stride[:] = torch.tensor([8.0, 16.0, 32.0])
    head.anchors /= head.stride.view(-1, 1, 1)
    return head


def square_images_with_boxes(sizes_px, imgsz=640):
    """One 640x640 image per box size, each box given in normalised units."""
    labels = [np.array([[0, 0.5, 0.5, w / imgsz, h / imgsz]], dtype=np.float32) for w, h in sizes_px]
    return labels, np.full((len(labels), 2), imgsz)


def test_label_wh_scales_to_training_size_by_long_side():
    labels = [np.array([[0, 0.5, 0.5, 0.5, 0.25]]), np.array([[1, 0.5, 0.5, 1.0, 1.0], [0, 0.1, 0.1, 0.1, 0.2]])]
    shapes = np.array([[1280, 640], [200, 400]])  # (w, h)
    wh = label_wh(labels, shapes, imgsz=320, rng=np.random.default_rng(0))
    base = np.array([[160, 40], [160, 320], [16, 64]])  # before the ±10% jitter
    assert wh.shape == (3, 2)
    ratio = wh / base
    assert np.all((ratio > 0.9) & (ratio < 1.1))
    assert np.allclose(ratio[1], ratio[2])  # one jitter per image


def test_bpr_counts_boxes_within_anchor_t():
    anchors = torch.tensor([[10.0, 10.0]])
    wh = torch.tensor([[10.0, 10.0], [39.0, 10.0], [41.0, 10.0], [10.0, 2.0]])
    bpr, aat = anchor_metrics(anchors, wh, thr=4.0)
    assert bpr == 0.5 and aat == 0.5  # 41 px is > 4x too wide, 2 px is 5x too short


def test_fitting_anchors_are_kept():
    head = head_with_anchors(YOLOV5_ANCHORS)
    before = head.anchors.clone()
    labels, shapes = square_images_with_boxes([(12, 14), (30, 60), (120, 90), (300, 300)] * 10)
    assert check_anchors(head, labels, shapes, thr=4.0, imgsz=640) is False
    assert torch.equal(head.anchors, before)


def test_poor_anchors_are_refit_in_stride_order_and_grid_units():
    tiny = [[2, 2, 3, 3, 4, 4]] * 3  # every anchor is far too small for 50–500 px boxes
    head = head_with_anchors(tiny)
    rng = np.random.default_rng(1)
    sizes = np.concatenate([rng.uniform(40, 70, (60, 2)), rng.uniform(130, 200, (60, 2)), rng.uniform(350, 500, (60, 2))])
    labels, shapes = square_images_with_boxes(sizes)
    bpr_before, _ = anchor_metrics((head.anchors * head.stride.view(-1, 1, 1)).view(-1, 2),
                                   torch.tensor(sizes, dtype=torch.float32), 4.0)
    assert bpr_before < 0.1

    assert check_anchors(head, labels, shapes, thr=4.0, imgsz=640, seed=0) is True
    anchors_px = head.anchors * head.stride.view(-1, 1, 1)
    bpr_after, _ = anchor_metrics(anchors_px.view(-1, 2), torch.tensor(sizes, dtype=torch.float32), 4.0)
    assert bpr_after > 0.98
    areas = anchors_px.prod(-1).view(-1)
    assert torch.all(areas[1:] >= areas[:-1])  # smallest anchors on stride 8, largest on stride 32
    assert 20 < anchors_px.min() and anchors_px.max() < 700


def test_kmeans_finds_the_three_box_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[20, 40], [100, 60], [300, 320]])
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (50, 2)) for c in centres])
    k = kmeans_anchors(wh, n=3, thr=4.0, gen=200, seed=0)
    assert k.shape == (3, 2)
    assert np.all(np.abs(k / centres - 1) < 0.35)  # the genetic step trades exact centres for fitness
