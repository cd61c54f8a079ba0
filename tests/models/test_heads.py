"""Detect head: YOLOv5 box decoding, output contract per mode, export form, bias priors."""
import math

import pytest
import torch

from models.heads import Detect

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]]


def make_head(nc=2):
    torch.manual_seed(0)
    head = Detect(nc, ANCHORS, ch=[8, 16])
    head.stride.copy_(torch.tensor([8.0, 16.0]))
    head.anchors.div_(head.stride.view(-1, 1, 1))  # grid units, as the model stores them
    return head


def test_train_returns_raw_maps_eval_returns_decoded_and_raw():
    head = make_head()
    xs = [torch.randn(2, 8, 4, 6), torch.randn(2, 16, 2, 3)]
    raw = head.train()(xs)
    assert [r.shape for r in raw] == [(2, 3, 4, 6, 7), (2, 3, 2, 3, 7)]
    pred, raw_eval = head.eval()(xs)
    assert pred.shape == (2, 3 * (24 + 6), 7)
    assert all(torch.allclose(a, b) for a, b in zip(raw, raw_eval))
    head.export = True
    exported = head(xs)
    assert torch.is_tensor(exported) and torch.equal(exported, pred)


def test_decode_matches_yolov5_formula_cell_by_cell():
    head = make_head().eval()
    p = torch.randn(1, 3, 4, 6, 7)
    out = head.decode(1, p).view(1, 3, 4, 6, 7)
    s = 16.0
    anchors_px = torch.tensor(ANCHORS[1], dtype=torch.float32).view(3, 2)
    for a, y, x in [(0, 0, 0), (1, 3, 5), (2, 2, 1)]:
        sig = p[0, a, y, x].sigmoid()
        cx = (2 * sig[0] - 0.5 + x) * s
        cy = (2 * sig[1] - 0.5 + y) * s
        w = (2 * sig[2]) ** 2 * anchors_px[a, 0]
        h = (2 * sig[3]) ** 2 * anchors_px[a, 1]
        expected = torch.stack([cx, cy, w, h, *sig[4:]])
        assert torch.allclose(out[0, a, y, x], expected, atol=1e-4)


def test_anchor_updates_in_place_reach_the_decode():
    head = make_head().eval()
    p = torch.zeros(1, 3, 2, 2, 7)  # sigmoid 0.5 → wh = anchor in pixels
    before = head.decode(0, p)[0, 0, 2:4]
    head.anchors[0, 0] *= 2
    after = head.decode(0, p)[0, 0, 2:4]
    assert torch.allclose(before, torch.tensor([10.0, 13.0])) and torch.allclose(after, 2 * before)


def test_traced_head_has_no_pow_and_one_output():
    head = make_head().eval()
    head.export = True
    xs = [torch.randn(1, 8, 4, 4), torch.randn(1, 16, 2, 2)]
    traced = torch.jit.trace(head, (xs,))
    graph = str(traced.graph)
    assert "aten::pow" not in graph
    assert torch.allclose(traced(xs), head(xs), atol=1e-5)


def test_bias_priors_follow_yolov5():
    head = Detect(3, ANCHORS, ch=[8, 16])
    before = [m.bias.detach().clone().view(3, -1) for m in head.m]
    head.initialize_biases([8.0, 16.0])
    for m, b0, s in zip(head.m, before, (8.0, 16.0)):
        delta = m.bias.detach().view(3, -1) - b0
        assert torch.allclose(delta[:, 4], torch.full((3,), math.log(8 / (640 / s) ** 2)))
        assert torch.allclose(delta[:, 5:], torch.full((3, 3), math.log(0.6 / (3 - 0.99))))
        assert torch.allclose(delta[:, :4], torch.zeros(3, 4))


@pytest.mark.parametrize("anchors, ch, match", [([[10, 13, 16]], [8], "w,h pairs"),
                                                 (ANCHORS, [8], "anchor levels")])
def test_bad_anchor_shapes_are_rejected(anchors, ch, match):
    with pytest.raises(ValueError, match=match):
        Detect(2, anchors, ch)
