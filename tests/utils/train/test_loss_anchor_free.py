"""AnchorFreeLoss: exact DFL, ultralytics parity, target padding, picked by head, falls, runs in train.run."""
import math
from pathlib import Path

import torch
import yaml

import train
import utils.train.setup as run_setup
from models.yolo import DetectionModel, load_model_yaml
from utils.train.loss import ComputeLoss, build_loss
from utils.train.loss_anchor_free import AnchorFreeLoss, dfl_loss, padded_targets

ROOT = Path(__file__).resolve().parents[3]
HYP_AF = ROOT / "data/hyps/hyp.scratch-af.yaml"


def tiny_af_model(nc: int = 2) -> DetectionModel:
    """yolov5n-af at half width: the head and loss are what is tested, not the backbone."""
    d = load_model_yaml("yolov5n-af.yaml")
    d["width_multiple"] = 0.125
    torch.manual_seed(0)
    return DetectionModel(d, nc=nc)


def test_dfl_loss_is_cross_entropy_to_the_two_nearest_bins():
    logits = torch.zeros(1, 4)  # uniform: CE = log 4 for every bin
    assert torch.allclose(dfl_loss(logits, torch.tensor([1.25])), torch.tensor([math.log(4)]))
    sharp = torch.tensor([[0.0, 10.0, 10.0, 0.0]])  # mass split between bins 1 and 2
    assert dfl_loss(sharp, torch.tensor([1.5])) < dfl_loss(sharp, torch.tensor([0.0]))


def test_loss_equals_ultralytics_v8_detection_loss_on_identical_inputs():
    """The reference our accuracy is judged against: same raw maps and labels, same three terms."""
    import types

    from ultralytics.utils.loss import v8DetectionLoss

    nc, reg_max, bs = 3, 16, 4
    model = tiny_af_model(nc)
    hyp = {"box": 7.5, "cls": 0.5, "dfl": 1.5}
    ours = AnchorFreeLoss(model, hyp, 320)

    class Reference(torch.nn.Module):  # the attributes v8DetectionLoss reads from a model
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))
            self.model = [types.SimpleNamespace(stride=torch.tensor([8.0, 16.0, 32.0]), nc=nc, reg_max=reg_max)]
            self.args = types.SimpleNamespace(**hyp)

    theirs = v8DetectionLoss(Reference())
    g = torch.Generator().manual_seed(1)
    shapes = [(32, 40), (16, 20), (8, 10)]  # a 256x320 batch
    raw = [torch.randn(bs, h, w, 4 * reg_max + nc, generator=g) for h, w in shapes]
    rows = []
    for i in range(bs):  # overlapping boxes, some smaller than a stride-8 cell
        for j in range(5):
            wh = torch.rand(2, generator=g) * 0.5 + 0.01
            rows.append([i, j % nc, *(torch.rand(2, generator=g) * (1 - wh) + wh / 2).tolist(), *wh.tolist()])
    targets = torch.tensor(rows)
    total, (box, dfl, cls) = ours(raw, targets)

    flat = torch.cat([r.reshape(bs, -1, 4 * reg_max + nc) for r in raw], 1).transpose(1, 2)
    preds = {"boxes": flat[:, :4 * reg_max], "scores": flat[:, 4 * reg_max:],
             "feats": [torch.zeros(bs, 1, h, w) for h, w in shapes]}
    ref_total, ref = theirs(preds, {"batch_idx": targets[:, 0], "cls": targets[:, 1], "bboxes": targets[:, 2:]})
    assert torch.allclose(torch.stack((box, cls, dfl)), torch.stack(list(ref.values())), rtol=1e-4)
    assert torch.isclose(total, ref_total.sum(), rtol=1e-4)


def test_label_smoothing_is_reported_as_ignored(log_text):
    AnchorFreeLoss(tiny_af_model(), {"box": 7.5, "cls": 0.5, "dfl": 1.5, "label_smoothing": 0.1})
    assert "--label-smoothing is ignored for anchor-free heads" in log_text.text
    log_text.clear()
    AnchorFreeLoss(tiny_af_model(), {"box": 7.5, "cls": 0.5, "dfl": 1.5, "label_smoothing": 0.0})
    assert "label-smoothing" not in log_text.text


def test_padded_targets_group_boxes_per_image_in_pixels():
    t = torch.tensor([[1, 4, 0.5, 0.5, 0.5, 0.25], [0, 2, 0.25, 0.25, 0.5, 0.5], [1, 1, 0.5, 0.5, 1.0, 1.0]])
    labels, boxes, valid = padded_targets(t, 3, torch.tensor([64.0, 32.0]))
    assert labels.tolist() == [[2, 0], [4, 1], [0, 0]]
    assert valid.tolist() == [[True, False], [True, True], [False, False]]
    assert boxes[1, 0].tolist() == [16.0, 12.0, 48.0, 20.0] and boxes[0, 0].tolist() == [0.0, 0.0, 32.0, 16.0]


def test_build_loss_picks_the_loss_by_head():
    hyp = yaml.safe_load(HYP_AF.read_text())
    assert isinstance(build_loss(tiny_af_model(), hyp, 64), AnchorFreeLoss)
    assert isinstance(build_loss(DetectionModel("yolov5n.yaml", nc=2), hyp, 64), ComputeLoss)


def test_loss_is_finite_and_decreases_on_an_overfit_batch():
    model = tiny_af_model()
    loss_fn = build_loss(model, yaml.safe_load(HYP_AF.read_text()), 64)
    x = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.5, 0.4], [0, 0, 0.2, 0.25, 0.2, 0.3], [1, 1, 0.6, 0.6, 0.6, 0.7]])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for _ in range(15):
        loss, items = loss_fn(model(x), targets)
        assert torch.isfinite(loss) and items.shape == (3,) and (items > 0).all()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    empty, empty_items = loss_fn(model(x), torch.zeros(0, 6))  # no labels: class loss only, still finite
    assert torch.isfinite(empty) and empty_items[0] == 0 and empty_items[1] == 0 and empty_items[2] > 0


def test_af_training_closes_mosaic_and_logs_box_dfl_cls(tmp_path, monkeypatch):
    """--close-mosaic 1 of 2 epochs: the train loader is rebuilt without mosaic (workers are persistent)."""
    train_loader_mosaic = []
    real = run_setup.create_dataloader

    def spy(*args, **kwargs):
        if kwargs.get("augment"):
            train_loader_mosaic.append(kwargs["hyp"]["mosaic"])
        return real(*args, **kwargs)

    monkeypatch.setattr(run_setup, "create_dataloader", spy)
    summary = train.run(data=str(ROOT / "data/coco8.yaml"), cfg="yolov5n-af.yaml", hyp=str(HYP_AF), imgsz=64,
                        batch_size=4, epochs=2, close_mosaic=1, workers=1, noval=True, noplots=True, nosave=True,
                        project=str(tmp_path))
    assert train_loader_mosaic == [1.0, 0.0]
    rows = [line.split(",") for line in (summary.save_dir / "results.csv").read_text().splitlines()[1:]]
    assert len(rows) == 2
    train_losses, val_losses = [float(v) for v in rows[-1][1:4]], [float(v) for v in rows[-1][8:11]]
    assert all(math.isfinite(v) and v > 0 for v in train_losses + val_losses)  # box, dfl (obj column), cls
