"""Accuracy and speed side by side, from scratch: our yolov5n / -faster, the anchor-free (-af) variants, and
ultralytics yolov5nu — same data, image size, epochs, batch, CPU; mAP on a split not used for training.

Why: an anchor-free PConv model is only worth switching to if it is as accurate as ultralytics' yolov5nu
(the target: mAP50-95 >= yolov5nu's at <= 0.65x its ONNX Runtime latency, 2 threads, 640, fused).

Both trainers follow one recipe (--optimizer, --lr0, --momentum, --nbs, --close-mosaic; every other setting
at each project's scratch default): ours through a hyp file written from hyp.scratch-low / -af plus the recipe.
Each training runs in its own child process (our train.py CLI; ultralytics' trainer through its Python API,
offline: pretrained=False, amp=False, plots=False) on --threads threads, which reports its own peak memory
(benchmarks.common.run_measured). Every best.pt — ours and the peer's — is scored by one function, `val_map`:
val.run on the live model read through one Backend interface, with one dataloader (rect, pad 0.5), one NMS
(conf 0.001, IoU 0.6, 300 boxes, multi-label) and one scorer, val's default COCO matching (pycocotools'
rule, which val reproduces: docs/val.md). Why not each trainer's own validation: ultralytics matches
highest-IoU-first (our --matching yolo), interpolates AP its own way and runs NMS at IoU 0.7, so its number
and ours were not the same measurement; why not pycocotools on both: it needs predictions written and read
back, and val's scorer gives its numbers on the same boxes. The peer's model only gets an adapter that
renames its output layout (boxes and class scores) to ours (benchmarks.common.peer_backend). With several
--seed values each model trains once per seed and the table shows the means, each seed's mAP50-95, and the
mean over seeds of the last 10 epochs' mAP50-95 (from each run's results.csv): on shapes3 one run's best
epoch moved by up to ±0.04 between seeds. Latency: every model at random init, fused, exported by export.py's ONNX exporter, timed in
ONNX Runtime, rounds interleaved.

Usage (--data defaults to the shipped data/shapes3.yaml; every file below is shipped except the GPU-scale
coco128, which is the full 80-class set from yolov5's coco128.yaml, ../shared/ on machines that hold a copy):
    python benchmarks/bench_accuracy.py --imgsz 320 --epochs 3 --batch-size 16         # small CPU setting
    python benchmarks/bench_accuracy.py --epochs 50                                     # docs/accuracy.md (shapes3)
    python benchmarks/bench_accuracy.py --epochs 50 --seed 0 1 2 --models ablations/X  # mean of three seeds
    python benchmarks/bench_accuracy.py --data data/coco128-person.yaml --epochs 60 --nbs 16    # real photos
    python benchmarks/bench_accuracy.py --data ../shared/data/coco128/data.yaml --imgsz 640 --epochs 100 --nbs 64 \
        --device 0  # GPU-scale
    python benchmarks/bench_accuracy.py --epochs 50 --seed 0 1 2 --models yolov5n-pconv-lite2-af \
        --teacher yolov5n-af  # each student from scratch and distilled from a teacher trained here first
    python benchmarks/bench_accuracy.py --epochs 25 --imgsz 256 --seed 0 1 2 --models yolov5n-pconv-lite2-af \
        --teacher best.pt --no-scratch --hyp-set kd_feat=1 --peer ''  # distilled rows only, one gain changed
    python benchmarks/bench_accuracy.py --epochs 25 --imgsz 256 --models yolov5n-pconv-lite2-af --teacher yolov5n-af \
        --teacher-epochs 75 --no-scratch --peer ''  # a teacher trained 3x longer than its students
    python benchmarks/bench_accuracy.py --data ../shared/data/aquarium/data.yaml --epochs 30 --seed 0 1 2 \
        --models yolov5n-lite2-fasterneck-af --pretrained yolov5n.pt --teacher yolov5n.pt --inherit --no-scratch \
        --peer '' # from a pretrained file: it fine-tuned, and students distilled from (and inheriting) that run
    python benchmarks/bench_accuracy.py --data ../shared/data/aquarium/data.yaml --epochs 30 --seed 1 2 \
        --models yolov5n-fasterneck-af --pretrained yolov5n.pt --teacher yolov5n.pt --inherit only --no-scratch \
        --peer '' --latency-runs 0  # the inherited + distilled rows alone
    python benchmarks/bench_accuracy.py --skip-train                                    # latency only
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_accuracy.py` puts only benchmarks/ on the path
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from benchmarks.common import export_onnx, peer_backend, peer_model, run_measured, zoo_model  # noqa: E402
from deploy.engines import OnnxEngine  # noqa: E402
from deploy.errors import UserInputError  # noqa: E402
from deploy.outputs import increment_path  # noqa: E402
from models.zoo import ANCHOR_FREE, PEERS  # noqa: E402
from utils.core.log import LOGGER  # noqa: E402
from utils.core.system import cpu_name  # noqa: E402
from utils.data.labels import image_to_label_path  # noqa: E402

SPLITS = ("train", "val", "test")  # what a data YAML may name; bench stages each one present
DEFAULT_DATA = ROOT / "data/shapes3.yaml"  # shipped; the set on which a CPU run ranks models (docs/accuracy.md)
TAIL_EPOCHS = 10  # the "last-10 mean" column: mAP50-95 averaged over a run's last epochs
WARMUP_BIAS_LR = 0.0  # ultralytics sets 0 for Adam-family optimizers; the same for both trainers
ULTRALYTICS_CHILD = """
import torch
torch.set_num_threads({threads})
from ultralytics import YOLO
YOLO("{peer}.yaml").train(data={data!r}, epochs={epochs}, imgsz={imgsz}, batch={batch}, workers={workers},
    device={device!r}, pretrained=False, amp=False, plots=False, seed={seed}, project={project!r}, name="{name}",
    exist_ok=True, verbose=False, optimizer="{optimizer}", lr0={lr0}, momentum={momentum}, nbs={nbs},
    warmup_bias_lr={warmup_bias_lr}, close_mosaic={close_mosaic})
