"""deploy.run --classes: an id the model lacks is refused up front (as detect.py does), not a run that filters
every box away and reports 'no detections'."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deploy.detector import Detector, Options
from deploy.errors import UserInputError

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "data/images/bus.jpg"


@pytest.fixture(scope="module")
def one_class_onnx(tmp_path_factory) -> Path:
    """A hand-built 1-class ONNX with export.py's metadata that always outputs one confident box: the runner
    sees what a real export gives it, without the seconds an export takes."""
    row = helper.make_tensor("row", TensorProto.FLOAT, [1, 1, 6], [32, 32, 16, 16, 0.9, 0.9])  # cx cy w h obj cls
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),  # output depends on the input
             helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
             helper.make_node("Add", ["row", "nothing"], ["output0"])]
    graph = helper.make_graph(nodes, "one_box", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                               [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 1, 6])],
                              initializer=[row, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"names": '["person"]', "stride": "32", "imgsz": "[64, 64]"}.items():
        model.metadata_props.add(key=key, value=value)
    path = tmp_path_factory.mktemp("model") / "person.onnx"
    onnx.save(model, str(path))
    return path


def test_known_class_keeps_its_box(one_class_onnx):
    result = Detector(one_class_onnx, Options(classes=[0], threads=1)).predict(np.zeros((64, 64, 3), np.uint8))
    assert result.cls.tolist() == [0] and result.summary() == "1 person"


@pytest.mark.parametrize("classes, message", [
    ([0, 99], "classes 99: no such class id; person.onnx has 1 class (id 0)"),
    ([-1], "classes -1: no such class id; person.onnx has 1 class (id 0)"),
])
def test_unknown_class_is_refused(one_class_onnx, classes, message):
    with pytest.raises(UserInputError) as e:
        Detector(one_class_onnx, Options(classes=classes, threads=1))
    assert str(e.value) == message


def test_cli_refuses_before_writing_anything(one_class_onnx, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "deploy.run", "--model", str(one_class_onnx), "--source", str(IMAGE),
                           "--classes", "99", "--project", str(tmp_path / "runs")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and not (tmp_path / "runs").exists()
    assert proc.stderr.strip() == "error: --classes 99: no such class id; person.onnx has 1 class (id 0)"
