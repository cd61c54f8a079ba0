"""Box conversions, rescaling and NMS against hand-computed numbers."""
import numpy as np
import pytest
import torch
import torchvision

from utils.core.boxes import (box_iou, ciou_loss, clip_boxes, non_max_suppression, scale_boxes, top_kept, xywh_to_xyxy,
                         xywhn_to_xyxy, xyxy_to_xywh, xyxy_to_xywhn)


def test_xywh_xyxy_round_trip_torch_and_numpy():
    xywh = torch.tensor([[50.0, 40.0, 20.0, 10.0]])
    xyxy = xywh_to_xyxy(xywh)
    assert xyxy.tolist() == [[40.0, 35.0, 60.0, 45.0]]
    assert torch.allclose(xyxy_to_xywh(xyxy), xywh)
    arr = xywh.numpy()
    out = xywh_to_xyxy(arr)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [[40.0, 35.0, 60.0, 45.0]])
    assert arr.tolist() == [[50.0, 40.0, 20.0, 10.0]], "input must not be modified"


def test_normalised_conversions_with_padding_and_clip():
    xywhn = np.array([[0.5, 0.5, 0.5, 0.25]])
    xyxy = xywhn_to_xyxy(xywhn, w=200, h=100, padw=10, padh=5)
    np.testing.assert_allclose(xyxy, [[60.0, 42.5, 160.0, 67.5]])
    back = xyxy_to_xywhn(xywhn_to_xyxy(xywhn, w=200, h=100), w=200, h=100)
    np.testing.assert_allclose(back, xywhn)
    outside = torch.tensor([[-20.0, 10.0, 120.0, 50.0]])
    clipped = xyxy_to_xywhn(outside, w=100, h=100, clip=True)
    assert torch.allclose(clipped, torch.tensor([[0.5, 0.3, 1.0, 0.4]]))
    assert outside[0, 0] == -20.0, "clip must not modify the caller's boxes"


def test_clip_boxes_torch_and_numpy():
    t = clip_boxes(torch.tensor([[-5.0, -5.0, 300.0, 90.0]]), (100, 200))
    assert t.tolist() == [[0.0, 0.0, 200.0, 90.0]]
    a = clip_boxes(np.array([[-5.0, 120.0, 50.0, 130.0]]), (100, 200))
    assert a.tolist() == [[0.0, 100.0, 50.0, 100.0]]


def test_scale_boxes_undoes_letterbox():
    # a 200x100 (w x h) image letterboxed into 320x320: gain 1.6, vertical padding (320 - 160) / 2 = 80
    original = torch.tensor([[20.0, 10.0, 120.0, 90.0]])
    letterboxed = original * 1.6 + torch.tensor([0.0, 80.0, 0.0, 80.0])
    recomputed = scale_boxes((320, 320), letterboxed.clone(), (100, 200))
    assert torch.allclose(recomputed, original, atol=1e-4)
    recorded = scale_boxes((320, 320), letterboxed.clone(), (100, 200), ratio_pad=((1.6, 1.6), (0.0, 80.0)))
    assert torch.allclose(recorded, original, atol=1e-4)


def test_box_iou_known_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[1.0, 1 / 3, 0.0]]))


def _pred(rows, nc):
    """Rows of (cx, cy, w, h, obj, *cls) into a (1, N, 5 + nc) prediction tensor."""
    t = torch.tensor(rows, dtype=torch.float32).view(1, -1, 5 + nc)
    return t


def test_ciou_loss_is_torchvisions_on_proper_boxes():
    g = torch.Generator().manual_seed(0)
    xy, wh = torch.rand(500, 2, 2, generator=g) * 20, torch.rand(500, 2, 2, generator=g) * 10 + 0.5
    pred, target = (torch.cat((xy[:, i] - wh[:, i] / 2, xy[:, i] + wh[:, i] / 2), 1) for i in (0, 1))
    want = torchvision.ops.complete_box_iou_loss(pred, target, reduction="none")
    assert torch.allclose(ciou_loss(pred, target), want, atol=1e-5)


