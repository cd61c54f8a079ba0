"""The GPU script's dry run: every (model, runtime, batch) timed and tabled; without CUDA it runs on the CPU."""
import re

from benchmarks import bench_gpu


def test_dry_run_tables_every_model_runtime_and_batch(tmp_path, capsys):
    out = tmp_path / "gpu.md"
    bench_gpu.main(["--device", "cpu", "--imgsz", "64", "--batches", "1", "2", "--runs", "1", "--warmup", "0",
                    "--models", "yolov5n", "yolov5n-lite2-fasterneck-af", "--peers", "--out", str(out)])
    rows = [line.split(" | ") for line in out.read_text().splitlines() if re.match(r"\| yolov5n", line)]
    assert len(rows) == 2 * 2 * 2  # models x runtimes x batches
    assert {(r[0].lstrip("| "), r[1], r[2]) for r in rows} == {
        (m, rt, b) for m in ("yolov5n", "yolov5n-lite2-fasterneck-af") for rt in ("PyTorch fp32", "ORT CPU fp32")
        for b in ("1", "2")}
    assert all(float(r[3]) > 0 for r in rows) and all(r[4] == "1.00x" for r in rows if r[0] == "| yolov5n")
    assert "Device: no GPU" in out.read_text() and "Command: python benchmarks/bench_gpu.py" in out.read_text()
