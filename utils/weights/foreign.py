"""Checkpoints written by ultralytics (yolov5nu.pt, yolov8n.pt, yolo11n.pt ...) and by YOLOv5 (yolov5n.pt ...):
read without running any of their pickled code, and their tensors mapped onto our models.

Why a reader of our own: those files pickle whole nn.Module objects. `torch.load(weights_only=True)` refuses
them, and an unrestricted torch.load imports ultralytics/YOLOv5 classes and calls whatever the pickle names (a
`__reduce__` can name os.system). torch's weights_only unpickler takes stand-ins only for class names listed
before the load, in a process-wide list (`add_safe_globals([(stub, "module.Name")])`), and calls any listed name
the pickle asks it to; so the pickle is read here by a `pickle.Unpickler` whose `find_class` hands out
- fresh wrappers of the few callables a checkpoint needs (tensor and parameter rebuilds, OrderedDict, set,
  torch.device), made per load so that a pickle setting attributes on them changes nothing outside that load;
- for classes of model code (ultralytics, YOLOv5's models/ and utils/, torch.nn, numpy ...) an inert `StandIn`
  that records its call arguments and pickled state and runs nothing else;
- for any other name (os.system, builtins.eval, subprocess ...) a refusal, before anything is called.
Storages are read from the zip's data/<key> records as torch.load's persistent_load does, as flat tensors that
each pickled tensor views (offset, size, stride).

Mapping: layer i of the file onto our layer i when both are the same block (Conv, C3, SPPF; ultralytics'
Detect onto our DetectAF with cv2/cv3 read as box/cls; YOLOv5's Detect onto ours), a tensor when its renamed
key exists here with the same shape. Our yolov5*-af models are ultralytics' YOLOv5u, our yolov5*.yaml YOLOv5's
P5 models, so those transfer whole; with another class count the class outputs (and any class-branch conv whose
width follows nc) stay at their initial values.
"""
from __future__ import annotations

import collections
import io
import pickle
import pickletools
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from deploy.errors import UserInputError
from models.yolo import DetectionModel, load_model_yaml
from utils.core.log import LOGGER
from utils.weights.transfer import TransferReport, fillable_keys, take_whole_modules

FOREIGN_PREFIXES = ("ultralytics.", "models.yolo.")  # class paths of ultralytics' and YOLOv5's models
STAND_IN_PREFIXES = ("ultralytics.", "models.", "utils.", "torch.nn.", "numpy.")  # model code and its data
STAND_IN_NAMES = {"types.SimpleNamespace", "argparse.Namespace", "pathlib.Path", "pathlib.PosixPath",
                  "pathlib.WindowsPath", "pathlib.PurePosixPath", "pathlib.PureWindowsPath"}
STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
TORCH_DTYPES = {name: v for name, v in vars(torch).items() if isinstance(v, torch.dtype)}  # 'torch.float16' ...
MAPPED_ARCHITECTURES = ("ultralytics YOLOv5u (yolov5nu.pt, yolov5su.pt, ...) onto models/yolov5n-af.yaml scaled, "
                        "YOLOv5 P5 (yolov5n.pt ... yolov5x.pt) onto models/yolov5n.yaml scaled")


@dataclass(frozen=True)
class LayerMap:
    """Which of our blocks a foreign block is, and how its sub-keys are renamed ((their prefix, ours), ...)."""

    ours: str
    renames: tuple[tuple[str, str], ...] = ()


LAYER_MAPS = {
    "ultralytics": {"Conv": LayerMap("Conv"), "C3": LayerMap("C3"), "SPPF": LayerMap("SPPF"),
                    "Detect": LayerMap("DetectAF", (("cv2.", "box."), ("cv3.", "cls.")))},
    "YOLOv5": {"Conv": LayerMap("Conv"), "C3": LayerMap("C3"), "SPPF": LayerMap("SPPF"), "Detect": LayerMap("Detect")},
}
TEMPLATES = {"ultralytics": "yolov5n-af.yaml", "YOLOv5": "yolov5n.yaml"}  # our counterpart of each producer's layout


