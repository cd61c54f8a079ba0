"""bench_scaling end to end at toy size: one row per (model, runtime, size, batch) with real numbers, and the pivot
row comparing ours with the peer. (The throughput it measures is reported, never asserted.)"""
import json

from benchmarks import bench_scaling as bench


def test_rows_for_every_model_size_and_batch(tmp_path):
    out = tmp_path / "scaling.md"
    rows = bench.main(["--sizes", "64", "--batches", "1", "2", "--cells", "ort fp32", "--runs", "2", "--warmup", "1",
                       "--rounds", "1", "--threads", "1", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    models = ("yolov5nu", "yolov5n-lite2-fasterneck-af")
    assert sorted((r["model"], r["batch"]) for r in rows) == sorted((m, b) for m in models for b in (1, 2))
    assert not [r["error"] for r in rows if "error" in r]
    table = out.read_text()
    for model in models:
        lines = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()
                 if line.startswith(f"| {model} | ort fp32 | 64 |")]
        assert sorted(int(c[3]) for c in lines) == [1, 2]
        for cells in lines:
            ms, img_s, growth, peak = (float(c) for c in cells[5:])
            assert ms > 0 and img_s > 0 and growth > 0 and peak > 0
    for r in rows:
        assert r["img_s"] == r["batch"] * 1e3 / r["ms"]  # images per second from the time per batch
    (pivot,) = [line for line in table.splitlines() if line.startswith("| ort fp32 | 64 |")]
    assert pivot.count("x)") == 2  # ours / peer at both batches
    assert json.loads(out.with_suffix(".json").read_text()) == json.loads(json.dumps(rows))
    assert "--cells 'ort fp32'" in table  # the command line as a shell reads it
