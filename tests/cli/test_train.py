"""train.py end to end on the shipped coco8: it learns, survives SIGKILL + --resume, runs under torchrun,
and explains bad input in one line."""
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import train
import utils.train.hyp as hyp_module
import utils.train.optim as optim
import val
from deploy.errors import UserInputError
from models.yolo import DetectionModel
from utils.core.cli import run_cli
from utils.core.log import LOGGER
from utils.weights.checkpoint import build_checkpoint, load_checkpoint, save_checkpoint
from utils.weights.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[2]
COCO8 = ROOT / "data/coco8.yaml"
CFG = "models/yolov5n-faster.yaml"
TINY = dict(data=str(COCO8), cfg=CFG, imgsz=64, batch_size=4, workers=0, noplots=True)


def subprocess_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def results_epochs(run_dir: Path) -> list[int]:
    lines = (run_dir / "results.csv").read_text().splitlines()
    assert [c.strip() for c in lines[0].split(",")] == list(train.RESULTS_COLUMNS)
    return [int(float(line.split(",")[0])) for line in lines[1:]]


def results_rows(run_dir: Path) -> list[list[float]]:
    lines = (run_dir / "results.csv").read_text().splitlines()[1:]
    return [[float(v) for v in line.split(",")] for line in lines]


def coco8_train_as_val(tmp_path: Path) -> Path:
    """A data YAML whose val split is coco8's train images: the overfit test scores what it trained on."""
    data = yaml.safe_load(COCO8.read_text())
    data.update(path=str(ROOT / "data/coco8"), val="images/train")
    path = tmp_path / "coco8_overfit.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def log_text():
    """Everything LOGGER says during the test, joined by newlines (call the fixture value to read it)."""
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    LOGGER.addHandler(handler)
    yield lambda: "\n".join(lines)
    LOGGER.removeHandler(handler)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> train.TrainSummary:
    """Two epochs on coco8 at 64 px."""
    return train.run(**TINY, epochs=2, project=str(tmp_path_factory.mktemp("runs")))


def test_finished_run_leaves_yolov5_layout(finished_run):
    run_dir = finished_run.save_dir
    assert run_dir.name == "exp" and finished_run.epochs_run == 2
    assert results_epochs(run_dir) == [0, 1]
    assert (run_dir / "hyp.yaml").is_file() and yaml.safe_load((run_dir / "opt.yaml").read_text())["epochs"] == 2
    for f in (finished_run.last, finished_run.best):
        ckpt = torch.load(f, weights_only=True)
        assert ckpt["epoch"] == -1 and ckpt["optimizer"] is None  # finished: stripped, not resumable
        assert ckpt["names"][0] == "person" and ckpt["nc"] == 80
    model = load_model(finished_run.best)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 85)


def test_weights_transfer_reports_matching_tensors(finished_run, tmp_path, log_text):
    summary = train.run(**{**TINY, "batch_size": 32, "cfg": ""}, weights=str(finished_run.best), single_cls=True,
                        epochs=1, noval=True, project=str(tmp_path))
    out = log_text()
    assert "--batch-size 32 is larger than the 4 training images" in out and "training with batch 4" in out
    # nc 80 → 1 changes only the 3 Detect output convs (weight + bias each)
    n_total = len(load_model(summary.last).state_dict())
    assert f"Transferred {n_total - 6}/{n_total} items from {finished_run.best}" in out
    assert load_checkpoint(summary.last)["names"] == ["item"]


def test_resume_of_finished_run_is_a_clear_message(finished_run):
    with pytest.raises(UserInputError, match="already finished all its epochs, nothing to resume"):
        train.run(resume=str(finished_run.last))


@pytest.mark.slow
@pytest.mark.parametrize("cfg, hyp", [(CFG, "data/hyps/hyp.scratch-low.yaml"),
                                      ("models/yolov5n-pconv-lite2-shared-af.yaml", "data/hyps/hyp.small-data-af.yaml")])
