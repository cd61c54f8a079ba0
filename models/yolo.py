"""Build YOLOv5-schema YAML models: module registry, parse_model, DetectionModel, layer table CLI.

Usage: python models/yolo.py --cfg models/yolov5n.yaml [--imgsz 640]

YAML text is never eval'd: module names resolve through REGISTRY, and the only symbolic
arguments are `nc`, `anchors` and `None`; every other string (e.g. 'nearest', 'GELU') is passed
to the module as a plain string.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import math
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python models/yolo.py` from anywhere
    sys.path.append(str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from models.common import ACTIVATIONS, C3, SPPF, Bottleneck, Concat, Conv, replace_activation  # noqa: E402
from models.fasternet import (C3Faster, C3FasterBN, FasterNetStage, PatchEmbed, PatchMerging,  # noqa: E402
                              set_pconv_mode)
from deploy.errors import UserInputError  # noqa: E402
from deploy.imgsz import round_imgsz  # noqa: E402
from models.heads import Detect, DetectAF  # noqa: E402
from utils.core.log import LOGGER  # noqa: E402
from utils.core.torch_utils import de_parallel, fuse_conv_and_bn, model_info  # noqa: E402
from utils.core.yaml_io import read_yaml_mapping  # noqa: E402

STRIDE_PROBE_SIZE = 128  # input side used to measure each Detect level's stride (a multiple of 64)


@dataclass(frozen=True)
class ModuleSpec:
    """How the builder wires a module's channels.

    kind: 'conv' → args become (c1, c2 scaled by width, *rest); 'csp' → like conv, with the row's
    repeat count inserted as the third argument; 'concat' → c2 = sum of inputs; 'detect' → input
    channels appended; 'head' → the list of per-level input channels, then the args as given (anchor-free
    heads); 'keep' → channels unchanged, args passed as given.
    """

    cls: type[nn.Module]
    kind: str


REGISTRY: dict[str, ModuleSpec] = {
    "Conv": ModuleSpec(Conv, "conv"),
    "Bottleneck": ModuleSpec(Bottleneck, "conv"),
    "SPPF": ModuleSpec(SPPF, "conv"),
    "C3": ModuleSpec(C3, "csp"),
    "C3Faster": ModuleSpec(C3Faster, "csp"),
    "C3_Faster": ModuleSpec(C3Faster, "csp"),
    "C3FasterBN": ModuleSpec(C3FasterBN, "csp"),
    "PatchEmbed": ModuleSpec(PatchEmbed, "conv"),
    "PatchMerging": ModuleSpec(PatchMerging, "conv"),
    "FasterNetStage": ModuleSpec(FasterNetStage, "csp"),
    "Concat": ModuleSpec(Concat, "concat"),
    "nn.Upsample": ModuleSpec(nn.Upsample, "keep"),
    "Upsample": ModuleSpec(nn.Upsample, "keep"),
    "Detect": ModuleSpec(Detect, "detect"),
    "DetectAF": ModuleSpec(DetectAF, "head"),
}
HEADS = (Detect, DetectAF)
REQUIRED_KEYS = ("nc", "anchors", "backbone", "head")


def make_divisible(x: float, divisor: int = 8) -> int:
    """Round channels up to a multiple of `divisor` (YOLOv5's width rounding)."""
    return int(math.ceil(x / divisor) * divisor)


def find_model_yaml(cfg: str | Path) -> Path:
    """The given path, or the file under models/ it names ('yolov5n.yaml', 'ablations/x.yaml')."""
    path = Path(cfg)
    if not path.exists():
        for shipped in (ROOT / "models" / path, ROOT / "models" / path.name):
            if shipped.is_file():
                return shipped
    return path


def load_model_yaml(cfg: str | Path) -> dict:
    """Read and check a model YAML file: a mapping with the YOLOv5 schema's keys."""
    path = find_model_yaml(cfg)
    if path.suffix not in (".yaml", ".yml"):
        raise UserInputError(f"{cfg}: not a model YAML file (expected a .yaml or .yml file)")
    if not path.is_file():
        raise UserInputError(f"{cfg}: model YAML file not found")
    d = read_yaml_mapping(path, str(path), f"a model YAML must be a mapping with keys {', '.join(REQUIRED_KEYS)}")
    d["yaml_file"] = str(path)
    return d


def check_model_dict(d: dict, source: str) -> None:
    """Top-level schema: required keys present, multiples positive, sections are lists."""
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise UserInputError(f"{source}: missing key(s) {', '.join(missing)}")
    if not isinstance(d["nc"], int) or isinstance(d["nc"], bool) or d["nc"] < 1:
        raise UserInputError(f"{source}: nc must be a positive integer, got {d['nc']!r}")
    for key in ("depth_multiple", "width_multiple"):
        value = d.get(key, 1.0)
        if not isinstance(value, (int, float)) or value <= 0:
            raise UserInputError(f"{source}: {key} must be a positive number, got {value!r}")
    if d.get("activation", "SiLU") not in ACTIVATIONS:
        raise UserInputError(f"{source}: activation must be one of {', '.join(sorted(ACTIVATIONS))}, "
                             f"got {d['activation']!r}")
    anchors = d["anchors"]
    if not anchors_well_formed(anchors):
        raise UserInputError(f"{source}: anchors must be a list of [w1,h1, w2,h2, ...] per level or an anchor "
                             f"count, got {anchors!r}")
    for key in ("backbone", "head"):
        if not isinstance(d[key], list) or not d[key]:
            raise UserInputError(f"{source}: {key} must be a non-empty list of [from, number, module, args] rows")


def anchors_well_formed(anchors) -> bool:
    """A positive anchor count, or a non-empty list of non-empty number lists (one per level)."""
    if isinstance(anchors, int) and not isinstance(anchors, bool):
        return anchors > 0
    return isinstance(anchors, list) and bool(anchors) and all(
        isinstance(level, list) and level and all(isinstance(v, (int, float)) for v in level) for level in anchors)


def resolve_arg(a, nc: int, anchors):
    """Map the YAML's symbolic names to values; everything else is passed through unchanged."""
    if isinstance(a, str):
        return {"nc": nc, "anchors": anchors, "None": None}.get(a, a)
    return a


def resolve_from(f, i: int, where: str) -> list[int]:
    """Check a row's `from` (an int or list of ints) and return it as absolute layer indices."""
    fs = f if isinstance(f, list) else [f]
    if not fs or not all(isinstance(x, int) and not isinstance(x, bool) for x in fs):
        raise UserInputError(f"{where}: 'from' must be an int or a list of ints, got {f!r}")
    absolute = []
    for x in fs:
        j = i + x if x < 0 else x
        if i == 0 and x == -1:
            absolute.append(-1)  # the model input
        elif not 0 <= j < i:
            raise UserInputError(f"{where}: 'from' index {x} does not name an earlier layer (row {i} has "
                                 f"{i} earlier layer(s))")
        else:
            absolute.append(j)
    return absolute


def parse_model(d: dict, ch: int, source: str) -> tuple[nn.Sequential, list[int]]:
    """Build the layers of a checked model dict. Returns (layers, indices whose outputs are reused)."""
    nc, anchors = d["nc"], d["anchors"]
    gd, gw = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
    na = anchors if isinstance(anchors, int) else len(anchors[0]) // 2
    no = na * (nc + 5)
    rows = d["backbone"] + d["head"]
    layers, save, chs = [], [], []
    for i, row in enumerate(rows):
        where = f"{source}: row {i}"
        if not isinstance(row, list) or len(row) != 4:
            raise UserInputError(f"{where}: expected [from, number, module, args], got {row!r}")
        f, n, name, args = row
        if not isinstance(name, str) or name not in REGISTRY:
            raise UserInputError(f"{where}: unknown module {name!r} (known: {', '.join(sorted(REGISTRY))})")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise UserInputError(f"{where}: number must be a positive integer, got {n!r}")
        if not isinstance(args, list):
            raise UserInputError(f"{where}: args must be a list, got {args!r}")
        spec = REGISTRY[name]
        fs = resolve_from(f, i, where)
        c_in = [ch if j == -1 else chs[j] for j in fs]
        args = [resolve_arg(a, nc, anchors) for a in args]
        n = n_scaled = max(round(n * gd), 1) if n > 1 else n
        args, c2, n = wire_channels(spec, args, c_in, n, no, gw, where)
        module = build_module(spec.cls, args, n, where, name)
        module.i, module.f, module.type, module.n, module.args = i, f, name, n_scaled, args
        module.np = sum(p.numel() for p in module.parameters())
        save.extend(x % i for x in (f if isinstance(f, list) else [f]) if x != -1)
        layers.append(module)
        chs.append(c2)
    if not isinstance(layers[-1], HEADS):
        raise UserInputError(f"{source}: the last row must be a Detect head, got {rows[-1][2]!r}")
    model = nn.Sequential(*layers)
    if d.get("activation", "SiLU") != "SiLU":  # the blocks build with SiLU already
        replace_activation(model, d["activation"])
    return model, sorted(set(save))


def wire_channels(spec: ModuleSpec, args: list, c_in: list[int], n: int, no: int, gw: float,
                  where: str) -> tuple[list, int, int]:
    """Prepend input/output channels per the module's kind. Returns (args, output channels, repeats)."""
    if spec.kind in ("conv", "csp"):
        if not args or not isinstance(args[0], int) or isinstance(args[0], bool):
            raise UserInputError(f"{where}: {spec.cls.__name__} needs its output channels (an int) as the first "
                                 f"argument, got {args!r}")
        c2 = args[0] if args[0] == no else make_divisible(args[0] * gw, 8)
        args = [c_in[0], c2, *args[1:]]
        if spec.kind == "csp":  # the repeats live inside the block
            return [*args[:2], n, *args[2:]], c2, 1
        return args, c2, n
    if spec.kind == "concat":
        return args, sum(c_in), n
    if spec.kind == "detect":
        if len(args) != 2:
            raise UserInputError(f"{where}: Detect takes [nc, anchors], got {len(args)} argument(s)")
        anchors = [list(range(args[1] * 2))] * len(c_in) if isinstance(args[1], int) else args[1]
        return [args[0], anchors, c_in], c_in[0], n
    if spec.kind == "head":
        return [c_in, *args], c_in[0], n
    return args, c_in[0], n


def build_module(cls: type[nn.Module], args: list, n: int, where: str, name: str) -> nn.Module:
    """Instantiate `cls(*args)` (n times in a Sequential when n > 1), turning bad args into a clear error."""
    try:
        inspect.signature(cls).bind(*args)
    except TypeError:
        params = [p for p in inspect.signature(cls).parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
        raise UserInputError(f"{where}: wrong number of arguments for {name}: got {len(args)} after channel "
                             f"wiring {args!r}, it takes at most {len(params)} "
                             f"({', '.join(p.name for p in params)})") from None
    try:
        return nn.Sequential(*(cls(*args) for _ in range(n))) if n > 1 else cls(*args)
    except (TypeError, ValueError, RuntimeError) as e:
        raise UserInputError(f"{where}: cannot build {name}{tuple(args)}: {e}") from None


class DetectionModel(nn.Module):
    """A YOLOv5-style detector built from a YAML file (or the dict a checkpoint stored).

    `nc` and `anchors` override the YAML's values at build time; `model.yaml` is the dict that was
    actually built (overrides applied), which is what checkpoints store to rebuild the model.
    """

    def __init__(self, cfg: str | Path | dict = "yolov5n.yaml", ch: int = 3, nc: int | None = None,
                 anchors: list | int | None = None):
        super().__init__()
        d = copy.deepcopy(cfg) if isinstance(cfg, dict) else load_model_yaml(cfg)
        source = d.get("yaml_file", "model dict")
        if nc is not None and nc != d.get("nc"):
            LOGGER.info(f"Overriding {Path(source).name} nc={d.get('nc')} with nc={nc}")
            d["nc"] = nc
        if anchors is not None:
            d["anchors"] = anchors
        check_model_dict(d, source)
        ch = d["ch"] = d.get("ch", ch)  # a stored dict remembers its input channels
        self.yaml = d
        self.model, self.save = parse_model(copy.deepcopy(d), ch, source)
        self.names = [f"class{i}" for i in range(d["nc"])]
        self._init_stride_and_anchors(ch)
        self._init_batchnorm()

    @property
    def stride(self) -> torch.Tensor:
        """(nl,) stride of each Detect level, e.g. tensor([8., 16., 32.])."""
        return self.model[-1].stride

    @property
    def nc(self) -> int:
        return self.model[-1].nc

    @property
    def anchor_free(self) -> bool:
        """True for a DetectAF head (DFL boxes, no objectness), False for YOLOv5's anchor Detect head.

        The one answer to "which head?": losses, autoanchor and tooling ask the model, not the module's attributes.
        """
        return self.model[-1].anchor_free

    def _init_stride_and_anchors(self, ch: int) -> None:
        """Measure strides with one forward pass, put anchors in grid units, set the bias priors."""
        detect = self.model[-1]
        s = STRIDE_PROBE_SIZE
        with torch.no_grad():
            raw = self.forward(torch.zeros(1, ch, s, s, device=detect.stride.device))
        strides = [s / r.shape[-3] for r in raw]
        for m in self.modules():  # the probe must not leave statistics of an all-zero image behind
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
        detect.stride.copy_(torch.tensor(strides))
        if self.anchor_free:
            detect.initialize_biases(strides)
            return
        if self._anchor_order_reversed(strides):
            LOGGER.info("Reversing anchor order to match stride order")
            detect.anchors.copy_(detect.anchors.flip(0))
        detect.anchors.div_(detect.stride.view(-1, 1, 1))
        detect.initialize_biases(strides)

    def _anchor_order_reversed(self, strides: list[float]) -> bool:
        """True when the YAML lists anchors large-to-small while strides grow (YOLOv5's order check)."""
        anchors = self.yaml["anchors"]
        if isinstance(anchors, int) or len(strides) < 2:
            return False
        areas = [sum(a[k] * a[k + 1] for k in range(0, len(a), 2)) for a in anchors]
        return (areas[-1] - areas[0]) * (strides[-1] - strides[0]) < 0

    def _init_batchnorm(self) -> None:
        """YOLOv5's BatchNorm settings (eps 1e-3, momentum 0.03) — training recipes assume them."""
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = 1e-3, 0.03

    def forward(self, x: torch.Tensor, raw: bool = False):
        """Train: list of raw maps. Eval: decoded (B, N, 5+nc), or (decoded, raw maps) with raw=True."""
        out = self.forward_layers(x, lambda m, inp: m(inp))
        if self.training or self.model[-1].export:
            return out
        pred, raw_maps = out
        return (pred, raw_maps) if raw else pred

    def forward_layers(self, x: torch.Tensor, run_layer):
        """Route tensors through the layers; `run_layer(module, input)` runs one (used for profiling)."""
        outputs = []
        for m in self.model:
            if m.f != -1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
            x = run_layer(m, x)
            outputs.append(x if m.i in self.save else None)
        return x

    def set_export_mode(self, enabled: bool = True) -> DetectionModel:
        """Exporter form: Detect returns one decoded tensor, PConv uses split→conv→cat."""
        self.model[-1].export = enabled
        return self.set_pconv_mode("split_cat" if enabled else "auto")

    def set_pconv_mode(self, mode: str) -> DetectionModel:
        """Put every PConv on one forward path (models.fasternet.PCONV_MODES): exporters and the profiler pick it."""
        return set_pconv_mode(self, mode)

    def fuse(self) -> DetectionModel:
        """Fold every conv's BatchNorm into the conv, in place (inference only; outputs unchanged)."""
        for m in self.modules():
            if isinstance(getattr(m, "bn", None), nn.BatchNorm2d) and isinstance(getattr(m, "conv", None), nn.Conv2d):
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                m.bn = nn.Identity()
        return self

    def info(self, imgsz: int = 640, verbose: bool = True) -> dict:
        """Layers, parameters and GFLOPs at `imgsz` (2 x multiply-accumulates, FlopCounterMode)."""
        return model_info(self, imgsz, verbose=verbose)

    def layer_gflops(self, imgsz: int = 640) -> list[float]:
        """GFLOPs of each top-level layer at imgsz x imgsz, counted on a shape-only (meta) copy."""
        meta = copy.deepcopy(self).to("meta").eval()
        per_layer = []

        def counted(m: nn.Module, inp):
            with FlopCounterMode(display=False) as counter:
                out = m(inp)
            per_layer.append(counter.get_total_flops() / 1e9)
            return out

        with torch.no_grad():
            meta.forward_layers(torch.zeros(1, self.yaml["ch"], imgsz, imgsz, device="meta"), counted)
        return per_layer


def detection_head(model: nn.Module, kind: type[nn.Module] | None = None) -> nn.Module:
    """The detection head of a model, bare or DDP-wrapped, or the head itself; a ValueError if it is not a `kind`.

    Losses and autoanchor need the head's own tensors and are handed whichever of these the caller holds.
    """
    heads = [m for m in de_parallel(model).modules() if isinstance(m, HEADS)]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no detection head ({', '.join(h.__name__ for h in HEADS)})")
    if kind is not None and not isinstance(heads[-1], kind):
        raise ValueError(f"{type(model).__name__} has a {type(heads[-1]).__name__} head, not a {kind.__name__}")
    return heads[-1]


def layer_table(model: DetectionModel, imgsz: int = 640) -> str:
    """yolov5's per-layer summary: index, from, n, params, module, arguments, GFLOPs at imgsz."""
    gflops = model.layer_gflops(imgsz)
    lines = [f"{'':>3}{'from':>18}{'n':>3}{'params':>11}  {'module':<16}{'GFLOPs':>8}  arguments"]
    for m, g in zip(model.model, gflops):
        lines.append(f"{m.i:>3}{str(m.f):>18}{m.n:>3}{m.np:>11,}  {m.type:<16}{g:>8.2f}  {m.args}")
    params = sum(p.numel() for p in model.parameters())
    lines.append(f"{Path(model.yaml.get('yaml_file', 'model')).stem} summary: {len(list(model.modules()))} layers, "
                 f"{params:,} parameters, {sum(gflops):.1f} GFLOPs at {imgsz}x{imgsz}")
    return "\n".join(lines)


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Build a model YAML and print its per-layer table")
    parser.add_argument("--cfg", type=str, default="yolov5n.yaml", help="model.yaml path")
    parser.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="image size for GFLOPs")
    parser.add_argument("--nc", type=int, default=None, help="override the YAML's number of classes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for building and counting")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    opt = parse_opt(argv)
    imgsz = round_imgsz(opt.imgsz, 32)[0]
    torch.set_num_threads(opt.threads)
    model = DetectionModel(opt.cfg, nc=opt.nc)
    print(layer_table(model, imgsz))


if __name__ == "__main__":
    from utils.core.cli import run_cli

    run_cli(main)
