"""Task-aligned assigner on hand-made boxes: which anchor points get which target, and how strongly."""
import torch

from torchvision.ops import complete_box_iou

from utils.train.assigner import TaskAlignedAssigner, paired_ciou, points_inside_boxes_xyxy, widened_boxes_xyxy


def grid_points(n: int) -> torch.Tensor:
    """Cell centres of an n x n grid with stride 1, row-major: index = y * n + x."""
    yv, xv = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
    return torch.stack((xv, yv), 2).view(-1, 2)


def boxes_around(points: torch.Tensor, half: float) -> torch.Tensor:
    return torch.cat((points - half, points + half), 1)


def test_paired_ciou_only_on_candidate_pairs_and_inside():
    gt = torch.tensor([[[0.0, 0.0, 2.0, 2.0]]])
    pred = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [5.0, 5.0, 6.0, 6.0], [0.5, 0.5, 1.5, 1.5]]])
    ciou = paired_ciou(gt, pred, torch.tensor([[[True, True, True, False]]]))
    # exact box 1; shifted box IoU 2/6 minus centre distance 1 / enclosing diagonal² 3² + 2²; far box clamped to 0;
    # the concentric box is not a candidate pair, so 0 although its CIoU is 0.25
    assert torch.allclose(ciou, torch.tensor([[[1.0, 2 / 6 - 1 / 13, 0.0, 0.0]]]), atol=1e-5)
    assert torch.isclose(complete_box_iou(gt[0], pred[0, 3:])[0, 0], torch.tensor(0.25))
    inside = points_inside_boxes_xyxy(torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 3.0]]), gt)
    assert inside.tolist() == [[[True, False, False]]]  # a point on the border is not inside


def test_topk_points_inside_each_box_become_positives():
    points = grid_points(4)  # 16 points
    pred = boxes_around(points, 1.0)  # every point predicts a 2x2 box centred on itself ...
    pred[0] = torch.tensor([0.0, 0.0, 2.0, 2.0])  # ... except point 0, which predicts box 0 exactly
    scores = torch.full((1, 16, 2), 0.5)
    gt_boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 4.0, 4.0]]])
    gt_labels = torch.tensor([[0, 1]])
    a = TaskAlignedAssigner(nc=2, topk=1)(scores, pred.unsqueeze(0), points, gt_labels, gt_boxes,
                                          torch.tensor([[True, True]]))
    # box 0 → point 0 (IoU 1); box 1 → point 10 at (2.5, 2.5): its box [1.5,1.5,3.5,3.5] has the best IoU, 4/9
    assert a.fg[0].nonzero().flatten().tolist() == [0, 10]
    assert a.labels[0, 0] == 0 and a.labels[0, 10] == 1
    assert torch.equal(a.boxes[0, 0], gt_boxes[0, 0]) and torch.equal(a.boxes[0, 10], gt_boxes[0, 1])
    # soft class target: the best point of each box gets that box's IoU, in its class column only
    assert torch.isclose(a.scores[0, 0, 0], torch.tensor(1.0)) and a.scores[0, 0, 1] == 0
    assert torch.isclose(a.scores[0, 10, 1], torch.tensor(4 / 9), atol=1e-5) and a.scores[0, 10, 0] == 0
    assert a.scores[0, ~a.fg[0]].abs().sum() == 0


def test_topk_rescales_weaker_positives_below_the_best():
    points = grid_points(4)
    pred = boxes_around(points, 1.0)
    pred[0] = torch.tensor([0.0, 0.0, 2.0, 2.0])
    a = TaskAlignedAssigner(nc=1, topk=4)(torch.full((1, 16, 1), 0.5), pred.unsqueeze(0), points,
                                          torch.tensor([[0]]), torch.tensor([[[0.0, 0.0, 2.0, 2.0]]]),
                                          torch.tensor([[True]]))
    assert a.fg[0].nonzero().flatten().tolist() == [0, 1, 4, 5]  # all four centres inside the box
    assert torch.isclose(a.scores[0, 0, 0], torch.tensor(1.0))
    weaker = a.scores[0, [1, 4, 5], 0]
    assert (weaker > 0).all() and (weaker < 0.01).all()  # (IoU 0.39)^6 / 1 of the best: far below it


def test_points_outside_boxes_and_padding_are_background():
    points = grid_points(4)
    pred = boxes_around(points, 0.5)
    scores = torch.full((1, 16, 3), 0.5)
    gt_boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0]]])
    a = TaskAlignedAssigner(nc=3, topk=10)(scores, pred.unsqueeze(0), points, torch.tensor([[2, 0]]), gt_boxes,
                                           torch.tensor([[True, False]]))  # the second row is padding
    assert sorted(a.fg[0].nonzero().flatten().tolist()) == [0, 1, 4, 5]  # the four centres inside box 0
    assert (a.labels[0, a.fg[0]] == 2).all()
    assert a.scores[0, :, :2].abs().sum() == 0


def test_point_claimed_by_two_boxes_keeps_the_better_overlap():
    points = torch.tensor([[1.0, 1.0]])
    pred = torch.tensor([[[0.0, 0.0, 2.0, 2.0]]])
    gt_boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0]]])  # IoU 1.0 and 0.25
    a = TaskAlignedAssigner(nc=2, topk=5)(torch.full((1, 1, 2), 0.9), pred, points, torch.tensor([[1, 0]]),
                                          gt_boxes, torch.ones(1, 2, dtype=torch.bool))
    assert a.fg[0, 0] and a.gt_index[0, 0] == 0 and a.labels[0, 0] == 1


def test_boxes_smaller_than_min_side_still_get_candidates():
    points = grid_points(4)  # centres at 0.5, 1.5, ...
    tiny = torch.tensor([[[1.6, 1.6, 2.4, 2.4]]])  # holds no centre
    assert widened_boxes_xyxy(tiny, 2.0).tolist() == [[[1.0, 1.0, 3.0, 3.0]]]
    assert widened_boxes_xyxy(torch.tensor([[0.0, 0.0, 3.0, 0.5]]), 2.0).tolist() == [[0.0, -0.75, 3.0, 1.25]]
    pred = boxes_around(points, 1.0).unsqueeze(0)  # 2x2 boxes: the four around it overlap it (CIoU ~0.1)
    args = (torch.full((1, 16, 1), 0.5), pred, points, torch.tensor([[0]]), tiny, torch.tensor([[True]]))
    assert not TaskAlignedAssigner(nc=1)(*args).fg.any()  # never learned without a minimum side
    a = TaskAlignedAssigner(nc=1, min_side=2.0)(*args)
    assert a.fg[0].nonzero().flatten().tolist() == [5, 6, 9, 10]  # the four centres around it
    assert torch.equal(a.boxes[0, 5], tiny[0, 0])  # the target stays the true box


def test_no_boxes_gives_empty_assignment():
    points = grid_points(2)
    a = TaskAlignedAssigner(nc=2)(torch.rand(2, 4, 2), boxes_around(points, 0.5).expand(2, -1, -1), points,
                                  torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, 4),
                                  torch.zeros(2, 0, dtype=torch.bool))
    assert not a.fg.any() and a.scores.sum() == 0 and a.boxes.shape == (2, 4, 4)