def test_sigkill_mid_epoch_then_resume_reaches_the_same_final_epoch(tmp_path, cfg, hyp):
    epochs = 3
    cmd = [sys.executable, str(ROOT / "train.py"), "--data", str(COCO8), "--cfg", cfg, "--hyp", str(ROOT / hyp),
           "--imgsz", "64", "--batch-size", "4", "--workers", "0", "--noplots", "--epochs", str(epochs),
           "--project", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = tmp_path / "exp" / "weights" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert last.exists(), "training wrote no last.pt"
    proc.send_signal(signal.SIGKILL)  # during the next epoch (or the best.pt save right after last.pt)
    assert proc.wait() == -signal.SIGKILL
    interrupted = load_checkpoint(last)  # the kill never leaves a half-written last.pt
    assert 0 <= interrupted["epoch"] < epochs - 1 and interrupted["optimizer"] is not None

    summary = train.run(resume=str(last))
    assert summary.save_dir == tmp_path / "exp"  # continues in the same run folder
    assert summary.epochs_run == epochs - 1 - interrupted["epoch"]
    assert results_epochs(summary.save_dir) == list(range(epochs))
    final = load_checkpoint(last)
    assert final["epoch"] == -1 and final["opt"]["epochs"] == epochs
    assert load_model(last)(torch.zeros(1, 3, 64, 64)).shape[0] == 1
    assert not list((tmp_path / "exp" / "weights").glob(".*.tmp"))


# train.py that SIGKILLs itself right after its first last.pt (the kill lands at the same point every time)
KILLED_AFTER_FIRST_CHECKPOINT = """
import os, signal, numpy as np, train
save = train.save_checkpoint
train.save_checkpoint = lambda ckpt, path: save(ckpt, path) and os.kill(os.getpid(), signal.SIGKILL)
{setup}
train.run_cli(train.main)
"""
# per-class mAPs stay 0 for a while from scratch: validation reports uneven ones, so they weigh the
# --image-weights draw (and must survive the kill)
UNEVEN_MAPS = """
from dataclasses import replace
score = train.validate.run
train.validate.run = lambda *a, **k: (lambda r: replace(r, maps=np.linspace(0, 0.9, len(r.maps))))(score(*a, **k))
"""


def coco8_names() -> list[str]:
    return [n for _, n in sorted(yaml.safe_load(COCO8.read_text())["names"].items())]


def saved_teacher(path: Path, cfg: str | dict, nc: int = 80, names: list[str] | None = None) -> str:
    """A checkpoint of ours to distil from (random weights: the mechanics, not the accuracy, are under test); it
    knows coco8's classes unless `names` says otherwise."""
    torch.manual_seed(3)
    model = DetectionModel(cfg, nc=nc)
    model.names = names or (coco8_names() if nc == 80 else model.names)
    save_checkpoint(build_checkpoint(model), path)
    return str(path)


@pytest.mark.parametrize("options, setup", [
    (dict(workers=0, multi_scale=True, close_mosaic=1), ""),  # loading in the main process; last epoch rebuilds
    (dict(workers=2, image_weights=True, seed=1), UNEVEN_MAPS),  # persistent workers; a draw weighted by validation
    (dict(workers=0, teacher="models/yolov5n.yaml"), ""),  # distilled: --resume brings the teacher back
], ids=["workers0-multi-scale-close-mosaic", "workers2-image-weights", "teacher"])
def test_sigkill_then_resume_replays_the_uninterrupted_run(tmp_path, monkeypatch, options, setup):
    """Augmentation, sampling, --multi-scale sizes, gradient accumulation, the --image-weights draw and
    distillation continue as if never interrupted: results.csv and the final weights match a run that was not
    killed."""
    if "teacher" in options:
        options = {**options, "teacher": saved_teacher(tmp_path / "teacher.pt", options["teacher"])}
    hyp = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
    hyp.update(warmup_epochs=0, nbs=4, mixup=0.5)  # 2 batches per optimizer step (spans a resume), mosaic + mixup
    if "teacher" in options:
        hyp.update(kd_feat=1.0)  # the imitation adapters train too: last.pt must carry them
    hyp_file = tmp_path / "hyp.yaml"
    hyp_file.write_text(yaml.safe_dump(hyp))
    opts = {**TINY, "batch_size": 2, "hyp": str(hyp_file), "epochs": 3, **options}
    flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in opts.items()]
    env = {**subprocess_env(), "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same float sums as in here
    proc = subprocess.run([sys.executable, "-c", KILLED_AFTER_FIRST_CHECKPOINT.format(setup=setup), *flags,
                           "--project", str(tmp_path / "killed")], cwd=tmp_path, env=env, capture_output=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    last = tmp_path / "killed" / "exp" / "weights" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 0
    assert bool(load_checkpoint(last).get("distill_adapters")) is ("teacher" in options)

    monkeypatch.setattr(train.validate, "run", train.validate.run)  # undone after the test
    exec(setup, {"train": train, "np": np})
    resumed = train.run(resume=str(last))
    whole = train.run(**opts, project=str(tmp_path / "whole"))
    assert resumed.epochs_run == 2 and whole.epochs_run == 3
    rows, expected = results_rows(resumed.save_dir), results_rows(whole.save_dir)
    assert [r[0] for r in rows] == [0, 1, 2] and rows[1][1:4] != rows[0][1:4]
    for row, want in zip(rows, expected):
        assert row == pytest.approx(want, rel=1e-4, abs=1e-7)
    a, b = load_checkpoint(resumed.last), load_checkpoint(whole.last)
    assert (a["best_fitness"], a["best_epoch"], a["updates"]) == (b["best_fitness"], b["best_epoch"], b["updates"])
    for k, v in b["model"].items():
        assert torch.allclose(a["model"][k].float(), v.float(), rtol=1e-4, atol=1e-6), k


@pytest.mark.slow
def test_torchrun_sigkill_then_resume_replays_the_uninterrupted_run(tmp_path):
    """Under DDP each rank's streams restart from (seed, epoch, rank) though rank 0 alone saves: the resumed
    run's results.csv is the uninterrupted one's."""
    hyp = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
    hyp.update(warmup_epochs=0, nbs=8, mixup=0.5)
    (tmp_path / "hyp.yaml").write_text(yaml.safe_dump(hyp))
    (tmp_path / "killed_train.py").write_text(KILLED_AFTER_FIRST_CHECKPOINT.format(setup=""))
    flags = ["--data", str(COCO8), "--cfg", CFG, "--hyp", str(tmp_path / "hyp.yaml"), "--imgsz", "64",
             "--batch-size", "4", "--workers", "1", "--noplots", "--epochs", "3", "--device", "cpu", "--multi-scale"]

    def torchrun(script: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               script, *args], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                              timeout=600)

    assert torchrun("killed_train.py", *flags, "--project", "killed").returncode != 0
    assert load_checkpoint(tmp_path / "killed/exp/weights/last.pt")["epoch"] == 0
    for proc in (torchrun(str(ROOT / "train.py"), "--resume", "killed/exp/weights/last.pt"),
                 torchrun(str(ROOT / "train.py"), *flags, "--project", "whole")):
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows, expected = results_rows(tmp_path / "killed/exp"), results_rows(tmp_path / "whole/exp")
    assert [r[0] for r in rows] == [0, 1, 2]
    for row, want in zip(rows, expected):
        assert row == pytest.approx(want, rel=1e-4, abs=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("extra, epochs", [([], 1), (["--image-weights"], 2), (["--teacher", "teacher.pt"], 1)])
def test_torchrun_two_cpu_processes_train(tmp_path, extra, epochs):
    """Plain DDP, --image-weights under DDP (epoch 2 draws by rank 0's broadcast validation mAPs), and a
    distilled run (each rank runs its own teacher on its own batches)."""
    if "--teacher" in extra:  # with feature imitation: DDP keeps the ranks' adapters equal
        saved_teacher(tmp_path / "teacher.pt", "models/yolov5n.yaml")
        hyp = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
        (tmp_path / "hyp.yaml").write_text(yaml.safe_dump({**hyp, "kd_feat": 1.0}))
        extra = [*extra, "--hyp", str(tmp_path / "hyp.yaml")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "train.py"), "--data", str(COCO8), "--cfg", CFG, "--imgsz", "64", "--batch-size", "4",
           "--workers", "0", "--noplots", "--epochs", str(epochs), "--device", "cpu", "--project", str(tmp_path),
           *extra]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["exp"]  # rank 0 alone made a run folder
    assert sorted(p.name for p in (tmp_path / "exp" / "weights").iterdir()) == ["best.pt", "last.pt"]
    assert results_epochs(tmp_path / "exp") == list(range(epochs))
    ckpt = load_checkpoint(tmp_path / "exp" / "weights" / "last.pt")
    assert ckpt["opt"]["batch_size"] == 4 and ckpt["epoch"] == -1
    assert ckpt["opt"]["image_weights"] is ("--image-weights" in extra)
    assert ("kd_box" in proc.stdout) is ("--teacher" in extra)
    assert "Transferred" not in proc.stdout and proc.stdout.count(f"Starting training for {epochs} epochs") == 1


@pytest.mark.slow
def test_yolov5n_faster_overfits_coco8_from_scratch(tmp_path):
    """From random init, train.py learns the 4 train images: losses fall and its own final validation of best.pt
    scores mAP50 > 0.5 on them (measured 0.84).

    AdamW with the LR decaying linearly to lr0/100: with Adam + cosine at the same lr0 the eval-mode score
    was 0.24, BatchNorm's running statistics (momentum 0.03) lagging weights that still moved fast at the end.
    """
    hyp = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
    hyp.update(lr0=0.01, lrf=0.01, warmup_epochs=0, hsv_h=0, hsv_s=0, hsv_v=0, translate=0, scale=0, fliplr=0,
               mosaic=0)
    data_file = coco8_train_as_val(tmp_path)
    # batch 64 on a 4-image set: one optimizer step per epoch (no accumulation toward the nominal 64)
    summary = train.run(data=str(data_file), cfg=CFG, hyp=hyp, imgsz=160, batch_size=64, epochs=120,
                        optimizer="AdamW", workers=0, cache="ram", noval=True, noplots=True, project=str(tmp_path))
    rows = results_rows(summary.save_dir)
    first, last = rows[0][1:4], rows[-1][1:4]
    assert all(b < 0.5 * a for a, b in zip(first, last)), (first, last)  # box, obj and cls loss all fell
    assert summary.results.map50 > 0.5, summary.results.csv_row()


def test_image_weights_trains_and_reweights_every_epoch(tmp_path, monkeypatch):
    seen = []
    original = train.per_image_weights
    monkeypatch.setattr(train, "per_image_weights", lambda lbs, w: seen.append(w.copy()) or original(lbs, w))
    summary = train.run(**TINY, epochs=2, image_weights=True, project=str(tmp_path / "runs"))
    assert results_epochs(summary.save_dir) == [0, 1] and len(seen) == 2
    assert yaml.safe_load((summary.save_dir / "opt.yaml").read_text())["image_weights"] is True
    with pytest.raises(UserInputError, match="--image-weights: cannot be combined with --rect"):
        train.run(**TINY, epochs=1, image_weights=True, rect=True, project=str(tmp_path / "runs2"))


@pytest.mark.slow
def test_evolve_writes_evolve_csv_and_best_hyp(tmp_path):
    out = train.run(**TINY, epochs=1, evolve=2, project=str(tmp_path / "train"))
    assert out == tmp_path / "evolve" / "exp" / "hyp_evolve.yaml"
    rows = (out.parent / "evolve.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("metrics/precision")
    best = yaml.safe_load(out.read_text())
    assert set(hyp_module.REQUIRED_HYP_KEYS) <= set(best)
    assert rows[1].split(",")[8:] != rows[2].split(",")[8:]  # generation 2 trained mutated hyps


# ------------------------------------------------------------------------------------------ bad input
def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("cfg_missing", "model YAML file not found"),
    ("cfg_malformed", "not valid YAML"),
    ("data_missing", "data YAML not found"),
    ("data_malformed", "missing key\\(s\\) train, val"),
    ("hyp_missing", "--hyp .*hyperparameter file not found"),
    ("hyp_malformed", "--hyp .*expected a mapping"),
    ("hyp_incomplete", "--hyp .*missing key\\(s\\) lr0"),
    ("imgsz_small", "--imgsz 16: too small, must be at least the model's largest stride 32"),
    ("no_model", "--cfg: give a model YAML"),
])
def test_bad_input_raises_one_clear_error(tmp_path, case, message):
    opts = {**TINY, "epochs": 1, "project": str(tmp_path / "runs")}
    if case == "cfg_missing":
        opts["cfg"] = str(tmp_path / "nope.yaml")
    elif case == "cfg_malformed":
        opts["cfg"] = write(tmp_path / "bad.yaml", "nc: [1, 2\nbackbone: :")
    elif case == "data_missing":
        opts["data"] = str(tmp_path / "none.yaml")
    elif case == "data_malformed":
        opts["data"] = write(tmp_path / "data.yaml", "names: [a]\n")
    elif case == "hyp_missing":
        opts["hyp"] = str(tmp_path / "hyp.yaml")
    elif case == "hyp_malformed":
        opts["hyp"] = write(tmp_path / "hyp.yaml", "- just\n- a list\n")
    elif case == "hyp_incomplete":
        opts["hyp"] = write(tmp_path / "hyp.yaml", "lrf: 0.01\n")
    elif case == "imgsz_small":
        opts["imgsz"] = 16
    elif case == "no_model":
        opts["cfg"] = ""
    with pytest.raises(UserInputError, match=message):
        train.run(**opts)
    assert not (tmp_path / "runs").exists()  # a run that never started leaves no run folder


