"""Checkpoints of ultralytics and YOLOv5, built offline here: read without running their code, mapped onto ours."""
import copy
import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from deploy.errors import UserInputError
import models.yolo
from models.yolo import DetectionModel
from utils.weights.checkpoint import checkpoint_imgsz, load_checkpoint, load_model, model_from_checkpoint
from utils.weights.foreign import (checkpoint_from_foreign, read_foreign_checkpoint, transfer_state,
                                   unpickle_restricted)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
IMGSZ = 128
ROOT = Path(__file__).resolve().parents[3]


def vary_weights(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and output biases (not the tiny class priors of a fresh head), so any
    tensor that failed to transfer shows in the outputs."""
    torch.manual_seed(0)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d) and m.bias is not None):
        conv.bias.data.uniform_(-1, 1)
    return model.eval()


def ultralytics_model(cfg: str) -> nn.Module:
    from ultralytics import YOLO
    return vary_weights(YOLO(cfg).model)


def as_saved(model: nn.Module) -> nn.Module:
    """The model as its file holds it (fp16) and as ultralytics/YOLOv5 run it when loaded (back in float32)."""
    return copy.deepcopy(model).half().float().eval()


def save_ultralytics(model: nn.Module, path: Path, released: bool = True) -> Path:
    """What ultralytics writes: a released file (strip_optimizer: the EMA as 'model', args a dict) or a
    trainer's last.pt ('model' None, the EMA with IterableSimpleNamespace args, optimizer state)."""
    from ultralytics.utils import IterableSimpleNamespace
    snapshot = copy.deepcopy(model).half()
    train_args = {"model": "yolov5nu.yaml", "data": "coco8.yaml", "imgsz": 320, "epochs": 3}
    snapshot.args = dict(train_args) if released else IterableSimpleNamespace(**train_args)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ckpt = {"epoch": -1 if released else 2, "best_fitness": None if released else 0.1,
            "model": snapshot if released else None, "ema": None if released else snapshot,
            "updates": None if released else 12, "optimizer": None if released else optimizer.state_dict(),
            "train_args": train_args, "train_metrics": {"metrics/mAP50-95(B)": 0.1, "fitness": 0.1},
            "train_results": {"epoch": [1, 2, 3]}, "date": datetime.datetime.now().isoformat(), "version": "8.3.0",
            "license": "AGPL-3.0 License (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com"}
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def yolov5nu(tmp_path_factory):
    """(ultralytics' yolov5nu as its released file loads, the file)."""
    model = ultralytics_model("yolov5nu.yaml")
    return as_saved(model), save_ultralytics(model, tmp_path_factory.mktemp("ultralytics") / "yolov5nu.pt")


def our_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(boxes cx cy w h, class scores) of our eval output (B, N, 5 + nc)."""
    with torch.no_grad():
        pred = model.eval()(x)
    return pred[..., :4], pred[..., 5:]


def ultralytics_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(boxes, class scores) of ultralytics' eval output (B, 4 + nc, N), in our (B, N, ...) layout."""
    with torch.no_grad():
        pred = model.eval()(x)[0].transpose(1, 2)
    return pred[..., :4], pred[..., 4:]


def test_ultralytics_file_reads_as_its_state_dict(yolov5nu, tmp_path):
    reference, released = yolov5nu
    trainer_file = save_ultralytics(reference, tmp_path / "last.pt", released=False)
    for path in (released, trainer_file):
        foreign = read_foreign_checkpoint(path)
        expected = reference.state_dict()
        assert foreign.producer == "ultralytics" and list(foreign.state) == list(expected)
        assert all(torch.equal(foreign.state[k].to(v.dtype), v) for k, v in expected.items())
        assert foreign.layers[:3] == ["Conv", "Conv", "C3"] and foreign.layers[-1] == "Detect"
        assert (foreign.nc, foreign.reg_max, foreign.imgsz) == (80, 16, 320)


def test_yolov5nu_transfers_whole_into_yolov5n_af_and_predicts_as_ultralytics(yolov5nu):
    reference, path = yolov5nu
    ours = DetectionModel("yolov5n-af.yaml")
    state, report = transfer_state(read_foreign_checkpoint(path), ours)
    assert report.summary() == f"transferred 426/426 tensors from {path}"
    ours.load_state_dict(state, strict=True)
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    (our_boxes, our_scores), (boxes, scores) = our_outputs(ours, x), ultralytics_outputs(reference, x)
    assert scores.std() > 0.05  # the comparison is not between two constant maps
    torch.testing.assert_close(our_scores, scores, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(our_boxes, boxes, atol=1e-4, rtol=1e-4)


def test_another_class_count_leaves_the_class_branch_random(yolov5nu):
    _, path = yolov5nu
    ours = DetectionModel("yolov5n-af.yaml", nc=3)
    initial = copy.deepcopy(ours.state_dict())
    foreign = read_foreign_checkpoint(path)
    state, report = transfer_state(foreign, ours)
    class_branch = [k for k in report.keys if k.startswith("model.24.cls.")]
    assert class_branch and sorted(report.random) == sorted(class_branch)
    assert report.summary() == f"transferred {426 - len(class_branch)}/426 tensors from {path}; stayed random: model.24.cls"
    assert all(torch.equal(state[k], initial[k]) for k in class_branch)
    assert torch.equal(state["model.24.box.2.2.weight"], foreign.state["model.24.cv2.2.2.weight"])


@pytest.mark.parametrize("cfg, width", [("yolov5nu.yaml", 0.25), ("yolov5su.yaml", 0.5)])
def test_foreign_file_becomes_our_checkpoint_of_the_same_architecture(cfg, width, tmp_path):
    model = ultralytics_model(cfg)
    ckpt = checkpoint_from_foreign(save_ultralytics(model, tmp_path / cfg.replace(".yaml", ".pt")))
    assert ckpt["model_yaml"]["width_multiple"] == width and ckpt["model_yaml"]["depth_multiple"] == 0.33
    assert ckpt["model_yaml"]["head"][-1][2] == "DetectAF" and ckpt["nc"] == 80 and ckpt["opt"] == {"imgsz": 320}
    ours = model_from_checkpoint(ckpt)
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    for a, b in zip(our_outputs(ours, x), ultralytics_outputs(as_saved(model), x)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_architecture_without_counterpart_is_refused_but_its_matching_layers_transfer(tmp_path):
    path = save_ultralytics(ultralytics_model("yolov8n.yaml"), tmp_path / "yolov8n.pt")
    with pytest.raises(UserInputError, match=r"yolov8n.pt: ultralytics architecture yolov8n.yaml has no "
                                             r"PConv-YOLO counterpart; the ones that map: .*yolov5nu.pt") as e:
        checkpoint_from_foreign(path)
    assert "\n" not in str(e.value)
    _, report = transfer_state(read_foreign_checkpoint(path), DetectionModel("yolov5n-af.yaml"))
    assert 0 < len(report.transferred) < len(report.keys)
    assert "model.1.conv.weight" in report.transferred  # Conv 16->32, 3x3/2 in both
    assert "model.2" in report.random_layers()  # its C2f is not our C3


class Evil:
    """Unpickling it would run `command` (what a malicious checkpoint does)."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("make", [
    lambda marker: Evil(os.system, f"touch {marker}"),
    lambda marker: Evil(exec, f"open({str(marker)!r}, 'w').close()"),
    lambda marker: Evil(Path.touch, marker),
])
def test_pickle_that_calls_code_is_refused_without_running_it(make, tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    torch.save({"model": make(marker), "ema": None}, path)
    with pytest.raises(UserInputError, match=rf"^{path}: refused: its pickle calls \S+, which no checkpoint needs") as e:
        read_foreign_checkpoint(path)
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_model_code_named_by_a_pickle_is_recorded_not_run(tmp_path):
    from ultralytics.utils.files import increment_path
    marker, path = tmp_path / "made_by_the_pickle", tmp_path / "evil.pt"
    torch.save({"model": Evil(increment_path, str(marker), True, "", True)}, path)  # would mkdir marker
    assert type(unpickle_restricted(path)["model"]).__name__ == "increment_path"
    with pytest.raises(UserInputError, match="not an ultralytics or YOLOv5 detection checkpoint"):
        checkpoint_from_foreign(path)
    assert not marker.exists()


def test_legacy_torch_format_is_refused(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"model": None}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UserInputError, match=r"old.pt: not a zip-format PyTorch checkpoint"):
        read_foreign_checkpoint(path)


@pytest.fixture
def yolov5_file(tmp_path, monkeypatch):
    """(model, a file laid out as YOLOv5 writes it): our yolov5n.yaml model is YOLOv5's yolov5n layer for layer
    (models.common's blocks have YOLOv5's class paths), pickled with YOLOv5's models.yolo.Model and
    models.yolo.Detect as the model and head classes."""
    model = vary_weights(DetectionModel("yolov5n.yaml"))
    yolov5_classes = {name: type(name, (base,), {"__module__": "models.yolo", "__qualname__": name})
                      for name, base in (("Model", DetectionModel), ("Detect", type(model.model[-1])))}
    for name, cls in yolov5_classes.items():
        monkeypatch.setattr(models.yolo, name, cls, raising=False)
    snapshot = copy.deepcopy(model).half()
    snapshot.__class__, snapshot.model[-1].__class__ = yolov5_classes["Model"], yolov5_classes["Detect"]
    path = tmp_path / "yolov5n.pt"
    torch.save({"epoch": -1, "best_fitness": None, "model": snapshot, "ema": None, "updates": None,
                "optimizer": None, "opt": {"imgsz": 640, "weights": "yolov5n.pt"}, "git": {"status": "clean"},
                "date": datetime.datetime.now().isoformat()}, path)
    assert {"models.yolo.Model", "models.yolo.Detect", "models.common.C3"} <= set(
        torch.serialization.get_unsafe_globals_in_checkpoint(path))
    return as_saved(model), path


def test_yolov5_file_transfers_whole_and_predicts_as_the_original(yolov5_file):
    reference, path = yolov5_file
    foreign = read_foreign_checkpoint(path)
    assert foreign.producer == "YOLOv5" and foreign.imgsz == 640 and foreign.nc == 80
    ckpt = checkpoint_from_foreign(path)
    assert ckpt["model_yaml"]["head"][-1][2] == "Detect" and ckpt["model_yaml"]["width_multiple"] == 0.25
    ours = model_from_checkpoint(ckpt).eval()
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-4, rtol=1e-4)
    _, report = transfer_state(foreign, DetectionModel("yolov5n.yaml", nc=3))
    assert report.random_layers() == ["model.24.m"]  # one conv per level holds boxes, objectness and classes


def test_reader_imports_nothing_the_file_names(yolov5nu):
    """The file names ultralytics' classes; reading it must not import them (an import runs a module's code)."""
    _, path = yolov5nu
    code = ("import sys; from utils.weights.foreign import read_foreign_checkpoint; "
            f"read_foreign_checkpoint({str(path)!r}); print(sorted(m for m in sys.modules if 'ultralytics' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_load_model_and_its_trained_imgsz_read_a_yolov5nu_file(yolov5nu, log_lines):
    """val, detect, export and hub load through utils.weights.checkpoint: a foreign file becomes our model there."""
    reference, path = yolov5nu
    model = load_model(path)
    assert f"transferred 426/426 tensors from {path}" in log_lines()
    assert checkpoint_imgsz(load_checkpoint(path)) == 320 and model.anchor_free and len(model.names) == 80
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    for a, b in zip(our_outputs(model, x), ultralytics_outputs(reference, x)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_detect_runs_on_a_yolov5nu_file(yolov5nu, tmp_path):
    import detect
    _, path = yolov5nu
    out = detect.run(weights=[str(path)], source=str(ROOT / "data/coco8/images/val"), imgsz=64,
                     project=str(tmp_path), name="exp", save_txt=True)
    assert len(list(Path(out).glob("*.jpg"))) == 4


def test_train_starts_from_a_yolov5nu_file(yolov5nu, tmp_path, log_lines):
    import train
    _, path = yolov5nu
    summary = train.run(data=str(ROOT / "data/coco8.yaml"), cfg="", weights=str(path), single_cls=True, imgsz=64,
                        batch_size=4, workers=0, epochs=1, noval=True, noplots=True, project=str(tmp_path))
    lines = log_lines()
    assert f"transferred 426/426 tensors from {path}" in lines
    trained = load_model(summary.last)
    assert trained.nc == 1 and trained.yaml["width_multiple"] == 0.25 and trained.anchor_free
