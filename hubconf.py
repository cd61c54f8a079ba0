"""torch.hub entry points, offline from a local clone (yolov5's habit):

    import torch
    model = torch.hub.load("path/to/pconv-yolo", "custom", path="runs/train/exp/weights/best.pt", source="local")
    model = torch.hub.load("path/to/pconv-yolo", "yolov5n_faster", pretrained=False, classes=3, source="local")
    results = model("data/images/bus.jpg", size=640)   # YOLOv5's results: .print() .save() .crop() .pandas() .xyxy
    model.conf, model.iou, model.classes = 0.4, 0.5, [0]   # yolov5's after-load settings work too (checked when set)

Every zoo model (models.zoo.NAMES: one per YAML in models/) gets a constructor named after it ('-' → '_'). No
pretrained weights are published (PConv-YOLO models are trained from scratch), so `pretrained=True` needs
`path=` to a checkpoint.
`autoshape=False` returns the bare DetectionModel (nn.Module) instead of the Detector, e.g. to train it.
"""
from __future__ import annotations

import pathlib
import sys

dependencies = ["torch", "torchvision", "cv2", "numpy", "yaml"]
REPO = pathlib.Path(__file__).resolve().parent
COCO_NAMES_YAML = REPO / "data/coco8.yaml"  # the 80 COCO names, for untrained 80-class models


def _check_no_foreign_packages() -> None:
    """torch.hub imports this repo's top-level `deploy` / `models` / `utils`; another project's, already imported,
    would shadow them and fail later with a confusing ImportError. Say so now."""
    for name in ("deploy", "models", "utils"):
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), None)
        if module is not None and origin and REPO not in pathlib.Path(origin).resolve().parents:
            raise ImportError(f"torch.hub.load({str(REPO)!r}): a different '{name}' package is already imported "
                              f"(from {origin}); load this repo in a fresh Python process or before importing that one")


_check_no_foreign_packages()

# Imported now, while torch.hub has REPO on sys.path: it is removed again once loading returns, and the
# lazy imports inside these modules then resolve through the already-imported packages.
import deploy.errors  # noqa: E402
import models.yolo  # noqa: E402
import models.zoo  # noqa: E402
import utils.infer.backends  # noqa: E402
import utils.infer.hub  # noqa: E402
import utils.infer.predictor  # noqa: E402
import utils.weights.checkpoint  # noqa: E402


def custom(path: str, autoshape: bool = True, device: str | None = None, **detector_options):
    """A trained checkpoint (or exported .onnx / .torchscript / .tflite / OpenVINO folder or .xml) as a Detector.

    detector_options are utils.infer.predictor.Detector's: conf, iou, imgsz, classes (a class filter here),
    agnostic, max_det, half, augment, data. Without imgsz it runs at the size detect.py picks: the one the
    checkpoint was trained at (an exported file: the one it was exported at).
    """
    if not autoshape:
        kind = utils.infer.backends.SUFFIXES.get(utils.infer.backends.resolve_model_path(pathlib.Path(path)).suffix.lower())
        if kind not in (None, "pytorch"):  # an exported file holds a graph, not a DetectionModel to rebuild
            raise deploy.errors.UserInputError(f"custom(path={path!r}, autoshape=False): the bare DetectionModel "
                                              f"needs a .pt checkpoint, not an exported {kind} model")
        return utils.weights.checkpoint.load_model(path, device or "cpu")
    return utils.infer.hub.HubDetector(path, device=device or "", **detector_options)


def _create(cfg: pathlib.Path, pretrained: bool, classes: int | None, channels: int, autoshape: bool,
            device: str | None, path: str | None, names: list[str] | None, detector_options: dict):
    entry = cfg.stem.replace("-", "_")
    if pretrained and not path:
        raise deploy.errors.UserInputError(
            f"{entry}(pretrained=True): no pretrained weights are published for PConv-YOLO (models are trained "
            f"from scratch); pass path='runs/train/exp/weights/best.pt' or use pretrained=False")
    if path:
        loaded = custom(path, autoshape, device, **detector_options)  # a Detector or a DetectionModel
        if classes is not None and classes != len(loaded.names):
            raise deploy.errors.UserInputError(f"{entry}(classes={classes}): {path} has {len(loaded.names)} classes")
        return loaded
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1):
        raise deploy.errors.UserInputError(f"{entry}(classes={classes!r}): the number of classes the model predicts, "
                                          f"1 or more")
    nc = classes or models.yolo.load_model_yaml(cfg)["nc"]
    model_names = _names_for(nc, names, entry)  # checked before the (slower) model build
    model = models.yolo.DetectionModel(cfg, ch=channels, nc=nc)
    model.names = model_names
    if not autoshape:
        return model.to(utils.infer.predictor.select_device(device or ""))
    backend = utils.infer.backends.ModelBackend(model, utils.infer.predictor.select_device(device or ""),
                                          detector_options.pop("half", False))
    return utils.infer.hub.HubDetector(backend, device=device or "", **detector_options)


def _names_for(nc: int, names: list[str] | None, entry: str) -> list[str]:
    """Given names, else COCO's for 80 classes (yolov5's default), else class0, class1, ..."""
    if names is not None:
        if len(names) != nc:
            raise deploy.errors.UserInputError(f"{entry}(names=...): {len(names)} names for {nc} classes")
        return [str(n) for n in names]
    if nc == 80:
        return utils.infer.predictor.names_from_data_yaml(COCO_NAMES_YAML)
    return [f"class{i}" for i in range(nc)]


def _constructor(cfg: pathlib.Path):
    """`<yaml stem>(pretrained=False, classes=None, ...)`: an untrained model of that YAML, or `path`'s weights."""

    def build(pretrained: bool = False, classes: int | None = None, channels: int = 3, autoshape: bool = True,
              device: str | None = None, path: str | None = None, names: list[str] | None = None,
              **detector_options):
        return _create(cfg, pretrained, classes, channels, autoshape, device, path, names, detector_options)

    build.__name__ = build.__qualname__ = cfg.stem.replace("-", "_")
    build.__doc__ = (f"{cfg.name} as a Detector: untrained with `classes` classes (default: the YAML's), or "
                     f"loaded from `path`. autoshape=False returns the bare DetectionModel. Other keywords "
                     f"(conf, iou, imgsz, ...) go to utils.infer.predictor.Detector.")
    return build


for _name in models.zoo.NAMES:
    globals()[_name.replace("-", "_")] = _constructor(models.zoo.MODELS_DIR / f"{_name}.yaml")
del _name