def test_resume_without_any_run_is_a_clear_cli_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", "--project", str(tmp_path)],
                          cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: --resume: no last.pt found under {tmp_path} to resume; " \
                                  f"give a checkpoint path or start a new run"
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("door, argv, message", [
    ("train", ["--workers", "-1"], "--workers -1: must be 0 (load in the main process) or more"),
    ("val", ["--workers", "-1"], "--workers -1: must be 0 (load in the main process) or more"),
    ("train", ["--freeze", "99"], "--freeze 99: would freeze all 25 layers of the model, leaving nothing to train; "
                                  "freeze at most the first 24 (--freeze 24: all but the Detect head)"),
    ("train", ["--freeze", "0", "30"], "--freeze 0 30: no layer 30; the model has 25 layers, numbered 0 to 24"),
    ("train", ["--seed", "-2"], "--seed -2: must be between 0 and 2147483647"),
    ("train", ["--seed", str(2**32)], "--seed 4294967296: must be between 0 and 2147483647"),
], ids=["train-workers", "val-workers", "freeze-every-layer", "freeze-no-such-layer", "seed-negative", "seed-huge"])
def test_bad_loader_freeze_and_seed_flags_are_one_line_cli_errors(tmp_path, capsys, door, argv, message):
    """Each door's main() under run_cli, as the command line runs it: exit 2 and one line, before any training."""
    common = ["--imgsz", "64", "--project", str(tmp_path), *argv]
    main = {"train": lambda: train.main(["--data", str(COCO8), "--cfg", CFG, "--epochs", "1", *common]),
            "val": lambda: val.main(common)}  # the demo model on its data
    with pytest.raises(SystemExit) as e:
        run_cli(main[door])
    assert e.value.code == 2 and capsys.readouterr().err == f"error: {message}\n"
    assert not list(tmp_path.iterdir())  # no run folder left behind, not even an empty exp


