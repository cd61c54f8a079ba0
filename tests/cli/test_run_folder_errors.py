"""Every door says in one line that it cannot create its run folder (an unwritable place, a path under a regular
file) and exits 2: train.py, val.py, detect.py, export.py and deploy.run share one rule (deploy.outputs)."""
import subprocess
import sys
from pathlib import Path

import pytest

from utils.core.assets import DEMO_WEIGHTS

ROOT = Path(__file__).resolve().parents[2]
DOORS = {
    "train": ["train.py", "--data", "data/coco8.yaml", "--cfg", "models/yolov5n.yaml", "--epochs", "1", "--imgsz", "64",
              "--workers", "0", "--noplots"],
    "val": ["val.py", "--weights", str(DEMO_WEIGHTS), "--data", "data/coco128-person.yaml", "--imgsz", "64"],
    "detect": ["detect.py", "--weights", str(DEMO_WEIGHTS), "--source", "data/images/bus.jpg", "--imgsz", "64"],
}


@pytest.mark.parametrize("door", sorted(DOORS))
@pytest.mark.parametrize("where", ["proc", "under-a-file"])
def test_an_unusable_project_is_a_one_line_error(door, where, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("a regular file")
    project = "/proc/nope" if where == "proc" else str(blocker / "runs")
    proc = subprocess.run([sys.executable, *DOORS[door], "--project", project], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert err[-1].startswith(f"error: --project {project}") and "cannot create the run folder" in err[-1]
    assert "Traceback" not in proc.stderr
