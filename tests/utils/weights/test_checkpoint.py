"""Checkpoints: plain-value dicts that weights_only loads, written atomically, clear errors for bad files."""
import argparse
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from deploy.errors import UserInputError
from utils.weights.checkpoint import build_checkpoint, load_checkpoint, save_checkpoint
from utils.weights.checkpoint import load_model

TINY_YAML = {
    "nc": 3,
    "depth_multiple": 0.33,
    "width_multiple": 0.125,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]],
    "backbone": [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 1, "C3Faster", [128]],
                 [-1, 1, "Conv", [256, 3, 2]], [-1, 1, "Conv", [256, 3, 2]]],
    "head": [[[3, 4], 1, "Detect", ["nc", "anchors"]]],
}


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.yaml = {"nc": 2, "backbone": [[-1, 1, "Conv", [4, 3]]]}
        self.names = ["cat", "dog"]


def test_checkpoint_holds_plain_values_and_loads_weights_only(tmp_path):
    model = TinyNet().half()
    opt = argparse.Namespace(weights=Path("a/b.pt"), imgsz=64, device=torch.device("cpu"), freeze=[0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = build_checkpoint(model, ema=TinyNet(), optimizer=optimizer, epoch=3, best_fitness=0.25,
                            hyp={"lr0": 0.01}, opt=opt)
    path = save_checkpoint(ckpt, tmp_path / "weights" / "last.pt")

    loaded = torch.load(path, weights_only=True)
    assert loaded["epoch"] == 3 and loaded["best_fitness"] == 0.25
    assert loaded["names"] == ["cat", "dog"] and loaded["nc"] == 2
    assert loaded["model"]["conv.weight"].dtype == torch.float32  # fp16 training weights are saved as fp32
    assert loaded["opt"] == {"weights": "a/b.pt", "imgsz": 64, "device": "cpu", "freeze": [0]}
    assert loaded["model_yaml"] == model.yaml
    assert loaded["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert load_checkpoint(path)["hyp"] == {"lr0": 0.01}
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


def test_kill_during_save_leaves_previous_checkpoint_intact(tmp_path):
    """A process SIGKILLed halfway through writing the new file must leave the old one loadable."""
    target = tmp_path / "last.pt"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from utils.weights.checkpoint import save_checkpoint
        save_checkpoint({{"model_yaml": {{"nc": 1}}, "model": {{"w": torch.ones(3)}}, "epoch": 1}}, {str(target)!r})
        real_save = torch.save
        def save_then_die(obj, f, *a, **k):
            f.write(b"PK\\x03\\x04 half a zip file")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = save_then_die
        save_checkpoint({{"model_yaml": {{"nc": 1}}, "model": {{"w": torch.zeros(3)}}, "epoch": 2}}, {str(target)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[3],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    ckpt = load_checkpoint(target)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["model"]["w"], torch.ones(3))
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].name.endswith(".tmp")  # the half-written temp file

    save_checkpoint({"model_yaml": {"nc": 1}, "model": {"w": torch.zeros(3)}, "epoch": 2}, target)
    assert load_checkpoint(target)["epoch"] == 2
    assert list(tmp_path.iterdir()) == [target]  # the next save clears the stale temp file


def test_exception_during_save_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "best.pt"
    save_checkpoint({"model_yaml": {}, "model": {"w": torch.ones(1)}, "epoch": 5}, target)

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"model_yaml": {}, "model": {"w": torch.zeros(1)}, "epoch": 6}, target)
    monkeypatch.undo()
    assert load_checkpoint(target)["epoch"] == 5
    assert list(tmp_path.iterdir()) == [target]


class Pickled:
    """A class instance inside a checkpoint: what weights_only=True must refuse."""


def _zip_then_cut(path: Path) -> None:
    torch.save({"model": {"w": torch.ones(100)}}, path)
    path.write_bytes(path.read_bytes()[:300])


def _legacy_then_cut(path: Path) -> None:
    torch.save({"model": {"w": torch.ones(100)}}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:60])


def _other_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")


@pytest.mark.parametrize("content, message", [
    (None, "checkpoint file not found"),
    (b"", "not a PConv-YOLO checkpoint: the file is empty (0 bytes)"),
    (b"this is not a checkpoint\nsecond line", "not a PConv-YOLO checkpoint: a text file "
                                              "(starts 'this is not a checkpoint'), not a PyTorch checkpoint"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n", "a Git LFS pointer, not the file itself"),
    (b"<!DOCTYPE html><html>404</html>", "an HTML page (a failed download?)"),
    (bytes(range(256)), "binary data that is neither a zip nor a pickle"),
    (pickle.dumps({"a": 1}), "not a PConv-YOLO checkpoint: a Python pickle that is not a PyTorch checkpoint"),
    (_zip_then_cut, "not a PConv-YOLO checkpoint: a truncated or damaged zip file"),
    (_legacy_then_cut, "not a PConv-YOLO checkpoint: the file ends too early"),
    (_other_zip, "not a PConv-YOLO checkpoint: a zip archive without data.pkl"),
    ([1, 2, 3], "not a PConv-YOLO checkpoint"),
    ({"model": {}}, "checkpoint lacks model_yaml"),
    ({"model_yaml": {}, "model": Pickled()}, "not a PConv-YOLO checkpoint: it pickles Python classes ("),
    (torch.nn.Conv2d(3, 4, 3), "it pickles Python classes (torch.nn.modules.conv.Conv2d), which PConv-YOLO never "
                               "unpickles (that runs code from the file); to convert, load it in its own project "
                               "and save plain values: torch.save({'model_yaml': <model YAML dict>, 'model': "
                               "model.state_dict()}, 'new.pt')"),
])
def test_bad_checkpoint_files_say_what_they_are(tmp_path, content, message):
    path = tmp_path / "weights.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif callable(content) and not isinstance(content, torch.nn.Module):
        content(path)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(UserInputError) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text and "\x1b" not in text


def test_load_model_rebuilds_from_yaml_and_prefers_ema(tmp_path):
    from models.yolo import DetectionModel

    torch.manual_seed(0)
    model, ema = DetectionModel(TINY_YAML), DetectionModel(TINY_YAML)
    model.names = ema.names = ["a", "b", "c"]
    with torch.no_grad():
        ema.model[-1].anchors.mul_(1.5)  # e.g. autoanchor: anchors must travel with the checkpoint
    path = save_checkpoint(build_checkpoint(model, ema=ema, epoch=-1), tmp_path / "best.pt")

    loaded = load_model(path)
    assert not loaded.training and loaded.names == ["a", "b", "c"]
    assert torch.equal(loaded.model[-1].anchors, ema.model[-1].anchors)
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(loaded(x), ema.eval()(x), atol=1e-5)
    fused = load_model(path, fuse=True)
    assert torch.allclose(fused(x), ema(x), atol=1e-4)

    no_ema = build_checkpoint(model, epoch=-1)
    assert torch.allclose(load_model(save_checkpoint(no_ema, tmp_path / "m.pt"))(x), model.eval()(x), atol=1e-5)


def test_weights_that_do_not_fit_the_yaml_are_a_user_error(tmp_path):
    from models.yolo import DetectionModel

    ckpt = build_checkpoint(DetectionModel(TINY_YAML))
    ckpt["model_yaml"] = {**TINY_YAML, "nc": 5}
    path = save_checkpoint(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(UserInputError, match="weights do not match its model_yaml") as err:
        load_model(path)
    assert str(path) in str(err.value)