# ------------------------------------------------------------------------------------- pieces of the flow
def test_optimizer_groups_split_biases_weights_and_norm_weights():
    from models.yolo import DetectionModel

    model = DetectionModel(CFG)
    opt = optim.build_optimizer(model, "SGD", lr=0.01, momentum=0.9, decay=5e-4)
    biases, weights, norms = opt.param_groups
    n_bn = sum(1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert len(norms["params"]) == n_bn and norms["weight_decay"] == 0.0
    assert weights["weight_decay"] == 5e-4 and all(p.dim() == 4 for p in weights["params"])  # conv kernels
    assert biases["weight_decay"] == 0.0 and all(p.dim() == 1 for p in biases["params"])
    assert len(biases["params"]) + len(weights["params"]) + len(norms["params"]) == len(list(model.parameters()))
    assert biases["nesterov"] is True
    adam = optim.build_optimizer(model, "AdamW", lr=0.001, momentum=0.937, decay=5e-4)
    assert adam.param_groups[0]["betas"] == (0.937, 0.999) and adam.param_groups[1]["weight_decay"] == 5e-4


@pytest.mark.parametrize("cosine", [False, True])
def test_lr_schedule_runs_from_one_to_lrf(cosine):
    lf = optim.lr_lambda(epochs=10, lrf=0.01, cosine=cosine)
    assert lf(0) == pytest.approx(1.0) and lf(10) == pytest.approx(0.01)
    values = [lf(e) for e in range(11)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert lf(5) == pytest.approx(0.505)  # both pass the midpoint at half-time


def test_mutated_hyps_stay_within_limits_and_differ():
    base = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
    rng = np.random.default_rng(0)
    children = [hyp_module.mutate_hyp(base, rng) for _ in range(20)]
    for child in children:
        assert set(child) == set(base) and child != base
        for k, (_, lo, hi) in hyp_module.EVOLVE_SPACE.items():
            assert lo <= child[k] <= hi


def test_warmup_ramps_lr_momentum_and_accumulation():
    hyp = {"warmup_bias_lr": 0.1, "warmup_momentum": 0.8, "momentum": 0.937}
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(3)]
    opt = torch.optim.SGD([{"params": [p], "initial_lr": 0.01} for p in params], lr=0.01, momentum=0.9)
    assert optim.warmup(opt, hyp, ni=0, nw=100, lr_factor=1.0, batch_size=16) == 1
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.0, 0.0] and opt.param_groups[1]["momentum"] == 0.8
    assert optim.warmup(opt, hyp, ni=50, nw=100, lr_factor=1.0, batch_size=16) == 2  # halfway to 64/16
    assert opt.param_groups[0]["lr"] == pytest.approx(0.055) and opt.param_groups[2]["lr"] == pytest.approx(0.005)
    assert optim.warmup(opt, hyp, ni=100, nw=100, lr_factor=0.5, batch_size=16) == 4
    assert [g["lr"] for g in opt.param_groups] == [0.005] * 3 and opt.param_groups[0]["momentum"] == 0.937


