"""OpenVINO (and nncf, for int8) are optional: without them, exporting to OpenVINO and running an OpenVINO
model each stop with one line that says what to install, never an ImportError traceback."""
import subprocess
import sys
from pathlib import Path

import pytest

import detect
import export
import val
from deploy.errors import UserInputError
from models.yolo import DetectionModel, load_model_yaml
from utils.weights.checkpoint import build_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
COCO8 = ROOT / "data/coco8.yaml"
BLOCKED = "import of {0} halted; None in sys.modules"  # what Python says for a sys.modules[name] = None entry


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    cfg = load_model_yaml(ROOT / "models/yolov5n.yaml")
    cfg["width_multiple"] = 0.0625
    return save_checkpoint(build_checkpoint(DetectionModel(cfg, nc=2)), tmp_path_factory.mktemp("w") / "best.pt")


@pytest.fixture
def openvino_folder(tmp_path) -> Path:
    """best_openvino_model/best.xml (+ .bin): never read, as the missing runtime is noticed first."""
    folder = tmp_path / "best_openvino_model"
    folder.mkdir()
    (folder / "best.xml").write_text("<net/>")
    (folder / "best.bin").write_bytes(b"")
    return folder


@pytest.mark.parametrize("missing, int8", [("openvino", False), ("openvino", True), ("nncf", True)])
def test_export_names_the_install_command(weights, tmp_path, monkeypatch, missing, int8):
    monkeypatch.setitem(sys.modules, missing, None)  # as if it were not installed
    extra = dict(int8=True, data=str(COCO8)) if int8 else {}
    with pytest.raises(UserInputError) as e:
        export.run(weights=str(weights), include=["openvino"], imgsz=[64], project=str(tmp_path), **extra)
    expected = ("int8: OpenVINO int8 needs nncf: pip install nncf" if missing == "nncf" else
                "include openvino: OpenVINO export needs openvino, and nncf for int8: pip install openvino nncf")
    assert str(e.value) == f"{expected} ({BLOCKED.format(missing)})"
    assert not (tmp_path / "exp").exists() and not list(weights.parent.glob("*openvino*"))  # checked before writing


def test_nncf_is_needed_only_for_int8(weights, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)
    out = export.run(weights=str(weights), include=["openvino"], imgsz=[64], verify=False, project=str(tmp_path))
    assert [f.path.relative_to(out["save_dir"]).as_posix() for f in out["files"]] == ["best_openvino_model/best.xml"]


def test_detect_and_val_name_the_install_command(openvino_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    message = f"model file {openvino_folder / 'best.xml'}: OpenVINO models need openvino (pip install openvino)"
    with pytest.raises(UserInputError) as e:
        detect.run(weights=[str(openvino_folder)], source=str(ROOT / "data/images/bus.jpg"),
                   project=str(tmp_path / "detect"))
    assert str(e.value) == message
    with pytest.raises(UserInputError) as e:
        val.run(data=str(COCO8), weights=str(openvino_folder), workers=0, project=str(tmp_path / "val"))
    assert str(e.value) == message


def test_cli_prints_the_one_line_and_exits_2(openvino_folder):
    """detect.py as a user runs it, in a Python where openvino cannot be imported."""
    script = ("import runpy, sys; sys.modules['openvino'] = None; "
              f"sys.argv = ['detect.py', '--weights', {str(openvino_folder)!r}, '--source', 'data/images/bus.jpg']; "
              "runpy.run_path('detect.py', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (f"error: --weights {openvino_folder / 'best.xml'}: OpenVINO models "
                                                    "need openvino (pip install openvino)")
    assert "Traceback" not in proc.stderr
