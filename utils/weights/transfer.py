"""The one rule for putting another model's tensors into one of ours, and the report of what came across.

Shared by the foreign-file mapping (foreign.py: same layout, another producer) and inheritance across
architectures (inherit.py: layers matched by stage and block). A module takes the other model's tensors whole or
not at all, so nothing is left half loaded; a conv and the BatchNorm after it count as one module, because
statistics measured after another conv describe nothing this conv outputs.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

import torch
import torch.nn as nn

BUILT_BY_ARCHITECTURE = ("stride", "bins")  # head buffers our builder computes; no file carries them


@dataclass
class TransferReport:
    """Which of our tensors came from the file; the rest keep their initial (random) values."""

    source: str
    keys: list[str]  # our tensors a file could fill, in state_dict order
    transferred: set[str] = field(default_factory=set)

    @property
    def random(self) -> list[str]:
        return [k for k in self.keys if k not in self.transferred]

    def random_layers(self) -> list[str]:
        """Our modules left random, each named by its coarsest prefix ('model.2', 'model.24.cls') left wholly so."""
        random = set(self.random)

        def coarsest(key: str) -> str:
            parts = key.split(".")
            for n in range(2, len(parts)):
                prefix = ".".join(parts[:n])
                if all(k in random for k in self.keys if k.startswith(prefix + ".")):
                    return prefix
            return key.rsplit(".", 1)[0]

        return list(dict.fromkeys(coarsest(k) for k in self.random))

    def summary(self) -> str:
        line = f"transferred {len(self.transferred)}/{len(self.keys)} tensors from {self.source}"
        left = self.random_layers()
        return f"{line}; stayed random: {', '.join(left)}" if left else line


def fillable_keys(model: nn.Module, exclude: tuple[str, ...] = ()) -> list[str]:
    """`model`'s state_dict keys another model may fill: all but the head buffers the architecture computes and
    keys containing any of `exclude` (anchors the caller's --cfg or hyp set)."""
    head = f"model.{len(model.model) - 1}."
    built = {head + name for name in BUILT_BY_ARCHITECTURE}
    return [k for k in model.state_dict() if k not in built and not any(x in k for x in exclude)]


def load_units(model: nn.Module) -> dict[str, str]:
    """Each state_dict key → the module it loads with: its own module, or the block holding a conv and its
    BatchNorm side by side (models.common.Conv) for either of those two."""
    paired = {}
    for name, module in model.named_modules():
        children = dict(module.named_children())
        if any(isinstance(c, nn.Conv2d) for c in children.values()) and \
                any(isinstance(c, nn.BatchNorm2d) for c in children.values()):
            prefix = f"{name}." if name else ""
            paired.update({prefix + child: name for child, c in children.items()
                           if isinstance(c, (nn.Conv2d, nn.BatchNorm2d))})
    units = {}
    for key in model.state_dict():
        owner = key.rsplit(".", 1)[0] if "." in key else ""
        units[key] = paired.get(owner, owner)
    return units


def take_whole_modules(model: nn.Module, theirs: dict[str, torch.Tensor],
                       report: TransferReport) -> dict[str, torch.Tensor]:
    """`model`'s state_dict with `theirs` (keyed as ours) put in, module by module: a module takes them only when
    every one of its tensors in `report.keys` is there with the same shape. Fills `report.transferred`; returns the
    full state dict (load it strictly)."""
    ours = model.state_dict()
    theirs = {k: t for k, t in theirs.items() if k in ours and ours[k].shape == t.shape}
    units = load_units(model)
    members: dict[str, list[str]] = collections.defaultdict(list)
    for key in report.keys:
        members[units[key]].append(key)
    report.transferred = {k for keys in members.values() if all(k in theirs for k in keys) for k in keys}
    return {k: (theirs[k].to(v.dtype) if k in report.transferred else v).detach().clone() for k, v in ours.items()}
