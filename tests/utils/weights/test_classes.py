"""A pretrained model cut down to some of its classes keeps exactly its outputs for them, for both head kinds."""
import pytest
import torch

from models.yolo import DetectionModel
from utils.weights.checkpoint import build_checkpoint
from utils.weights.classes import class_subset, head_rows, known_class_indices

NAMES = ["cat", "dog", "bird", "fish"]


def test_known_class_indices_need_every_class_by_name():
    assert known_class_indices(NAMES, ["fish", "cat"]) == [3, 0]
    assert known_class_indices(NAMES, ["fish", "cow"]) is None and known_class_indices(NAMES, []) is None


def test_anchor_head_rows_keep_box_objectness_and_the_kept_classes_per_anchor():
    assert head_rows(False, na=2, nc=4, keep=[3, 0]) == [0, 1, 2, 3, 4, 8, 5, 9, 10, 11, 12, 13, 17, 14]
    assert head_rows(True, na=1, nc=4, keep=[3, 0]) == [3, 0]


@pytest.mark.parametrize("cfg", ["models/yolov5n.yaml", "models/yolov5n-lite2-fasterneck-af.yaml"])
def test_subset_outputs_are_the_sources_columns(cfg):
    torch.manual_seed(0)
    source = DetectionModel(cfg, nc=4)
    source.names = NAMES
    cut = class_subset(build_checkpoint(source), ["fish", "cat"], "src.pt").eval()
    assert cut.names == ["fish", "cat"] and cut.model[-1].nc == 2 and cut.yaml["nc"] == 2
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        full, part = source.eval()(x), cut(x)
    full, part = (full[0], part[0]) if isinstance(full, tuple) else (full, part)
    assert torch.allclose(part, full[..., [0, 1, 2, 3, 4, 5 + 3, 5 + 0]], atol=1e-6)


def test_a_class_the_source_lacks_is_refused():
    source = DetectionModel("models/yolov5n.yaml", nc=4)
    source.names = NAMES
    with pytest.raises(ValueError, match="src.pt: does not know every class"):
        class_subset(build_checkpoint(source), ["cow"], "src.pt")