def test_hyp_nbs_sets_optimizer_steps_per_epoch(tmp_path):
    """nbs (nominal batch) decides how many batches one optimizer step accumulates: 4 images in batches of 2
    take 2 steps at nbs 2 and none at yolov5's 64 (no warmup ramp here)."""
    base = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
    steps = {}
    for nbs in (2, 64):
        summary = train.run(**{**TINY, "batch_size": 2}, hyp={**base, "warmup_epochs": 0, "nbs": nbs}, epochs=1,
                            noval=True, project=str(tmp_path), name=f"nbs{nbs}")
        steps[nbs] = load_checkpoint(summary.last)["updates"]
    assert steps == {2: 2, 64: 0}


def test_freeze_first_layers_stops_their_gradients():
    from models.yolo import DetectionModel

    model = DetectionModel(CFG)
    frozen = optim.freeze_layers(model, [3])
    assert frozen and all(n.startswith(("model.0.", "model.1.", "model.2.")) for n in frozen)
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith(("model.0.", "model.1.", "model.2.")))
    assert optim.freeze_layers(model, [0]) == [] and all(p.requires_grad for p in model.parameters())


def test_distilled_run_logs_kd_terms_and_saves_no_teacher(tmp_path, log_text):
    """--teacher adds the kd columns to the progress lines; the student's checkpoints hold the student alone
    and remember the teacher's path (what --resume restores)."""
    teacher = saved_teacher(tmp_path / "teacher.pt", "models/yolov5n-af.yaml")
    summary = train.run(**{**TINY, "cfg": "models/yolov5n-pconv-lite2-af.yaml"}, teacher=teacher, epochs=1,
                        project=str(tmp_path / "runs"))
    assert f"Distilling from {teacher}: kd_box=1, kd_cls=1, kd_feat=0, kd_t=2" in log_text()
    ckpt = load_checkpoint(summary.last)
    student_keys = set(DetectionModel("models/yolov5n-pconv-lite2-af.yaml", nc=80).state_dict())
    assert set(ckpt["model"]) == student_keys and ckpt["opt"]["teacher"] == teacher
    assert "distill_adapters" not in ckpt  # a finished checkpoint keeps the model alone
    assert results_epochs(summary.save_dir) == [0]


