"""benchmarks/common.py: children whose peak memory is their own, --imgsz by the one rule, ONNX files from the
library's exporter, the peer adapter, and the zoo sets the scripts default to. Plus: every script starts from
the command line the way its docstring says."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench_accuracy, bench_runtimes, bench_speed_designs, bench_zoo
from benchmarks.common import check_timing_args, export_onnx, onnx_max_diff, peer_backend, run_measured, zoo_model
from deploy.engines import OnnxEngine
from deploy.errors import UserInputError
from models import zoo
from utils.core.system import peak_rss_mb

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20
ALLOCATE = "import sys; x = bytearray({n} * 2**20); x[::4096] = b'1' * len(x[::4096]); print(sys.argv[1:])"


def test_a_child_reports_its_own_peak_not_its_parents():
    hold = bytearray(400 * MIB)
    hold[::4096] = b"1" * len(hold[::4096])  # touched: resident in this process
    busy = run_measured(["-c", ALLOCATE.format(n=300), "a", "b"])
    idle = run_measured(["-c", "pass"])
    assert busy.returncode == 0 and busy.output.strip() == "['a', 'b']", "argv passes as `python -c` gives it"
    assert busy.peak_mb >= 300, "the child's own allocation counts"
    assert idle.peak_mb < 200, "ru_maxrss would carry this process's 400+ MB over exec; VmHWM starts afresh"
    del hold


def test_a_script_runs_as_main_and_its_exit_status_and_peak_survive_failure(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import sys\nprint(__name__, sys.argv[1:], sys.path[0])\nraise SystemExit(3)\n")
    log = tmp_path / "job.log"
    child = run_measured([str(script), "x"], log=log)
    assert child.returncode == 3 and child.peak_mb > 0
    assert child.output.strip() == f"__main__ ['x'] {tmp_path}" and "__main__" in log.read_text()


def test_peak_of_another_live_process_and_of_one_gone():
    code = ALLOCATE.format(n=150) + "; sys.stdout.flush(); sys.stdin.readline()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # allocated
    assert peak_rss_mb(proc.pid) >= 150
    proc.communicate("\n")
    assert peak_rss_mb(proc.pid) == 0.0


def test_imgsz_is_rounded_up_by_the_one_rule_and_counts_are_checked():
    opt = bench_zoo.parse_opt(["--imgsz", "100"])
    assert check_timing_args(opt).imgsz == 128
    with pytest.raises(UserInputError, match="--threads 0: must be at least 1"):
        check_timing_args(bench_speed_designs.parse_opt(["--threads", "0"]))
    with pytest.raises(UserInputError, match="^imgsz 0: must be a positive"):
        check_timing_args(bench_zoo.parse_opt(["--imgsz", "0"]))


def test_zoo_model_exports_with_the_librarys_exporter_and_ort_agrees(tmp_path):
    import onnx

    model = zoo_model("yolov5n")
    path = export_onnx(model, 64, tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["output0"]
    assert not model.model[-1].export, "the timed model is left as it was; a copy was exported"
    assert onnx_max_diff(model, OnnxEngine(path, threads=1, spinning=False), 64) < 1e-3
    with pytest.raises(UserInputError, match="--designs no-such: no models/no-such.yaml"):
        zoo_model("no-such", flag="--designs")


def test_peer_backend_gives_our_layout_for_files_and_live_models(tmp_path):
    """ultralytics gives (B, 4 + nc, N) without objectness; its .tflite boxes are divided by the input size."""
    from utils.infer.backends import Backend

    class File(Backend):
        def __init__(self, kind: str):
            super().__init__(tmp_path / f"peer.{kind}", torch.device("cpu"))
            self.kind, self.names, self.imgsz = kind, ["a", "b"], (64, 32)

        def _forward(self, im):
            boxes = torch.tensor([[0.5, 0.25, 0.1, 0.2]]) * (1 if self.kind == "tflite" else 32)
            return torch.cat((boxes, torch.tensor([[0.9, 0.1]])), 1).t().unsqueeze(0).repeat(1, 1, 7)

    for kind, xywh in (("onnx", [16.0, 8.0, 3.2, 6.4]), ("tflite", [16.0, 16.0, 3.2, 12.8])):
        out = peer_backend(File(kind))(torch.zeros(1, 3, 64, 32))
        assert out.shape == (1, 7, 7)  # 4 box + objectness + 2 classes, 7 anchors
        assert out[0, 0].tolist() == pytest.approx(xywh + [1.0, 0.9, 0.1])

    class Live(torch.nn.Module):  # ultralytics' eval output: ((B, 4 + nc, N), extras); here N == 4 + nc
        stride, names = torch.tensor([8.0, 16.0, 32.0]), {0: "a", 1: "b"}

        def forward(self, x):
            return torch.arange(2 * 6 * 6, dtype=torch.float32).view(2, 6, 6), {}

    peer = peer_backend(Live())
    raw = torch.arange(72, dtype=torch.float32).view(2, 6, 6)
    y = peer(torch.zeros(2, 3, 32, 32))
    assert peer.names == ["a", "b"] and peer.stride == 32 and peer.dynamic
    assert torch.equal(y[..., :4], raw[:, :4].transpose(1, 2)) and torch.equal(y[..., 5:], raw[:, 4:].transpose(1, 2))
    assert (y[..., 4] == 1).all(), "objectness fixed at 1, as our anchor-free heads give it"


def test_scripts_default_to_the_zoo_sets():
    for subset in (zoo.SCALES, zoo.ANCHOR_FREE, zoo.DEPLOY):
        assert set(subset) <= set(zoo.NAMES) and len(set(subset)) == len(subset)
    assert {zoo.baseline_of(n) for n in zoo.SCALES} <= set(zoo.SCALES)
    assert not set(zoo.PEERS) & set(zoo.NAMES), "peers are ultralytics' models, never a YAML of ours"
    assert bench_zoo.parse_opt([]).models == list(zoo.SCALES)
    assert bench_accuracy.parse_opt([]).models == list(zoo.ANCHOR_FREE)
    assert bench_accuracy.parse_opt([]).peer == bench_speed_designs.parse_opt([]).peers[0] == zoo.PEERS[0]
    opt = bench_runtimes.parse_opt([])
    assert opt.models == list(zoo.DEPLOY) and opt.peers == list(zoo.PEERS) and opt.threads == 2


SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if p.stem not in ("__init__", "common"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_starts_from_the_command_line(script, tmp_path):
    """`python benchmarks/<script> --help` from another folder: each finds the repository on its own."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr[-2000:]


def test_bench_zoo_runs_as_a_module_at_its_smallest(tmp_path):
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_zoo", "--models", "yolov5n", "--imgsz", "60",
                          "--runs", "1", "--warmup", "0", "--threads", "1", "--project", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = (tmp_path / "exp/zoo.md").read_text()
    assert "GFLOPs@64" in report and "| yolov5n |" in report and "1 threads" in report
    assert "--imgsz 60 must be a multiple of max stride 32, updating to 64" in out.stdout + out.stderr
