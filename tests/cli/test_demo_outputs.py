"""The demo walkthrough's outputs, pinned: code that only moves or regroups modules must leave what
`python detect.py --save-txt --save-conf`, `python val.py` and `python export.py --include onnx` give on the
shipped demo model and data exactly as tests/data/demo_outputs.json records them (it names the commit it was
captured at). Only the CLIs' run() functions are used, so the capture runs unchanged on older code.

Regenerate the golden only when a change is meant to move these outputs, from the code that is the reference:
    git worktree add /tmp/base <commit> && cd /tmp/base
    PYTHONPATH=/tmp/base python <repo>/tests/cli/test_demo_outputs.py <repo>/tests/data/demo_outputs.json
    cd <repo> && git worktree remove /tmp/base
"""
from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import yaml

import detect
import export
import val

CODE_ROOT = Path(detect.__file__).resolve().parent  # the tree being captured: the repo, or a worktree of the reference
GOLDEN = Path(__file__).resolve().parents[1] / "data/demo_outputs.json"
ONNX_IMAGE = "data/images/bus.jpg"  # resized to the file's input size, its raw output is summarised on it
TOP_K = 5
PARITY_LINE = re.compile(r"^onnx: max abs diff (\S+), max rel diff (\S+) (vs PyTorch on \d+ letterboxed image\(s\))$")


def detect_labels(tmp: Path) -> dict[str, list[str]]:
    """{label file stem: its 'cls cx cy w h conf' lines at 4 decimals} for the demo samples (images and video)."""
    save_dir = detect.run(save_txt=True, save_conf=True, nosave=True, project=str(tmp / "detect"), name="exp")
    return {p.stem: [label_line(line) for line in p.read_text().splitlines()]
            for p in sorted((save_dir / "labels").glob("*.txt"))}


def label_line(line: str) -> str:
    cls, *values = line.split()
    return " ".join([cls, *(f"{float(v):.4f}" for v in values)])


def val_metrics(tmp: Path) -> dict[str, Any]:
    """`python val.py`'s P, R, mAP50, mAP50-95 and per-class mAP50-95 (plots and loader workers do not move them)."""
    opts = {**vars(val.parse_opt([])), "project": str(tmp / "val"), "workers": 0, "plots": False}
    r = val.run(**opts)
    names = yaml.safe_load(Path(opts["data"]).read_text())["names"]
    names = list(names.values()) if isinstance(names, dict) else names
    return {"all": {"P": round(r.precision, 4), "R": round(r.recall, 4), "mAP50": round(r.map50, 4),
                    "mAP50-95": round(r.map50_95, 4)},
            "mAP50-95 per class": {name: round(float(m), 4) for name, m in zip(names, r.maps)}}


@contextmanager
def logged_lines(logger: logging.Logger) -> Iterator[list[str]]:
    """The messages `logger` emits inside the block, line by line."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.extend(record.getMessage().splitlines())
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def onnx_output_summary(path: Path) -> dict[str, Any]:
    """Shape, per-column mean/std/max and the TOP_K rows by obj*cls score of the file's raw output on ONNX_IMAGE."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    h, w = inp.shape[2:]
    im = cv2.resize(cv2.imread(str(CODE_ROOT / ONNX_IMAGE)), (w, h), interpolation=cv2.INTER_LINEAR)
    x = np.ascontiguousarray(im[None, :, :, ::-1].transpose(0, 3, 1, 2), dtype=np.float32) / 255
    out = session.run(None, {inp.name: x})[0]
    rows = out[0].astype(np.float64)
    top = rows[np.argsort(-(rows[:, 4] * rows[:, 5:].max(1)), kind="stable")[:TOP_K]]
    return {"shape": list(out.shape), "mean": rows.mean(0).round(4).tolist(), "std": rows.std(0).round(4).tolist(),
            "max": rows.max(0).round(4).tolist(), "top": top.round(4).tolist()}


def export_onnx(tmp: Path) -> dict[str, Any]:
    """`python export.py --include onnx`: its printed parity line and the exported file's output summary."""
    with logged_lines(export.LOGGER) as lines:
        result = export.run(include=["onnx"], project=str(tmp / "export"), name="exp")
    parity = [line for line in lines if PARITY_LINE.match(line)]
    assert len(parity) == 1, f"export printed no single ONNX parity line: {lines}"
    (onnx_file,) = [f.path for f in result["files"]]
    return {"parity line": parity[0], "output": onnx_output_summary(onnx_file)}


def capture(tmp: Path) -> dict[str, Any]:
    return {"detect": detect_labels(tmp), "val": val_metrics(tmp), "export": export_onnx(tmp)}


def close(a: float, b: float, rel: float = 0.0) -> bool:
    """Equal at 4 decimals, give or take one unit: a value on a rounding edge may round either way."""
    return math.isclose(a, b, rel_tol=rel, abs_tol=1.5e-4)


def assert_close(got: Any, want: Any, where: str, rel: float = 0.0) -> None:
    """Nested lists/dicts equal in shape and keys, numbers per close()."""
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            assert_close(got[key], want[key], f"{where}/{key}", rel)
    elif isinstance(want, list):
        assert len(got) == len(want), f"{where}: {len(got)} items != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, f"{where}[{i}]", rel)
    else:
        assert close(got, want, rel), f"{where}: {got} != {want}"


def numbers(line: str) -> list[float]:
    return [float(v) for v in line.split()]


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text())


@pytest.mark.slow
def test_detect_labels_are_the_golden_ones(tmp_path, golden):
    got, want = detect_labels(tmp_path), golden["detect"]
    assert sorted(got) == sorted(want), "label files with detections differ"
    for stem, lines in want.items():
        assert_close([numbers(line) for line in got[stem]], [numbers(line) for line in lines], f"labels/{stem}.txt")


@pytest.mark.slow
def test_val_metrics_are_the_golden_ones(tmp_path, golden):
    assert_close(val_metrics(tmp_path), golden["val"], "val")


@pytest.mark.slow
def test_onnx_export_is_the_golden_one(tmp_path, golden):
    got, want = export_onnx(tmp_path), golden["export"]
    assert got["output"]["shape"] == want["output"]["shape"]
    assert_close(got["output"], want["output"], "onnx output", rel=1e-4)
    got_parity, want_parity = PARITY_LINE.match(got["parity line"]), PARITY_LINE.match(want["parity line"])
    assert got_parity[3] == want_parity[3], f"{got['parity line']!r} != {want['parity line']!r}"
    for g, w in zip(got_parity.groups()[:2], want_parity.groups()[:2]):  # float noise between two runtimes: its
        # size, not its digits (pixel boxes up to 320 differ by ~1e-3 from one thread schedule to another)
        assert abs(float(g) - float(w)) <= max(1e-4, 0.5 * float(w)), f"{got['parity line']!r} != {want['parity line']!r}"


def write_golden(path: Path) -> None:
    """Capture the outputs of the code on sys.path (see the module docstring) into `path`."""
    commit = subprocess.run(["git", "-C", str(CODE_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="demo-outputs-") as tmp:
        outputs = capture(Path(tmp))
    path.write_text(dump_json({"captured at": commit, **outputs}))


def dump_json(obj: Any) -> str:
    """Indented JSON with each list of numbers on one line, so a diff of the golden shows which value moved."""
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[[^\[\]{}\"]*\]", lambda m: "[" + " ".join(m[0][1:-1].split()) + "]", text) + "\n"


if __name__ == "__main__":
    write_golden(Path(sys.argv[1]))