def two_level_af() -> dict:
    """yolov5n-af predicting on P3 and P4 only: a teacher on other strides."""
    from models.yolo import load_model_yaml
    cfg = load_model_yaml("models/yolov5n-af.yaml")
    cfg["head"][-1] = [cfg["head"][-1][0][:2], *cfg["head"][-1][1:]]
    return cfg


@pytest.mark.parametrize("teacher_cfg, message", [
    ("two-level", r"the teacher predicts at strides [8.0, 16.0], the student at [8.0, 16.0, 32.0]"),
    ("missing", "checkpoint not found"),
])
def test_a_teacher_that_does_not_fit_is_a_one_line_cli_error(tmp_path, capsys, teacher_cfg, message):
    teacher = str(tmp_path / "nope.pt") if teacher_cfg == "missing" else \
        saved_teacher(tmp_path / "teacher.pt", two_level_af())
    argv = ["--data", str(COCO8), "--cfg", CFG, "--imgsz", "64", "--epochs", "1", "--workers", "0", "--noplots",
            "--project", str(tmp_path / "runs"), "--teacher", teacher]
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: train.main(argv))
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith(f"error: --teacher {teacher}: {message}") and "\n" not in err


def test_a_teacher_of_other_classes_is_fine_tuned_on_the_data_first(tmp_path, log_text):
    """A COCO-style teacher of other classes (here: an anchor yolov5n with numbered names) is fine-tuned on --data
    in RUN/teacher for --teacher-epochs, then teaches the anchor-free student; the student remembers the
    fine-tuned teacher (what its --resume reuses)."""
    source = saved_teacher(tmp_path / "coco.pt", "models/yolov5n.yaml", names=[f"thing{i}" for i in range(80)])
    summary = train.run(**{**TINY, "cfg": "models/yolov5n-lite2-fasterneck-af.yaml"}, teacher=source, epochs=1,
                        teacher_epochs=2, hyp=str(ROOT / "data/hyps/hyp.scratch-af.yaml"), project=str(tmp_path / "runs"))
    folder = summary.save_dir / "teacher"
    best = folder / "weights/best.pt"
    assert results_epochs(folder) == [0, 1] and results_epochs(summary.save_dir) == [0]
    fine_tuned = load_checkpoint(best)
    assert fine_tuned["names"] == coco8_names() and fine_tuned["opt"]["weights"] == source
    assert fine_tuned["opt"]["hyp"].endswith("hyp.scratch-low.yaml")  # the anchor teacher's own hyp, not the student's
    assert load_checkpoint(summary.last)["opt"]["teacher"] == str(best)
    assert yaml.safe_load((summary.save_dir / "opt.yaml").read_text())["teacher"] == str(best)
    text = log_text()
    assert f"teacher: {source} knows 80 other classes; fine-tuning it on" in text
    assert f"Distilling from {best}" in text and "teacher: took" in text


