"""ComputeLoss: YOLOv5 target assignment on a hand-made target, finite and falling loss on an overfit batch."""
import pytest
import torch
import torch.nn as nn

from models.heads import Detect
from models.yolo import DetectionModel
from utils.train.loss import ComputeLoss, scaled_loss_gains

HYP = {"box": 0.05, "obj": 1.0, "cls": 0.5, "cls_pw": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0,
       "label_smoothing": 0.0}


def one_level_head(anchors_grid, nc=2, stride=8.0):
    head = Detect(nc=nc, anchors=[[v for wh in anchors_grid for v in wh]], ch=[4])
    head.stride[:] = stride  # anchors above are already in grid units
    return head


def test_target_goes_to_matching_anchor_and_two_nearest_cells():
    head = one_level_head([(2, 2), (10, 10), (1, 8)])
    loss = ComputeLoss(head, HYP, imgsz=64)
    pred = [torch.zeros(1, 3, 8, 8, 7)]
    # centre (0.30, 0.55) of a 64 px image on an 8x8 grid → (2.4, 4.4); size 2x2 cells
    targets = torch.tensor([[0, 1, 0.30, 0.55, 0.25, 0.25]])
    img, anchor, gj, gi, box, cls = loss.build_targets(pred, targets, head.anchors)[0]
    # anchor (10, 10) is 5x too big and (1, 8) is exactly 4x too tall: only anchor 0 is within anchor_t=4
    assert anchor.tolist() == [0, 0, 0]
    # own cell (4, 2), left neighbour (x frac 0.4 < 0.5) and top neighbour (y frac 0.4 < 0.5)
    assert sorted(zip(gj.tolist(), gi.tolist())) == [(3, 2), (4, 1), (4, 2)]
    assert img.tolist() == [0, 0, 0] and cls.tolist() == [1, 1, 1]
    by_cell = {(j, i): b for j, i, b in zip(gj.tolist(), gi.tolist(), box)}
    assert torch.allclose(by_cell[(4, 2)], torch.tensor([0.4, 0.4, 2.0, 2.0]), atol=1e-5)
    assert torch.allclose(by_cell[(4, 1)], torch.tensor([1.4, 0.4, 2.0, 2.0]), atol=1e-5)
    assert torch.allclose(by_cell[(3, 2)], torch.tensor([0.4, 1.4, 2.0, 2.0]), atol=1e-5)


def test_neighbours_on_the_far_side_and_no_neighbour_at_the_border():
    head = one_level_head([(2, 2), (10, 10), (1, 8)])
    loss = ComputeLoss(head, HYP, imgsz=64)
    # (0.95, 0.7) → grid (7.6, 5.6): right side is the border (no cell 8), bottom neighbour is cell y=6
    targets = torch.tensor([[0, 0, 0.95, 0.70, 0.25, 0.25], [0, 0, 0.95, 0.70, 1.25, 1.25]])
    _, anchor, gj, gi, _, _ = loss.build_targets([torch.zeros(1, 3, 8, 8, 7)], targets, head.anchors)[0]
    # second target (10x10 cells) matches anchor 1 only; both get own cell + the cell below
    assert sorted(zip(anchor.tolist(), gj.tolist(), gi.tolist())) == [(0, 5, 7), (0, 6, 7), (1, 5, 7), (1, 6, 7)]


def test_loss_gains_scale_with_levels_classes_and_size():
    box, obj, cls = scaled_loss_gains(HYP, nl=3, nc=80, imgsz=640)
    assert (box, obj, cls) == (0.05, 1.0, 0.5)
    box, obj, cls = scaled_loss_gains(HYP, nl=3, nc=8, imgsz=320)
    assert box == pytest.approx(0.05) and obj == pytest.approx(0.25) and cls == pytest.approx(0.05)


class TinyDetector(nn.Module):
    """Three strided convs feeding a 3-level Detect head: enough to overfit one batch."""

    def __init__(self, nc=3):
        super().__init__()
        self.p3 = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.SiLU(), nn.Conv2d(16, 16, 3, 2, 1), nn.SiLU(),
                                nn.Conv2d(16, 16, 3, 2, 1), nn.SiLU())
        self.p4 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.SiLU())
        self.p5 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.SiLU())
        anchors = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
        self.detect = Detect(nc, anchors, ch=[16, 16, 16])
        self.detect.stride[:] = torch.tensor([8.0, 16.0, 32.0])
        self.detect.anchors /= self.detect.stride.view(-1, 1, 1)
        self.detect.initialize_biases([8.0, 16.0, 32.0])

    def forward(self, x):
        p3 = self.p3(x)
        p4 = self.p4(p3)
        return self.detect([p3, p4, self.p5(p4)])


def test_loss_is_finite_and_falls_when_overfitting_one_batch():
    torch.manual_seed(0)
    model = TinyDetector(nc=3).train()
    compute_loss = ComputeLoss(model, {**HYP, "label_smoothing": 0.1, "fl_gamma": 1.5}, imgsz=64)
    imgs = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.6], [0, 2, 0.2, 0.3, 0.1, 0.1], [1, 1, 0.6, 0.4, 0.8, 0.5]])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(150):  # at 60 steps float rounding alone moved the ratio over 0.48-0.52
        loss, items = compute_loss(model(imgs), targets)
        assert torch.isfinite(loss) and items.shape == (3,) and torch.isfinite(items).all()
        assert loss.item() == pytest.approx(items.sum().item() * 2, rel=1e-5)  # total × batch size
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(items)
    first, last = history[0], history[-1]
    assert last.sum() < 0.5 * first.sum()
    # box and class terms fall; objectness may not, its target is the (rising) IoU of each matched box
    assert last[0] < 0.6 * first[0] and last[2] < 0.6 * first[2]


def test_anchor_loss_refuses_an_anchor_free_model():
    with pytest.raises(ValueError, match="has a DetectAF head, not a Detect"):
        ComputeLoss(DetectionModel("yolov5n-af.yaml", nc=2), HYP, imgsz=64)


def test_no_targets_gives_objectness_loss_only():
    model = TinyDetector(nc=3).train()
    _, items = ComputeLoss(model, HYP, imgsz=64)(model(torch.rand(1, 3, 64, 64)), torch.zeros(0, 6))
    assert items[0] == 0 and items[2] == 0 and items[1] > 0
