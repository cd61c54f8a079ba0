"""Pretrained weights into a model of another architecture (train.py --cfg X.yaml --weights Y.pt).

State-dict keys are `model.<layer index>.<rest>`, so matching them by name between two skeletons (yolov5n's
10-row backbone, lite2's 8-row one) pairs unrelated layers. Here layers pair by what they are: section
(backbone / neck+head), block type, output stride and channels, in order; a pair then hands over its tensors by
sub-key under utils.weights.transfer's whole-module rule. Identical architectures pair layer i with i, so the
usual transfer (another class count) is unchanged. A C3 with fewer bottlenecks takes the source's first ones.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from models.yolo import REGISTRY, DetectionModel
from utils.weights.checkpoint import model_from_checkpoint
from utils.weights.transfer import TransferReport, fillable_keys, take_whole_modules

PROBE_STRIDES = 4  # the probe image is this many times the model's largest stride: every map stays at least 2 px


@dataclass(frozen=True)
class LayerSignature:
    """What a layer is, independent of its index: two layers with equal `match_key`s can swap weights."""

    i: int  # index in model.model
    section: str  # 'backbone' or 'head' (neck and detection head)
    block: str  # class name of the block ('Conv', 'C3', 'SPPF', 'DetectAF' ...)
    stride: tuple[int, ...]  # of its output map; a head's: of each input
    c_in: tuple[int, ...]  # channels of each input
    c_out: int | None  # channels of its output map; None for a head (its outputs are not one map)

    @property
    def match_key(self) -> tuple:
        return self.section, self.block, self.stride, self.c_in, self.c_out


@dataclass
class InheritReport(TransferReport):
    """A TransferReport that also says which source layer each target layer took its tensors from."""

    pairs: dict[int, tuple[int, str]] = field(default_factory=dict)  # target layer -> (source layer, block)

    def inherited_layers(self) -> list[tuple[int, int, str]]:
        """(target, source, block) of the matched pairs that handed over at least one tensor."""
        return [(i, j, block) for i, (j, block) in self.pairs.items()
                if any(k.startswith(f"model.{i}.") for k in self.transferred)]

    def inherited(self) -> str:
        pairs = ", ".join(f"{i}<-{j} {block}" for i, j, block in self.inherited_layers())
        return f"inherited: {pairs or 'nothing'}"


def layer_signatures(model: DetectionModel) -> list[LayerSignature]:
    """The signature of each layer holding tensors (Upsample and Concat hold none and are skipped), from one
    forward pass of a zero image in eval mode (BatchNorm statistics untouched; the train/eval mode is restored)."""
    p = next(model.parameters())
    size = PROBE_STRIDES * int(model.stride.max())
    n_backbone = len(model.yaml["backbone"])
    signatures = []

    def record(m: nn.Module, x) -> torch.Tensor | tuple:
        y = m(x)
        if m.state_dict():
            inputs = x if isinstance(x, (list, tuple)) else [x]
            one_map = isinstance(y, torch.Tensor)
            spec = REGISTRY.get(m.type)
            signatures.append(LayerSignature(
                i=m.i, section="backbone" if m.i < n_backbone else "head",
                block=spec.cls.__name__ if spec else type(m).__name__,
                stride=tuple(round(size / t.shape[-2]) for t in ([y] if one_map else inputs)),
                c_in=tuple(int(t.shape[1]) for t in inputs), c_out=int(y.shape[1]) if one_map else None))
        return y

    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.forward_layers(torch.zeros(1, model.yaml["ch"], size, size, device=p.device, dtype=p.dtype), record)
    finally:
        model.train(training)
    return signatures


def match_layers(source: list[LayerSignature], target: list[LayerSignature]) -> dict[int, int]:
    """target layer -> source layer: each target layer, in order, takes the first source layer after the last
    one taken with the same section, block, stride and channels (monotonic, each source layer used once)."""
    pairs, start = {}, 0
    for t in target:
        j = next((k for k in range(start, len(source)) if source[k].match_key == t.match_key), None)
        if j is not None:
            pairs[t.i], start = source[j].i, j + 1
    return pairs


def inherit_state(source: DetectionModel, target: DetectionModel, source_name: str,
                  exclude: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], InheritReport]:
    """`target`'s state_dict with the tensors of `source`'s matching layers put in (load it strictly), and the
    report. Keys containing any of `exclude` keep the target's values (anchors set by --cfg or hyp)."""
    target_signatures = layer_signatures(target)
    pairs = match_layers(layer_signatures(source), target_signatures)
    blocks = {s.i: s.block for s in target_signatures}
    report = InheritReport(source_name, fillable_keys(target, exclude),
                           pairs={i: (j, blocks[i]) for i, j in pairs.items()})
    source_of = {j: i for i, j in pairs.items()}
    theirs = {}
    for key, tensor in source.state_dict().items():
        match = re.fullmatch(r"model\.(\d+)\.(.+)", key)
        if match and int(match.group(1)) in source_of:
            theirs[f"model.{source_of[int(match.group(1))]}.{match.group(2)}"] = tensor
    theirs = {k: t for k, t in theirs.items() if k in report.keys}
    return take_whole_modules(target, theirs, report), report


def inherit_from_checkpoint(model: DetectionModel, ckpt: dict, source_name: str,
                            exclude: tuple[str, ...] = ()) -> InheritReport:
    """Load into `model` what it inherits from the model `ckpt` holds (its EMA when present); the report says what."""
    source = model_from_checkpoint(ckpt, source_name)
    state, report = inherit_state(source, model, source_name, exclude)
    model.load_state_dict(state, strict=True)
    return report
