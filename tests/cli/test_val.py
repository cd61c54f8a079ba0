"""val.py end to end: an oracle model through the real dataloader (exact mAP, pycocotools agreement),
an untrained checkpoint through the CLI (run folder, table, files), and the bad-input messages."""
import inspect
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

import val
from deploy.errors import UserInputError
from utils.core.assets import DEMO_DATA, DEMO_WEIGHTS
from utils.data.dataset import check_dataset, create_dataloader
from utils.metrics.ap import ap_per_class, score_image
from utils.metrics.coco_eval import category_ids, evaluate_coco, image_id, labels_to_coco_gt, yolo_ground_truth
from utils.weights.checkpoint import build_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
COCO8 = ROOT / "data/coco8.yaml"



pytestmark = pytest.mark.usefixtures("one_torch_thread")


class OracleModel(nn.Module):
    """A stand-in detector that 'sees' the batch's labels: returns them (optionally perturbed) as predictions.

    It lets the test know the right answer for val's whole path: dataloader letterbox, box rescaling to
    the original image, matching, AP and the COCO json.
    """

    def __init__(self, names, rng=None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # gives val a device to read
        self.register_buffer("stride", torch.tensor([8.0, 16.0, 32.0]))
        self.names, self.nc, self.rng = list(names), len(names), rng
        self.targets = torch.zeros(0, 6)

    def forward(self, im, raw=False):
        b, _, h, w = im.shape
        rows = []
        for i in range(b):
            t = self.targets[self.targets[:, 0] == i].numpy()
            boxes = t[:, 2:6] * [w, h, w, h]
            cls = t[:, 1].astype(int)
            scores = np.ones(len(t))
            if self.rng is not None:
                keep = self.rng.random(len(t)) > 0.2
                boxes, cls = boxes[keep], cls[keep]
                boxes = boxes + self.rng.normal(0, 0.08, boxes.shape) * np.concatenate((boxes[:, 2:],) * 2, 1)
                scores = self.rng.uniform(0.3, 1.0, len(boxes))
                n_fp = 3
                fp = np.concatenate((self.rng.uniform(0, 1, (n_fp, 2)) * [w, h], self.rng.uniform(4, 30, (n_fp, 2))), 1)
                boxes, cls = np.concatenate((boxes, fp)), np.concatenate((cls, self.rng.integers(0, self.nc, n_fp)))
                scores = np.concatenate((scores, self.rng.uniform(0, 1, n_fp)))
            p = np.zeros((len(boxes), 5 + self.nc), np.float32)
            p[:, :4], p[:, 4] = boxes, 1.0
            p[np.arange(len(boxes)), 5 + cls] = scores
            rows.append(torch.from_numpy(p))
        n = max(len(r) for r in rows)
        pred = torch.zeros(b, n, 5 + self.nc)
        for i, r in enumerate(rows):
            pred[i, :len(r)] = r
        return (pred, []) if raw else pred


class OracleLoader:
    """Wraps the real dataloader and shows each batch's labels to the oracle."""

    def __init__(self, loader, model):
        self.loader, self.model = loader, model

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.model.targets = batch[1].clone()
            yield batch


def _coco8_gt_json(data):
    """COCO ground truth built straight from the label files, in original-image pixels."""
    images = []
    for img_path in sorted((ROOT / "data/coco8/images/val").glob("*.jpg")):
        h, w = cv2.imread(str(img_path)).shape[:2]
        rows = np.loadtxt(ROOT / "data/coco8/labels/val" / f"{img_path.stem}.txt", ndmin=2)
        xyxy = np.stack(((rows[:, 1] - rows[:, 3] / 2) * w, (rows[:, 2] - rows[:, 4] / 2) * h,
                         (rows[:, 1] + rows[:, 3] / 2) * w, (rows[:, 2] + rows[:, 4] / 2) * h), 1)
        images.append((image_id(img_path), w, h, np.concatenate((rows[:, :1], xyxy), 1)))
    return labels_to_coco_gt(images, category_ids(data["names"]), data["names"])


def _oracle_run(tmp_path, rng=None, **kw):
    data = check_dataset(COCO8)
    model = OracleModel(data["names"], rng)
    loader, _ = create_dataloader(data["val"], 128, 2, 32, pad=0.5, rect=True, workers=0, nc=80)
    return val.run(data=data, model=model, dataloader=OracleLoader(loader, model), save_dir=tmp_path,
                   plots=False, **kw)


def test_oracle_detections_score_exactly_one(tmp_path):
    r = _oracle_run(tmp_path)
    assert (r.precision, r.recall, r.map50, r.map50_95) == pytest.approx((1.0, 1.0, 1.0, 1.0))
    assert r.losses == (0.0, 0.0, 0.0) and len(r.times) == 3
    assert r.maps.shape == (80,) and r.maps[73] == pytest.approx(1.0)
    assert r.fitness() == pytest.approx(1.0) and r.csv_row() == pytest.approx((1.0,) * 4 + (0.0,) * 3)
    r = _oracle_run(tmp_path, single_cls=True)
    assert (r.precision, r.recall, r.map50, r.map50_95) == pytest.approx((1.0, 1.0, 1.0, 1.0))
    assert r.maps.shape == (1,)


def test_val_map_matches_pycocotools_on_saved_json(tmp_path):
    data = check_dataset(COCO8)
    coco_json = tmp_path / "instances_val.json"
    coco_json.write_text(json.dumps(_coco8_gt_json(data)))
    r = _oracle_run(tmp_path, rng=np.random.default_rng(1), save_json=True, coco_json=str(coco_json))
    map50, map50_95 = r.map50, r.map50_95
    rows = json.loads((tmp_path / "last_predictions.json").read_text())
    assert {r["image_id"] for r in rows} <= {139, 285, 632, 724}
    assert {r["category_id"] for r in rows} & {90, 84}, "COCO datasets use the 80→91 category ids"
    theirs = evaluate_coco(coco_json, rows, img_ids=[139, 285, 632, 724])
    assert 0.2 < map50_95 < 0.95
    assert abs(map50_95 - theirs["map"]) < 0.005 and abs(map50 - theirs["map50"]) < 0.005, (map50_95, map50, theirs)


def test_training_call_computes_losses_with_a_real_model(tmp_path):
    from models.yolo import DetectionModel
    from utils.train.loss import ComputeLoss

    data = check_dataset(COCO8)
    model = DetectionModel(ROOT / "models/yolov5n.yaml", nc=80)
    model.names = data["names"]
    hyp = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
    loader, _ = create_dataloader(data["val"], 64, 4, 32, pad=0.5, rect=True, workers=0, nc=80)
    model.train()
    r = val.run(data=data, model=model, dataloader=loader, compute_loss=ComputeLoss(model, hyp, 64), plots=False,
                save_dir=tmp_path)
    box, obj, cls = r.losses
    assert box > 0 and obj > 0 and cls > 0
    assert 0.0 <= r.map50_95 <= r.map50 <= 1.0
    assert model.training, "val must hand the model back in the mode it got it"
    assert next(model.parameters()).dtype == torch.float32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained yolov5n checkpoint with COCO names, saved in the project's checkpoint format."""
    from models.yolo import DetectionModel

    model = DetectionModel(ROOT / "models/yolov5n.yaml", nc=80)
    model.names = check_dataset(COCO8)["names"]
    return save_checkpoint(build_checkpoint(model), tmp_path_factory.mktemp("weights") / "v5n.pt")




def test_a_run_that_writes_nothing_names_no_results_folder(checkpoint, tmp_path, log_text):
    """export.py scores each file in a temporary folder without plots or files: val must not point the user at it."""
    val.run(weights=str(checkpoint), data=COCO8, imgsz=32, batch_size=4, workers=0, plots=False,
            project=tmp_path, name="quiet")
    assert "Results saved to" not in log_text.text
    val.run(weights=str(checkpoint), data=COCO8, imgsz=32, batch_size=4, workers=0, plots=True,
            project=tmp_path, name="loud")
    assert f"Results saved to {tmp_path / 'loud'}" in log_text.text


def test_run_and_cli_default_to_the_same_data():
    """val.run() without data validates what `python val.py` without --data does: the demo's data."""
    assert inspect.signature(val.run).parameters["data"].default == Path(val.parse_opt([]).data) == DEMO_DATA


def test_cli_writes_run_folder_table_and_files(checkpoint, tmp_path, log_text, monkeypatch):
    monkeypatch.setattr(logging.getLogger("deploy"), "propagate", True)  # the --imgsz rule logs there
    log_text.set_level(logging.INFO, logger="deploy")
    argv = ["--weights", str(checkpoint), "--data", str(COCO8), "--imgsz", "20", "--batch-size", "2",
            "--conf-thres", "0.0", "--max-det", "20", "--project", str(tmp_path), "--workers", "0",
            "--save-json", "--save-conf", "--verbose"]
    val.main(argv)
    save_dir = tmp_path / "exp"
    text = log_text.text
    lines = [line.split() for m in log_text.messages for line in m.splitlines()]
    assert "--imgsz 20 must be a multiple of max stride 32, updating to 32" in text
    assert "Class     Images  Instances          P          R      mAP50   mAP50-95" in text
    assert ["all", "4", "42"] in [line[:3] for line in lines]
    assert ["book", "2", "15"] in [line[:3] for line in lines], "--verbose rows"
    assert "per image at shape (2, 3, 32, 32)" in text
    for f in ("confusion_matrix.png", "PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png",
              "val_batch0_labels.jpg", "val_batch0_pred.jpg", "val_batch1_labels.jpg", "val_batch1_pred.jpg"):
        assert cv2.imread(str(save_dir / f)) is not None, f
    rows = json.loads((save_dir / "v5n_predictions.json").read_text())
    assert len(rows) == 4 * 20 and {r["image_id"] for r in rows} == {139, 285, 632, 724}
    assert set(rows[0]) == {"image_id", "category_id", "bbox", "score"}
    labels = sorted((save_dir / "labels").glob("*.txt"))
    assert [p.stem for p in labels] == ["000000000139", "000000000285", "000000000632", "000000000724"]
    line = labels[0].read_text().splitlines()[0].split()
    assert len(line) == 6 and all(0.0 <= float(v) <= 1.0 for v in line[1:])

    val.main(argv[:-3] + ["--task", "speed"])
    assert (tmp_path / "exp2").is_dir(), "a second run must not reuse exp"
    assert not list((tmp_path / "exp2").glob("*.json")), "speed task saves no json"


def test_augment_runs_through_tta(checkpoint, tmp_path):
    r = val.run(data=COCO8, weights=checkpoint, imgsz=64, batch_size=4, workers=0, augment=True, plots=False,
                project=tmp_path)
    assert 0.0 <= r.map50_95 <= r.map50 <= 1.0 and r.times[1] > 0


def _cli_error(argv, capsys):
    from utils.core.cli import run_cli

    with pytest.raises(SystemExit) as e:
        run_cli(lambda: val.main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_weights_file_that_is_not_a_checkpoint(tmp_path):
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"this is not a checkpoint")
    proc = subprocess.run([sys.executable, str(ROOT / "val.py"), "--weights", str(fake), "--data", str(COCO8),
                           "--project", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr == (f"error: {fake}: not a PConv-YOLO checkpoint: a text file (starts 'this is not a "
                           f"checkpoint'), not a PyTorch checkpoint\n"), proc.stderr


def test_data_yaml_without_val_split(checkpoint, tmp_path, capsys):
    no_val = tmp_path / "noval.yaml"
    no_val.write_text(yaml.safe_dump({"path": str(ROOT / "data/coco8"), "train": "images/train",
                                      "names": ["person"]}))
    err = _cli_error(["--weights", str(checkpoint), "--data", str(no_val), "--project", str(tmp_path)], capsys)
    assert str(no_val) in err and "val" in err


def test_missing_test_split_and_class_count_mismatch(checkpoint, tmp_path, capsys):
    err = _cli_error(["--weights", str(checkpoint), "--data", str(COCO8), "--task", "test",
                      "--project", str(tmp_path)], capsys)
    assert "no 'test' split" in err
    three = tmp_path / "three.yaml"
    three.write_text(yaml.safe_dump({"path": str(ROOT / "data/coco8"), "train": "images/train", "val": "images/val",
                                     "names": ["a", "b", "c"]}))
    err = _cli_error(["--weights", str(checkpoint), "--data", str(three), "--project", str(tmp_path)], capsys)
    assert "model has 80 classes" in err and "has 3" in err


def test_bad_task_and_missing_coco_json(checkpoint, tmp_path):
    with pytest.raises(UserInputError, match="--task study"):
        val.run(data=COCO8, weights=checkpoint, task="study", project=tmp_path)
    with pytest.raises(UserInputError, match="--conf-thres 1.5: must be between 0 and 1"):
        val.run(data=COCO8, weights=checkpoint, conf_thres=1.5, project=tmp_path)
    with pytest.raises(UserInputError, match="--coco-json: COCO annotation file .*nope.json not found"):
        val.run(data=COCO8, weights=checkpoint, imgsz=64, save_json=True, coco_json=str(tmp_path / "nope.json"),
                project=tmp_path, workers=0)
    with_key = tmp_path / "with_key.yaml"
    with_key.write_text(yaml.safe_dump({**yaml.safe_load(COCO8.read_text()), "path": str(ROOT / "data/coco8"),
                                        "coco_json": "annotations/instances_val.json"}))
    with pytest.raises(UserInputError, match=r"with_key.yaml: coco_json: .*coco8/annotations/instances_val.json"):
        val.run(data=with_key, weights=checkpoint, imgsz=64, save_json=True, project=tmp_path, workers=0)
    assert not (tmp_path / "exp").exists(), "no run folder is left behind by bad input"


def test_onnx_model_validates_at_its_export_size(checkpoint, tmp_path, log_text):
    from utils.weights.checkpoint import load_model
    from utils.infer.exporters import export_metadata, export_onnx, prepare_for_export

    model = prepare_for_export(load_model(checkpoint))
    onnx_path = export_onnx(model, torch.zeros(1, 3, 32, 32), tmp_path / "v5n.onnx",
                            export_metadata(model, (32, 32), 1, "fp32", nms=False))
    r = val.run(data=COCO8, weights=onnx_path, imgsz=64, batch_size=2, conf_thres=0.0, workers=0, project=tmp_path,
                plots=False)
    assert 0.0 <= r.map50_95 <= r.map50 <= 1.0 and r.maps.shape == (80,)
    assert "--imgsz 64: v5n.onnx takes 32 only, using that" in log_text.text
    assert "per image at shape (2, 3, 32, 32)" in log_text.text


def test_torch_work_runs_on_one_thread_beside_a_cpu_runtime(checkpoint, tmp_path, monkeypatch):
    """val's torch work (each batch's /255, NMS, matching) beside ONNX Runtime on the CPU runs on one thread: torch's
    spinning workers would take the runtime's cores. Its own thread count comes back after the run."""
    from utils.infer.backends import EngineBackend
    from utils.infer.exporters import export_metadata, export_onnx, prepare_for_export
    from utils.weights.checkpoint import load_model

    model = prepare_for_export(load_model(checkpoint))
    onnx_path = export_onnx(model, torch.zeros(1, 3, 32, 32), tmp_path / "v5n.onnx",
                            export_metadata(model, (32, 32), 1, "fp32", nms=False))
    seen, forward = [], EngineBackend._forward
    monkeypatch.setattr(EngineBackend, "_forward", lambda self, im: seen.append(torch.get_num_threads())
                        or forward(self, im))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        val.run(data=COCO8, weights=onnx_path, batch_size=2, workers=0, project=tmp_path, plots=False)
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_no_classes_flag(capsys):
    """yolov5's val.py has no --classes: a filter is refused up front rather than scoring a subset silently."""
    with pytest.raises(SystemExit) as exc:
        val.parse_opt(["--classes", "99"])
    assert exc.value.code == 2 and "unrecognized arguments: --classes 99" in capsys.readouterr().err


def test_demo_model_map_is_pycocotools_map_by_default(tmp_path, log_text):
    # `python val.py --save-json` with its defaults: the shipped demo model on coco128-person val
    opt = val.parse_opt(["--save-json", "--project", str(tmp_path), "--workers", "0"])
    assert (opt.weights, opt.data, opt.matching) == ([str(DEMO_WEIGHTS)], str(DEMO_DATA), "coco")
    r = val.run(**vars(opt), plots=False)
    map50, map50_95 = r.map50, r.map50_95
    assert "mAP matching: coco (COCO rule" in log_text.text
    data = check_dataset(DEMO_DATA)
    gt = yolo_ground_truth(data["val"], data["nc"])
    rows = json.loads((tmp_path / "exp" / f"{DEMO_WEIGHTS.stem}_predictions.json").read_text())
    theirs = evaluate_coco(labels_to_coco_gt(gt, category_ids(data["names"]), data["names"]), rows,
                           img_ids=[g[0] for g in gt])
    assert 0.05 < theirs["map50"] < 0.5, theirs
    assert abs(map50 - theirs["map50"]) < 0.005 and abs(map50_95 - theirs["map"]) < 0.005, (map50, map50_95, theirs)
    # yolov5's rule (--matching yolo) on the same detections scores this weak model far below pycocotools
    by_image = {g[0]: [] for g in gt}
    for r in rows:
        x, y, w, h = r["bbox"]
        by_image[r["image_id"]].append([x, y, x + w, y + h, r["score"], r["category_id"]])
    stats = [[t.numpy() for t in score_image(torch.tensor(by_image[g[0]]).view(-1, 6), torch.tensor(g[3]), "yolo")]
             for g in gt]
    yolo = ap_per_class(*(np.concatenate(x) for x in zip(*stats)))
    assert theirs["map50"] - yolo.map50 > 0.03, (yolo.map50, theirs)


def test_matching_flag_picks_the_rule_and_says_which(checkpoint, tmp_path, log_text):
    assert val.parse_opt(["--matching", "yolo"]).matching == "yolo"
    val.run(data=COCO8, weights=checkpoint, imgsz=32, conf_thres=0.0, project=tmp_path, workers=0, plots=False,
            matching="yolo")
    assert "mAP matching: yolo (yolov5/ultralytics rule: highest IoU first, all detections)" in log_text.text
    with pytest.raises(UserInputError, match="--matching voc: expected one of coco, yolo"):
        val.run(data=COCO8, weights=checkpoint, matching="voc", project=tmp_path)
    with pytest.raises(SystemExit):
        val.parse_opt(["--matching", "voc"])
