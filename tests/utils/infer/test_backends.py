"""Every backend returns the same (B, N, 5+nc) predictions as the PyTorch model it was exported from."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from deploy.errors import UserInputError
from deploy.metadata import decode_metadata, encode_metadata
from models.yolo import DetectionModel, load_model_yaml
from utils.infer.backend_base import Backend, EngineInput
from utils.infer.backends import load_backend
from utils.weights.checkpoint import build_checkpoint, save_checkpoint

NAMES = ["person", "car"]


class TinyDetector(nn.Module):
    """Stride-8 net with DetectionModel's eval contract: (B, N, 5+nc), boxes in input pixels."""

    def __init__(self, nc: int = 2, channels_first: bool = False):
        super().__init__()
        self.channels_first = channels_first
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.SiLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.SiLU(),
                                  nn.Conv2d(8, 5 + nc, 3, 2, 1))

    def forward(self, x):
        p = self.body(x).sigmoid().flatten(2)  # (B, 5+nc, N)
        p = torch.cat([p[:, :4] * 64, p[:, 4:]], 1)
        return p if self.channels_first else p.transpose(1, 2)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return TinyDetector().eval()


def export_onnx(model: nn.Module, path, size=(32, 48), dynamic=False, metadata=None):
    x = torch.rand(1, 3, *size)
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "anchors"}} if dynamic else None
    torch.onnx.export(model, x, str(path), dynamo=False, opset_version=17, input_names=["images"],
                      output_names=["output0"], dynamic_axes=axes)
    proto = onnx.load(str(path))
    for k, v in (metadata or {}).items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(path))
    return path


def test_metadata_roundtrip_and_yolov5_names():
    meta = encode_metadata(NAMES, 32, (320, 256))
    assert all(isinstance(v, str) for v in meta.values())
    assert decode_metadata(meta, Path("m"), "x") == {"names": tuple(NAMES), "stride": 32, "imgsz": (320, 256)}
    assert decode_metadata({"names": "{0: 'a', 1: 'b'}", "stride": "16.0", "imgsz": 64}, Path("m"), "x") == \
        {"names": ("a", "b"), "stride": 16, "imgsz": (64, 64)}
    assert decode_metadata({"names": {"1": "b", "0": "a"}}, Path("m"), "x") == {"names": ("a", "b")}
    with pytest.raises(UserInputError, match="m: unreadable metadata in x"):
        decode_metadata({"stride": "wide"}, Path("m"), "x")


def test_onnx_fixed_shape_matches_torch(tiny, tmp_path):
    path = export_onnx(tiny, tmp_path / "tiny.onnx", metadata=encode_metadata(NAMES, 8, (32, 48)))
    backend = load_backend(path)
    assert (backend.kind, backend.names, backend.stride, backend.imgsz) == ("onnx", NAMES, 8, (32, 48))
    assert not backend.dynamic and backend.fixed_batch == 1
    assert backend.cpu_runtime  # ONNX Runtime computes on the cores torch would spin on
    x = torch.rand(2, 3, 32, 48)
    out = backend(x)  # batch of 2 through a batch-1 model: split and concatenated
    assert out.shape == (2, 24, 7) and out.dtype == torch.float32
    torch.testing.assert_close(out, tiny(x), atol=1e-5, rtol=1e-4)
    backend.warmup()


def test_frames_go_straight_into_an_exported_files_input(tiny, tmp_path):
    """A letterboxed frame becomes the file's own input through deploy's pixel lookup: the same values as the float
    path, so the same predictions; a file exported for larger batches keeps the float path, which pads."""
    frame = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    backend = load_backend(export_onnx(tiny, tmp_path / "tiny.onnx", metadata=encode_metadata(NAMES, 8, (32, 48))))
    x = backend.frame_input(frame)
    float_path = backend.frame_tensor(frame)
    assert isinstance(x, EngineInput) and x.shape == (1, 3, 32, 48) and x.array.dtype == np.float32
    assert torch.equal(torch.from_numpy(x.array), float_path)  # RGB planes of value / 255
    assert torch.equal(backend(x), backend(float_path)) and backend(x).shape == (1, 24, 7)
    backend.fixed_batch = 2
    assert isinstance(backend.frame_input(frame), torch.Tensor)


def test_onnx_dynamic_axes_take_any_size(tiny, tmp_path):
    path = export_onnx(tiny, tmp_path / "dyn.onnx", dynamic=True, metadata=encode_metadata(NAMES, 8, (64, 64)))
    backend = load_backend(path)
    assert backend.dynamic and backend.fixed_batch is None and backend.imgsz == (64, 64)
    x = torch.rand(3, 3, 40, 24).numpy()  # numpy input is accepted too
    torch.testing.assert_close(backend(x), tiny(torch.from_numpy(x)), atol=1e-5, rtol=1e-4)


def test_onnx_channels_first_output_is_transposed(tmp_path):
    torch.manual_seed(1)
    model = TinyDetector(channels_first=True).eval()
    backend = load_backend(export_onnx(model, tmp_path / "cf.onnx", size=(32, 32), metadata=encode_metadata(NAMES, 8, (32, 32))))
    x = torch.rand(1, 3, 32, 32)
    out = backend(x)
    assert out.shape == (1, 16, 7)
    torch.testing.assert_close(out, model(x).transpose(1, 2), atol=1e-5, rtol=1e-4)


