"""FLOPS profiler: exact FLOP and memory-access counts, per-layer sums, the Table-1 suite, the CLI's files."""
import csv

import pytest
import torch
import torch.nn as nn

from flops import main, run
from deploy.errors import UserInputError
from models.fasternet import PConv, set_pconv_mode
from models.yolo import DetectionModel
from utils.weights.checkpoint import build_checkpoint, save_checkpoint
from utils.profile.profiler import (BACKBONE_STAGES, PCONV_N_DIVS, layer_of, operator_benchmark, prepare_model,
                            profile_models, record_ops)
from utils.core.torch_utils import model_flops

CPU = torch.device("cpu")
F32 = 4  # bytes per float32 element


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_flops_of_known_convs_are_exact():
    conv = nn.Conv2d(32, 64, 3, padding=1, groups=16, bias=False)
    x = torch.rand(1, 32, 20, 20)
    (rec,) = record_ops(conv, lambda: conv(x), CPU)
    assert rec.kind == "GConv 3x3 g16"
    assert rec.flops == 2 * 32 * 64 * 3 * 3 * 20 * 20 // 16

    model = prepare_model(DetectionModel("yolov5n.yaml"), CPU)  # row 0: Conv(3, 16, k=6, s=2, p=2), BN fused
    x = torch.rand(1, 3, 64, 64)
    model(x)
    stem = [r for r in record_ops(model.model, lambda: model(x), CPU) if layer_of(r.module) == 0]
    assert [r.kind for r in stem] == ["Conv 6x6 s2", "silu"]
    assert sum(r.flops for r in stem) == 2 * 3 * 16 * 6 * 6 * 32 * 32


def test_memory_access_counts_inputs_outputs_and_weights():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=True)
    x = torch.rand(1, 8, 10, 10)
    (rec,) = record_ops(conv, lambda: conv(x), CPU)
    assert rec.kind == "Conv 3x3 s2"
    assert rec.bytes == F32 * (8 * 10 * 10 + 16 * 5 * 5 + 16 * 8 * 3 * 3 + 16)


@pytest.mark.parametrize("path", ["split_cat", "slicing"])
def test_pconv_bytes_include_its_data_movement(path):
    """Both paths convolve c/4 channels; split/cat re-copies the whole map, slicing clones it and copies back."""
    c, hw, cp = 32, 8 * 8, 8
    pconv = set_pconv_mode(PConv(c, n_div=4).eval(), path)
    x = torch.rand(1, c, 8, 8)
    recs = record_ops(pconv, lambda: pconv(x), CPU)
    conv_bytes = F32 * (2 * cp * hw + cp * cp * 9)
    moved = {"split_cat": F32 * 2 * c * hw,  # cat reads both parts, writes the whole map
             "slicing": F32 * (2 * c * hw + 2 * cp * hw)}[path]  # clone reads+writes; copy_ reads+writes c/4
    assert sum(r.flops for r in recs) == 2 * cp * cp * 9 * hw
    assert sum(r.bytes for r in recs) == conv_bytes + moved
    assert all(r.bytes == 0 for r in recs if r.kind in ("split_with_sizes", "slice"))


def test_prepare_model_puts_every_pconv_on_the_asked_path_and_leaves_the_original():
    model = DetectionModel("yolov5n-faster.yaml")
    prepared = prepare_model(model, CPU, "slicing")
    assert not prepared.training and all(m.forward_mode == "slicing" for m in prepared.modules() if isinstance(m, PConv))
    assert all(m.forward_mode == "auto" for m in model.modules() if isinstance(m, PConv))
    with pytest.raises(ValueError, match="forward_mode must be one of"):
        prepare_model(model, CPU, "fastest")