def test_ciou_loss_gradients_stay_finite_when_a_predicted_height_rounds_to_zero():
    """The training failure it prevents: centre 40.5, height 1e-7 → y1 == y2 in float32, finite loss, NaN gradients
    (torchvision's atan(w / h) divides by the zero height); one AdamW step then made every weight NaN."""
    xywh = torch.tensor([[40.5, 40.5, 2.0, 1e-7]], requires_grad=True)
    target = torch.tensor([[39.0, 39.0, 42.0, 41.0]])
    pred = xywh_to_xyxy(xywh)
    assert pred[0, 1] == pred[0, 3]
    torchvision.ops.complete_box_iou_loss(pred, target).sum().backward()
    assert torch.isnan(xywh.grad).any()  # the failure, reproduced
    xywh.grad = None
    loss = ciou_loss(xywh_to_xyxy(xywh), target)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(xywh.grad).all() and loss.item() > 1


def test_nms_suppresses_overlaps_per_class_and_keeps_other_classes():
    pred = _pred([[50, 50, 20, 20, 0.9, 0.9, 0.1],   # class 0, 0.81
                  [51, 50, 20, 20, 0.9, 0.8, 0.1],   # class 0, overlaps the first → suppressed
                  [51, 50, 20, 20, 0.9, 0.1, 0.7],   # class 1, same place → kept (class-aware)
                  [150, 150, 20, 20, 0.9, 0.6, 0.1],  # class 0 elsewhere → kept
                  [10, 10, 4, 4, 0.1, 0.5, 0.5]], nc=2)  # below conf_thres
    out = non_max_suppression(pred, conf_thres=0.25, iou_thres=0.45)
    assert len(out) == 1 and out[0].shape == (3, 6)
    det = out[0]
    assert det[:, 4].tolist() == pytest.approx([0.81, 0.63, 0.54])
    assert det[:, 5].tolist() == [0.0, 1.0, 0.0]
    assert det[0, :4].tolist() == [40.0, 40.0, 60.0, 60.0]
    agnostic = non_max_suppression(pred, conf_thres=0.25, iou_thres=0.45, agnostic=True)[0]
    assert agnostic[:, 5].tolist() == [0.0, 0.0]


def test_nms_multi_label_classes_filter_and_max_det():
    pred = _pred([[50, 50, 20, 20, 1.0, 0.6, 0.5, 0.0]], nc=3)
    assert non_max_suppression(pred, 0.25, 0.45)[0].shape[0] == 1
    multi = non_max_suppression(pred, 0.25, 0.45, multi_label=True)[0]
    assert sorted(multi[:, 5].tolist()) == [0.0, 1.0]
    only1 = non_max_suppression(pred, 0.25, 0.45, multi_label=True, classes=[1])[0]
    assert only1[:, 5].tolist() == [1.0]
    many = _pred([[20 * i + 10, 10, 8, 8, 0.9, 0.9, 0.0, 0.0] for i in range(10)], nc=3)
    assert non_max_suppression(many, 0.25, 0.45, max_det=4)[0].shape[0] == 4


def test_nms_empty_batch_images_give_empty_rows():
    pred = torch.zeros(2, 5, 7)
    out = non_max_suppression(pred)
    assert [o.shape for o in out] == [(0, 6), (0, 6)]


def test_nms_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="conf_thres"):
        non_max_suppression(torch.zeros(1, 1, 6), conf_thres=1.5)


@pytest.mark.parametrize("n, nc, max_det, levels", [(6000, 1, 300, 0), (6000, 40, 300, 0), (3000, 2, 10, 0),
                                                     (200, 3, 300, 0), (5000, 3, 100, 20)])
def test_top_kept_equals_full_nms_cut_to_max_det(n, nc, max_det, levels):
    """The early-exit NMS returns exactly what NMS over all boxes (ranked by score, ties in input order)
    returns, in the same order; `levels` quantises scores into that many values to force ties."""
    g = torch.Generator().manual_seed(n + nc)
    xy = torch.rand(n, 2, generator=g) * 320
    boxes = torch.cat((xy, xy + torch.rand(n, 2, generator=g) * 60 + 2), 1)
    scores, class_ids = torch.rand(n, generator=g), torch.randint(0, nc, (n,), generator=g)
    if levels:
        scores = (scores * levels).round() / levels
    order = scores.argsort(descending=True, stable=True)
    rank = torch.empty(n).index_put_((order,), torch.arange(n, 0, -1, dtype=torch.float32))
    full = torchvision.ops.batched_nms(boxes, rank, class_ids, 0.45)[:max_det]
    assert torch.equal(top_kept(boxes, scores, class_ids, 0.45, max_det), full)