class StandIn:
    """An inert record of a pickled object: the arguments it was called with and the state it was given."""

    qualname = ""
    args: tuple = ()
    state: Any = None

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in {self.qualname}>"


def stand_in_class(qualname: str) -> type[StandIn]:
    """A StandIn subclass named after the pickled class, so the file's layer types can be read back."""
    return type(qualname.rsplit(".", 1)[-1], (StandIn,), {"qualname": qualname})


def is_module(obj: Any) -> bool:
    """A stand-in of an nn.Module: its pickled state is Module.__dict__, with the three registries."""
    return isinstance(obj, StandIn) and isinstance(obj.state, dict) and "_modules" in obj.state


@dataclass
class FlatStorage:
    """One data/<key> record as a flat tensor of its dtype; pickled tensors are views into it."""

    data: torch.Tensor


def rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_: Any) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2 on our flat storages: a strided view (as_strided checks its bounds)."""
    if not isinstance(storage, FlatStorage):
        raise pickle.UnpicklingError("a tensor rebuilt from something that is not a storage")
    return storage.data.as_strided(tuple(size), tuple(stride), int(offset))


def rebuild_parameter(data: Any, *_: Any) -> torch.Tensor:
    """torch._utils._rebuild_parameter(_with_state): the tensor alone (hooks and attributes are dropped)."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter rebuilt from something that is not a tensor")
    return data


