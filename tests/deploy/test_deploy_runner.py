"""deploy/ end to end on files written by the project's own export code: its boxes equal detect.py's for the
same ONNX (fp32, int8, --nms) / TFLite (fp32, int8) / OpenVINO (fp32, int8, --half) file, it runs with torch
and the project poisoned (OpenVINO giving the ONNX file's boxes there), its outputs follow detect.py's
conventions, and bad models, sizes, sources and a missing runtime get one-line errors (exit 2)."""
import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

import deploy.run
import detect
import export
from deploy import Detector, Options
from deploy.errors import UserInputError
from deploy.run import main as deploy_main
from deploy.sources import open_source
from models.yolo import DetectionModel
from utils.weights.checkpoint import build_checkpoint, save_checkpoint
from utils.data.dataset import check_dataset

ROOT = Path(__file__).resolve().parents[2]
COCO8 = ROOT / "data/coco8.yaml"
IMAGES = [ROOT / "data/images/bus.jpg", ROOT / "data/images/zidane.jpg"]
VIDEO = ROOT / "data/videos/people_6s.mp4"
IMGSZ = 64
CLIP_FRAMES = 6
TINY_CFG = {  # a 7-layer detector with one C3Faster (PConv) block: converts to TFLite in seconds, not minutes
    "nc": 80, "depth_multiple": 1.0, "width_multiple": 1.0,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
    "backbone": [[-1, 1, "Conv", [16, 6, 2, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "C3Faster", [32]],
                 [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]],
                 [-1, 1, "SPPF", [32, 5]]],
    "head": [[[3, 4, 6], 1, "Detect", ["nc", "anchors"]]],
}

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """ONNX, TFLite and OpenVINO, each fp32 and int8, and an ONNX with NMS inside, from a tiny untrained model
    whose BN statistics and head are randomised so that its ~20 boxes per image depend on the image."""
    torch.manual_seed(0)
    model = DetectionModel(TINY_CFG)
    model.names = check_dataset(COCO8)["names"]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # small variances: features of std ~3-20 that vary with the image
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.05, 0.1)
        for conv in model.model[-1].m:  # scores that depend on the image; boxes near anchor size (no 0-width)
            conv.weight.normal_(0, 0.1)
            conv.bias.normal_(-2.0, 0.5)
            per_anchor_w, per_anchor_b = conv.weight.view(3, 85, -1), conv.bias.view(3, 85)
            per_anchor_w[:, :4] *= 0.1
            per_anchor_b[:, :4] = 0
    weights = save_checkpoint(build_checkpoint(model), tmp_path_factory.mktemp("weights") / "tiny.pt")
    project = tmp_path_factory.mktemp("export")
    files = export.run(weights=str(weights), include=["onnx", "tflite", "openvino"], imgsz=[IMGSZ], int8=True,
                       data=str(COCO8), verify=False, project=str(project))["files"]
    out = {f.label: f.path for f in files}
    out["onnx nms"] = export.run(weights=str(weights), include=["onnx"], imgsz=[IMGSZ], nms=True, verify=False,
                                 project=str(project))["files"][0].path
    return out


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory) -> Path:
    """The shipped images plus the first frames of the shipped video."""
    folder = tmp_path_factory.mktemp("source")
    for image in IMAGES:
        shutil.copy(image, folder / image.name)
    cap = cv2.VideoCapture(str(VIDEO))
    fps, size = cap.get(cv2.CAP_PROP_FPS), (int(cap.get(3)), int(cap.get(4)))
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for _ in range(CLIP_FRAMES):
        writer.write(cap.read()[1])
    writer.release()
    cap.release()
    return folder


def read_labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.loadtxt(p, ndmin=2) for p in sorted((folder / "labels").glob("*.txt"))}