def test_torchscript_metadata_and_outputs(tiny, tmp_path):
    path = tmp_path / "tiny.torchscript"
    traced = torch.jit.trace(tiny, torch.rand(1, 3, 32, 48))
    traced.save(str(path), _extra_files={"config.txt": json.dumps(encode_metadata(NAMES, 8, (32, 48)))})
    backend = load_backend(path)
    assert (backend.kind, backend.names, backend.stride, backend.imgsz, backend.dynamic) == \
        ("torchscript", NAMES, 8, (32, 48), False)
    x = torch.rand(1, 3, 32, 48)
    torch.testing.assert_close(backend(x), tiny(x))
    batched = tmp_path / "batch2.torchscript"
    traced.save(str(batched), _extra_files={"config.txt": json.dumps({**encode_metadata(NAMES, 8, (32, 48)),
                                                                      "batch": "2"})})
    backend = load_backend(batched)
    x = torch.rand(3, 3, 32, 48)  # chunks of 2: the second is padded with a blank image, then trimmed
    assert backend.fixed_batch == 2 and backend(x).shape == (3, 24, 7)
    torch.testing.assert_close(backend(x), tiny(x))


def test_pytorch_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = load_model_yaml("models/yolov5n.yaml")
    cfg["width_multiple"] = 0.125
    model = DetectionModel(cfg, nc=2)
    model.names = NAMES
    path = save_checkpoint(build_checkpoint(model), tmp_path / "a;b $(touch pwned) & c.pt")
    backend = load_backend(path)
    assert (backend.kind, backend.names, backend.stride, backend.dynamic) == ("pytorch", NAMES, 32, True)
    x = torch.rand(1, 3, 64, 96)
    out = backend(x)
    assert out.shape == (1, 3 * (8 * 12 + 4 * 6 + 2 * 3), 7)
    torch.testing.assert_close(out, model.eval()(x), atol=1e-4, rtol=1e-3)  # BN fused: equal up to rounding
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_half_on_cpu_falls_back_to_float(tiny, tmp_path, log_lines):
    backend = load_backend(export_onnx(tiny, tmp_path / "t.onnx"), "cpu", fp16=True)
    assert backend.fp16 is False and backend.names == []  # no metadata: names come from --data later
    assert any("--half needs a CUDA device" in m for m in log_lines())


def test_device_strings_as_the_cli_spells_them(tiny, tmp_path, monkeypatch):
    """export.py's self-check hands its --device string over as is: '0' must mean CUDA 0, as it does for val and
    detect, not reach torch.device (where '0' is an invalid string; seen on the lent GPU)."""
    path = export_onnx(tiny, tmp_path / "t.onnx")
    assert load_backend(path, "cpu").device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_backend(path, "").device == torch.device("cpu")
    with pytest.raises(UserInputError, match="--device 0: CUDA requested but not available"):
        load_backend(path, "0")


@pytest.mark.parametrize("name, content, message", [
    ("model.h5", None, r"model.h5: unsupported model format '\.h5'"),
    ("missing.onnx", None, "missing.onnx: file not found"),
    ("junk.onnx", b"\x00not onnx", "junk.onnx: not a readable ONNX model"),
    ("junk.torchscript", b"PK\x03\x04junk", "junk.torchscript: not a readable TorchScript file"),
    ("junk.pt", b"junk", "junk.pt"),
])
def test_bad_weights(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(UserInputError, match=message):
        load_backend(tmp_path / name)


def test_tflite_without_its_runtime_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "m.tflite").write_bytes(b"junk")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(UserInputError, match=r"m.tflite: .tflite files need ai-edge-litert \(pip install ai-edge-litert\)"):
        load_backend(tmp_path / "m.tflite")


def test_base_backend_needs_forward(tmp_path):
    with pytest.raises(NotImplementedError):
        Backend(tmp_path, torch.device("cpu"))(torch.zeros(1, 3, 8, 8))


def test_tflite_with_sidecar_metadata(tmp_path):
    import litert_torch

    torch.manual_seed(2)
    model = TinyDetector().eval()
    x = torch.rand(1, 3, 32, 32)
    path = tmp_path / "tiny.tflite"
    litert_torch.convert(model, (x,)).export(str(path))
    (tmp_path / "tiny.json").write_text(json.dumps({"names": NAMES, "stride": 8, "imgsz": [32, 32]}))
    backend = load_backend(path)
    assert (backend.kind, backend.names, backend.stride, backend.imgsz) == ("tflite", NAMES, 8, (32, 32))
    assert backend.fixed_batch == 1 and backend.engine.layout == "NCHW"
    torch.testing.assert_close(backend(x), model(x), atol=1e-4, rtol=1e-3)

    class ChannelsLast(nn.Module):  # a converter that wants NHWC input
        def forward(self, x):
            return model(x.permute(0, 3, 1, 2))

    path = tmp_path / "nhwc.tflite"
    litert_torch.convert(ChannelsLast().eval(), (x.permute(0, 2, 3, 1),)).export(str(path))
    (tmp_path / "nhwc.tflite.json").write_text(json.dumps({"names": NAMES, "stride": 8, "imgsz": [32, 32]}))
    backend = load_backend(path)
    assert backend.engine.layout == "NHWC" and backend.imgsz == (32, 32) and backend.names == NAMES
    torch.testing.assert_close(backend(x), model(x), atol=1e-4, rtol=1e-3)  # NCHW in, transposed inside
    frame = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    direct = backend.frame_input(frame)  # the frame looked up straight into NHWC
    assert direct.array.shape == (1, 32, 32, 3) and direct.shape == (1, 3, 32, 32)
    assert torch.equal(backend(direct), backend(backend.frame_tensor(frame)))


def test_nms_metadata_marks_end_to_end_models(tiny, tmp_path):
    meta = {**encode_metadata(NAMES, 8, (32, 48)), "nms": "true"}
    backend = load_backend(export_onnx(tiny, tmp_path / "e2e.onnx", metadata=meta))
    assert backend.end_to_end and not load_backend(export_onnx(tiny, tmp_path / "raw.onnx")).end_to_end