"""
SCORER = "val.run on each live model, COCO matching (= pycocotools), conf 0.001, NMS IoU 0.6"


@dataclass
class Row:
    model: str
    map50: float | None = None
    map50_95: float | None = None
    map50_95_seeds: list[float] = field(default_factory=list)
    tail_map50_95: float | None = None
    train_s: float | None = None
    train_img_per_s: float | None = None
    train_peak_rss_mb: float | None = None
    onnx_ms: float | None = None
    latency_vs_peer: float | None = None
    notes: list[str] = field(default_factory=list)


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="data YAML: train and val splits, test optional")
    p.add_argument("--models", nargs="*", default=list(ANCHOR_FREE), help="our model YAML names (none: the peer alone)")
    p.add_argument("--peer", default=PEERS[0], help="ultralytics model YAML to compare with ('' to skip)")
    p.add_argument("--imgsz", type=int, default=320, help="train/val image size")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--close-mosaic", type=int, default=10,
                   help="last N epochs without mosaic (ultralytics' default 10)")
    p.add_argument("--optimizer", choices=["SGD", "Adam", "AdamW"], default="AdamW",
                   help="both trainers (ultralytics' 'auto' picks AdamW for runs this short)")
    p.add_argument("--lr0", type=float, default=0.002, help="initial LR for both (ultralytics' auto AdamW value)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum / Adam beta1 for both")
    p.add_argument("--nbs", type=int, default=16, help="nominal batch for both: an optimizer step per nbs images")
    p.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="one training per model per seed; means reported")
    p.add_argument("--threads", type=int, default=2, help="threads of each trainer and of ONNX Runtime")
    p.add_argument("--device", default="cpu", help="training device for both trainers: cpu or a CUDA index (0); "
                   "ours uses AMP on CUDA as train.py always does, ultralytics runs with amp=False (its AMP "
                   "check downloads weights)")
    p.add_argument("--latency-imgsz", type=int, default=640)
    p.add_argument("--latency-runs", type=int, default=20, help="timed ONNX Runtime rounds (0: no latency)")
    p.add_argument("--teacher", default="",
                   help="distil: a zoo model name (trained first, once, on the first seed with the recipe) or a .pt "
                        "(ours, YOLOv5's, ultralytics'); each --models entry then also trains distilled from it, per seed; "
                        "the --pretrained file: each seed's student learns from that seed's fine-tuned run")
    p.add_argument("--pretrained", default="",
                   help="a pretrained .pt users start from (e.g. yolov5n.pt): a row of it fine-tuned with the recipe "
                        "(train.py --weights FILE), per seed")
    p.add_argument("--inherit", nargs="?", const="also", default="", choices=["also", "only"],
                   help="with --teacher: each student also trains inheriting the teacher's matching blocks "
                        "(--weights TEACHER --cfg STUDENT) while distilled from it; 'only': that row alone, "
                        "without the distilled-only one (a row measured before)")
    p.add_argument("--no-scratch", action="store_true",
                   help="with --teacher: train only the distilled rows (the scratch rows measured before)")
    p.add_argument("--teacher-epochs", type=int, default=0,
                   help="epochs of a zoo --teacher trained here (0: --epochs); a longer-trained teacher is a "
                        "stronger one, and its cost still counts in the distilled rows' train seconds")
    p.add_argument("--hyp-set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="hyp values written over the recipe for our trainings (e.g. kd_cls=2 kd_feat=1)")
    p.add_argument("--skip-train", action="store_true", help="latency only")
    p.add_argument("--project", default=str(ROOT / "runs/benchmark"))
    p.add_argument("--name", default="accuracy")
    opt = p.parse_args(argv)
    opt.hyp_set = dict(parse_hyp_setting(item) for item in opt.hyp_set)
    if opt.no_scratch and not opt.teacher:
        raise UserInputError("--no-scratch trains distilled rows only: it needs --teacher")
    if opt.inherit and not opt.teacher.endswith(".pt"):
        raise UserInputError("--inherit starts students from the teacher's weights: it needs --teacher FILE.pt")
    if opt.teacher_epochs and (not opt.teacher or opt.teacher.endswith(".pt")):
        raise UserInputError("--teacher-epochs sets how long a zoo --teacher trains here: it needs --teacher NAME")
    if opt.teacher_epochs < 0:
        raise UserInputError(f"--teacher-epochs {opt.teacher_epochs}: expected 0 or more")
    return opt


def parse_hyp_setting(item: str) -> tuple[str, float]:
    """One --hyp-set item, KEY=NUMBER."""
    key, _, value = item.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not key or number is None:
        raise UserInputError(f"--hyp-set {item}: expected KEY=NUMBER")
    return key, number


def staged_dataset(data_yaml: Path, folder: Path) -> Path:
    """A copy of the data YAML with an absolute path, every split's images linked and labels copied into `folder`.

    Label caches of both trainers are written beside the labels, so they land in `folder`, never in the
    shared dataset; an absolute `path` stops ultralytics from resolving it under its own datasets dir. Every
    split the YAML names (train, val, test) is staged, since both trainers check that each one exists.
    """
    if not data_yaml.is_file():
        raise UserInputError(f"--data {data_yaml}: file not found")
    d = yaml.safe_load(data_yaml.read_text())
    src = (data_yaml.parent / d.get("path", ".")).resolve()
    for split in SPLITS:
        if not d.get(split):
            continue
        images = (src / d[split]).resolve()
        if not images.is_dir():
            raise UserInputError(f"--data {data_yaml}: {split}: {images} is not an images folder "
                                 f"(bench_accuracy stages folder splits only)")
        labels = Path(image_to_label_path(str(images / "x.jpg"))).parent  # the loaders' images→labels rule
        (folder / "images").mkdir(parents=True, exist_ok=True)
        os.symlink(images, folder / "images" / split)
        if labels.is_dir():
            shutil.copytree(labels, folder / "labels" / split, ignore=shutil.ignore_patterns("*.cache"))
        d[split] = f"images/{split}"
    d["path"] = str(folder)
    out = folder / "data.yaml"
    out.write_text(yaml.safe_dump(d, sort_keys=False))
    return out


def run_child(args: list[str], log: Path, threads: int) -> tuple[float, float]:
    """Run one training process (`python *args`); (wall seconds, peak RSS MB of that process alone)."""
    child = run_measured(args, log, env={**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)})
    if child.returncode != 0:
        raise RuntimeError(f"{args[0]} failed, see {log}:\n{child.output[-2000:]}")
    return child.wall_s, child.peak_mb


def recipe_hyp(name: str, opt: argparse.Namespace, out: Path, anchor_free: bool) -> Path:
    """The head kind's scratch hyp file with the shared recipe written over it (saved beside the runs)."""
    base = "hyp.scratch-af.yaml" if anchor_free else "hyp.scratch-low.yaml"
    hyp = yaml.safe_load((ROOT / "data/hyps" / base).read_text())
    hyp.update(lr0=opt.lr0, momentum=opt.momentum, nbs=opt.nbs, warmup_bias_lr=WARMUP_BIAS_LR, **opt.hyp_set)
    path = out / f"hyp.{file_tag(name)}.yaml"
    path.write_text(f"# {base} + bench_accuracy recipe\n" + yaml.safe_dump(hyp, sort_keys=False))
    return path


