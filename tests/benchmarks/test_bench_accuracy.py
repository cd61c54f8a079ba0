"""bench_accuracy's bookkeeping: the last-epochs mean from either trainer's results.csv, one row per model from
several seeds, staging every split, and one scorer for ours and the peer. (The training and timing it drives
are measured, never asserted.)"""
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks import bench_accuracy as bench

ROOT = Path(__file__).resolve().parents[2]


def test_tail_mean_reads_our_padded_csv_and_ultralytics_csv(tmp_path):
    ours = tmp_path / "ours.csv"
    ours.write_text("      epoch,  metrics/mAP_0.5,metrics/mAP_0.5:0.95\n"
                    + "".join(f"{e:>11},{0.5:>17},{e / 100:>20}\n" for e in range(12)))
    theirs = tmp_path / "theirs.csv"
    theirs.write_text("epoch,time,metrics/mAP50(B),metrics/mAP50-95(B)\n1,3.0,0.4,0.2\n2,6.0,0.5,0.3\n")
    assert bench.tail_mean(ours) == pytest.approx(sum(range(2, 12)) / 10 / 100)  # the last 10 of 12 epochs
    assert bench.tail_mean(theirs) == pytest.approx(0.25)  # fewer epochs than 10: all of them


def test_seed_runs_merge_into_one_row():
    runs = [bench.Row("m", 0.3, 0.2, [0.2], 0.18, 100.0, 10.0, 900.0, notes=["--seed 0"]),
            bench.Row("m", 0.2, 0.1, [0.1], 0.08, 120.0, 8.0, 1000.0, notes=["--seed 1"])]
    row = bench.mean_over_seeds(runs)
    assert (row.map50, row.map50_95, row.map50_95_seeds) == (pytest.approx(0.25), pytest.approx(0.15), [0.2, 0.1])
    assert row.tail_map50_95 == pytest.approx(0.13) and row.train_peak_rss_mb == 1000.0
    assert "| m | 0.250 | 0.150 | 0.200 / 0.100 | 0.130 |" in bench.table([row])
    opt = bench.parse_opt(["--seed", "0", "1", "--models"])
    assert opt.seed == [0, 1] and opt.models == [] and bench.run_tag("m", 1, opt) == "m-seed1"
    assert bench.run_tag("m", 0, bench.parse_opt([])) == "m"


def test_default_data_is_shipped():
    """With no --data the script runs on a clone alone: the default YAML and its splits are in the repository."""
    from utils.data.dataset import check_dataset

    data = Path(bench.parse_opt([]).data).resolve()
    assert data.is_relative_to(ROOT) and data.is_file()
    splits = check_dataset(data)
    assert all(Path(p).resolve().is_relative_to(ROOT) and Path(p).is_dir() for p in splits["train"] + splits["val"])


def test_rows_without_latency_render_dashes_and_rows_with_it_a_ratio():
    untimed = bench.Row("m", 0.3, 0.2, [0.2], 0.18, 100.0, 10.0, 900.0)  # --latency-runs 0
    timed = bench.Row("p", 0.3, 0.2, [0.2], 0.18, 100.0, 10.0, 900.0, onnx_ms=31.0, latency_vs_peer=0.65)
    lines = bench.table([untimed, timed]).splitlines()
    assert lines[2].endswith("| 900 | — | — |") and lines[3].endswith("| 900 | 31.0 | 0.65x |")
    assert bench.parse_opt([]).device == "cpu" and bench.parse_opt(["--device", "0"]).device == "0"


def test_every_split_the_yaml_names_is_staged(tmp_path):
    from utils.data.dataset import check_dataset

    data = tmp_path / "three.yaml"
    coco8 = {**yaml.safe_load((ROOT / "data/coco8.yaml").read_text()), "path": str(ROOT / "data/coco8")}
    data.write_text(yaml.safe_dump({**coco8, "test": "images/val"}))
    staged = bench.staged_dataset(data, tmp_path / "staged")
    d = yaml.safe_load(staged.read_text())
    assert (d["path"], d["train"], d["val"], d["test"]) == (str(tmp_path / "staged"), "images/train", "images/val",
                                                           "images/test")
    assert sorted(p.name for p in (tmp_path / "staged/images/test").iterdir()) == \
        sorted(p.name for p in (ROOT / "data/coco8/images/val").iterdir())
    assert sorted(p.name for p in (tmp_path / "staged/labels/test").iterdir()) == \
        sorted(p.name for p in (ROOT / "data/coco8/labels/val").glob("*.txt"))
    checked = check_dataset(staged)  # every split resolves inside the staging folder
    assert checked["test"] == [str((tmp_path / "staged/images/test").resolve())]
    # a split left empty (`test:` with no value) is not staged
    data.write_text(yaml.safe_dump({**coco8, "test": None}))
    staged = bench.staged_dataset(data, tmp_path / "staged2")
    assert yaml.safe_load(staged.read_text())["test"] is None and not (tmp_path / "staged2/images/test").exists()