def box_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4) × (m, 4) normalised cx cy w h → IoU; for boxes clipped to zero area (they lay in the letterbox
    padding) 1.0 where the coordinates agree within 1e-5 of the image size, else 0."""
    a1, a2 = a[:, None, :2] - a[:, None, 2:] / 2, a[:, None, :2] + a[:, None, 2:] / 2
    b1, b2 = b[None, :, :2] - b[None, :, 2:] / 2, b[None, :, :2] + b[None, :, 2:] / 2
    inter = (np.minimum(a2, b2) - np.maximum(a1, b1)).clip(0).prod(2)
    union = a[:, None, 2:].prod(2) + b[None, :, 2:].prod(2) - inter
    close = (np.abs(a[:, None] - b[None]).max(2) < 1e-5).astype(float)
    return np.where(union > 0, inter / np.where(union > 0, union, 1), close)


def assert_same_detections(ours: np.ndarray, ref: np.ndarray, where: str) -> None:
    """Same count; each reference box has its own box of the same class in ours with IoU > 0.99."""
    assert ours.shape == ref.shape, where
    iou = box_similarity(ref[:, 1:5], ours[:, 1:5])
    iou[ref[:, :1] != ours[:, 0][None]] = 0  # a box of another class is no match
    taken = set()
    for i in np.argsort(-ref[:, 5], kind="stable"):
        j = next(j for j in np.argsort(-iou[i]) if j not in taken)
        assert iou[i, j] > 0.99, (where, ref[i], ours[j])
        assert abs(ours[j, 5] - ref[i, 5]) < 1e-4, where
        taken.add(j)


def untie_saturated(rows: np.ndarray) -> np.ndarray:
    """Label rows with the class of a box above 0.99 confidence set to -1: there the untrained head saturates
    several class probabilities to 1.0 in float32, and which one argmax returns is a runtime's last-bit rounding
    (5 of ~900 boxes between ONNX Runtime and OpenVINO); boxes and confidences must still agree."""
    rows = rows.copy()
    rows[rows[:, 5] > 0.99, 0] = -1
    return rows


@pytest.mark.parametrize("label, half", [("onnx", False), ("onnx int8", False), ("tflite", False),
                                         ("tflite int8", False), ("onnx nms", False), ("openvino", False),
                                         ("openvino", True), ("openvino int8", False)])
def test_boxes_equal_detect_py(exported, source_dir, tmp_path, label, half):
    """Same file, same boxes; OpenVINO as its *_openvino_model folder, and with --half in both (the runtime's
    default precision: bf16 on CPUs with AVX512-BF16/AMX, f32 elsewhere)."""
    model = exported[label].parent if label.startswith("openvino") else exported[label]
    common = ["--source", str(source_dir), "--conf-thres", "0.25", "--save-txt", "--save-conf", "--nosave"]
    ours = deploy_main(["--model", str(model), "--project", str(tmp_path / "deploy"), "--threads", "2", *common,
                        *["--half"] * half])
    ref = detect.run(weights=[str(model)], source=str(source_dir), conf_thres=0.25, save_txt=True, save_conf=True,
                     nosave=True, project=str(tmp_path / "detect"), half=half)
    ours, ref = read_labels(ours), read_labels(ref)
    assert list(ref) == ["bus.txt", *(f"clip_{k}.txt" for k in range(1, CLIP_FRAMES + 1)), "zidane.txt"]
    assert list(ours) == list(ref)
    assert sum(len(v) for v in ref.values()) > 5 * len(ref)  # enough boxes for the comparison to mean something
    assert not np.array_equal(ref["bus.txt"], ref["zidane.txt"])  # boxes depend on the image
    for name in ref:
        assert_same_detections(ours[name], ref[name], f"{label} {name}")


def test_outputs_follow_detect_conventions(exported, source_dir, tmp_path):
    args = ["--model", str(exported["onnx"]), "--source", str(source_dir), "--project", str(tmp_path), "--save-txt"]
    first, second = deploy_main(args), deploy_main(args + ["--classes", "0", "1"])
    assert (first.name, second.name) == ("exp", "exp2")  # a new folder per run, never overwritten
    for image in IMAGES:
        assert cv2.imread(str(first / image.name)).shape == cv2.imread(str(image)).shape
    video, clip = cv2.VideoCapture(str(first / "clip.mp4")), cv2.VideoCapture(str(source_dir / "clip.mp4"))
    for prop in (cv2.CAP_PROP_FPS, cv2.CAP_PROP_FRAME_COUNT, cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
        assert video.get(prop) == clip.get(prop)
    video.release()
    clip.release()
    rows = np.concatenate(list(read_labels(first).values()))
    assert rows.shape[1] == 5 and np.all((rows[:, 1:] >= 0) & (rows[:, 1:] <= 1))
    filtered = np.concatenate(list(read_labels(second).values()))
    assert set(filtered[:, 0].astype(int)) <= {0, 1} and len(filtered) < len(rows)


def test_runs_alone_without_torch(exported, source_dir, tmp_path):
    """deploy/ copied alone to a 'device' folder, torch/torchvision/ultralytics and the project poisoned and the
    network refused: ONNX, TFLite int8 (the .tflite alone, its metadata inside) and the OpenVINO folder run,
    OpenVINO with the ONNX file's boxes."""
    device = tmp_path / "device"
    shutil.copytree(ROOT / "deploy", device / "deploy", ignore=shutil.ignore_patterns("__pycache__"))
    for label in ("onnx", "tflite int8"):
        shutil.copy(exported[label], device / exported[label].name)
    assert not (device / exported["tflite int8"].with_suffix(".json").name).exists()  # the .tflite alone
    openvino_dir = shutil.copytree(exported["openvino"].parent, device / exported["openvino"].parent.name)
    script = f"""
import os, sys
def no_network(event, args):
    if event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.connect", "socket.sendto", "socket.sendmsg"):
        os.write(2, f"NETWORK ACCESS: {{event}}\\n".encode())
        os._exit(3)
sys.addaudithook(no_network)
POISONED = ("torch", "torchvision", "ultralytics", "utils", "models", "detect", "export")
for name in POISONED:
    sys.modules[name] = None  # any import of these now raises ImportError
from deploy.run import main
for model in ({exported['onnx'].name!r}, {exported['tflite int8'].name!r}, {openvino_dir.name!r}):
    main(["--model", model, "--source", {str(source_dir)!r}, "--project", "runs", "--save-txt", "--save-conf"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in POISONED and sys.modules[m] is not None)
print("loaded:", loaded)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=device, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "loaded: []" in proc.stdout
    assert proc.stdout.count("FPS: ") == 3
    assert f"{openvino_dir.name}: OpenVINO fp32, input {IMGSZ}x{IMGSZ} NCHW, 80 classes" in proc.stdout
    for run in ("exp", "exp2", "exp3"):
        assert sorted(p.name for p in (device / "runs" / run).iterdir()) == ["bus.jpg", "clip.mp4", "labels",
                                                                             "zidane.jpg"]
    onnx_rows, openvino_rows = read_labels(device / "runs/exp"), read_labels(device / "runs/exp3")
    assert list(openvino_rows) == list(onnx_rows) and sum(len(v) for v in onnx_rows.values()) > 5 * len(onnx_rows)
    for name in onnx_rows:  # two runtimes: where class scores saturate at 1.0 either may win the argmax
        assert_same_detections(untie_saturated(openvino_rows[name]), untie_saturated(onnx_rows[name]),
                               f"openvino vs onnx {name}")


def test_bad_model_messages(exported, tmp_path):
    stripped = onnx.load(str(exported["onnx"]))
    kept = [p for p in stripped.metadata_props if p.key != "names"]
    del stripped.metadata_props[:]
    onnx.save(stripped, str(tmp_path / "no_meta.onnx"))
    stripped.metadata_props.extend(kept)
    onnx.save(stripped, str(tmp_path / "no_names.onnx"))
    with zipfile.ZipFile(exported["tflite"]) as archive:  # the file as older exports wrote it: no metadata inside
        flatbuffer = exported["tflite"].read_bytes()[:archive.infolist()[0].header_offset]
    (tmp_path / "old.tflite").write_bytes(flatbuffer)
    shutil.copy(exported["tflite"], tmp_path / "resized.tflite")
    meta = json.loads(exported["tflite"].with_suffix(".json").read_text())
    (tmp_path / "resized.json").write_text(json.dumps({**meta, "imgsz": "[128, 128]"}))
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    cases = [
        (["--model", str(tmp_path / "no_meta.onnx")], "missing PConv-YOLO metadata names, stride, imgsz in its ONNX"),
        (["--model", str(tmp_path / "no_names.onnx")], "missing PConv-YOLO metadata names in its ONNX metadata_props"),
        (["--model", str(tmp_path / "old.tflite")],
         "missing PConv-YOLO metadata names, stride, imgsz in old.json / old.tflite.json (no such file"),
        (["--model", str(tmp_path / "resized.tflite")], "input tensor is 64x64 but its metadata says imgsz 128x128"),
        (["--model", str(exported["onnx"]), "--imgsz", "320"], "takes a fixed 64x64 input"),
        (["--model", str(tmp_path / "garbage.onnx")], "not a readable ONNX model"),
        (["--model", str(tmp_path / "missing.onnx")], "missing.onnx: file not found"),
        (["--model", str(tmp_path / "best.pt")], "unsupported format '.pt'"),
        (["--model", str(exported["onnx"]), "--conf-thres", "2"], "conf_thres 2.0: must be between 0 and 1"),
    ]
    for argv, message in cases:
        with pytest.raises(UserInputError) as e:
            deploy_main(argv + ["--source", str(IMAGES[0]), "--project", str(tmp_path / "runs")])
        assert message in str(e.value), (argv, str(e.value))
        assert "\n" not in str(e.value)


def test_openvino_model_messages(exported, tmp_path, monkeypatch):
    """The folder or .xml that is not a usable IR, and a device without the openvino package, get one line each."""
    folder = exported["openvino"].parent
    xml = folder / exported["openvino"].name
    no_bin = shutil.copytree(folder, tmp_path / "no_bin_openvino_model")
    no_bin.joinpath(xml.name).with_suffix(".bin").unlink()
    (tmp_path / "empty_openvino_model").mkdir()
    no_meta = tmp_path / "no_meta.xml"
    no_meta.write_text(re.sub(r"<model_info>.*?</model_info>", "", xml.read_text(), flags=re.S))
    shutil.copy(xml.with_suffix(".bin"), no_meta.with_suffix(".bin"))
    cases = [
        (no_bin, f"model file {no_bin / xml.name}: not a readable OpenVINO model ("),
        (tmp_path / "empty_openvino_model", "empty_openvino_model: expected one .xml in the OpenVINO model folder, "
                                            "found 0"),
        (tmp_path / "gone_openvino_model", "gone_openvino_model: folder not found"),
        (no_meta, "no_meta.xml: missing PConv-YOLO metadata names, stride, imgsz in its rt_info model_info"),
    ]
    for model, message in cases:
        with pytest.raises(UserInputError) as e:
            Detector(model)
        assert message in str(e.value) and "\n" not in str(e.value), (model, str(e.value))
    monkeypatch.setitem(sys.modules, "openvino", None)  # a device where openvino is not installed
    with pytest.raises(UserInputError) as e:
        Detector(folder)
    assert str(e.value) == f"model file {xml}: OpenVINO models need openvino (pip install openvino)"


def test_half_is_for_openvino_only(exported, caplog, monkeypatch):
    """--half picks OpenVINO's default precision, said in the log; .onnx/.tflite precision is the file's."""
    monkeypatch.setattr(logging.getLogger("deploy"), "propagate", True)
    caplog.set_level(logging.INFO, logger="deploy")
    detector = Detector(exported["openvino"].parent, Options(half=True))
    runtime = detector.engine.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    assert detector.engine.precision == ("fp32" if runtime == "f32" else f"fp32, {runtime} compute")
    assert Detector(exported["openvino"].parent).engine.precision == "fp32"
    assert Detector(exported["onnx"], Options(half=True)).engine.precision == "fp32"
    assert "WARNING: --half has no effect on .onnx files (precision is fixed at export)" in caplog.text


def test_negative_line_thickness_exits_2_with_one_line(exported, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "deploy.run", "--model", str(exported["onnx"]), "--source",
                           str(ROOT / "data/images/bus.jpg"), "--line-thickness", "-3", "--project",
                           str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and not (tmp_path / "runs").exists()
    assert proc.stderr.strip() == "error: --line-thickness -3: must be 1 or more pixels (0: by image size)"


def test_the_cli_names_its_own_flags(tmp_path):
    """The library says "model file" and "conf_thres"; the runner's command line says --model and --conf-thres."""
    for extra, message in (([], f"--model {tmp_path / 'gone.onnx'}: file not found"),
                           (["--conf-thres", "2"], "--conf-thres 2.0: must be between 0 and 1")):
        proc = subprocess.run([sys.executable, "-m", "deploy.run", "--model", str(tmp_path / "gone.onnx"), *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stderr.strip() == f"error: {message}"


def test_results_folder_is_said_as_an_absolute_path(exported, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "deploy.run", "--model", str(exported["onnx"]), "--source",
                           str(ROOT / "data/images/bus.jpg"), "--project", "rel", "--save-txt"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-1000:]
    assert f"Results saved to {tmp_path / 'rel/exp'}, 1 labels saved to {tmp_path / 'rel/exp/labels'}" in out


def test_bad_sources_exit_2_with_one_line(exported, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "notes.md").write_text("hello")
    (tmp_path / "list.txt").write_text("hello.jpg\n")
    cases = [
        (str(tmp_path / "nowhere"), "file or folder not found"),
        (str(tmp_path / "broken.jpg"), "broken.jpg: cannot read image"),
        (str(tmp_path / "broken.mp4"), "broken.mp4: cannot read video"),
        (str(tmp_path / "notes.md"), "unsupported file type '.md'"),
        (str(tmp_path / "list.txt"), "list.txt: listed file hello.jpg does not exist"),
        ("7", "--source 7: camera 7 could not be opened"),
        ("http://169.254.169.254/latest/meta-data", "non-public address 169.254.169.254; refused (pass "
                                                    "--allow-local-streams"),
    ]
    for source, message in cases:
        proc = subprocess.run([sys.executable, "-m", "deploy.run", "--model", str(exported["onnx"]), "--source", source,
                               "--project", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2, (source, proc.stderr[-1000:])
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: --source ") and message in last, (source, last)
        assert "Traceback" not in proc.stderr


class FakeCamera:
    """A network camera on the local network: `frames` frames of the shipped bus image, then it is gone."""

    def __init__(self, frames: int):
        self.image, self.left = cv2.imread(str(IMAGES[0])), frames

    def isOpened(self) -> bool:
        return True

    def read(self):
        if self.left == 0:
            return False, None
        self.left -= 1
        return True, self.image

    def get(self, prop: int) -> float:
        return 10.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        self.left = 0


def test_local_stream_needs_allow_local_streams(exported, tmp_path, monkeypatch):
    """A stream on a private address is refused before anything connects, as in detect.py; --allow-local-streams
    reads it, --vid-stride thins it, and its outputs are named after the URL's path, never its credentials."""
    monkeypatch.setattr(deploy.run, "open_source", functools.partial(open_source, retries=0,
                                                                     capture_factory=lambda _: FakeCamera(4)))
    args = ["--model", str(exported["onnx"]), "--source", "rtsp://admin:pw@192.168.1.20/live", "--project",
            str(tmp_path), "--save-txt", "--nosave"]
    with pytest.raises(UserInputError, match="non-public address 192.168.1.20.*--allow-local-streams"):
        deploy_main(args)
    assert not tmp_path.joinpath("exp").exists()
    save_dir = deploy_main(args + ["--allow-local-streams", "--vid-stride", "2"])
    labels = sorted(p.name for p in (save_dir / "labels").iterdir())
    assert labels and set(labels) <= {"live_1.txt", "live_3.txt"} and "live_3.txt" in labels  # newest kept