def test_layer_flops_sum_to_model_total():
    models = {"n-faster": prepare_model(DetectionModel("yolov5n-faster.yaml"), CPU)}
    (profile,) = profile_models(models, imgsz=64, device=CPU, runs=1, warmup=1)
    total = model_flops(models["n-faster"], 64) * 1e9
    assert profile.flops == pytest.approx(total, abs=1)
    assert sum(r["GFLOPs"] for r in profile.layer_rows) * 1e9 == pytest.approx(total, rel=1e-9)
    assert sum(r["GFLOPs"] for r in profile.op_rows()) * 1e9 == pytest.approx(total, rel=1e-9)
    assert [r["layer"] for r in profile.layer_rows] == list(range(25))
    assert all(r["ms"] > 0 for r in profile.layer_rows)
    c3 = profile.layer_rows[2]
    assert c3["module"] == "C3Faster" and c3["GFLOPS"] == pytest.approx(c3["GFLOPs"] / c3["ms"] * 1e3)


def test_operator_benchmark_counts_the_table1_suite():
    rows = operator_benchmark(imgsz=64, device=CPU, runs=1, warmup=0)
    assert len(rows) == len(BACKBONE_STAGES) * (3 + 2 * len(PCONV_N_DIVS))
    first = {r["operator"]: r for r in rows if r["stage"] == "64@16x16"}
    hw = 16 * 16
    assert first["Conv 3x3"]["GFLOPs"] * 1e9 == pytest.approx(2 * 64 * 64 * 9 * hw)
    assert first["DWConv 3x3"]["GFLOPs"] * 1e9 == pytest.approx(2 * 64 * 9 * hw)
    assert first["PConv 1/4 slicing"]["GFLOPs"] * 1e9 == pytest.approx(2 * 16 * 16 * 9 * hw)
    assert all(r["ms"] > 0 and r["GFLOPS"] > 0 for r in rows)


def test_cli_writes_tables_and_plots(tmp_path):
    save_dir = run(cfg=["yolov5n.yaml"], imgsz=64, runs=2, warmup=1, backends=["pytorch", "onnx"], ops=True,
                   threads=1, timer="cpu", project=tmp_path, name="exp")
    assert save_dir == tmp_path / "exp"
    for name in ("results.md", "models.csv", "layers.csv", "operators.csv", "modules.csv", "ops_benchmark.csv",
                 "latency_vs_flops.png", "layer_flops.png", "ops_benchmark.png"):
        assert (save_dir / name).stat().st_size > 0, name
    with (save_dir / "models.csv").open() as f:
        models = list(csv.DictReader(f))
    assert [(r["model"], r["backend"]) for r in models] == [("yolov5n", "pytorch"), ("yolov5n", "onnx")]
    assert all(float(r["ms"]) > 0 and float(r["peak_MB"]) > 0 for r in models)
    text = (save_dir / "results.md").read_text()
    assert "## Whole models" in text and "## Operators" in text and "Wall time" in text

    weights = save_checkpoint(build_checkpoint(DetectionModel("yolov5n-faster.yaml")), tmp_path / "best.pt")
    again = run(weights=[str(weights)], imgsz=64, runs=1, warmup=0, backends=["pytorch"], no_layers=True,
                noplots=True, threads=1, project=tmp_path, name="exp")
    assert again == tmp_path / "exp2"  # never reuses a run folder
    with (again / "models.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["model"] == "best" and int(row["params"]) == 1_559_773


def test_cli_rejects_bad_flags(tmp_path):
    with pytest.raises(UserInputError, match="nope.yaml: model YAML file not found"):
        main(["--cfg", "nope.yaml", "--project", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # nothing written for a bad input
    with pytest.raises(UserInputError, match="^imgsz 0: must be a positive number of pixels"):
        main(["--imgsz", "0"])
    with pytest.raises(UserInputError, match="--weights missing.pt: file not found"):
        main(["--weights", "missing.pt"])
    with pytest.raises(UserInputError, match="--timer cpu: .* --threads 1"):
        main(["--timer", "cpu", "--threads", "2"])
