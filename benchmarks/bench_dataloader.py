"""Training dataloader throughput: ours against the ultralytics package's YOLODataset, same images, same run.

Mosaic on, imgsz 640, batch 16, 2 workers, the augmentation of hyp.scratch-low.yaml on both sides. The
train split is copied to a temp folder first, because both loaders write a label cache next to the labels
and ../shared is read-only. Each loader runs in its own child process (so peak memory is its own), the
two alternate for --rounds rounds, and each child reports: dataset build time (label scan/cache),
time to the first batch (worker start), steady images/s over the remaining batches, wall time, peak
RSS of the process tree (each process's own high-water mark, utils.core.system.peak_rss_mb, the workers' read
while they run), and the per-image time of the same pipeline run in one process (warm), which a machine
shared with other jobs disturbs less than the 2-worker figure. PyTorch runs on --threads threads (1).

    python benchmarks/bench_dataloader.py --data ../shared/data/coco128/data.yaml
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_dataloader.py` puts only benchmarks/ on the path
    sys.path.insert(0, str(ROOT))

from utils.core.system import cpu_name, peak_rss_mb  # noqa: E402
from utils.data.dataset import check_dataset, find_image_files  # noqa: E402
from utils.data.labels import image_to_label_path  # noqa: E402

AUG_KEYS = ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud",
            "fliplr", "mosaic", "mixup")


def record_worker_peaks(peaks: dict[int, float]) -> None:
    """The high-water mark of every live process this one started (the loader workers), by pid: a process's
    mark goes with it, so it is read while the workers run."""
    for child in psutil.Process().children(recursive=True):
        peaks[child.pid] = max(peaks.get(child.pid, 0.0), peak_rss_mb(child.pid))


def copy_split(split_dirs: list[str], dst: Path) -> Path:
    """Copy images and their labels under dst/images/train and dst/labels/train."""
    (dst / "images" / "train").mkdir(parents=True)
    (dst / "labels" / "train").mkdir(parents=True)
    for f in find_image_files(split_dirs):
        shutil.copy2(f, dst / "images" / "train" / Path(f).name)
        label = Path(image_to_label_path(f))
        if label.is_file():
            shutil.copy2(label, dst / "labels" / "train" / label.name)
    return dst / "images" / "train"


def build_ours(images: str, args, hyp: dict):
    from utils.data.dataset import create_dataloader
    loader, _ = create_dataloader(images, args.imgsz, args.batch, 32, hyp=hyp, augment=True, workers=args.workers,
                                  shuffle=True, seed=0, nc=args.nc)
    return loader, lambda batch: batch[0].shape[0]


def build_theirs(images: str, args, hyp: dict):
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset
    cfg = get_cfg(overrides=dict(imgsz=args.imgsz, workers=args.workers, cache=False,
                                 **{k: hyp[k] for k in AUG_KEYS}))
    data = dict(names={i: str(i) for i in range(args.nc)}, nc=args.nc, channels=3)
    dataset = build_yolo_dataset(cfg, images, args.batch, data, mode="train")
    loader = build_dataloader(dataset, args.batch, args.workers, shuffle=True, rank=-1, pin_memory=False,
                              device="cpu")
    return loader, lambda batch: batch["img"].shape[0]


def child(args) -> None:
    """Time one loader; print one JSON line."""
    import torch
    torch.set_num_threads(args.threads)
    hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    build = build_ours if args.child == "ours" else build_theirs
    worker_peaks: dict[int, float] = {}
    t0 = time.perf_counter()
    loader, count = build(args.images, args, hyp)
    t_built = time.perf_counter()
    n, t_first = 0, None
    for _ in range(args.epochs):
        for batch in loader:
            record_worker_peaks(worker_peaks)
            if t_first is None:
                t_first = time.perf_counter()
            else:
                n += count(batch)
    t_end = time.perf_counter()
    peak_mb = peak_rss_mb() + sum(worker_peaks.values())
    dataset = loader.dataset  # the same pipeline in this one process: less at the mercy of a busy machine
    for i in range(len(dataset)):
        dataset[i]  # warm its image buffer
    t = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    sample_ms = (time.perf_counter() - t) / len(dataset) * 1000
    print(json.dumps(dict(impl=args.child, build_s=t_built - t0, first_batch_s=t_first - t_built,
                          steady_img_s=n / (t_end - t_first), wall_s=t_end - t0, peak_mb=peak_mb,
                          images=n, sample_ms=sample_ms)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "coco128" / "data.yaml"))
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", choices=("ours", "theirs"))
    p.add_argument("--images")
    p.add_argument("--nc", type=int, default=80)
    p.add_argument("--threads", type=int, default=1, help="PyTorch threads of each loader's process")
    args = p.parse_args()
    if args.child:
        child(args)
        return

    data = check_dataset(args.data)
    with tempfile.TemporaryDirectory(prefix="bench_dataloader_") as tmp:
        images = copy_split(data["train"], Path(tmp))
        n_images = len(find_image_files(str(images)))
        print(f"{n_images} train images from {args.data}, imgsz {args.imgsz}, batch {args.batch}, "
              f"{args.workers} workers, {args.epochs} epochs, mosaic on, {args.threads} PyTorch thread(s); "
              f"{psutil.cpu_count()} CPUs ({cpu_name()})")
        results: dict[str, list[dict]] = {"ours": [], "theirs": []}
        for r in range(args.rounds):
            for impl in ("ours", "theirs"):
                cmd = [sys.executable, __file__, "--child", impl, "--images", str(images),
                       "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--workers", str(args.workers),
                       "--epochs", str(args.epochs), "--nc", str(data["nc"]), "--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                if out.returncode:
                    raise SystemExit(f"{impl} failed:\n{out.stderr[-3000:]}")
                res = json.loads(out.stdout.strip().splitlines()[-1])
                results[impl].append(res)
                print(f"round {r + 1} {impl:6s}: build {res['build_s']:.2f} s, "
                      f"first batch {res['first_batch_s']:.2f} s, steady {res['steady_img_s']:.1f} img/s, wall {res['wall_s']:.2f} s, "
                      f"peak RSS {res['peak_mb']:.0f} MB; one process: {res['sample_ms']:.1f} ms/image")
    best = {k: max(v, key=lambda x: x["steady_img_s"]) for k, v in results.items()}
    ratio = best["ours"]["steady_img_s"] / best["theirs"]["steady_img_s"]
    print(f"\nbest steady throughput: ours {best['ours']['steady_img_s']:.1f} img/s, "
          f"ultralytics {best['theirs']['steady_img_s']:.1f} img/s -> ratio {ratio:.2f}x (goal >= 1.0x)")
    ms = {k: min(x["sample_ms"] for x in v) for k, v in results.items()}
    print(f"one process, warm: ours {ms['ours']:.1f} ms/image, ultralytics {ms['theirs']:.1f} ms/image "
          f"-> ratio {ms['theirs'] / ms['ours']:.2f}x")
    print(f"peak RSS (process + workers, shared pages counted per process): ours {max(x['peak_mb'] for x in results['ours']):.0f} MB, "
          f"ultralytics {max(x['peak_mb'] for x in results['theirs']):.0f} MB")


if __name__ == "__main__":
    main()