def file_tag(name: str) -> str:
    """A model name as one path component: 'ablations/x' (a YAML in models/ablations/) → 'ablations-x'."""
    return name.replace("/", "-")


def val_map(model: torch.nn.Module, data: Path, opt: argparse.Namespace, save_dir: Path,
            peer: bool = False) -> tuple[float, float]:
    """(mAP50, mAP50-95) of a live model (ours, or the peer's read in our layout) on the val split: the one
    scorer for every row (SCORER)."""
    import val
    from utils.core.torch_utils import select_device
    from utils.infer.backends import ModelBackend

    device = select_device(opt.device)
    backend = peer_backend(model, device) if peer else ModelBackend(model, device)
    result = val.run(data=str(data), weights=backend, imgsz=opt.imgsz, batch_size=opt.batch_size,
                     workers=opt.workers, plots=False, project=save_dir.parent, name=save_dir.name,
                     exist_ok=True, matching="coco")
    return result.map50, result.map50_95


def train_ours(name: str, data: Path, opt: argparse.Namespace, out: Path, n_train: int, seed: int,
               teacher: Teacher | None = None, weights: str = "") -> Row:
    """One training with the recipe, scored by `val_map`: a zoo model from scratch, or from `weights` (a pretrained
    file fine-tuned when `name` is that file; else the zoo model inheriting its matching blocks); with `teacher`,
    distilled from it (the row's train seconds then include the teacher's own training, its cost)."""
    from utils.core.torch_utils import select_device
    from utils.weights.checkpoint import load_checkpoint, load_model, model_from_checkpoint

    pretrained_row = bool(weights) and name == Path(weights).name
    anchor_free = model_from_checkpoint(load_checkpoint(weights)).anchor_free if pretrained_row else \
        name.endswith("-af")
    hyp = recipe_hyp(name, opt, out, anchor_free)
    kind = "-ft" if pretrained_row else "-inherit" if weights else ""
    tag = run_tag(file_tag(name) + kind + (f"-kd-{file_tag(teacher.name)}" if teacher else ""), seed, opt)
    model_flags = ["--weights", weights] if pretrained_row else ["--cfg", f"models/{name}.yaml"] + \
        (["--weights", weights] if weights else [])
    cmd = ["train.py", "--data", str(data), *model_flags, "--hyp", str(hyp),
           "--imgsz", str(opt.imgsz), "--epochs", str(opt.epochs), "--batch-size", str(opt.batch_size),
           "--optimizer", opt.optimizer, "--close-mosaic", str(opt.close_mosaic),
           "--workers", str(opt.workers), "--seed", str(seed), "--device", opt.device, "--noplots",
           "--project", str(out), "--name", tag, "--exist-ok"] + (["--teacher", str(teacher.path)] if teacher else [])
    LOGGER.info(" ".join(cmd))
    wall, rss = run_child(cmd, out / f"{tag}.log", opt.threads)
    model = load_model(out / tag / "weights/best.pt", select_device(opt.device))
    map50, map50_95 = val_map(model, data, opt, out / "val" / tag)
    row_name = f"{name} fine-tuned" if pretrained_row else name
    if teacher:
        row_name += f" {'inherited + ' if weights else ''}distilled from {teacher.name}"
    total = wall + (teacher.train_s if teacher else 0.0)
    return Row(row_name, map50, map50_95, [map50_95], tail_mean(out / tag / "results.csv"),
               total, opt.epochs * n_train / wall, rss, notes=[" ".join(cmd)])


