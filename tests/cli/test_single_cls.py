"""--single-cls on labels whose class ids exceed the data YAML's names: yolov5 maps every class to 0."""
import shutil
from pathlib import Path

import pytest
import yaml

import train
import val
from deploy.errors import UserInputError
from utils.core.assets import DEMO_WEIGHTS
from utils.data.dataset import check_dataset, create_dataloader, single_cls_names
from utils.weights.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def class45_data(tmp_path) -> Path:
    """coco8's train images, every label row re-numbered to class 45, and a data YAML with one name."""
    for src in sorted((ROOT / "data/coco8/images/train").glob("*.jpg")):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "labels").mkdir(exist_ok=True)
        shutil.copy(src, tmp_path / "images" / src.name)
        rows = (ROOT / "data/coco8/labels/train" / f"{src.stem}.txt").read_text().split("\n")
        rows = [r.split(" ", 1)[1] for r in rows if r.strip()]
        text = "".join(f"45 {box}\n" for box in rows)
        (tmp_path / "labels" / f"{src.stem}.txt").write_text(text)
    data = tmp_path / "one-name.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images", "val": "images", "names": ["thing"]}))
    return data


def label_rows(data: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (data.parent / "labels").glob("*.txt"))


def test_loader_keeps_any_class_under_single_cls(class45_data):
    images = str(class45_data.parent / "images")
    _, ds = create_dataloader(images, 64, 4, 32, workers=0, nc=1, single_cls=True)
    assert len(ds) == 4 and ds.report.corrupt == 0
    assert sum(len(lb) for lb in ds.labels) == label_rows(class45_data)
    assert all((lb[:, 0] == 0).all() for lb in ds.labels)
    with pytest.raises(UserInputError, match="no valid images among 4"):  # without the flag, 45 is not a class
        create_dataloader(images, 64, 4, 32, workers=0, nc=1)
    first = next((class45_data.parent / "labels").glob("*.txt"))
    first.write_text("-1 0.5 0.5 0.2 0.2\n")  # negative ids stay corrupt even under --single-cls
    _, ds = create_dataloader(images, 64, 4, 32, workers=0, nc=1, single_cls=True)
    assert len(ds) == 3 and any(f"{first}: line 1: class id -1 is negative" in m for m in ds.report.messages)


def test_train_and_val_single_cls_on_class_45(class45_data, tmp_path, log_text):
    summary = train.run(data=str(class45_data), cfg="models/yolov5n-faster.yaml", imgsz=64, batch_size=4, workers=0,
                        noplots=True, epochs=1, single_cls=True, project=str(tmp_path / "train"))
    assert summary.epochs_run == 1 and summary.best.is_file()
    assert load_checkpoint(summary.best)["names"] == ["thing"]  # the YAML's only name, as in val below
    log_text.clear()
    val.run(data=str(class45_data), weights=str(DEMO_WEIGHTS), imgsz=64,
            single_cls=True, workers=0, plots=False, project=str(tmp_path / "val"))
    all_row = next(r.getMessage().split() for r in log_text.records if r.getMessage().split()[:1] == ["all"])
    assert all_row[1:3] == ["4", str(label_rows(class45_data))]  # images, instances: every class-45 box counted


def test_val_names_the_single_class_as_train_does(class45_data):
    """One rule for both: a data YAML's only name stays, several names become 'item' (yolov5's train.py)."""
    assert single_cls_names(["thing"]) == ["thing"] and single_cls_names(["cat", "dog"]) == ["item"]
    one_name, coco8 = check_dataset(class45_data), check_dataset(ROOT / "data/coco8.yaml")
    assert val._class_names(["person"], one_name, True, "--weights x.pt") == ["thing"]
    assert val._class_names(["person"], coco8, True, "--weights x.pt") == ["item"]