def test_ours_and_the_peer_are_scored_by_one_function(tmp_path):
    from ultralytics import YOLO

    from models.yolo import DetectionModel
    from utils.data.dataset import check_dataset

    opt = bench.parse_opt(["--imgsz", "64", "--batch-size", "4", "--workers", "0"])
    torch.manual_seed(0)
    ours = DetectionModel(ROOT / "models/yolov5n-af.yaml", nc=80)
    ours.names = check_dataset(ROOT / "data/coco8.yaml")["names"]
    for model, peer in ((ours, False), (YOLO("yolov5nu.yaml").model, True)):
        map50, map50_95 = bench.val_map(model, ROOT / "data/coco8.yaml", opt, tmp_path / str(peer), peer=peer)
        assert 0.0 <= map50_95 <= map50 <= 1.0
    assert "COCO matching" in bench.SCORER


def test_hyp_set_overrides_the_recipe_and_bad_flags_are_one_line_errors(tmp_path):
    opt = bench.parse_opt(["--teacher", "t.pt", "--no-scratch", "--hyp-set", "kd_feat=1", "kd_cls=2.5"])
    assert opt.hyp_set == {"kd_feat": 1.0, "kd_cls": 2.5}
    hyp = yaml.safe_load(bench.recipe_hyp("yolov5n-pconv-lite2-af", opt, tmp_path, anchor_free=True).read_text())
    assert (hyp["kd_feat"], hyp["kd_cls"], hyp["lr0"]) == (1.0, 2.5, opt.lr0)
    for argv, message in ((["--hyp-set", "kd_feat"], "--hyp-set kd_feat: expected KEY=NUMBER"),
                          (["--hyp-set", "=1"], "--hyp-set =1: expected KEY=NUMBER"),
                          (["--hyp-set", "kd_feat=x"], "--hyp-set kd_feat=x: expected KEY=NUMBER"),
                          (["--no-scratch"], "--no-scratch trains distilled rows only: it needs --teacher")):
        with pytest.raises(bench.UserInputError, match=message):
            bench.parse_opt(argv)


def test_teacher_epochs_train_the_named_teacher_longer_and_its_cost_counts(tmp_path, monkeypatch):
    seen = {}

    def fake_train(name, data, opt, out, n_train, seed, teacher=None):
        seen.update(name=name, epochs=opt.epochs, seed=seed)
        return bench.Row(name, train_s=123.0)

    monkeypatch.setattr(bench, "train_ours", fake_train)
    opt = bench.parse_opt(["--epochs", "25", "--seed", "1", "2", "--teacher", "yolov5n-af", "--teacher-epochs", "75"])
    teacher, row = bench.prepare_teacher(opt, tmp_path / "data.yaml", tmp_path, 10)
    assert seen == {"name": "yolov5n-af", "epochs": 75, "seed": 1}
    assert opt.epochs == 25  # the students keep the recipe's epochs
    assert (teacher.name, teacher.train_s) == ("yolov5n-af-75ep", 123.0)
    assert row.model == "yolov5n-af (teacher, seed 1, 75 epochs)"
    for argv, message in ((["--teacher-epochs", "75"], "--teacher-epochs .* it needs --teacher NAME"),
                          (["--teacher", "t.pt", "--teacher-epochs", "75"], "it needs --teacher NAME"),
                          (["--teacher", "yolov5n-af", "--teacher-epochs", "-1"], "--teacher-epochs -1: expected 0")):
        with pytest.raises(bench.UserInputError, match=message):
            bench.parse_opt(argv)


