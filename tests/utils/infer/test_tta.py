"""Test-time augmentation maps every view's boxes back onto the original image."""
import torch

from utils.infer.tta import VIEWS, predict_augmented, rescale_batch


def _bright_box_detector(view: torch.Tensor) -> torch.Tensor:
    """A 'model' that reports the bounding box of the bright pixels as one cx, cy, w, h, obj, cls row."""
    rows = []
    for img in view:
        ys, xs = torch.nonzero(img[0] > 0.9, as_tuple=True)
        x1, x2, y1, y2 = xs.min().item(), xs.max().item() + 1, ys.min().item(), ys.max().item() + 1
        rows.append(torch.tensor([[(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 1.0, 1.0]]))
    return torch.stack(rows)


def test_every_view_lands_on_the_original_box():
    im = torch.zeros(2, 3, 96, 128)
    im[0, :, 20:60, 10:50] = 1.0  # cx 30, cy 40, 40x40
    im[1, :, 50:90, 70:120] = 1.0  # cx 95, cy 70, 50x40
    pred = predict_augmented(_bright_box_detector, im, stride=32)
    assert pred.shape == (2, len(VIEWS), 6)
    expected = torch.tensor([[30.0, 40.0, 40.0, 40.0], [95.0, 70.0, 50.0, 40.0]])
    for i in range(2):
        assert torch.allclose(pred[i, :, :4], expected[i].expand(len(VIEWS), 4), atol=2.5), pred[i]


def test_rescale_pads_to_stride_multiples():
    out = rescale_batch(torch.ones(1, 3, 96, 128), 0.67, stride=32)
    assert out.shape == (1, 3, 64, 96)
    assert out[0, 0, -1, -1].item() == torch.tensor(0.447).item()
    assert rescale_batch(torch.ones(1, 3, 64, 64), 1.0, 32).shape == (1, 3, 64, 64)
