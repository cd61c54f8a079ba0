"""--weights into a --cfg of another architecture: layers paired by stage and block, not by index."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from models.yolo import DetectionModel
from utils.train.setup import intersect_state_dicts
from utils.weights.checkpoint import build_checkpoint, save_checkpoint
from utils.weights.inherit import LayerSignature, inherit_state, layer_signatures, match_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[3]
LITE2 = "yolov5n-lite2-fasterneck-af.yaml"


def pretrained(cfg: str, nc: int | None = None) -> DetectionModel:
    """A model built with seed 1 whose every parameter and BatchNorm statistic is moved off its initial value,
    so a tensor that came across cannot pass for one left at the target's initialisation."""
    torch.manual_seed(1)
    model = DetectionModel(cfg, nc=nc)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return model


def fresh(cfg: str, nc: int | None = None) -> tuple[DetectionModel, dict[str, torch.Tensor]]:
    """A target model and a copy of its initial state."""
    torch.manual_seed(1)
    model = DetectionModel(cfg, nc=nc)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def under(state: dict, layer: int) -> dict[str, torch.Tensor]:
    """One layer's tensors keyed by their sub-key ('cv1.conv.weight', 'm.0.cv2.bn.running_var' ...)."""
    prefix = f"model.{layer}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def test_yolov5n_backbone_blocks_pass_into_lite2_by_stage_and_the_rest_stays_initial():
    source = pretrained("yolov5n.yaml")
    target, initial = fresh(LITE2, nc=7)
    state, report = inherit_state(source, target, "yolov5n", exclude=("anchor",))
    theirs = source.state_dict()
    assert report.inherited() == "inherited: 2<-4 C3, 4<-6 C3, 6<-8 C3, 7<-9 SPPF"
    for i, j in ((2, 4), (4, 6), (6, 8), (7, 9)):
        ours, src = under(state, i), under(theirs, j)
        assert ours and all(torch.equal(t, src[rest]) for rest, t in ours.items()), (i, j)
    assert set(under(state, 2)) == {k for k in under(theirs, 4) if not k.startswith("m.1.")}  # n=1 of its 2: m.0
    assert {k.split(".")[1] for k in under(state, 4) if k.startswith("m.")} == {"0", "1"}  # 2 of the source's 3
    # the 4x4 stem, the 2x2 downsamplers (paired with yolov5n's 3x3 ones, same channels: their BatchNorms fit
    # but belong to another conv), the neck and the DetectAF head keep the target's own initial values
    for i in (0, 1, 3, 5, 8, 11, 12, 15, 16, 18, 19, 21, 22):
        assert under(state, i) and all(torch.equal(t, under(initial, i)[k]) for k, t in under(state, i).items()), i
    assert under(state, 1)["bn.running_var"].shape == under(theirs, 3)["bn.running_var"].shape
    assert report.random_layers() == [f"model.{i}" for i in (0, 1, 3, 5, 8, 11, 12, 15, 16, 18, 19, 21, 22)]
    assert report.summary() == (f"transferred {len(report.transferred)}/{len(report.keys)} tensors from yolov5n; "
                                f"stayed random: {', '.join(report.random_layers())}")
    target.load_state_dict(state, strict=True)


def test_same_architecture_other_class_count_maps_each_layer_to_itself_as_names_do():
    source = pretrained("yolov5n.yaml")
    target, initial = fresh("yolov5n.yaml", nc=3)
    state, report = inherit_state(source, target, "yolov5n", exclude=("anchor",))
    layers = [s.i for s in layer_signatures(target)]
    assert {i: j for i, (j, _) in report.pairs.items()} == {i: i for i in layers}
    by_name = {**initial, **intersect_state_dicts(source.state_dict(), initial, ("anchor",))}
    assert state.keys() == by_name.keys() and all(torch.equal(state[k], by_name[k]) for k in state)
    assert report.random == [f"model.24.m.{k}.{p}" for k in range(3) for p in ("weight", "bias")]  # nc-wide convs
    assert report.inherited().endswith("23<-23 C3")  # the head handed nothing over
    assert torch.equal(state["model.24.anchors"], initial["model.24.anchors"])


def test_anchor_free_c3_backbone_passes_whole_into_the_fasterneck_model():
    source = pretrained("yolov5n-af.yaml")
    target, _ = fresh("yolov5n-fasterneck-af.yaml")
    state, report = inherit_state(source, target, "yolov5n-af")
    theirs = source.state_dict()
    backbone = [k for k in report.keys if int(k.split(".")[1]) < 10]
    assert backbone and set(backbone) <= report.transferred
    assert all(torch.equal(state[k], theirs[k]) for k in backbone)
    assert report.inherited().startswith("inherited: 0<-0 Conv, 1<-1 Conv, 2<-2 C3, 3<-3 Conv, 4<-4 C3, 5<-5 Conv, "
                                         "6<-6 C3, 7<-7 Conv, 8<-8 C3, 9<-9 SPPF")
    assert "C3FasterBN" not in report.inherited()  # the neck's blocks are another kind: they stay initial


def test_signatures_come_from_an_eval_pass_that_changes_nothing():
    model = pretrained("yolov5n.yaml").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    signatures = layer_signatures(model)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    tensorless = (11, 12, 15, 16, 19, 22)  # Upsample, Concat
    assert [s.i for s in signatures] == [i for i in range(25) if i not in tensorless]
    assert signatures[9] == LayerSignature(9, "backbone", "SPPF", (32,), (256,), 256)
    layer_signatures(model.eval())
    assert not model.training


def test_matching_is_in_order_and_uses_each_source_layer_once():
    def sig(i: int, block: str) -> LayerSignature:
        return LayerSignature(i, "backbone", block, (8,), (64,), 64)

    source = [sig(0, "C3"), sig(1, "Conv"), sig(2, "C3")]
    assert match_layers(source, [sig(0, "Conv"), sig(1, "C3"), sig(2, "C3"), sig(3, "C3")]) == {0: 1, 1: 2}
    assert match_layers(source, [sig(5, "C3"), sig(6, "C3")]) == {5: 0, 6: 2}


def test_train_with_cfg_and_weights_of_another_model_logs_what_it_inherited(tmp_path, log_lines):
    import train
    path = save_checkpoint(build_checkpoint(pretrained("yolov5n.yaml")), tmp_path / "yolov5n-like.pt")
    train.run(data=str(ROOT / "data/coco8.yaml"), cfg=f"models/{LITE2}", weights=str(path), imgsz=64, epochs=1,
              batch_size=2, workers=0, device="cpu", noplots=True, noval=True, project=str(tmp_path), name="x")
    lines = log_lines()
    assert "inherited: 2<-4 C3, 4<-6 C3, 6<-8 C3, 7<-9 SPPF" in lines
    summary = next(line for line in lines if line.startswith("transferred "))
    assert summary.startswith(f"transferred 114/370 tensors from {path}; stayed random: model.0, model.1, model.3")