def test_pretrained_rows_fine_tune_the_file_and_its_runs_teach_and_seed_the_students(tmp_path, monkeypatch):
    """--pretrained FILE trains `--weights FILE` with its head kind's hyp, per seed; with --teacher FILE each
    seed's students learn from that seed's fine-tuned run (its cost added to theirs), and --inherit also starts
    them from its weights."""
    from models.yolo import DetectionModel
    from utils.weights.checkpoint import build_checkpoint, save_checkpoint
    pretrained = tmp_path / "yolov5n.pt"
    save_checkpoint(build_checkpoint(DetectionModel("models/yolov5n.yaml", nc=80)), pretrained)
    commands = []
    monkeypatch.setattr(bench, "run_child", lambda cmd, log, threads: commands.append(cmd) or (100.0, 500.0))
    monkeypatch.setattr("utils.weights.checkpoint.load_model", lambda *a, **k: None)
    monkeypatch.setattr(bench, "val_map", lambda *a, **k: (0.5, 0.3))
    monkeypatch.setattr(bench, "tail_mean", lambda path: 0.25)
    opt = bench.parse_opt(["--seed", "0", "1", "--pretrained", str(pretrained), "--teacher", str(pretrained),
                           "--inherit", "--models", "yolov5n-lite2-fasterneck-af"])
    row, teachers = bench.fine_tune_pretrained(tmp_path / "data.yaml", opt, tmp_path, 10)
    assert row.model == "yolov5n.pt fine-tuned" and row.map50_95_seeds == [0.3, 0.3]
    assert commands[0][commands[0].index("--weights") + 1] == str(pretrained) and "--cfg" not in commands[0]
    assert commands[0][commands[0].index("--hyp") + 1].endswith("hyp.yolov5n.pt.yaml")
    assert "hyp.scratch-low.yaml" in (tmp_path / "hyp.yolov5n.pt.yaml").read_text()  # an anchor file's hyp
    assert teachers[1].path == tmp_path / "yolov5n.pt-ft-seed1/weights/best.pt" and teachers[1].train_s == 100.0
    student = bench.train_ours("yolov5n-lite2-fasterneck-af", tmp_path / "data.yaml", opt, tmp_path, 10, 1,
                               teachers[1], str(teachers[1].path))
    cmd = commands[-1]
    assert cmd[cmd.index("--cfg") + 1] == "models/yolov5n-lite2-fasterneck-af.yaml"
    assert cmd[cmd.index("--weights") + 1] == cmd[cmd.index("--teacher") + 1] == str(teachers[1].path)
    assert student.model == "yolov5n-lite2-fasterneck-af inherited + distilled from yolov5n.pt fine-tuned"
    assert student.train_s == 200.0  # the student's 100 s and its teacher's
    with pytest.raises(bench.UserInputError, match="--inherit starts students from the teacher's weights"):
        bench.parse_opt(["--inherit", "--teacher", "yolov5n-af"])


@pytest.mark.parametrize("inherit, rows", [
    ([], ["m distilled"]),
    (["--inherit"], ["m distilled", "m inherited + distilled"]),
    (["--inherit", "only"], ["m inherited + distilled"])])
def test_inherit_only_trains_the_inherited_row_alone(tmp_path, monkeypatch, inherit, rows):
    """--inherit trains each student distilled and inherited + distilled; --inherit only skips the distilled-only
    row, so a row measured before is not paid for again."""
    def fake_train(name, data, opt, out, n_train, seed, teacher=None, weights=""):
        kind = "inherited + distilled" if weights else "distilled"
        return bench.Row(f"{name} {kind}", 0.5, 0.3, [0.3], 0.2, 10.0, 1.0, 100.0, notes=[f"--seed {seed}"])

    teacher = bench.Teacher("t.pt", tmp_path / "t.pt", 0.0)
    monkeypatch.setattr(bench, "staged_dataset", lambda src, dst: (dst / "images/train").mkdir(parents=True) or dst)
    monkeypatch.setattr(bench, "fine_tune_pretrained",
                        lambda data, opt, out, n: (bench.Row("t.pt fine-tuned"), {s: teacher for s in opt.seed}))
    monkeypatch.setattr(bench, "train_ours", fake_train)
    out = bench.main(["--models", "m", "--pretrained", "t.pt", "--teacher", "t.pt", "--no-scratch", "--peer", "",
                      "--latency-runs", "0", "--project", str(tmp_path), *inherit])
    assert [r.model for r in out] == ["t.pt fine-tuned", *rows]
