"""data/hyps/*.yaml carry yolov5's keys with comments; `train.py --hyp` takes them or a user's file and names
unknown keys (typos) instead of silently training with defaults."""
from pathlib import Path

import pytest
import yaml

import train
from utils.core.cli import run_cli
import utils.train.hyp as hyp_module

ROOT = Path(__file__).resolve().parents[2]
YOLOV5_KEYS = ("lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr",
               "box", "cls", "cls_pw", "obj", "obj_pw", "iou_t", "anchor_t", "fl_gamma", "hsv_h", "hsv_s", "hsv_v",
               "degrees", "translate", "scale", "shear", "perspective", "flipud", "fliplr", "mosaic", "mixup",
               "copy_paste")


@pytest.mark.parametrize("level", ["low", "med", "high"])
def test_scratch_hyps_have_yolov5_keys_with_comments(level):
    path = ROOT / f"data/hyps/hyp.scratch-{level}.yaml"
    hyp = hyp_module.load_hyp(path)
    assert tuple(hyp) == YOLOV5_KEYS, "yolov5's keys, in yolov5's order"
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    assert all("  # " in ln for ln in lines), "every value says what it does"


def test_levels_differ_where_yolov5s_do():
    low, med, high = (hyp_module.load_hyp(ROOT / f"data/hyps/hyp.scratch-{x}.yaml") for x in ("low", "med", "high"))
    assert low["mixup"] <= med["mixup"] <= high["mixup"] and low["scale"] <= med["scale"] <= high["scale"]
    assert (low["lrf"], med["lrf"], high["lrf"]) == (0.01, 0.1, 0.1)


def test_user_file_is_accepted_and_unknown_keys_are_one_line_errors(tmp_path, capsys):
    hyp = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-med.yaml").read_text())
    user = tmp_path / "my_hyp.yaml"
    user.write_text(yaml.safe_dump({**hyp, "lr0": 0.02}))
    assert hyp_module.load_hyp(user)["lr0"] == 0.02
    user.write_text(yaml.safe_dump({**hyp, "lr_0": 0.02, "colour_jitter": 0.1}))
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: train.main(["--hyp", str(user), "--cfg", "models/yolov5n-faster.yaml", "--epochs", "1",
                                    "--project", str(tmp_path / "runs")]))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert err == f"error: --hyp {user}: unknown key(s) colour_jitter, lr_0 (did you mean lr0?)"  # safe_dump sorts
    assert not (tmp_path / "runs").exists(), "no run folder for a rejected hyp file"