def test_a_teacher_that_knows_the_data_classes_among_more_is_cut_down_not_fine_tuned(tmp_path, log_text):
    """A teacher whose names hold every class of --data (COCO's persons in yolov5n.pt) teaches through its own
    outputs for those classes: RUN/teacher/weights/best.pt is the teacher cut down to them, nothing trained."""
    names = ["zebra-crossing", *reversed(coco8_names()), "unicorn"]
    source = saved_teacher(tmp_path / "wide.pt", "models/yolov5n.yaml", nc=82, names=names)
    summary = train.run(**{**TINY, "cfg": "models/yolov5n-lite2-fasterneck-af.yaml"}, teacher=source, epochs=1,
                        hyp=str(ROOT / "data/hyps/hyp.scratch-af.yaml"), project=str(tmp_path / "runs"))
    best = summary.save_dir / "teacher/weights/best.pt"
    assert not (summary.save_dir / "teacher/results.csv").exists()  # no fine-tuning run
    cut = load_checkpoint(best)
    assert cut["names"] == coco8_names() and cut["nc"] == 80 and cut["opt"]["weights"] == source
    assert load_checkpoint(summary.last)["opt"]["teacher"] == str(best)
    text = log_text()
    assert f"teacher: {source} knows person, bicycle, car, motorcycle, airplane, ... among its 82 classes" in text
    assert "fine-tuning it on" not in text and f"Distilling from {best}" in text


