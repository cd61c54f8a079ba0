"""Distillation losses: zero when the student predicts what the teacher does, positive otherwise, and a
student trained on them alone moves toward the teacher; mismatched teachers are refused in one line."""
from __future__ import annotations

import copy

import pytest
import torch

from deploy.errors import UserInputError
from models.yolo import DetectionModel
from models.yolo import detection_head, load_model_yaml
from utils.weights.checkpoint import build_checkpoint, save_checkpoint
from utils.train.distill import (Distiller, bernoulli_kl, cell_predictions, distribution_kl, head_input_channels,
                                 load_teacher, pearson_imitation, probability_kl)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
AF, ANCHOR, LITE2_AF = "models/yolov5n-af.yaml", "models/yolov5n.yaml", "models/yolov5n-pconv-lite2-af.yaml"
S_AF = "models/yolov5s-af.yaml"
FAST_AF = "models/yolov5n-lite2-fasterneck-af.yaml"
HYP = {"kd_box": 1.0, "kd_cls": 1.0, "kd_t": 2.0}


def model(cfg: str, nc: int = 3, seed: int = 0) -> DetectionModel:
    torch.manual_seed(seed)
    return DetectionModel(cfg, nc=nc)


def two_level_af() -> dict:
    """yolov5n-af predicting on P3 and P4 only: a teacher on other strides."""
    cfg = load_model_yaml(AF)
    cfg["head"][-1] = [cfg["head"][-1][0][:2], *cfg["head"][-1][1:]]
    return cfg


def saved_teacher(tmp_path, cfg: str, nc: int = 3):
    cfg = two_level_af() if cfg == "two-level" else cfg
    path = tmp_path / "teacher.pt"
    save_checkpoint(build_checkpoint(model(cfg, nc, seed=1)), path)
    return path


def train_on_kd(distiller: Distiller, student: DetectionModel, steps: int,
                extra: torch.nn.Module | None = None) -> list[torch.Tensor]:
    """Adam steps on the distillation loss alone (one fixed batch); each step's [kd_box, kd_cls, kd_feat]."""
    params = [*student.parameters(), *(extra.parameters() if extra is not None else ())]
    opt = torch.optim.Adam(params, lr=3e-3)
    imgs = torch.rand(2, 3, 64, 64)
    history = []
    for _ in range(steps):
        loss, items = distiller(imgs, student(imgs))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(items)
    return history


def test_bernoulli_kl_is_zero_only_where_probabilities_agree():
    logits = torch.tensor([-3.0, 0.0, 2.5])
    assert bernoulli_kl(logits, logits.sigmoid()).abs().max() < 1e-5
    assert (bernoulli_kl(logits, torch.tensor([0.5, 0.9, 0.1])) > 0.05).all()