def fine_tune_pretrained(data: Path, opt: argparse.Namespace, out: Path, n_train: int) -> tuple[Row, dict[int, Teacher]]:
    """--pretrained fine-tuned per seed: its row, and each seed's run as a teacher (its cost its train seconds)."""
    name = Path(opt.pretrained).name
    if not Path(opt.pretrained).is_file():
        raise UserInputError(f"--pretrained {opt.pretrained}: checkpoint not found")
    runs = [train_ours(name, data, opt, out, n_train, s, weights=opt.pretrained) for s in opt.seed]
    tags = [run_tag(file_tag(name) + "-ft", s, opt) for s in opt.seed]
    teachers = {s: Teacher(f"{name} fine-tuned", out / tag / "weights/best.pt", r.train_s)
                for s, tag, r in zip(opt.seed, tags, runs)}
    return mean_over_seeds(runs), teachers


@dataclass
class Teacher:
    name: str  # a zoo model name, or the checkpoint's file name
    path: Path  # its best.pt
    train_s: float  # what training it cost (0 for a checkpoint given ready)


def prepare_teacher(opt: argparse.Namespace, data: Path, out: Path, n_train: int) -> tuple[Teacher, Row | None]:
    """--teacher as a ready checkpoint, or a zoo model trained here once (first seed) with the same recipe,
    for --teacher-epochs when given."""
    if opt.teacher.endswith(".pt"):
        if not Path(opt.teacher).is_file():
            raise UserInputError(f"--teacher {opt.teacher}: checkpoint not found")
        return Teacher(Path(opt.teacher).name, Path(opt.teacher), 0.0), None
    first = argparse.Namespace(**{**vars(opt), "seed": [opt.seed[0]], "epochs": opt.teacher_epochs or opt.epochs})
    (out / "teacher").mkdir(exist_ok=True)
    row = train_ours(opt.teacher, data, first, out / "teacher", n_train, opt.seed[0])
    row.model = f"{opt.teacher} (teacher, seed {opt.seed[0]}, {first.epochs} epochs)"
    best = out / "teacher" / file_tag(opt.teacher) / "weights/best.pt"
    name = f"{opt.teacher}-{opt.teacher_epochs}ep" if opt.teacher_epochs else opt.teacher
    return Teacher(name, best, row.train_s), row


