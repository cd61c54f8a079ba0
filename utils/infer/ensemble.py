"""Model ensembles (yolov5's `--weights a.pt b.pt`): several models run on the same input, their raw
predictions concatenated before NMS ("NMS ensemble"), so NMS keeps the best box each model found.

Concatenating rather than averaging works for any mix of architectures and formats: the models only need
the same classes (so class columns line up) and the same stride (so one letterboxed input suits all).
"""
from __future__ import annotations

from typing import Sequence

import torch

from deploy.errors import MODEL_FILE, UserInputError
from utils.core.log import LOGGER
from utils.infer.backend_base import Backend


class Ensemble(Backend):
    """Several loaded backends behind the one `backend(im)` interface; outputs (B, sum of N, 5+nc)."""

    kind = "ensemble"

    def __init__(self, members: Sequence[Backend]):
        if len(members) < 2:
            raise UserInputError("an ensemble needs two or more files", MODEL_FILE)
        first = members[0]
        super().__init__(first.path, first.device, first.fp16)
        self.members = list(members)
        _check_compatible(self.members)
        self.names = next((list(m.names) for m in self.members if m.names), [])  # a TFLite file may lack names
        self.stride = first.stride
        self.dynamic = all(m.dynamic for m in self.members)
        self.imgsz = next((m.imgsz for m in self.members if not m.dynamic), first.imgsz)
        self.trained_imgsz = first.trained_imgsz
        self.fixed_batch = None  # each member splits the batch into its own exported batch size
        self.end_to_end = False
        self.cpu_runtime = all(m.cpu_runtime for m in self.members)  # a .pt member needs torch's threads
        LOGGER.info(f"Ensemble of {len(self.members)} models ({', '.join(m.path.name for m in self.members)}): "
                    f"predictions concatenated before NMS")

    def __call__(self, im: torch.Tensor) -> torch.Tensor:
        outs = [m(im).to(self.device) for m in self.members]
        return torch.cat(outs, 1)

    def warmup(self, imgsz: tuple[int, int] | None = None) -> None:
        for m in self.members:
            m.warmup(self.imgsz or imgsz)


def _check_compatible(members: list[Backend]) -> None:
    """Same classes, stride and (for fixed-size exports) input size; no NMS inside any member."""
    first = members[0]
    for m in members:
        if m.end_to_end:
            raise UserInputError("exported with NMS inside; an ensemble needs raw predictions (a file exported "
                                 "without NMS)", MODEL_FILE, m.path)
    for m in members[1:]:
        pair = f"{first.path} {m.path}"
        if m.names and first.names and m.names != first.names:
            raise UserInputError(f"ensemble members must share class names ({len(first.names)} vs "
                                 f"{len(m.names)} classes, or a different order)", MODEL_FILE, pair)
        if m.stride != first.stride:
            raise UserInputError(f"ensemble members must share the stride ({first.stride} vs {m.stride})",
                                 MODEL_FILE, pair)
    fixed = {m.imgsz for m in members if not m.dynamic}
    if len(fixed) > 1:
        raise UserInputError(f"ensemble members were exported at different sizes {sorted(fixed)}", MODEL_FILE)
