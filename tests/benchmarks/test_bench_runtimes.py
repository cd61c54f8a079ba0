"""bench_runtimes' bookkeeping: the table's ratios and best cells, and the timing child opening each runtime's
file with nothing but numpy and that runtime. (The latencies it measures are reported, never asserted.)"""
import json
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks import bench_runtimes as bench
from models.yolo import DetectionModel
from utils.infer.exporters import export_metadata, export_onnx, export_openvino, prepare_for_export

ROOT = Path(__file__).resolve().parents[2]


def test_table_gives_ratios_to_the_peer_per_cell_and_best_against_best():
    rows = [{"model": m, "cell": c, "median_ms": ms, "peak_rss_mb": 100.0, "wall_s": 1.0, "compute": "fp32"}
            for m, c, ms in [("peer", "ort fp32", 40.0), ("peer", "tflite int8", 20.0),
                             ("ours", "ort fp32", 20.0), ("ours", "tflite int8", 30.0)]]
    rows.append({"model": "ours", "cell": "ov int8", "error": "RuntimeError: no"})
    table = bench.report(rows, ["peer", "ours"], "peer", "header")
    ours = next(line for line in table.splitlines() if line.startswith("| ours | "))
    cells = [c.strip() for c in ours.split("|")[1:-1]]
    assert cells[1] == "20.0 (0.50x)" and cells[6] == "—" and cells[7] == "30.0 (1.50x)"
    assert cells[-2:] == ["ort fp32 20.0", "1.00x"]  # its best cell against the peer's best cell (tflite int8 20)
    assert "| ours | ov int8 | — | failed: RuntimeError: no |" in table


def test_timing_child_runs_onnx_and_openvino_without_torch(tmp_path):
    model = prepare_for_export(DetectionModel("yolov5n-pconv-lite2-af.yaml", nc=2))
    im = torch.zeros(1, 3, 64, 64)
    meta = export_metadata(model, (64, 64), 1, "fp32", nms=False)
    onnx_file = export_onnx(model, im, tmp_path / "m.onnx", meta)
    xml = export_openvino(model, im, {"fp32": tmp_path / "m_openvino_model" / "m.xml"}, meta)["fp32"]
    block_torch = "import runpy, sys; sys.modules['torch'] = None; runpy.run_path({!r}, run_name='__main__')"
    script = ROOT / "benchmarks/bench_runtimes.py"
    for cell, path, compute in (("ort fp32", onnx_file, "fp32"), ("ov f32", xml.parent, "f32")):
        out = subprocess.run([sys.executable, "-c", block_torch.format(str(script)), "--child", cell,
                              str(path), "--runs", "2", "--warmup", "1", "--threads", "1"],
                             capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-2000:]
        row = json.loads(out.stdout.strip().splitlines()[-1])
        assert row["median_ms"] > 0 and row["peak_rss_mb"] > 0 and row["compute"] == compute
