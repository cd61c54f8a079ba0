"""Training throughput and accuracy: our train.py beside the ultralytics trainer, same data and budget.

    python benchmarks/bench_train.py --data ../shared/data/coco128/data.yaml --imgsz 320 --epochs 5 --batch-size 16

Each trainer runs from scratch in its own subprocess (so peak memory is its own), on a private copy
of the dataset (both write label caches beside the labels), with its own default hyperparameters, on
CPU. Reported per trainer: wall time, train images/s (time inside the epochs' batch loops only, so
setup and validation are excluded alike), final mAP50 / mAP50-95 of its best checkpoint on the val
split, and the trainer process's peak RSS (utils.core.system.peak_rss_mb; its loader workers, whose pages are
mostly the trainer's, are not added). Nothing is downloaded: ultralytics runs offline (utils sets it),
plots=False, amp=False.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_train.py` puts only benchmarks/ on the path
    sys.path.insert(0, str(ROOT))

# torch-free, so the parent stays so while trainers run; importing utils sets ultralytics offline for the children
from models.zoo import PEERS  # noqa: E402
from utils.core.system import cpu_name, peak_rss_mb  # noqa: E402

RESULT_TAG = "BENCH_RESULT "


class TimedLoader:
    """Wraps a DataLoader; adds up the wall time from the start to the end of each pass over it."""

    def __init__(self, loader):
        self.loader, self.seconds, self.images = loader, 0.0, 0

    def __iter__(self):
        t0 = time.perf_counter()
        for batch in self.loader:
            self.images += len(batch[0])
            yield batch
        self.seconds += time.perf_counter() - t0

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)


def run_ours(opt: argparse.Namespace, data: Path, project: Path) -> dict:
    import torch

    import train

    torch.set_num_threads(opt.threads)
    timed: list[TimedLoader] = []
    real_create = train.create_dataloader

    def create_timed(*args, **kwargs):
        loader, dataset = real_create(*args, **kwargs)
        if kwargs.get("augment"):  # the training loader; val loaders stay as they are
            timed.append(TimedLoader(loader))
            return timed[-1], dataset
        return loader, dataset

    train.create_dataloader = create_timed
    t0 = time.perf_counter()
    summary = train.run(data=str(data), cfg=opt.cfg, imgsz=opt.imgsz, epochs=opt.epochs, batch_size=opt.batch_size,
                        workers=opt.workers, device="cpu", noplots=True, project=str(project), name="ours",
                        seed=opt.seed)
    wall = time.perf_counter() - t0
    loader = timed[0]
    return {"trainer": f"ours ({Path(opt.cfg).stem})", "wall_s": wall, "train_s": loader.seconds,
            "train_images": loader.images, "map50": summary.results.map50, "map50_95": summary.results.map50_95,
            "peak_rss_mb": peak_rss_mb(), "run_dir": str(summary.save_dir)}


def run_ultralytics(opt: argparse.Namespace, data: Path, project: Path) -> dict:
    import torch
    from ultralytics import YOLO, settings

    settings.update({"sync": False})
    torch.set_num_threads(opt.threads)
    epoch_times: list[float] = []
    images = {"n": 0}
    marks: dict[str, float] = {}

    def epoch_start(trainer):
        marks["t"] = time.perf_counter()

    def epoch_end(trainer):
        epoch_times.append(time.perf_counter() - marks["t"])
        images["n"] += len(trainer.train_loader.dataset)

    model = YOLO(opt.peer)
    model.add_callback("on_train_epoch_start", epoch_start)
    model.add_callback("on_train_epoch_end", epoch_end)
    t0 = time.perf_counter()
    model.train(data=str(data), imgsz=opt.imgsz, epochs=opt.epochs, batch=opt.batch_size, workers=opt.workers,
                device="cpu", pretrained=False, amp=False, plots=False, project=str(project), name="ultralytics",
                exist_ok=True, seed=opt.seed, verbose=False)
    wall = time.perf_counter() - t0
    metrics = model.trainer.metrics
    return {"trainer": f"ultralytics ({Path(opt.peer).stem})", "wall_s": wall, "train_s": sum(epoch_times),
            "train_images": images["n"], "map50": float(metrics["metrics/mAP50(B)"]),
            "map50_95": float(metrics["metrics/mAP50-95(B)"]), "peak_rss_mb": peak_rss_mb(),
            "run_dir": str(model.trainer.save_dir)}


def private_copy(data_yaml: Path, dst: Path) -> Path:
    """Copy the dataset (images + labels) to dst and write a data YAML with an absolute path."""
    data = yaml.safe_load(data_yaml.read_text())
    src_root = Path(data.get("path") or ".")
    src_root = src_root if src_root.is_absolute() else (data_yaml.parent / src_root).resolve()
    for sub in ("images", "labels"):
        shutil.copytree(src_root / sub, dst / sub, ignore=shutil.ignore_patterns("*.cache*", "*.npy"))
    data["path"] = str(dst)
    out = dst / "data.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def parse_opt() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/coco128/data.yaml"))
    p.add_argument("--cfg", default="models/yolov5n-faster.yaml", help="our model YAML")
    p.add_argument("--peer", default=f"{PEERS[0]}.yaml", help="ultralytics model YAML (built from scratch)")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch threads per trainer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["ours", "ultralytics"], help="run a single trainer (used internally)")
    p.add_argument("--workdir", default="", help="dataset copy + runs (used internally)")
    return p.parse_args()


def main() -> None:
    opt = parse_opt()
    if opt.only:  # child process: train one, print its result line
        workdir = Path(opt.workdir)
        fn = run_ours if opt.only == "ours" else run_ultralytics
        result = fn(opt, workdir / "data" / "data.yaml", workdir / "runs")
        print(RESULT_TAG + json.dumps(result), flush=True)
        return

    workdir = Path(tempfile.mkdtemp(prefix="bench_train_"))
    private_copy(Path(opt.data), workdir / "data")
    results = []
    for who in ("ours", "ultralytics"):
        cmd = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--only", who, "--workdir", str(workdir)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
        if proc.returncode or not lines:
            print(f"{who} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            continue
        results.append(json.loads(lines[0][len(RESULT_TAG):]))

    print(f"\nTraining from scratch on {opt.data}: imgsz {opt.imgsz}, {opt.epochs} epochs, batch {opt.batch_size}, "
          f"CPU {cpu_name()} ({os.cpu_count()} cores, {opt.threads} torch threads), each trainer's default hyps")
    print(f"{'trainer':<34}{'wall s':>9}{'train s':>9}{'train img/s':>13}{'mAP50':>8}{'mAP50-95':>10}{'peak MB':>9}")
    for r in results:
        ips = r["train_images"] / max(r["train_s"], 1e-9)
        print(f"{r['trainer']:<34}{r['wall_s']:>9.1f}{r['train_s']:>9.1f}{ips:>13.2f}{r['map50']:>8.4f}"
              f"{r['map50_95']:>10.4f}{r['peak_rss_mb']:>9.0f}")
    if len(results) == 2:
        ours, peer = results
        speed = (ours["train_images"] / ours["train_s"]) / (peer["train_images"] / peer["train_s"])
        print(f"throughput ours/ultralytics: {speed:.2f}x; mAP50-95 {ours['map50_95']:.4f} vs {peer['map50_95']:.4f}")
    print(f"runs and dataset copy in {workdir}")


if __name__ == "__main__":
    main()
