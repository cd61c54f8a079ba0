"""The one --imgsz rule (deploy.imgsz) and how the runner's Detector applies it to dynamic and fixed-size files."""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy.cli import run_cli
from deploy.detector import network_input_hw as detector_imgsz
from deploy.errors import UserInputError
from deploy.imgsz import round_imgsz, round_to_stride


@pytest.fixture
def warnings(caplog, monkeypatch):
    """The deploy logger's warnings (it does not propagate outside tests)."""
    monkeypatch.setattr(logging.getLogger("deploy"), "propagate", True)
    caplog.set_level(logging.INFO, logger="deploy")
    return lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_rounds_up_to_the_stride_and_says_so(warnings):
    assert round_to_stride(64, 32) == 64 and not warnings()
    assert round_to_stride(65, 32) == 96
    assert warnings() == ["WARNING: --imgsz 65 must be a multiple of max stride 32, updating to 96"]
    assert round_to_stride(1, 64) == 64


def test_one_value_is_square_two_are_height_width(warnings):
    assert round_imgsz(100, 32) == (128, 128)
    assert round_imgsz([100], 32) == (128, 128)
    assert round_imgsz([320, 200], 32) == (320, 224)
    assert round_imgsz((64, 96), 32) == (64, 96)


def test_a_square_size_warns_once(warnings):
    round_imgsz([100], 32)
    round_imgsz([100, 100], 32)
    assert warnings() == ["WARNING: --imgsz 100 must be a multiple of max stride 32, updating to 128"] * 2


@pytest.mark.parametrize("imgsz, message", [
    ([1, 2, 3], "imgsz 1 2 3: expected one or two sizes"),
    ([], "imgsz : expected one or two sizes"),
    ([0], "imgsz 0: must be a positive number of pixels"),
    ([64, -32], "imgsz -32: must be a positive number of pixels"),
])
def test_bad_values_name_the_value(imgsz, message):
    with pytest.raises(UserInputError) as e:
        round_imgsz(imgsz, 32)
    assert str(e.value) == message


def test_a_cli_shows_its_flag_in_the_values_place(capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: round_to_stride(0, 32))
    assert e.value.code == 2 and capsys.readouterr().err == "error: --imgsz 0: must be a positive number of pixels\n"


def fake_engine(dynamic: bool, hw: tuple[int, int] = (64, 64)) -> SimpleNamespace:
    return SimpleNamespace(dynamic=dynamic, input_hw=hw, path=Path("m.onnx"),
                           info=SimpleNamespace(stride=32, imgsz=hw))


def test_runner_detector_rounds_for_dynamic_files_and_keeps_a_fixed_size(warnings):
    assert detector_imgsz(None, fake_engine(True, (64, 96))) == (64, 96)
    assert detector_imgsz([100], fake_engine(True)) == (128, 128) and len(warnings()) == 1
    assert detector_imgsz(None, fake_engine(False)) == (64, 64)
    assert detector_imgsz([64, 64], fake_engine(False)) == (64, 64)
    with pytest.raises(UserInputError, match="^imgsz 100: m.onnx takes a fixed 64x64 input"):
        detector_imgsz([100], fake_engine(False))
    with pytest.raises(UserInputError, match="^imgsz 0: must be a positive"):
        detector_imgsz([0], fake_engine(False))


def test_a_size_far_above_the_models_own_warns_once_with_the_cost(warnings):
    from deploy.imgsz import warn_far_from_trained
    warn_far_from_trained((1280, 1280), 320)  # 4x: large but plausible
    assert not warnings()
    warn_far_from_trained((8192, 8192), (320, 320))
    (line,) = warnings()
    assert line.startswith("WARNING: --imgsz 8192 is 26x the 320 px the model was trained at") and "655x more" in line


def test_the_runner_warns_for_a_dynamic_file_asked_far_above_its_export_size(warnings):
    engine = SimpleNamespace(dynamic=True, info=SimpleNamespace(imgsz=(320, 320), stride=32))
    assert detector_imgsz([4096], engine) == (4096, 4096)
    assert any("--imgsz 4096 is 13x the 320 px" in w for w in warnings())
