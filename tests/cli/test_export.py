"""export.py end to end on a tiny checkpoint: every format and precision, the verification table, and
detect.py / val.py reading each exported file with the same boxes as the .pt; then the bad-input messages."""
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import detect
import export
import val
from deploy.errors import UserInputError
from models.yolo import DetectionModel
from utils.data.dataset import check_dataset
from utils.infer.backends import load_backend
from utils.weights.checkpoint import build_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
COCO8 = ROOT / "data/coco8.yaml"
BUS = ROOT / "data/images/bus.jpg"
IMGSZ = 64
REDUCED_PRECISION = ("tflite fp16",)  # fp16 weights, fp32 compute

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained yolov5n-faster whose head is randomised so it draws boxes of distinct scores."""
    torch.manual_seed(0)
    names = check_dataset(COCO8)["names"]
    model = DetectionModel("yolov5n-faster.yaml", nc=len(names))
    model.names = names
    with torch.no_grad():
        for conv in model.model[-1].m:
            conv.weight.normal_(0, 0.3)
            conv.bias.normal_(-1.0, 1.0)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return save_checkpoint(build_checkpoint(model), tmp_path_factory.mktemp("weights") / "tiny.pt")


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    return export.run(weights=str(checkpoint), include=["onnx", "tflite", "torchscript", "openvino"], imgsz=[IMGSZ],
                      half=True, int8=True, data=str(COCO8), project=str(tmp_path_factory.mktemp("export")))


def _files(exported) -> dict[str, Path]:
    return {f.label: f.path for f in exported["files"]}


def test_every_format_written_with_metadata(exported):
    files = _files(exported)
    assert sorted(files) == ["onnx", "onnx int8", "openvino", "openvino int8", "tflite", "tflite fp16", "tflite int8",
                             "torchscript"]
    assert [str(p.relative_to(exported["save_dir"])) for p in files.values()] == [
        "tiny.torchscript", "tiny.onnx", "tiny-int8.onnx", "tiny.tflite", "tiny-fp16.tflite", "tiny-int8.tflite",
        "tiny_openvino_model/tiny.xml", "tiny_int8_openvino_model/tiny.xml"]
    for label in ("tflite", "tflite fp16", "tflite int8"):
        meta = json.loads(files[label].with_suffix(".json").read_text())  # plain JSON values, no JSON in strings
        assert meta["imgsz"] == [IMGSZ, IMGSZ] and meta["stride"] == 32 and meta["nms"] is False
        assert len(meta["names"]) == 80 and meta["names"][0] == "person" and meta["layout"] in ("NCHW", "NHWC")
        assert meta["precision"] == label.split()[-1].replace("tflite", "fp32")
        with zipfile.ZipFile(files[label]) as archive:  # the same metadata inside the file: one file is enough
            assert json.loads(archive.read("metadata.json")) == meta
    for label in ("openvino", "openvino int8"):  # metadata in the IR itself, as the backends read it
        backend = load_backend(files[label].parent)  # the *_openvino_model folder stands for its .xml
        assert (backend.kind, backend.imgsz, backend.stride, len(backend.names)) == ("openvino", (IMGSZ, IMGSZ), 32, 80)
    sizes = {label: sum(f.stat().st_size for f in p.parent.glob(p.stem + ".*")) for label, p in files.items()}
    assert sizes["tflite int8"] < 0.5 * sizes["tflite"] and sizes["tflite fp16"] < 0.7 * sizes["tflite"]
    assert sizes["onnx int8"] < 0.5 * sizes["onnx"] and sizes["openvino int8"] < 0.5 * sizes["openvino"]
    assert (exported["save_dir"] / "summary.json").is_file()


def test_int8_tflite_runs_the_head_convs_in_int8_and_only_the_decode_in_float(exported):
    """A float head would keep its branch convs float; only the decode after them needs float (pixel boxes and
    0-1 scores in one tensor)."""
    from ai_edge_litert.interpreter import Interpreter

    tensors = Interpreter(model_path=str(_files(exported)["tflite int8"])).get_tensor_details()
    head_convs = [t for t in tensors if re.search(r"heads\.Detect\w*_\d+/.*Conv2d", t["name"])]
    weights_and_outputs = [t for t in head_convs if t["dtype"] != np.int32 and not t["name"].endswith("_dequant")]
    assert weights_and_outputs and all(t["dtype"] == np.int8 for t in weights_and_outputs)  # int32: biases
    decode = [t for t in tensors if re.search(r"heads\.Detect\w*_\d+;[^/]*$", t["name"])]
    assert decode and any(t["dtype"] == np.float32 for t in decode)


def test_verification_table_parity_and_map(exported):
    rows = {r["format"]: r for r in exported["rows"]}
    default = [label for label in rows if label in ("openvino bf16", "openvino f16")]  # where the CPU has them
    assert list(rows) == ["pytorch", "torchscript", "onnx", "onnx int8", "tflite", "tflite fp16", "tflite int8",
                          "openvino", *default, "openvino int8"]
    assert rows["onnx"]["max_abs"] < 1e-4
    assert rows["openvino"]["max_abs"] < 1e-3  # f32 unless --half asks for the runtime's default
    for label in default:
        assert rows[label]["max_abs"] < 1.0 and rows[label]["map50_95"] == pytest.approx(rows["pytorch"]["map50_95"],
                                                                                          abs=0.02)
    assert rows["tflite"]["max_abs"] < 1e-3
    assert rows["torchscript"]["max_abs"] < 1e-4
    assert rows["tflite fp16"]["max_abs"] < 1.0  # box pixels at 64; fp16 weights, fp32 compute
    for label in ("tflite int8", "onnx int8", "openvino int8"):
        assert np.isfinite(rows[label]["max_abs"]) and rows[label]["size_mb"] < 0.5 * rows[label.split()[0]]["size_mb"]
    for r in rows.values():
        assert r["latency_ms"] > 0 and r["map50_95"] is not None and 0 <= r["map50_95"] <= 1
    for fmt in ("torchscript", "onnx", "tflite", "openvino"):
        assert rows[fmt]["map50_95"] == pytest.approx(rows["pytorch"]["map50_95"], abs=1e-3)


def test_anchor_free_checkpoint_exports_and_verifies_like_the_others(tmp_path):
    """A DetectAF model (the fastest PConv one, shared-stem head) goes through the same export + verification."""
    torch.manual_seed(0)
    names = check_dataset(COCO8)["names"]
    model = DetectionModel("yolov5n-pconv-lite2-shared-af.yaml", nc=len(names))
    model.names = names
    weights = save_checkpoint(build_checkpoint(model), tmp_path / "af.pt")
    out = export.run(weights=str(weights), include=["onnx", "tflite"], imgsz=[IMGSZ], data=str(COCO8),
                     project=str(tmp_path / "export"))
    rows = {r["format"]: r for r in out["rows"]}
    assert list(rows) == ["pytorch", "onnx", "tflite"]
    assert rows["onnx"]["max_abs"] < 1e-3 and rows["tflite"]["max_abs"] < 1e-3  # box pixels at 64
    for fmt in ("onnx", "tflite"):
        assert rows[fmt]["map50_95"] == pytest.approx(rows["pytorch"]["map50_95"], abs=1e-3)


def test_default_writes_beside_the_checkpoint_and_never_over_a_file(checkpoint, tmp_path):
    """best.onnx lands next to best.pt (yolov5's place, where users' scripts look); verification leaves nothing
    else there; a second export refuses to replace the file unless --exist-ok says so."""
    weights = tmp_path / "weights" / "best.pt"
    weights.parent.mkdir()
    weights.write_bytes(checkpoint.read_bytes())
    out = export.run(weights=str(weights), include=["onnx"], imgsz=[IMGSZ], data=str(COCO8))
    assert out["save_dir"] == weights.parent and out["files"][0].path == weights.parent / "best.onnx"
    assert out["rows"][1]["map50_95"] is not None  # val ran, in a temporary folder
    assert sorted(p.name for p in weights.parent.iterdir()) == ["best.onnx", "best.pt"]

    (weights.parent / "best.onnx").write_bytes(b"the user's deployed file")
    with pytest.raises(UserInputError) as e:
        export.run(weights=str(weights), include=["onnx"], imgsz=[IMGSZ], verify=False)
    assert str(e.value) == (f"{weights.parent / 'best.onnx'}: already exists; pass --exist-ok to replace it, "
                            f"or --project/--name to write to a run folder instead")
    assert (weights.parent / "best.onnx").read_bytes() == b"the user's deployed file"
    export.run(weights=str(weights), include=["onnx"], imgsz=[IMGSZ], verify=False, exist_ok=True)
    assert load_backend(weights.parent / "best.onnx").imgsz == (IMGSZ, IMGSZ)  # a real export again


def test_tflite_refuses_when_only_its_metadata_sidecar_exists(checkpoint, tmp_path):
    weights = tmp_path / "best.pt"
    weights.write_bytes(checkpoint.read_bytes())
    (tmp_path / "best.json").write_text("{}")  # best.tflite's sidecar: replacing it would change another file
    with pytest.raises(UserInputError, match="best.json: already exists; pass --exist-ok"):
        export.run(weights=str(weights), include=["tflite"], imgsz=[IMGSZ], verify=False)


def test_project_or_name_choose_a_fresh_run_folder(checkpoint, tmp_path):
    first = export.run(weights=str(checkpoint), include=["onnx"], imgsz=[IMGSZ], project=str(tmp_path))
    second = export.run(weights=str(checkpoint), include=["onnx"], imgsz=[IMGSZ], project=str(tmp_path))
    assert (first["save_dir"], second["save_dir"]) == (tmp_path / "exp", tmp_path / "exp2")
    assert (second["save_dir"] / "tiny.onnx").is_file() and (second["save_dir"] / "summary.json").is_file()
    assert not (checkpoint.parent / "tiny.onnx").exists()


def _detect_rows(weights: Path, project: Path) -> np.ndarray:
    save_dir = detect.run(weights=[str(weights)], source=str(BUS), imgsz=[IMGSZ], conf_thres=0.25, save_txt=True,
                          save_conf=True, nosave=True, project=str(project), name=weights.name)
    labels = save_dir / "labels" / "bus.txt"
    rows = np.loadtxt(labels, ndmin=2) if labels.is_file() else np.zeros((0, 6))
    return rows[np.lexsort(rows[:, :5].T[::-1])]  # order by class, then box: score ties may reorder NMS output


@pytest.fixture(scope="module")
def pt_detect_rows(checkpoint, tmp_path_factory) -> np.ndarray:
    return _detect_rows(checkpoint, tmp_path_factory.mktemp("detect_pt"))


@pytest.mark.parametrize("label, tol", [("onnx", 1e-4), ("tflite", 1e-4), ("torchscript", 1e-4),
                                        ("tflite fp16", 2e-2), ("openvino", 1e-4)])
def test_detect_gives_the_pt_boxes(exported, pt_detect_rows, tmp_path, label, tol):
    """Boxes clipped to zero width or height lie outside the image; which of a cluster of them NMS keeps turns on
    1e-6 score differences between runtimes (seen on an AMX Xeon with TFLite), so only boxes with area compare."""
    visible = lambda rows: rows[(rows[:, 3] > 0) & (rows[:, 4] > 0)]  # noqa: E731
    out, ref = visible(_detect_rows(_files(exported)[label], tmp_path)), visible(pt_detect_rows)
    assert len(ref) > 3
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < tol  # class ids equal; boxes (normalised) and confidences within tol


@pytest.mark.parametrize("label", ["tflite int8", "onnx int8", "openvino int8"])
def test_detect_runs_int8_file(exported, tmp_path, label):
    rows = _detect_rows(_files(exported)[label], tmp_path)
    assert rows.shape[1] == 6 and np.all((rows[:, 1:5] >= 0) & (rows[:, 1:5] <= 1))


def _val_rows(weights: Path, project: Path) -> tuple[float, dict[str, np.ndarray]]:
    """val --task speed: square letterbox for the .pt too (the input a fixed-size export takes), conf 0.25."""
    result = val.run(data=str(COCO8), weights=str(weights), imgsz=IMGSZ, batch_size=4, workers=0, task="speed",
                     max_det=100000, save_txt=True, save_conf=True, plots=False, project=str(project),
                     name=weights.name)
    rows = {}
    for p in sorted((project / weights.name / "labels").glob("*.txt")):
        v = np.loadtxt(p, ndmin=2)
        v = v[v[:, 5] > 0.26]  # away from the 0.25 threshold, where a 1e-6 difference may flip a row
        rows[p.stem] = v
    return result.map50_95, rows


def test_val_accepts_each_file_with_the_pt_boxes(exported, checkpoint, tmp_path):
    ref_map, ref = _val_rows(checkpoint, tmp_path)
    assert len(ref) == 4 and sum(len(v) for v in ref.values()) > 4
    for label, path in _files(exported).items():
        out_map, out = _val_rows(path, tmp_path)
        if label.endswith("int8"):  # quantized: it must run and score, not match
            assert 0 <= out_map <= 1
            continue
        tol = 2e-2 if label in REDUCED_PRECISION else 1e-4
        assert out.keys() == ref.keys(), label
        for stem in ref:  # an untrained head makes near-duplicate boxes 1e-6 apart in score: NMS may keep either,
            a, b = out[stem], ref[stem]  # so compare what val scores: the detections' classes and confidences
            assert a.shape == b.shape, (label, stem)
            assert np.array_equal(np.sort(a[:, 0]), np.sort(b[:, 0])), (label, stem)
            assert np.abs(np.sort(a[:, 5]) - np.sort(b[:, 5])).max() < max(tol, 1e-3), (label, stem)
        assert out_map == pytest.approx(ref_map, abs=1e-3), label


def test_export_size_is_mentioned_only_when_another_imgsz_was_asked(exported, tmp_path, log_text):
    """Without --imgsz a file simply runs at its size; with another --imgsz, detect and val say which one wins."""
    onnx_file = str(_files(exported)["onnx"])
    speed = ["--weights", onnx_file, "--data", str(COCO8), "--task", "speed", "--workers", "0", "--batch-size", "4",
             "--project", str(tmp_path / "val")]
    detect.run(weights=[onnx_file], source=str(BUS), nosave=True, project=str(tmp_path / "detect"))
    val.main(speed)
    assert "instead of --imgsz" not in log_text.text and "only, using that" not in log_text.text
    assert f"at shape (1, 3, {IMGSZ}, {IMGSZ})" in log_text.text and f"shape (4, 3, {IMGSZ}, {IMGSZ})" in log_text.text
    detect.run(weights=[onnx_file], source=str(BUS), nosave=True, project=str(tmp_path / "detect"), imgsz=[320])
    val.main([*speed, "--imgsz", "320"])
    assert f"tiny.onnx was exported at [{IMGSZ}, {IMGSZ}]; using that size instead of --imgsz [320, 320]" \
        in log_text.text
    assert f"WARNING: --imgsz 320: tiny.onnx takes {IMGSZ} only, using that" in log_text.text


def test_bad_input_messages(checkpoint, tmp_path):
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("hello")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    cases = [
        (dict(weights=str(tmp_path / "missing.pt")), "missing.pt: file not found"),
        (dict(weights=str(not_a_checkpoint)), "not a PConv-YOLO checkpoint: a text file (starts 'hello')"),
        (dict(weights=str(checkpoint), include=["onnx", "coreml"]), "unknown format(s) coreml"),
        (dict(weights=str(checkpoint), include=["tflite"], int8=True), "--int8: needs --data"),
        (dict(weights=str(checkpoint), include=["onnx"], project=str(blocker)), "output folder is not writable"),
        (dict(weights=str(checkpoint), include=["onnx"], half=True, device="cpu"), "--half"),
        (dict(weights=str(checkpoint), include=["onnx"], opset=5), "--opset 5"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserInputError) as e:
            export.run(**kwargs)
        assert message in str(e.value), (kwargs, str(e.value))
        assert "\n" not in str(e.value)


def test_cli_prints_one_error_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "export.py"), "--weights", str(tmp_path / "nope.pt"),
                           "--include", "onnx"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: --weights {tmp_path / 'nope.pt'}: file not found"
    assert "Traceback" not in proc.stderr


def test_a_tflite_copied_alone_still_knows_its_classes_and_size(exported, tmp_path):
    alone = tmp_path / "device.tflite"
    alone.write_bytes(_files(exported)["tflite int8"].read_bytes())
    backend = load_backend(alone)
    assert (backend.imgsz, backend.stride, len(backend.names), backend.names[0]) == ((IMGSZ, IMGSZ), 32, 80, "person")
