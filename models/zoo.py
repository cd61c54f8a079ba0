"""The model zoo: the names users pick (one per models/<name>.yaml), the sets the benchmarks time by default,
and the ultralytics models they are compared with.

One list, so that a YAML added to models/ is a torch.hub entry at once (hubconf.py) and a benchmark's default
set can only name models that exist. Torch-free: reading names must not cost an import of the model code.
"""
from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
# Ours: every YAML in models/ (models/ablations/ holds experiments, picked by path, never by name).
NAMES: tuple[str, ...] = tuple(sorted(p.stem for p in MODELS_DIR.glob("*.yaml")))
# Ultralytics' models, built from ultralytics' own YAMLs through its library; the first is the reference.
PEERS = ("yolov5nu", "yolo11n")

# Every scale's YOLOv5 baseline beside its PConv swap, and the FasterNet backbones, small to large.
SCALES = ("yolov5n", "yolov5n-faster", "yolov5s", "yolov5s-faster", "yolov5-fasternet-t0", "yolov5m", "yolov5m-faster",
          "yolov5-fasternet-t1", "yolov5-fasternet-t2", "yolov5l", "yolov5l-faster", "yolov5x", "yolov5x-faster")
# The n-scale anchor-free candidates beside yolov5n and its plain swap: what must match PEERS[0]'s accuracy.
ANCHOR_FREE = ("yolov5n", "yolov5n-faster", "yolov5n-faster-af", "yolov5n-lite2-fasterneck-af",
               "yolov5n-pconv-lite2-af", "yolov5n-pconv-lite2-shared-af")
# The models worth deploying, timed in every runtime and precision.
DEPLOY = ("yolov5n", "yolov5n-pconv-lite2", "yolov5n-af", "yolov5n-fasterneck-af", "yolov5n-lite2-fasterneck-af",
          "yolov5n-pconv-lite2-af", "yolov5n-pconv-lite2-shared-af", "yolov5s", "yolov5s-pconv-lite")
# The baseline a model is compared with where its name's first part does not say it (FasterNet by size).
BASELINE_OF = {"yolov5-fasternet-t0": "yolov5s", "yolov5-fasternet-t1": "yolov5m", "yolov5-fasternet-t2": "yolov5m"}


def baseline_of(name: str) -> str:
    """The YOLOv5 model `name` is measured against: yolov5s-faster → yolov5s."""
    return BASELINE_OF.get(name, name.split("-")[0])