def allowed_callables() -> dict[str, Any]:
    """The callables a checkpoint needs, by the name its pickle uses: new wrappers per load, so attributes a
    pickle sets on them go nowhere; classes it must not call are markers (a tensor's type, never called)."""
    tensor = lambda *args: rebuild_tensor(*args)  # noqa: E731
    parameter = lambda *args: rebuild_parameter(*args)  # noqa: E731

    def from_type(func: Any, new_type: Any, args: tuple, state: Any) -> torch.Tensor:
        """torch._tensor._rebuild_from_type_v2 (a tensor with Python attributes): only our rebuilds are called."""
        if func is not tensor and func is not parameter:
            raise pickle.UnpicklingError("a tensor rebuilt by a function that is not a tensor rebuild")
        return func(*args)

    def wrap(fn):
        return lambda *args: fn(*args)

    return {
        "collections.OrderedDict": wrap(collections.OrderedDict), "builtins.set": wrap(set),
        "builtins.frozenset": wrap(frozenset), "builtins.slice": wrap(slice), "torch.device": wrap(torch.device),
        "torch._utils._rebuild_tensor_v2": tensor, "torch._utils._rebuild_parameter": parameter,
        "torch._utils._rebuild_parameter_with_state": parameter, "torch._tensor._rebuild_from_type_v2": from_type,
        **{name: object() for name in ("torch.Tensor", "torch._tensor.Tensor", "torch.nn.parameter.Parameter")},
    }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch zip checkpoint's data.pkl into plain values, tensors and StandIns; runs no pickled code."""

    def __init__(self, file: io.BytesIO, archive: zipfile.ZipFile, prefix: str, source: Path):
        super().__init__(file)
        self.archive, self.prefix, self.source = archive, prefix, source
        self.callables = allowed_callables()
        self.stand_ins: dict[str, type[StandIn]] = {}
        self.storages: dict[str, FlatStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # protocol 2 writes Python 2's name
        qualname = f"{module}.{name}"
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]  # a dtype: immutable, read by persistent_load
        if module == "torch" and name in TORCH_DTYPES:
            return TORCH_DTYPES[name]
        if qualname in self.callables:
            return self.callables[qualname]
        if qualname.startswith(STAND_IN_PREFIXES) or qualname in STAND_IN_NAMES:
            return self.stand_ins.setdefault(qualname, stand_in_class(qualname))
        raise UserInputError(f"{self.source}: refused: its pickle calls {qualname}, which no checkpoint needs "
                             f"(loading it could run code); nothing was run")

    def persistent_load(self, pid: Any) -> FlatStorage:
        """('storage', dtype, key, location, numel) → the flat tensor of data/<key>, shared between its views."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")
                and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:60]}")
        _, dtype, key, _, numel = pid
        key = key.decode() if isinstance(key, bytes) else str(key)
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            data = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            if data.numel() != numel:
                raise pickle.UnpicklingError(f"storage {key} holds {data.numel()} values, its tensors expect {numel}")
            self.storages[key] = FlatStorage(data)
        return self.storages[key]


def archive_prefix(archive: zipfile.ZipFile) -> str:
    """The folder torch.save put data.pkl in ('<name>/', 'archive/' ...)."""
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise pickle.UnpicklingError("no single <folder>/data.pkl")
    prefix = pickles[0][: -len("data.pkl")]
    if prefix + "byteorder" in archive.namelist() and archive.read(prefix + "byteorder") != b"little":
        raise pickle.UnpicklingError("tensors saved big-endian")
    return prefix


def unpickle_restricted(path: str | Path) -> Any:
    """The object a torch.save zip file holds, with StandIns for pickled classes; refuses other formats."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise UserInputError(f"{path}: not a zip-format PyTorch checkpoint (the only format read from ultralytics or "
                             f"YOLOv5 files); it may be damaged or saved by PyTorch < 1.6")
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = archive_prefix(archive)
            unpickler = RestrictedUnpickler(io.BytesIO(archive.read(prefix + "data.pkl")), archive, prefix, path)
            return unpickler.load()
    except UserInputError:
        raise
    except Exception as e:  # a damaged or unexpected pickle fails in many ways; none of them ran its code
        raise UserInputError(f"{path}: cannot read it as a checkpoint ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None


def registry(state: dict, name: str) -> dict:
    """One of Module.__dict__'s registries (_parameters, _buffers, _modules); empty when the pickle holds none."""
    value = state.get(name)
    return value if isinstance(value, dict) else {}


def module_state(module: StandIn, prefix: str = "", seen: frozenset = frozenset()) -> dict[str, torch.Tensor]:
    """The state_dict a pickled module would give: its parameters, persistent buffers, then its children's.

    `seen` stops at a module that contains itself (a crafted pickle can loop; a real model cannot)."""
    state, out = module.state, {}
    skip = state.get("_non_persistent_buffers_set")
    skip = skip if isinstance(skip, (set, frozenset)) else set()
    for name, tensor in [*registry(state, "_parameters").items(), *registry(state, "_buffers").items()]:
        if isinstance(tensor, torch.Tensor) and name not in skip:
            out[f"{prefix}{name}"] = tensor.float() if tensor.is_floating_point() else tensor
    for name, child in registry(state, "_modules").items():
        if is_module(child) and id(child) not in seen:
            out.update(module_state(child, f"{prefix}{name}.", seen | {id(module)}))
    return out


@dataclass
class ForeignCheckpoint:
    """What a foreign checkpoint holds that our models can use."""

    path: Path
    producer: str  # 'ultralytics' or 'YOLOv5'
    state: dict[str, torch.Tensor]  # keyed as the original model's state_dict, floats in float32
    layers: list[str]  # class name of each top-level layer ('Conv', 'C3', 'Detect' ...)
    yaml: dict  # the architecture dict the model was built from
    nc: int  # the detect layer's class count (0 when it does not say)
    reg_max: int  # DFL bins per box side (ultralytics' heads)
    names: list[str]
    imgsz: int | list | None  # the training size, when the file says


def producer_of(model: StandIn) -> str | None:
    """Who wrote a pickled model, by its class path; None for anything else."""
    if model.qualname.startswith(FOREIGN_PREFIXES[0]):
        return "ultralytics"
    if model.qualname in ("models.yolo.Model", "models.yolo.DetectionModel"):
        return "YOLOv5"
    return None


def class_names(names: Any, nc: int) -> list[str]:
    """names as a list ({0: 'person', ...} in ultralytics, a list in YOLOv5); numbered when missing."""
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, (list, tuple)) and names:
        return [str(n) for n in names]
    return [str(i) for i in range(nc)]