@pytest.mark.parametrize("stage", ["teacher", "pretrain"])
def test_resume_during_a_stage_finishes_it_then_trains_the_student(tmp_path, log_text, stage):
    """Killed right after a stage's first last.pt (the teacher's fine-tuning, or the pretraining on unlabeled
    images): a bare --resume finds that checkpoint, finishes the stage's epochs, runs the stages after it and
    then trains the student in the run's own folder, distilled from the fine-tuned teacher."""
    source = saved_teacher(tmp_path / "coco.pt", "models/yolov5n.yaml", names=[f"thing{i}" for i in range(80)])
    flags = ["--data", str(COCO8), "--cfg", "models/yolov5n-lite2-fasterneck-af.yaml", "--imgsz", "64",
             "--batch-size", "4", "--workers", "0", "--noplots", "--epochs", "1", "--teacher-epochs", "2",
             "--teacher", source, "--project", str(tmp_path / "runs")]
    if stage == "pretrain":
        flags += ["--pretrain-images", str(ROOT / "data/coco8/images/val"), "--pretrain-epochs", "2"]
    proc = subprocess.run([sys.executable, "-c", KILLED_AFTER_FIRST_CHECKPOINT.format(setup=""), *flags],
                          cwd=tmp_path, env=subprocess_env(), capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run_dir = tmp_path / "runs/exp"
    assert load_checkpoint(run_dir / stage / "weights/last.pt")["epoch"] == 0
    assert not (run_dir / "weights/last.pt").exists()
    summary = train.run(resume=True, project=str(tmp_path / "runs"))
    assert summary.save_dir == run_dir and results_epochs(run_dir / stage) == [0, 1]
    assert results_epochs(run_dir / "teacher") == [0, 1] and results_epochs(run_dir) == [0]
    opt = load_checkpoint(summary.last)["opt"]
    assert opt["teacher"] == str(run_dir / "teacher/weights/best.pt")
    if stage == "pretrain":
        assert opt["weights"] == str(run_dir / "pretrain/weights/last.pt")
    assert f"{stage}: resuming from" in log_text()


def test_pretraining_on_unlabeled_images_learns_the_teacher_alone_then_seeds_the_student(tmp_path, log_text):
    """--pretrain-images: the student with the teacher's 80 classes learns its outputs on a folder of images without
    labels (task gains 0, no validation), then the student's run starts from that run's weights, distilled from
    the teacher fine-tuned on --data."""
    source = saved_teacher(tmp_path / "coco.pt", "models/yolov5n.yaml", names=[f"thing{i}" for i in range(80)])
    images = tmp_path / "unlabeled"
    images.mkdir()
    for f in (ROOT / "data/coco8/images/train").iterdir():
        (images / f.name).write_bytes(f.read_bytes())
    summary = train.run(**{**TINY, "cfg": "models/yolov5n-lite2-fasterneck-af.yaml"}, teacher=source, epochs=1,
                        teacher_epochs=1, pretrain_images=str(images), pretrain_epochs=2,
                        hyp=str(ROOT / "data/hyps/hyp.scratch-af.yaml"), project=str(tmp_path / "runs"))
    run_dir = summary.save_dir
    assert results_epochs(run_dir / "pretrain") == [0, 1] and results_epochs(run_dir / "teacher") == [0]
    data = yaml.safe_load((run_dir / "pretrain-data.yaml").read_text())
    assert data["train"] == str(images) and data["names"][79] == "thing79"
    gains = yaml.safe_load((run_dir / "pretrain-hyp.yaml").read_text())
    assert (gains["box"], gains["cls"], gains["dfl"], gains["kd_cls"] if "kd_cls" in gains else 1.0) == (0, 0, 0, 1.0)
    pretrained = load_checkpoint(run_dir / "pretrain/weights/last.pt")
    assert pretrained["names"][0] == "thing0" and pretrained["opt"]["teacher"] == source
    opt = load_checkpoint(summary.last)["opt"]
    assert opt["weights"] == str(run_dir / "pretrain/weights/last.pt")
    assert opt["teacher"] == str(run_dir / "teacher/weights/best.pt")
    assert "pretrain: learning" in log_text()


@pytest.mark.slow
def test_anchor_free_teacher_and_distilled_student_overfit_coco8(tmp_path, two_torch_threads):
    """From random init yolov5n-af learns coco8's 4 train images, then teaches a lite2 student on them: each
    run's own final validation of best.pt scores mAP50 > 0.5 (teacher) and > 0.4 (student) on them.

    One optimizer step per epoch, so BatchNorm's running statistics (momentum 0.03, ~33 steps to catch up) must
    settle in the last epochs: 80 epochs decaying linearly left the eval-mode teacher anywhere from 0.08 to 0.64
    by seed (re-estimating the statistics gave 0.79 every time); 120 epochs on a cosine schedule measured
    teacher 0.64-0.89 over seeds 0-5 and student 0.64-0.66 over seeds 0-3.
    """
    hyp = yaml.safe_load((ROOT / "data/hyps/hyp.small-data-af.yaml").read_text())
    hyp.update(lr0=0.01, lrf=0.01, warmup_epochs=0, hsv_h=0, hsv_s=0, hsv_v=0, translate=0, scale=0, fliplr=0,
               mosaic=0, mixup=0)
    recipe = dict(data=str(coco8_train_as_val(tmp_path)), hyp=hyp, imgsz=128, batch_size=64, epochs=120,
                  cos_lr=True, optimizer="AdamW", workers=0, cache="ram", noval=True, noplots=True)
    teacher = train.run(**recipe, cfg="models/yolov5n-af.yaml", project=str(tmp_path / "teacher"))
    student = train.run(**recipe, cfg="models/yolov5n-pconv-lite2-af.yaml", teacher=str(teacher.best),
                        project=str(tmp_path / "student"))
    assert teacher.results.map50 > 0.5 and student.results.map50 > 0.4, (teacher.results.csv_row(),
                                                                          student.results.csv_row())