def train_peer(data: Path, opt: argparse.Namespace, out: Path, n_train: int, seed: int) -> Row:
    from ultralytics import YOLO

    tag = run_tag(opt.peer, seed, opt)
    script = ULTRALYTICS_CHILD.format(threads=opt.threads, device=opt.device, peer=opt.peer, name=tag, data=str(data),
                                      epochs=opt.epochs, imgsz=opt.imgsz, batch=opt.batch_size, workers=opt.workers,
                                      seed=seed, project=str(out), optimizer=opt.optimizer, lr0=opt.lr0,
                                      momentum=opt.momentum, nbs=opt.nbs, warmup_bias_lr=WARMUP_BIAS_LR,
                                      close_mosaic=opt.close_mosaic)
    wall, rss = run_child(["-c", script], out / f"{tag}.log", opt.threads)
    map50, map50_95 = val_map(YOLO(str(out / tag / "weights/best.pt")).model.float(), data, opt, out / "val" / tag,
                              peer=True)
    return Row(opt.peer, map50, map50_95, [map50_95], tail_mean(out / tag / "results.csv"), wall,
               opt.epochs * n_train / wall, rss, notes=["ultralytics trainer: its defaults plus the recipe"])


def run_tag(tag: str, seed: int, opt: argparse.Namespace) -> str:
    """The run folder name: the model's tag, plus the seed when several are trained."""
    return f"{tag}-seed{seed}" if len(opt.seed) > 1 else tag


