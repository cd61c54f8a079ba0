"""The teacher stage's choice under torchrun: no stage runs there, and the refusal says which first step to take."""
import argparse

import pytest
import torch
import yaml

from deploy.errors import UserInputError
from models.yolo import DetectionModel
from utils.train.distributed import DistContext
from utils.train.recipe import teacher_for_data
from utils.weights.checkpoint import build_checkpoint, save_checkpoint

COCO8 = "data/coco8.yaml"  # COCO's 80 names


def teacher(tmp_path, names):
    torch.manual_seed(0)
    model = DetectionModel("models/yolov5n.yaml", nc=len(names))
    model.names = names
    return str(save_checkpoint(build_checkpoint(model), tmp_path / "t.pt"))


@pytest.mark.parametrize("extra, says", [(["unicorn"], "cut it down once without torchrun"),
                                         (None, "fine-tune it first (python train.py --weights")])
def test_under_torchrun_a_teacher_of_other_classes_is_refused_with_its_first_step(tmp_path, extra, says):
    coco = [n for _, n in sorted(yaml.safe_load(open(COCO8))["names"].items())]
    names = coco + extra if extra else [f"thing{i}" for i in range(80)]
    opt = argparse.Namespace(teacher=teacher(tmp_path, names), resume=False, data=COCO8, single_cls=False,
                             save_dir=str(tmp_path / "run"))
    with pytest.raises(UserInputError, match="its classes are not --data's; under torchrun " + says.replace("(", r"\(")):
        teacher_for_data(opt, {}, DistContext(0, 0, 2), lambda options: None, "low.yaml", "af.yaml")
    assert not (tmp_path / "run").exists()  # nothing written by any rank