def training_imgsz(ckpt: dict) -> int | list | None:
    """--imgsz of the run that wrote the file: ultralytics' train_args or YOLOv5's opt."""
    for key in ("train_args", "opt"):
        args = ckpt.get(key)
        size = args.get("imgsz") if isinstance(args, dict) else None
        if isinstance(size, int) or (isinstance(size, list) and size and all(isinstance(s, int) for s in size)):
            return size
    return None


def pickled_model(ckpt: Any) -> Any:
    """The model a checkpoint dict holds: its EMA when it has one (what both projects load), else 'model'."""
    if not isinstance(ckpt, dict):
        return None
    return ckpt["ema"] if is_module(ckpt.get("ema")) else ckpt.get("model")


def int_attribute(state: dict, name: str, default: int) -> int:
    """An int the pickle stored on a module (nc, reg_max), `default` when absent or not an int."""
    value = state.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def pickled_globals(path: str | Path) -> set[str]:
    """'module.name' of every GLOBAL in a torch.save zip's pickle, read statically (nothing is built); torch.save's
    protocol 2 names every class and function that way. Empty for a file that is not such a zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read(archive_prefix(archive) + "data.pkl")
        return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    except Exception:  # not a zip, no data.pkl, a cut pickle: whoever reads the file reports what it is
        return set()


def is_foreign_checkpoint(path: str | Path) -> bool:
    """Whether a file pickles ultralytics' or YOLOv5's classes: read it with this module, not torch.load."""
    return any(name.startswith(FOREIGN_PREFIXES) for name in pickled_globals(path))


def read_foreign_checkpoint(path: str | Path) -> ForeignCheckpoint:
    """Read an ultralytics or YOLOv5 .pt without running its code."""
    path = Path(path)
    ckpt = unpickle_restricted(path)
    model = pickled_model(ckpt)
    producer = producer_of(model) if is_module(model) else None
    layers_module = registry(model.state, "_modules").get("model") if producer else None
    if not is_module(layers_module):
        held = model.qualname if isinstance(model, StandIn) else type(model).__name__
        raise UserInputError(f"{path}: not an ultralytics or YOLOv5 detection checkpoint (its model is {held})")
    layers = list(registry(layers_module.state, "_modules").values())
    head = layers[-1].state if layers and is_module(layers[-1]) else {}
    nc = int_attribute(head, "nc", 0)
    yaml = model.state.get("yaml")
    return ForeignCheckpoint(
        path=path, producer=producer, state=module_state(model),
        layers=[m.qualname.rsplit(".", 1)[-1] if isinstance(m, StandIn) else "" for m in layers],
        yaml=yaml if isinstance(yaml, dict) else {}, nc=nc, reg_max=int_attribute(head, "reg_max", 16),
        names=class_names(model.state.get("names"), nc), imgsz=training_imgsz(ckpt))


def our_key(key: str, foreign: ForeignCheckpoint, model: nn.Module) -> str | None:
    """Our state_dict key for one of the file's, when its layer maps onto ours (same block kind), else None."""
    match = re.fullmatch(r"model\.(\d+)\.(.+)", key)
    if not match:
        return None
    i, rest = int(match.group(1)), match.group(2)
    if i >= len(foreign.layers) or i >= len(model.model):
        return None
    layer_map = LAYER_MAPS[foreign.producer].get(foreign.layers[i])
    if layer_map is None or type(model.model[i]).__name__ != layer_map.ours:
        return None
    for theirs, ours in layer_map.renames:
        if rest.startswith(theirs):
            rest = ours + rest[len(theirs):]
            break
    return f"model.{i}.{rest}"


def transfer_state(foreign: ForeignCheckpoint, model: nn.Module) -> tuple[dict[str, torch.Tensor], TransferReport]:
    """`model`'s state_dict with the file's tensors put in where its layer maps, whole modules only (a conv block,
    a BatchNorm: utils.weights.transfer's rule), so none is left half loaded.

    Returns the full state dict (load it strictly) and the report of what came from the file.
    """
    report = TransferReport(str(foreign.path), fillable_keys(model))
    theirs = {mine: t for mine, t in ((our_key(k, foreign, model), t) for k, t in foreign.state.items()) if mine}
    state = take_whole_modules(model, theirs, report)
    return state, report