def test_distribution_kl_is_zero_for_equal_distributions_and_scales_with_t_squared():
    t = torch.randn(5, 16)
    assert distribution_kl(t, t, 2.0).abs().max() < 1e-6
    s = torch.randn(5, 16)
    kl1 = distribution_kl(s, t, 1.0)
    assert (kl1 > 0).all()
    manual = (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum(-1)
    torch.testing.assert_close(kl1, manual)


@pytest.mark.parametrize("cfg", [AF, ANCHOR])
def test_student_equal_to_teacher_gets_zero_loss(tmp_path, cfg):
    student = model(cfg).eval()
    teacher = copy.deepcopy(student).fuse().eval()
    distiller = Distiller(teacher, student, HYP)
    imgs = torch.rand(2, 3, 64, 64)
    loss, items = distiller(imgs, student(imgs, raw=True)[1])
    assert items.shape == (3,) and float(items[2]) == 0.0  # kd_feat off
    assert float(loss) == pytest.approx(0.0, abs=1e-3)
    other = copy.deepcopy(student)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    loss_other, items_other = distiller(imgs, other(imgs, raw=True)[1])
    assert (items_other[:2] > 1e-3).all() and float(loss_other) > 0.01


@pytest.mark.parametrize("student_cfg,teacher_cfg", [(LITE2_AF, AF), (ANCHOR, ANCHOR)])
def test_distilling_alone_moves_the_student_toward_the_teacher(tmp_path, student_cfg, teacher_cfg):
    student = model(student_cfg).train()
    teacher = load_teacher(saved_teacher(tmp_path, teacher_cfg), student, torch.device("cpu"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    losses = train_on_kd(Distiller(teacher, student, HYP), student, steps=25)
    assert losses[0].sum() > 0 and losses[-1].sum() < 0.5 * losses[0].sum()


@pytest.mark.parametrize("teacher_cfg,nc,message", [
    (AF, 5, "the teacher has 5 classes, the student 3"),
    ("two-level", 3, r"the teacher predicts at strides \[8.0, 16.0\], the student at \[8.0, 16.0, 32.0\]"),
])
def test_a_teacher_that_cannot_teach_is_refused_in_one_line(tmp_path, teacher_cfg, nc, message):
    path = saved_teacher(tmp_path, teacher_cfg, nc)
    with pytest.raises(UserInputError, match=message) as err:
        load_teacher(path, model(AF), torch.device("cpu"))
    assert f"--teacher {path}" in str(err.value) and "\n" not in str(err.value)


def test_a_missing_teacher_file_is_named(tmp_path):
    with pytest.raises(UserInputError, match="--teacher .*nope.pt: checkpoint not found"):
        load_teacher(tmp_path / "nope.pt", model(AF), torch.device("cpu"))


def test_a_non_positive_temperature_is_refused():
    student = model(AF).eval()
    with pytest.raises(UserInputError, match="kd_t"):
        Distiller(copy.deepcopy(student), student, {"kd_t": 0})


def test_pearson_imitation_ignores_scale_and_reads_one_for_unrelated_maps():
    torch.manual_seed(0)
    t = torch.randn(2, 4, 8, 8)
    scale, shift = torch.tensor([0.5, 2.0, 7.0, 0.1]).view(1, 4, 1, 1), torch.randn(1, 4, 1, 1)
    assert float(pearson_imitation(t * scale + shift, t)) == pytest.approx(0.0, abs=1e-5)
    assert float(pearson_imitation(torch.randn(2, 4, 8, 8), t)) == pytest.approx(1.0, abs=0.15)
    assert float(pearson_imitation(-t, t)) == pytest.approx(2.0, abs=1e-4)


def test_head_input_channels_leave_batchnorm_statistics_alone():
    student = model(LITE2_AF).train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    assert head_input_channels(student) == [64, 128, 256] and head_input_channels(model(S_AF)) == [128, 256, 512]
    assert student.training and all(torch.equal(before[k], v) for k, v in student.state_dict().items())


@pytest.mark.parametrize("student_cfg,teacher_cfg", [(LITE2_AF, S_AF), (ANCHOR, ANCHOR)])
def test_feature_imitation_alone_pulls_the_neck_toward_the_teacher(tmp_path, student_cfg, teacher_cfg):
    """kd_feat alone: adapters map the student's head inputs onto the teacher's channels (a wider teacher here)
    and student + adapters trained on the term bring it down; the adapters' state round-trips for --resume."""
    student = model(student_cfg).train()
    teacher = load_teacher(saved_teacher(tmp_path, teacher_cfg), student, torch.device("cpu"))
    distiller = Distiller(teacher, student, {"kd_box": 0, "kd_cls": 0, "kd_feat": 1.0})
    distiller.attach(student, lambda module: module)
    (adapters,) = distiller.trainable_modules()
    assert [c.out_channels for c in adapters.convs] == head_input_channels(teacher)
    losses = [float(items[2]) for items in train_on_kd(distiller, student, steps=15, extra=adapters)]
    assert 0.3 < losses[0] and losses[-1] < 0.8 * losses[0], losses
    state = distiller.adapter_state()
    fresh = Distiller(teacher, model(student_cfg), {"kd_feat": 1.0})
    fresh.load_adapter_state({"distill_adapters": state})
    assert all(torch.equal(v, fresh.adapter_state()[k]) for k, v in state.items())


def test_a_negative_imitation_gain_is_refused():
    student = model(AF).eval()
    with pytest.raises(UserInputError, match="hyp kd_feat -1.0"):
        Distiller(copy.deepcopy(student), student, {"kd_feat": -1})


def test_probability_kl_matches_the_logit_form_and_is_zero_where_probabilities_agree():
    logits = torch.tensor([-4.0, 0.3, 2.0])
    t = torch.tensor([0.2, 0.5, 0.95])
    torch.testing.assert_close(probability_kl(logits.sigmoid(), t), bernoulli_kl(logits, t), atol=1e-5, rtol=1e-4)
    assert probability_kl(t, t).abs().max() < 1e-5


def test_an_anchor_cell_is_its_most_confident_anchor():
    """Hand-made raw maps of a Detect head: in cell (0, 1) of level 0 anchor 2 is sure, the others are not; the
    cell's prediction is anchor 2's box with objectness x class score as its confidences."""
    head = detection_head(model(ANCHOR, nc=2))
    raw = [torch.full((1, head.na, 64 // int(s), 64 // int(s), head.no), -6.0) for s in head.stride]
    raw[0][0, 2, 0, 1, 4] = 4.0  # objectness logit of anchor 2
    raw[0][0, 2, 0, 1, 5:7] = torch.tensor([3.0, -1.0])
    boxes, conf = cell_predictions(head, raw, anchor_free=False)
    cells = sum(r.shape[2] * r.shape[3] for r in raw)
    assert boxes.shape == (1, cells, 4) and conf.shape == (1, cells, 2)
    expected = head.decode(0, raw[0]).view(1, head.na, -1, head.no)[0, 2, 1]
    torch.testing.assert_close(boxes[0, 1], expected[:4])
    torch.testing.assert_close(conf[0, 1], expected[5:7] * expected[4])
    assert float(conf[0, 1, 0]) > 0.9 and float(conf[0, 0].max()) < 0.01


@pytest.mark.parametrize("cfg", [AF, ANCHOR])
def test_cross_form_terms_are_zero_when_the_cells_agree(cfg):
    """The decoded-form terms (used across head kinds) vanish for a student predicting the teacher's cells."""
    student = model(cfg).eval()
    distiller = Distiller(copy.deepcopy(student).fuse().eval(), student, HYP)
    distiller.same_layout = False
    imgs = torch.rand(2, 3, 64, 64)
    raw = student(imgs, raw=True)[1]
    box, cls = distiller.cross_form_terms(raw, [r.detach() for r in raw])
    assert float(box) == pytest.approx(0.0, abs=1e-4) and float(cls) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("student_cfg,teacher_cfg", [(FAST_AF, ANCHOR), (ANCHOR, AF)])
def test_a_teacher_of_the_other_head_kind_teaches(tmp_path, student_cfg, teacher_cfg):
    """yolov5n's anchor head teaches the anchor-free fast model (and the reverse) through the decoded form."""
    student = model(student_cfg).train()
    teacher = load_teacher(saved_teacher(tmp_path, teacher_cfg), student, torch.device("cpu"))
    distiller = Distiller(teacher, student, HYP)
    assert not distiller.same_layout
    losses = train_on_kd(distiller, student, steps=25)
    first, last = losses[0], losses[-1]
    assert (first[:2] > 0).all() and last[0] < 0.9 * first[0] and last[1] < 0.5 * first[1], losses
