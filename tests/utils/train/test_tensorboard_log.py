"""TensorBoard logging: train.py writes its results.csv columns as scalars into the run folder; the run's
plots go in as images; without the tensorboard package nothing happens and nothing breaks."""
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from utils.train.tensorboard_log import TensorBoardLogger

ROOT = Path(__file__).resolve().parents[3]


def events(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_training_logs_every_results_column(tmp_path):
    summary = train.run(data=str(ROOT / "data/coco8.yaml"), cfg=str(ROOT / "models/yolov5n-faster.yaml"), imgsz=64,
                        batch_size=4, workers=0, noplots=True, epochs=2, project=str(tmp_path))
    assert list(summary.save_dir.glob("events.out.tfevents.*")), "the event file sits in the run folder"
    logged = events(summary.save_dir)
    assert set(logged.Tags()["scalars"]) == set(train.RESULTS_COLUMNS[1:])
    csv_rows = np.loadtxt(summary.save_dir / "results.csv", delimiter=",", skiprows=1)
    for column, name in enumerate(train.RESULTS_COLUMNS):
        if column == 0:
            continue
        scalars = logged.Scalars(name)
        assert [s.step for s in scalars] == [0, 1]
        np.testing.assert_allclose([s.value for s in scalars], csv_rows[:, column], rtol=1e-4, atol=1e-6)
    assert logged.Scalars("train/box_loss")[0].value > 0 and logged.Scalars("x/lr0")[1].value > 0


def test_run_plots_are_logged_once_each(tmp_path):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    for name in ("train_batch0.jpg", "train_batch1.jpg", "labels.jpg", "confusion_matrix.png"):
        cv2.imwrite(str(tmp_path / name), picture)
    logger = TensorBoardLogger(tmp_path)
    logger.log_new_images(step=0)
    cv2.imwrite(str(tmp_path / "results.png"), picture)
    logger.log_new_images(step=3)  # only results.png is new
    logger.close()
    images = events(tmp_path)
    assert set(images.Tags()["images"]) == {"train_batch0", "train_batch1", "labels", "results"}
    assert [(e.step, e.width, e.height) for e in images.Images("results")] == [(3, 60, 40)]
    assert len(images.Images("train_batch0")) == 1


def test_silent_without_tensorboard(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now raises ImportError
    logger = TensorBoardLogger(tmp_path)
    logger.log_scalars(["metrics/mAP_0.5"], [0.5], step=0)
    logger.log_new_images(step=0)
    logger.close()
    assert not logger.active and list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err == ""