def normalised_rows(yaml: dict) -> list[list]:
    """backbone + head rows with ultralytics' stored 'None' strings as None, for comparing layouts."""
    def value(v: Any) -> Any:
        return None if v == "None" else [value(x) for x in v] if isinstance(v, (list, tuple)) else v

    return [value(row) for row in list(yaml.get("backbone") or []) + list(yaml.get("head") or [])]


def scaling(yaml: dict) -> tuple[float, float] | None:
    """(depth, width) multiples: YOLOv5's keys, or ultralytics' scales[scale], the scale named by the file, else as
    ultralytics picks it: the letter after the version in its YAML's name (yolov5su.yaml: 's'), else the first."""
    scales = yaml.get("scales") if isinstance(yaml.get("scales"), dict) else {}
    guessed = re.search(r"yolo[v]?\d+([nslmx])", Path(str(yaml.get("yaml_file", ""))).stem)
    name = yaml.get("scale") or (guessed.group(1) if guessed else next(iter(scales), None))
    scale = scales.get(name)
    pair = (yaml.get("depth_multiple"), yaml.get("width_multiple")) if "depth_multiple" in yaml else scale
    try:
        depth, width = pair[:2]
        return float(depth), float(width)
    except (TypeError, ValueError):  # absent, or not two numbers
        return None


def our_model_yaml(foreign: ForeignCheckpoint) -> dict:
    """Our architecture dict for the file's model: our counterpart of its layout at its depth, width and nc.

    Only layouts we have map (ultralytics YOLOv5u, YOLOv5 P5); any other is refused, naming those.
    """

    template = load_model_yaml(TEMPLATES[foreign.producer])
    theirs, ours = normalised_rows(foreign.yaml), normalised_rows(template)
    same_layout = (len(theirs) == len(ours) and theirs[:-1] == ours[:-1]  # the head row: same inputs, their Detect
                   and isinstance(theirs[-1], list) and theirs[-1][:3] == [*ours[-1][:2], "Detect"])
    scale = scaling(foreign.yaml)
    if not same_layout or scale is None or foreign.yaml.get("activation") or not foreign.nc:
        name = Path(str(foreign.yaml.get("yaml_file") or "")).name or "its model"
        raise UserInputError(f"{foreign.path}: {foreign.producer} architecture {name} has no PConv-YOLO counterpart; "
                             f"the ones that map: {MAPPED_ARCHITECTURES}")
    cfg = {k: v for k, v in template.items() if k != "yaml_file"}
    cfg.update(nc=foreign.nc, depth_multiple=scale[0], width_multiple=scale[1])
    if foreign.producer == "YOLOv5":
        cfg["anchors"] = foreign.yaml.get("anchors", cfg["anchors"])
    else:
        head_row = list(cfg["head"][-1])
        head_row[3] = ["nc", foreign.reg_max, *head_row[3][2:]]
        cfg["head"] = [*cfg["head"][:-1], head_row]
    return cfg


def checkpoint_from_foreign(path: str | Path) -> dict[str, Any]:
    """A foreign checkpoint as one of ours (model_yaml, model, names, nc, opt.imgsz): what val, detect, export
    and train read. The whole model must come from the file; the transfer is logged."""

    foreign = read_foreign_checkpoint(path)
    model = DetectionModel(our_model_yaml(foreign))
    state, report = transfer_state(foreign, model)
    if report.random:
        raise UserInputError(f"{path}: only part of its model maps onto ours ({report.summary()})")
    LOGGER.info(report.summary())
    nc = int(model.yaml["nc"])
    names = foreign.names if len(foreign.names) == nc else [str(i) for i in range(nc)]
    return {"model_yaml": model.yaml, "model": state, "ema": None, "names": names, "nc": nc, "epoch": -1,
            "opt": {"imgsz": foreign.imgsz} if foreign.imgsz is not None else {}}