def tail_mean(results_csv: Path, n: int = TAIL_EPOCHS) -> float:
    """Mean mAP50-95 over the last `n` epochs of a results.csv (ours or ultralytics', told apart by header)."""
    with open(results_csv) as f:
        rows = [[v.strip() for v in line.split(",")] for line in f if line.strip()]
    col = next(i for i, h in enumerate(rows[0]) if h in ("metrics/mAP_0.5:0.95", "metrics/mAP50-95(B)"))
    values = [float(r[col]) for r in rows[1:]][-n:]
    return sum(values) / len(values)


def mean_over_seeds(runs: list[Row]) -> Row:
    """One table row from a model's runs, one per seed: means, each seed's mAP50-95, the worst peak memory."""
    mean = lambda key: float(np.mean([getattr(r, key) for r in runs]))  # noqa: E731
    return Row(runs[0].model, mean("map50"), mean("map50_95"), [r.map50_95 for r in runs], mean("tail_map50_95"),
               mean("train_s"), mean("train_img_per_s"), max(r.train_peak_rss_mb for r in runs),
               notes=[n for r in runs for n in r.notes])


def onnx_files(models: list[str], peer: str, imgsz: int, folder: Path) -> dict[str, Path]:
    """Random-init, fused, exporter-form models written as ONNX (ultralytics' head in its own ONNX form)."""
    files = {peer: export_onnx(peer_model(peer), imgsz, folder / f"{peer}.onnx")} if peer else {}
    for name in models:
        files[name] = export_onnx(zoo_model(name), imgsz, folder / f"{file_tag(name)}.onnx")
    return files


