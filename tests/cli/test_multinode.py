"""Two "nodes" on one machine: two torchrun agents meeting through torchrun's c10d rendezvous on loopback (gloo),
one process each — the commands docs/train.md gives for several machines."""
import socket
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import torch

import train
from tests.cli.test_train import CFG, COCO8, ROOT, results_epochs, subprocess_env
from utils.weights.checkpoint import load_checkpoint

# every rank keeps its final DDP weights; GROUP_RANK 1 (the second node) can be told to die at an epoch's start
NODE = """
import os, signal, torch, train
import utils.train.setup as run_setup
made = []
class Recorded(run_setup.DDP):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        made.append(self)
run_setup.DDP = Recorded
die_at = int(os.environ.get("DIE_AT_EPOCH", -1))
set_epoch = train.set_loader_epoch
def set_loader_epoch(loader, epoch):
    if epoch == die_at and os.environ["GROUP_RANK"] == "1":  # the whole node goes: its agent, then this worker
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    set_epoch(loader, epoch)
train.set_loader_epoch = set_loader_epoch
try:
    train.run_cli(train.main)
finally:
    if made:
        torch.save(dict(made[0].module.named_parameters()), f"params_rank{os.environ['RANK']}.pt")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(tmp_path: Path, *args: str, die_at: int = -1) -> dict[str, subprocess.CompletedProcess]:
    """Start both nodes' torchrun agents at once, each in its own folder with its own copy of coco8 (machines
    without shared storage), and wait for both. `--data coco8.yaml` then means each node's own copy."""
    port = free_port()
    procs = {}
    for node in ("node0", "node1"):
        folder = tmp_path / node
        if not folder.exists():
            shutil.copytree(ROOT / "data/coco8", folder / "coco8")
            shutil.copy(COCO8, folder / "coco8.yaml")
            (folder / "node.py").write_text(NODE)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "pconv-test",
               "node.py", *args]
        env = {**subprocess_env(), "DIE_AT_EPOCH": str(die_at)}
        procs[node] = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, start_new_session=True)
    done = {}
    for node, p in procs.items():
        out, err = p.communicate(timeout=300)
        done[node] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return done


def rank_params(tmp_path: Path) -> list[dict]:
    """Each rank's final DDP parameters, by global rank (torchrun's rendezvous decides which node is which)."""
    files = sorted(tmp_path.glob("node*/params_rank*.pt"), key=lambda f: f.name)
    assert [f.name for f in files] == ["params_rank0.pt", "params_rank1.pt"]
    return [torch.load(f, weights_only=True) for f in files]


def assert_same_weights(tmp_path: Path) -> None:
    first, second = rank_params(tmp_path)
    assert first.keys() == second.keys() and first
    for name, value in first.items():
        assert torch.equal(value, second[name]), name


def flags(project: Path) -> list[str]:
    return ["--data", "coco8.yaml", "--cfg", str(ROOT / CFG), "--imgsz", "64", "--batch-size", "4",
            "--workers", "0", "--noplots", "--epochs", "2", "--device", "cpu", "--project", str(project)]


def test_two_nodes_train_to_one_run(tmp_path):
    """Both nodes finish; rank 0 alone made one run folder with one results.csv; every rank ends on the same
    weights."""
    procs = two_nodes(tmp_path, *flags(tmp_path / "runs"))
    for p in procs.values():
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["exp"]
    assert results_epochs(tmp_path / "runs/exp") == [0, 1]
    assert sum(p.stdout.count("Starting training for 2 epochs") for p in procs.values()) == 1
    assert_same_weights(tmp_path)


def test_lost_node_stops_the_job_and_resume_finishes_it(tmp_path):
    """The second node dies at epoch 1's start: the surviving node stops with a message naming the lost peer
    instead of hanging; --resume of the same last.pt on both nodes finishes the run on equal weights."""
    procs = two_nodes(tmp_path, *flags(tmp_path / "runs"), die_at=1)
    lost = [p for p in procs.values() if p.returncode == -signal.SIGKILL]
    survivor = [p for p in procs.values() if p.returncode != -signal.SIGKILL]
    assert len(lost) == len(survivor) == 1 and survivor[0].returncode != 0
    last = tmp_path / "runs/exp/weights/last.pt"
    error = [line for line in survivor[0].stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and error[0].startswith("error: rank 0: lost the other ranks (") and "127.0.0.1" in error[0]
    assert error[0].endswith(f"start the job again on every node with --resume {last}")
    assert "[rank0]: Traceback" not in survivor[0].stderr
    assert load_checkpoint(last)["epoch"] == 0
    # the run's options come back from last.pt, but a --data given again is this node's own copy
    assert train.resume_options(train.parse_opt(["--resume", str(last)]))[0].data == "coco8.yaml"
    assert train.resume_options(train.parse_opt(["--resume", str(last), "--data", "mine.yaml"]))[0].data == "mine.yaml"
    for f in tmp_path.glob("node*/params_rank*.pt"):
        f.unlink()

    procs = two_nodes(tmp_path, "--resume", str(last), "--data", "coco8.yaml")
    for p in procs.values():
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert results_epochs(tmp_path / "runs/exp") == [0, 1]
    assert load_checkpoint(last)["epoch"] == -1
    assert_same_weights(tmp_path)
