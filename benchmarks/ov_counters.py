"""Where OpenVINO spends an inference: per-node counters (PERF_COUNT) of exported IRs, summed by node type and
precision, with the decode tail (the head's nodes after its branch convs, and what OpenVINO inserts around them)
apart from the network — ours beside the peers, each exported by its own exporter.

The files come from bench_runtimes (export once, then read its files.json); each IR is profiled in its own child
process (one runtime per process), --runs inferences after --warmup: network and decode sums are medians over
inferences, the per-type detail their means.

    python benchmarks/bench_runtimes.py --models yolov5n-lite2-fasterneck-af --peers yolov5nu --rounds 0 --out runs/ov
    python benchmarks/ov_counters.py --files runs/ov/files.json --cells "ov default" "ov int8" --precision bf16
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import command_line, machine, publish  # noqa: E402
from deploy.engines import OpenVINOEngine, openvino_xml_in  # noqa: E402

BRANCHES = ("cv2", "cv3", "box", "cls", "stem")  # head submodules that hold the per-level convs (ultralytics', ours)


def head_prefix(names: list[str]) -> str:
    """'/model.N/' of the last layer that appears in the node names: the detection head."""
    layers = [int(m.group(1)) for n in names for m in [re.search(r"model\.(\d+)[/.]", n)] if m]
    return f"model.{max(layers)}" if layers else ""


def is_decode(name: str, head: str) -> bool:
    """A node of the decode tail: in the head but outside its branch convs, or outside every layer (output reorders)."""
    if head and head in name:
        rest = name.split(head, 1)[1].lstrip("/.")
        return not any(rest.startswith(b + ".") or rest.startswith(b + "/") for b in BRANCHES)
    return not re.search(r"model\.\d+", name)


def profile(path: Path, cell: str, precision: str, runs: int, warmup: int, threads: int) -> dict:
    """Child process: per-inference counters of one IR, grouped (decode or network, type, precision)."""
    import numpy as np

    engine = OpenVINOEngine(openvino_xml_in(path), threads, precision=precision or None, latency=True, perf_count=True)
    request = engine.compiled.create_infer_request()
    x = np.random.rand(*engine.input_shape).astype(np.float32)
    for _ in range(warmup):
        request.infer({0: x})
    totals: dict[tuple[str, str, str], float] = collections.defaultdict(float)
    wall, parts = [], {"network": [], "decode": []}
    for _ in range(runs):
        t = time.perf_counter()
        request.infer({0: x})
        wall.append((time.perf_counter() - t) * 1e3)
        infos = [i for i in request.get_profiling_info() if i.status == i.Status.EXECUTED]
        head = head_prefix([i.node_name for i in infos])
        this_run = {"network": 0.0, "decode": 0.0}
        for i in infos:
            part = "decode" if is_decode(i.node_name, head) else "network"
            ms = i.real_time.total_seconds() * 1e3
            this_run[part] += ms
            totals[(part, i.node_type, i.exec_type.rsplit("_", 1)[-1])] += ms / runs
        for part, ms in this_run.items():
            parts[part].append(ms)
    return {"wall_ms": float(np.median(wall)), "groups": [[*k, v] for k, v in sorted(totals.items())],
            "network_ms": float(np.median(parts["network"])), "decode_ms": float(np.median(parts["decode"])),
            "compute": engine.compute}


def profiled_in_child(path: Path, cell: str, opt: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", cell, str(path), "--precision", opt.precision, "--runs",
           str(opt.runs), "--warmup", str(opt.warmup), "--threads", str(opt.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: dict[tuple[str, str], dict], header: str) -> str:
    """Markdown: per (model, cell) the median per-inference network and decode ms (a shared machine's stalls hit
    single inferences: medians hold where means drift), then the decode's nodes by type and precision (means)."""
    lines = [header, "", "| model | cell | computes in | median wall ms | counters: network ms (median) | decode ms (median) |",
             "|---|---|---|---|---|---|"]
    detail = ["", "| model | cell | decode node type | precision | ms |", "|---|---|---|---|---|"]
    for (model, cell), r in results.items():
        if "error" in r:
            lines.append(f"| {model} | {cell} | — | failed: {r['error']} | | |")
            continue
        lines.append(f"| {model} | {cell} | {r['compute']} | {r['wall_ms']:.2f} | {r['network_ms']:.2f} | "
                     f"{r['decode_ms']:.2f} |")
        by_type = collections.defaultdict(float)
        for where, kind, prec, ms in r["groups"]:
            if where == "decode":
                by_type[(kind, prec)] += ms
        detail += [f"| {model} | {cell} | {k} | {p} | {ms:.3f} |" for (k, p), ms in
                   sorted(by_type.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines + detail)


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", default=str(ROOT / "runs/benchmark/runtimes/files.json"),
                   help="bench_runtimes' files.json: {model: {cell: file}}")
    p.add_argument("--cells", nargs="+", default=["ov default", "ov int8"], choices=["ov f32", "ov default", "ov int8"])
    p.add_argument("--precision", default="", help="INFERENCE_PRECISION_HINT for the float parts (bf16, f32; "
                                                    "empty: OpenVINO's choice for this CPU)")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="", help="write the table here too")
    p.add_argument("--child", nargs=2, metavar=("CELL", "FILE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    opt = parse_opt(argv)
    if opt.child:
        print(json.dumps(profile(Path(opt.child[1]), opt.child[0], opt.precision, opt.runs, opt.warmup, opt.threads)))
        return
    t0 = time.perf_counter()
    files = json.loads(Path(opt.files).read_text())
    results = {(model, cell): profiled_in_child(Path(cells[cell]), cell, opt)
               for cell in opt.cells for model, cells in files.items() if cell in cells}
    header = (f"{machine()}, {opt.threads} threads, batch 1, OpenVINO PERF_COUNT, {opt.runs} inferences; float "
              f"precision hint: {opt.precision or 'default'}; wall {time.perf_counter() - t0:.0f} s\n"
              + command_line("ov_counters.py", sys.argv[1:]))
    publish(report(results, header), opt.out)


if __name__ == "__main__":
    main()