def time_onnx(files: dict[str, Path], imgsz: int, threads: int, runs: int) -> dict[str, float]:
    """Median ms per image, rounds interleaved (order alternating) so background load hits all alike; the
    engines share this process, so idle threads sleep (spinning=False)."""
    sessions = {k: OnnxEngine(p, threads, spinning=False) for k, p in files.items()}
    feed = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    times = {k: [] for k in sessions}
    for s in sessions.values():
        for _ in range(3):
            s.run(feed)
    order = list(sessions)
    for r in range(runs):
        for k in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            sessions[k].run(feed)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def table(rows: list[Row]) -> str:
    head = ("| model | mAP50 | mAP50-95 | per seed | last-10 mean | train s | train img/s | train peak RSS MB | "
            "ONNX ms | latency vs peer |")
    lines = [head, "|" + "---|" * 10]
    fmt = lambda v, f: "—" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        seeds = " / ".join(f"{v:.3f}" for v in r.map50_95_seeds) or "—"
        lines.append(f"| {r.model} | {fmt(r.map50, '.3f')} | {fmt(r.map50_95, '.3f')} | {seeds} | "
                     f"{fmt(r.tail_map50_95, '.3f')} | {fmt(r.train_s, '.0f')} | "
                     f"{fmt(r.train_img_per_s, '.1f')} | {fmt(r.train_peak_rss_mb, '.0f')} | {fmt(r.onnx_ms, '.1f')} | "
                     f"{fmt(r.latency_vs_peer, '.2f')}{'' if r.latency_vs_peer is None else 'x'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    opt = parse_opt(argv)
    torch.set_num_threads(opt.threads)
    save_dir = increment_path(Path(opt.project) / opt.name)
    save_dir.mkdir(parents=True)
    t_start = time.perf_counter()
    rows = {m: Row(m) for m in ([opt.peer] if opt.peer else []) + ([] if opt.no_scratch else list(opt.models))}
    with tempfile.TemporaryDirectory(prefix="bench_accuracy_") as tmp:
        tmp = Path(tmp)
        if not opt.skip_train:
            data = staged_dataset(Path(opt.data), tmp / "data")
            n_train = sum(1 for _ in (tmp / "data/images/train").iterdir())
            teachers = {}  # seed -> the teacher its students learn from
            if opt.pretrained:
                row, fine_tuned = fine_tune_pretrained(data, opt, save_dir, n_train)
                rows[row.model] = row
                teachers = fine_tuned if opt.teacher == opt.pretrained else {}
            if opt.teacher and not teachers:
                teacher, teacher_row = prepare_teacher(opt, data, save_dir, n_train)
                teachers = {s: teacher for s in opt.seed}
                if teacher_row is not None:
                    rows[teacher_row.model] = teacher_row
            inherit_kinds = {"": [False], "also": [False, True], "only": [True]}[opt.inherit]
            for name in opt.models:
                LOGGER.info(f"bench_accuracy: training {name} ({opt.epochs} epochs at {opt.imgsz}, seeds {opt.seed})")
                if not opt.no_scratch:
                    rows[name] = mean_over_seeds([train_ours(name, data, opt, save_dir, n_train, s)
                                                  for s in opt.seed])
                for inherit in inherit_kinds if teachers else []:
                    distilled = mean_over_seeds([
                        train_ours(name, data, opt, save_dir, n_train, s, teachers[s],
                                   str(teachers[s].path) if inherit else "") for s in opt.seed])
                    rows[distilled.model] = distilled
            if opt.peer:
                LOGGER.info(f"bench_accuracy: training ultralytics {opt.peer} (seeds {opt.seed})")
                rows[opt.peer] = mean_over_seeds([train_peer(data, opt, save_dir, n_train, s) for s in opt.seed])
        timed = list(opt.models) + ([opt.teacher] if opt.teacher and not opt.teacher.endswith(".pt") else [])
        ms = time_onnx(onnx_files(timed, opt.peer, opt.latency_imgsz, tmp), opt.latency_imgsz,
                       opt.threads, opt.latency_runs) if opt.latency_runs else {}
    for name, row in rows.items():
        model = name.split(" ")[0]  # a distilled row runs as its student, the teacher's row as the teacher
        row.onnx_ms = ms.get(model)
        row.latency_vs_peer = ms[model] / ms[opt.peer] if opt.peer and model in ms else None
    rows = list(rows.values())
    trained = "no training (--skip-train)" if opt.skip_train else \
        (f"data {opt.data}, device {opt.device}, imgsz {opt.imgsz}, epochs {opt.epochs}, batch {opt.batch_size}, "
         f"{opt.optimizer} lr0 {opt.lr0} momentum {opt.momentum} nbs {opt.nbs}, close-mosaic {opt.close_mosaic}, "
         f"seed(s) {', '.join(map(str, opt.seed))}, {opt.threads} threads per trainer")
    latency = (f"latency: ONNX Runtime {opt.threads} threads, {opt.latency_imgsz}, fused, random init, "
               f"median of {opt.latency_runs}" if opt.latency_runs else "no latency (--latency-runs 0)")
    scored = "" if opt.skip_train else f"mAP of every row: {SCORER}; "
    summary = (f"bench_accuracy on {cpu_name()} ({os.cpu_count()} cores), {trained}; {scored}{latency}; "
               f"total wall {time.perf_counter() - t_start:.0f} s")
    per_seed = f" (one run per seed: --seed {' '.join(map(str, opt.seed))})" if len(opt.seed) > 1 else ""
    commands = "\n".join(f"- {r.model}: `{r.notes[0]}`{per_seed}" for r in rows if r.notes)
    report = f"{summary}\n\n{table(rows)}\n\n{commands}\n"
    print(report)
    (save_dir / "accuracy.md").write_text(report)
    (save_dir / "accuracy.json").write_text(json.dumps({"summary": summary, "rows": [asdict(r) for r in rows]},
                                                       indent=2))
    LOGGER.info(f"Results saved to {save_dir}")
    return rows


if __name__ == "__main__":
    from utils.core.cli import run_cli

    run_cli(main)
