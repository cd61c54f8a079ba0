"""`--weights a.pt b.pt`: predictions of every model concatenated before NMS (yolov5's NMS ensemble)."""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import detect
import val
from deploy.errors import UserInputError
from models.yolo import DetectionModel, load_model_yaml
from utils.core.log import LOGGER_NAME
from utils.infer.backend_base import Backend
from utils.infer.backends import ModelBackend, load_backend
from utils.infer.ensemble import Ensemble
from utils.weights.checkpoint import build_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[3]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(seed: int, names=("blob",)) -> DetectionModel:
    """yolov5n-faster at 1/4 width: random weights, but a real architecture and head."""
    torch.manual_seed(seed)
    cfg = load_model_yaml(ROOT / "models/yolov5n-faster.yaml")
    cfg["width_multiple"] = 0.0625
    model = DetectionModel(cfg, nc=len(names))
    model.names = list(names)
    return model


@pytest.fixture(scope="module")
def blobs(blob_data, tmp_path_factory):
    """(data YAML, a.pt, b.pt): the shared blob data and two untrained 1-class models."""
    root = tmp_path_factory.mktemp("blob_models")
    a, b = (save_checkpoint(build_checkpoint(tiny_model(s)), root / f"{n}.pt") for s, n in ((0, "a"), (1, "b")))
    return blob_data, a, b


class EndToEndBackend(Backend):
    def __init__(self, names):
        super().__init__(Path("nms.onnx"), torch.device("cpu"))
        self.names, self.end_to_end = list(names), True


def test_outputs_are_concatenated_in_member_order():
    a, b = ModelBackend(tiny_model(0)), ModelBackend(tiny_model(1))
    ensemble = load_backend([a, b])
    assert isinstance(ensemble, Ensemble) and ensemble.names == ["blob"] and ensemble.stride == 32
    im = torch.rand(2, 3, 64, 96)
    out = ensemble(im)
    pa, pb = a(im), b(im)
    assert out.shape == (2, pa.shape[1] + pb.shape[1], 6)
    assert torch.equal(out[:, :pa.shape[1]], pa) and torch.equal(out[:, pa.shape[1]:], pb)
    assert not ensemble.cpu_runtime  # torch computes these members: it keeps its threads
    b.cpu_runtime = True  # one member in another runtime: the .pt member still needs torch's threads
    assert not load_backend([a, b]).cpu_runtime
    a.cpu_runtime = True
    assert load_backend([a, b]).cpu_runtime


def test_members_must_agree_on_classes_stride_and_raw_output():
    blob, other = ModelBackend(tiny_model(0)), ModelBackend(tiny_model(1, names=("cat", "dog")))
    with pytest.raises(UserInputError, match="must share class names"):
        Ensemble([blob, other])
    coarse = ModelBackend(tiny_model(1))
    coarse.stride = 64
    with pytest.raises(UserInputError, match=r"must share the stride \(32 vs 64\)"):
        Ensemble([blob, coarse])
    with pytest.raises(UserInputError, match="nms.onnx: exported with NMS inside"):
        Ensemble([blob, EndToEndBackend(["blob"])])


def _table_numbers(r: val.ValResult) -> tuple[float, float, float, float]:
    """What val's 'all' row prints: P, R, mAP50, mAP50-95."""
    return r.precision, r.recall, r.map50, r.map50_95


def test_val_ensemble_reports_its_map(blobs, tmp_path, caplog):
    data, a, b = blobs
    logger = logging.getLogger(LOGGER_NAME)
    logger.propagate = True
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    try:
        opts = dict(data=data, imgsz=128, batch_size=4, workers=0, plots=False, project=tmp_path)
        single_a = _table_numbers(val.run(weights=a, **opts))
        argv = ["--weights", str(a), str(b), "--data", str(data), "--imgsz", "128", "--batch-size", "4",
                "--workers", "0", "--project", str(tmp_path), "--save-json"]
        both = _table_numbers(val.run(**vars(val.parse_opt(argv)), plots=False))
        self_pair = _table_numbers(val.run(weights=[a, a], **opts))
    finally:
        logger.propagate = False
    text = caplog.text
    assert "Ensemble of 2 models (a.pt, b.pt): predictions concatenated before NMS" in text
    rows = [line.split() for m in caplog.messages for line in m.splitlines() if line.split()[:1] == ["all"]]
    assert len(rows) == 3 and float(rows[1][5]) == pytest.approx(both[2], abs=6e-3), "the table shows the mAP50"
    assert both[2] > 0 and both != single_a
    assert self_pair == pytest.approx(single_a), "a model paired with itself: NMS removes the exact duplicates"
    assert (tmp_path / "exp2" / "ensemble_predictions.json").is_file(), "the CLI run saved its json"


def test_detect_ensemble_runs_and_keeps_duplicates_out(blobs, tmp_path):
    from utils.infer.predictor import Detector

    _, a, b = blobs
    image = str(ROOT / "data/images/bus.jpg")
    options = dict(imgsz=128, conf=0.001, iou=0.5)
    single = Detector(a, **options)(image)[0]
    doubled = Detector([a, a], **options)(image)[0]
    rows = [np.concatenate((r.xyxy, r.conf[:, None], r.cls[:, None]), 1) for r in (single, doubled)]
    sorted_rows = [r[np.lexsort(r.T[::-1])] for r in rows]  # equal scores may come out of NMS in any order
    assert len(single) > 0 and np.allclose(*sorted_rows), "a model paired with itself: duplicates removed"
    save_dir = detect.run(weights=[str(a), str(b)], source=image, imgsz=[128], conf_thres=0.001,
                          project=str(tmp_path), save_txt=True)
    assert (save_dir / "bus.jpg").is_file() and (save_dir / "labels/bus.txt").read_text().strip()
    with pytest.raises(UserInputError, match="missing.pt: file not found"):
        detect.run(weights=[str(a), str(tmp_path / "missing.pt")], source=image, project=str(tmp_path))
