"""torch.hub.load from a local clone: a fresh Python in another folder, offline, yolov5's call shapes."""
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import detect
import hubconf
from deploy.errors import UserInputError
from models import zoo
from models.yolo import DetectionModel, load_model_yaml
from utils.weights.checkpoint import build_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


HUB_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
repo, weights, image = sys.argv[1:4]
out = {}
model = torch.hub.load(repo, "custom", path=weights, source="local", conf=0.001, imgsz=128)
results = model(image)
out["custom"] = [type(model).__name__, len(results), len(results[0]), results[0].names, results[0].image.shape[:2]]
out["custom_boxes_in_image"] = bool((results[0].xyxy[:, 2] <= results[0].image.shape[1] + 0.01).all())
scratch = torch.hub.load(repo, "yolov5n_faster", pretrained=False, classes=80, source="local", imgsz=64)
out["named"] = [type(scratch).__name__, len(scratch.names), scratch.names[0], len(scratch(image))]
try:
    torch.hub.load(repo, "yolov5s_faster", pretrained=True, source="local")
except Exception as e:
    out["pretrained"] = [type(e).__name__, str(e)]
out["repo_left_on_path"] = repo in sys.path
print(json.dumps(out))
"""


def test_hub_load_from_local_clone_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    cfg = load_model_yaml(ROOT / "models/yolov5n-faster.yaml")
    cfg["width_multiple"] = 0.0625
    model = DetectionModel(cfg, nc=2)
    model.names = ["blob", "bus"]
    weights = save_checkpoint(build_checkpoint(model), tmp_path / "best.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the repo is found via torch.hub only
    argv = [sys.executable, "-c", HUB_SCRIPT, str(ROOT), str(weights), str(ROOT / "data/images/bus.jpg")]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["custom"][:2] == ["HubDetector", 1] and out["custom"][2] > 0, "detections from the checkpoint"
    assert out["custom"][3] == ["blob", "bus"] and out["custom"][4] == [1080, 810], "boxes on the original image"
    assert out["custom_boxes_in_image"]
    assert out["named"][:3] == ["HubDetector", 80, "person"] and out["named"][3] == 1
    assert out["pretrained"][0] == "UserInputError"
    assert "no pretrained weights are published" in out["pretrained"][1] and "path=" in out["pretrained"][1]
    assert not out["repo_left_on_path"]


def test_every_zoo_yaml_has_a_constructor():
    """One entry per name of the zoo list, which is one name per models/*.yaml."""
    assert set(zoo.NAMES) == {cfg.stem for cfg in (ROOT / "models").glob("*.yaml")}
    entries = {name for name, f in vars(hubconf).items() if callable(f) and name.startswith("yolo")}
    assert entries == {name.replace("-", "_") for name in zoo.NAMES}
    for name in zoo.NAMES:
        assert f"{name}.yaml" in getattr(hubconf, name.replace("-", "_")).__doc__
    model = hubconf.yolov5n_faster(classes=3, autoshape=False)
    assert isinstance(model, DetectionModel) and model.nc == 3 and model.names == ["class0", "class1", "class2"]
    with pytest.raises(UserInputError, match=r"yolov5n\(names=...\): 1 names for 3 classes"):
        hubconf.yolov5n(classes=3, names=["a"])


@pytest.mark.parametrize("name", ["deploy", "models", "utils"])
def test_a_foreign_top_level_package_is_named(monkeypatch, tmp_path, name):
    foreign = types.ModuleType(name)
    foreign.__file__ = str(tmp_path / f"other_project/{name}/__init__.py")
    monkeypatch.setitem(sys.modules, name, foreign)
    with pytest.raises(ImportError, match=f"a different '{name}' package is already imported .*other_project"):
        hubconf._check_no_foreign_packages()


def test_custom_and_detect_share_the_checkpoint_trained_size(tmp_path, log_text):
    """A checkpoint trained at 96 runs at 96 from torch.hub as from detect.py (not at 640); imgsz= still wins."""
    torch.manual_seed(0)
    cfg = load_model_yaml(ROOT / "models/yolov5n-faster.yaml")
    cfg["width_multiple"] = 0.0625
    model = DetectionModel(cfg, nc=2)
    model.names = ["blob", "bus"]
    weights = save_checkpoint(build_checkpoint(model, opt={"imgsz": 96}), tmp_path / "best.pt")
    bus = str(ROOT / "data/images/bus.jpg")

    hub_shape = hubconf.custom(str(weights))(bus)[0].input_shape
    assert hub_shape == (1, 3, 96, 96)  # 1080x810 (h x w) into 96: 96x72, padded to the stride: 96x96
    detect.run(weights=[str(weights)], source=bus, nosave=True, project=str(tmp_path / "detect"))
    assert f"NMS per image at shape {hub_shape}" in log_text.text
    assert hubconf.custom(str(weights), imgsz=64)(bus)[0].input_shape == (1, 3, 64, 64)


def test_custom_loads_an_openvino_folder(tmp_path):
    """path= export.py's *_openvino_model folder, as YOLOv5 hub users pass it: the ONNX file's boxes (same model,
    same fixed input); autoshape=False, which rebuilds a DetectionModel, asks for the .pt instead."""
    import export

    torch.manual_seed(0)
    cfg = load_model_yaml(ROOT / "models/yolov5n-faster.yaml")
    cfg["width_multiple"] = 0.0625
    model = DetectionModel(cfg, nc=2)
    model.names = ["blob", "bus"]
    with torch.no_grad():  # distinct scores per box: an untrained head ties them, and NMS may keep either of a tie
        for conv in model.model[-1].m:
            conv.weight.normal_(0, 0.3)
            conv.bias.normal_(-1.0, 1.0)
    weights = save_checkpoint(build_checkpoint(model), tmp_path / "best.pt")
    export.run(weights=str(weights), include=["onnx", "openvino"], imgsz=[64], verify=False)
    folder = tmp_path / "best_openvino_model"
    openvino = torch.hub.load(str(ROOT), "custom", path=str(folder), source="local", conf=0.001)
    onnx = torch.hub.load(str(ROOT), "custom", path=str(tmp_path / "best.onnx"), source="local", conf=0.001)
    assert (openvino.backend.kind, openvino.imgsz, openvino.names) == ("openvino", (64, 64), ["blob", "bus"])
    ours, ref = openvino(str(ROOT / "data/images/bus.jpg"))[0], onnx(str(ROOT / "data/images/bus.jpg"))[0]
    assert len(ours) == len(ref) > 10 and ours.image.shape == ref.image.shape
    gap = np.abs(ref.xyxy[:, None] - ours.xyxy[None]).max(2) + 1e3 * (ref.cls[:, None] != ours.cls[None])
    nearest = gap.argmin(1)  # each ONNX box's twin: same class, corners within 0.01 px of the 1080x810 image
    assert gap.min(1).max() < 1e-2 and len(set(nearest)) == len(ref)
    np.testing.assert_allclose(ours.conf[nearest], ref.conf, atol=1e-5)
    with pytest.raises(UserInputError, match=r"autoshape=False\): the bare DetectionModel needs a \.pt checkpoint, "
                                             r"not an exported openvino model"):
        hubconf.custom(str(folder), autoshape=False)


# A script written for YOLOv5's torch.hub (its README's calls), run unchanged against this repo
YOLOV5_SCRIPT = """
import json, sys, torch, cv2
torch.set_num_threads(1)
repo, weights, bus, zidane = sys.argv[1:5]
model = torch.hub.load(repo, "custom", path=weights, source="local")
model.conf = 0.01
model.max_det = 5
imgs = [bus, cv2.imread(zidane)[..., ::-1]]  # a file and an OpenCV image as RGB, as YOLOv5's docs say
results = model(imgs, size=320)
results.print()
results.show()
results.save()
crops = results.crop(save=True)
df = results.pandas().xyxy[0]
out = {"n": len(results), "xyxy0": list(results.xyxy[0].shape), "xywhn_max": float(results.xywhn[1][:, :4].max()),
       "columns": list(df.columns), "names": sorted(set(df["name"])), "files": results.files, "crops": len(crops),
       "crop_keys": sorted(crops[0]), "shape": list(results.s), "small": list(model(bus, size=160).s),
       "str": str(results).splitlines()[0], "tolist": len(results.tolist())}
try:
    model.conf = 5
except Exception as e:
    out["conf"] = [type(e).__name__, str(e), model.conf]
try:
    torch.hub.load(repo, "yolov5n_faster", classes=0, source="local")
except Exception as e:
    out["classes0"] = str(e)
out["classes1"] = len(torch.hub.load(repo, "yolov5n_faster", classes=1, source="local").names)
print(json.dumps(out))
"""


def test_a_yolov5_hub_script_runs_unchanged(tmp_path):
    """YOLOv5's results API: size= per call, print/show/save/crop/pandas/xyxy/xywhn/tolist; model.conf checked
    when set; classes=N honoured at load (0 refused)."""
    torch.manual_seed(0)
    cfg = load_model_yaml(ROOT / "models/yolov5n-faster.yaml")
    cfg["width_multiple"] = 0.0625
    model = DetectionModel(cfg, nc=2)
    model.names = ["blob", "bus"]
    with torch.no_grad():  # confident everywhere: boxes to print, save and crop
        for conv in model.model[-1].m:
            conv.bias.view(model.model[-1].na, -1)[:, 4] = 6.0
    weights = save_checkpoint(build_checkpoint(model, opt={"imgsz": 64}), tmp_path / "best.pt")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DISPLAY")}
    argv = [sys.executable, "-c", YOLOV5_SCRIPT, str(ROOT), str(weights), str(ROOT / "data/images/bus.jpg"),
            str(ROOT / "data/images/zidane.jpg")]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n"] == 2 and out["xyxy0"] == [5, 6] and 0 < out["xywhn_max"] <= 1.0001
    assert out["columns"] == ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]
    assert set(out["names"]) <= {"blob", "bus"} and out["files"] == ["bus.jpg", "image1.jpg"]
    assert out["crops"] == 10 and out["crop_keys"] == ["box", "cls", "conf", "im", "label"]
    assert out["shape"] == [1, 3, 320, 320] and out["small"] == [1, 3, 160, 160]  # size= per call, letterboxed
    assert out["str"].startswith("image 1/2: 1080x810 ") and out["tolist"] == 2
    assert out["conf"][0] == "UserInputError" and "5: must be between 0 and 1" in out["conf"][1]
    assert out["conf"][2] == 0.01  # the bad value never took
    assert "yolov5n_faster(classes=0)" in out["classes0"] and out["classes1"] == 1
    saved = tmp_path / "runs/detect/exp"
    assert sorted(p.name for p in saved.iterdir()) == ["bus.jpg", "image1.jpg"]
    assert len(list((tmp_path / "runs/detect/exp2/crops").rglob("*.jpg"))) == 10
    assert "image 2/2: 720x1280" in proc.stderr + proc.stdout
