"""utils/infer/verify.py: an exported file's outputs against PyTorch's, the rows and the summary table."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from utils.infer.exporters import ExportedFile
from utils.infer.verify import (SHIPPED_IMAGES, Reference, check_parity, compare_outputs, file_row, format_table,
                                parity_batches, parity_images, pytorch_row)

ROOT = Path(__file__).resolve().parents[3]


class _Head(nn.Module):
    """A (B, N, 6) output from a (B, 3, H, W) input: the shape every exported detector returns."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)

    def forward(self, x):
        return self.conv(x).flatten(2).transpose(1, 2)


@pytest.fixture
def ref() -> Reference:
    torch.manual_seed(0)
    batches = [np.random.default_rng(i).random((2, 3, 8, 8), dtype=np.float32) for i in range(2)]
    return Reference(_Head().eval(), batches)


def _shifted(ref: Reference, delta: float):
    """An 'exported file' whose outputs are PyTorch's plus `delta` in one element of the last batch."""
    def run(x: np.ndarray) -> np.ndarray:
        out = ref(x).numpy().copy()
        if x is ref.batches[-1]:
            out[1, 5, 2] += delta
        return out
    return run


def test_compare_outputs_counts_small_references_against_the_floor():
    a, b = np.array([1.0, 2.0, 0.00002]), np.array([1.0, 2.5, 0.0])
    max_abs, max_rel = compare_outputs(a, b)
    assert max_abs == pytest.approx(0.5)
    assert max_rel == pytest.approx(0.5 / 2.5)  # 2e-5 vs 0 counts against the 1e-3 floor: 0.02, not inf


def test_parity_of_equal_outputs_is_zero_over_every_image(ref):
    parity = check_parity(lambda x: ref(x).numpy(), ref)
    assert (parity.max_abs, parity.max_rel, parity.images) == (0.0, 0.0, 4)


def test_parity_reports_the_largest_difference_of_any_batch(ref):
    expected = ref(ref.batches[-1])[1, 5, 2].item()
    parity = check_parity(_shifted(ref, 0.25), ref)
    assert parity.max_abs == pytest.approx(0.25, abs=1e-6)
    assert parity.max_rel == pytest.approx(0.25 / max(abs(expected), 1e-3), rel=1e-4)


def test_parity_reads_the_transposed_layout_and_refuses_other_shapes(ref):
    parity = check_parity(lambda x: ref(x).numpy().transpose(0, 2, 1), ref)  # (B, 6, N): the other layout
    assert parity.max_abs == 0.0
    with pytest.raises(RuntimeError, match=r"exported output shape \(2, 64, 5\) differs from PyTorch's \(2, 64, 6\)"):
        check_parity(lambda x: ref(x).numpy()[..., :5], ref)


def test_file_row_logs_and_reports_the_difference(ref, tmp_path, log_text):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x" * 2000)
    row = file_row(ExportedFile("onnx", path, "int8"), lambda x: torch.from_numpy(_shifted(ref, 0.5)(x)), ref)
    assert row["format"] == "onnx int8" and row["file"] == "m.onnx" and row["size_mb"] == pytest.approx(0.002)
    assert row["max_abs"] == pytest.approx(0.5, abs=1e-6) and row["latency_ms"] > 0 and row["map50_95"] is None
    assert "onnx int8: max abs diff 0.5, max rel diff" in log_text.text
    assert "vs PyTorch on 4 letterboxed image(s)" in log_text.text


def test_openvino_row_names_its_folder_and_counts_the_weights_file(ref, tmp_path):
    folder = tmp_path / "m_openvino_model"
    folder.mkdir()
    (folder / "m.xml").write_bytes(b"x" * 1000)
    (folder / "m.bin").write_bytes(b"x" * 3000)
    row = file_row(ExportedFile("openvino", folder / "m.xml"), lambda x: ref(x), ref)
    assert (row["file"], row["size_mb"], row["max_abs"]) == ("m_openvino_model/m.xml", pytest.approx(0.004), 0.0)


def test_tflite_row_leaves_out_its_metadata_sidecar(ref, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"x" * 1000)
    path.with_suffix(".json").write_text("{}" * 500)
    assert file_row(ExportedFile("tflite", path, "fp16"), lambda x: ref(x), ref)["size_mb"] == pytest.approx(0.001)


def test_pytorch_row_is_the_zero_difference_baseline(ref, tmp_path):
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"x" * 5000)
    row = pytorch_row(weights, ref)
    assert list(row) == ["format", "file", "size_mb", "max_abs", "max_rel", "latency_ms", "map50_95"]
    assert (row["format"], row["file"], row["size_mb"], row["max_abs"], row["max_rel"]) == (
        "pytorch", "best.pt", pytest.approx(0.005), 0.0, 0.0)


def test_parity_images_are_the_first_val_images_else_the_shipped_samples(tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "empty").mkdir()
    for i in range(10):
        (tmp_path / "val" / f"{i}.jpg").write_bytes(b"")
    assert len(parity_images({"val": str(tmp_path / "val")})) == 8
    assert parity_images({"val": str(tmp_path / "empty")}) == parity_images(None) == [str(f) for f in SHIPPED_IMAGES]
    assert all(Path(f).is_file() for f in parity_images(None))


def test_parity_batches_are_letterboxed_to_the_export_size_in_its_batch_size():
    batches = parity_batches(None, (64, 96), 3)  # 2 shipped images, topped up to one batch of 3
    assert len(batches) == 1 and batches[0].shape == (3, 3, 64, 96) and batches[0].dtype == np.float32


def test_format_table_shows_whole_file_names_and_a_dash_for_no_map():
    rows = [{"format": "pytorch", "file": "best.pt", "size_mb": 5.96, "max_abs": 0.0, "max_rel": 0.0,
             "latency_ms": 31.8, "map50_95": 0.03644},
            {"format": "openvino bf16", "file": "best_openvino_model/best.xml", "size_mb": 6.09, "max_abs": 29.0,
             "max_rel": 0.217, "latency_ms": 16.0, "map50_95": None}]
    assert format_table(rows).splitlines() == [
        "Format        File                           Size MB    max abs    max rel  mAP50-95   CPU ms",
        "pytorch       best.pt                           5.96          0          0   0.03644     31.8",
        "openvino bf16 best_openvino_model/best.xml      6.09         29      0.217         -     16.0"]
