"""The Backend interface: what detect, val and the Python API call, whatever runs the model underneath.

Its own module so that utils/infer/backends.py (opens model files, joins several into an ensemble) and
utils/infer/ensemble.py (a Backend made of Backends) both build on it without importing each other.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from utils.core.torch_utils import torch_threads


@dataclass(frozen=True)
class EngineInput:
    """A batch already in an exported file's own layout, dtype and quantisation (deploy's pixel lookup), which its
    runtime takes as is; `shape` is the NCHW shape the network sees."""

    array: np.ndarray
    shape: tuple[int, int, int, int]


class Backend:
    """A loaded model. Subclasses set the attributes below and implement `_forward`.

    `dynamic` is True when any input size that is a multiple of `stride` works (the .pt model); exported
    files have a fixed `imgsz` and, when `fixed_batch` is set, take that many images per call.
    `end_to_end` is True for files exported with NMS inside: their rows are already x1 y1 x2 y2 conf cls.
    `cpu_runtime` is True when another runtime's threads compute the model on the CPU cores (see `torch_work`).
    """

    kind = "base"

    def __init__(self, path: Path, device: torch.device, fp16: bool = False):
        self.path, self.device = path, device
        self.fp16 = fp16
        self.names: list[str] = []
        self.stride = 32
        self.imgsz: tuple[int, int] | None = None
        self.trained_imgsz: int | None = None  # a checkpoint's training size, read with its weights
        self.dynamic = False
        self.fixed_batch: int | None = None
        self.end_to_end = False
        self.cpu_runtime = False

    def _forward(self, im: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def torch_work(self) -> contextlib.AbstractContextManager:
        """The context every loop around this model (detect, val) runs its torch work in: one torch thread when
        another runtime computes the model on the CPU, since torch's OpenMP workers keep spinning after each op
        and take the cores that runtime needs (detect.py's inference on an .onnx measured 1.3-1.8x slower than
        the runtime alone); torch's own threads otherwise."""
        return torch_threads(1) if self.cpu_runtime else contextlib.nullcontext()

    def frame_tensor(self, boxed_bgr: np.ndarray) -> torch.Tensor:
        """A letterboxed uint8 BGR frame as a batch-1 float RGB NCHW tensor in [0, 1] on the model's device."""
        chw = torch.from_numpy(np.ascontiguousarray(boxed_bgr[:, :, ::-1].transpose(2, 0, 1))).to(self.device)
        return ((chw.half() if self.fp16 else chw.float()) / 255)[None]

    def frame_input(self, boxed_bgr: np.ndarray) -> torch.Tensor | EngineInput:
        """A letterboxed uint8 BGR frame as this model's batch-1 input: `frame_tensor`, unless the model takes a
        cheaper form of it."""
        return self.frame_tensor(boxed_bgr)

    def __call__(self, im: torch.Tensor | np.ndarray) -> torch.Tensor:
        im = torch.as_tensor(im, device=self.device)
        im = im.half() if self.fp16 else im.float()
        if self.fixed_batch and im.shape[0] != self.fixed_batch:  # run in chunks of the exported batch size
            k = self.fixed_batch
            chunks = []
            for i in range(0, im.shape[0], k):
                chunk = im[i:i + k]
                pad = k - chunk.shape[0]
                if pad:
                    chunk = torch.cat([chunk, chunk.new_zeros(pad, *chunk.shape[1:])], 0)
                chunks.append(self(chunk)[:k - pad])
            return torch.cat(chunks, 0)
        return self._as_boxes(self._forward(im))

    def _as_boxes(self, pred: torch.Tensor | list | tuple) -> torch.Tensor:
        """The first output as float32 (B, N, 5 + nc) on the backend's device, whatever layout the file has."""
        pred = pred[0] if isinstance(pred, (list, tuple)) else pred
        pred = torch.as_tensor(pred, device=self.device).float()
        nc = len(self.names)
        if nc and not self.end_to_end and pred.shape[-1] != nc + 5 and pred.shape[1] == nc + 5:  # channels-first export (B, 5+nc, N)
            pred = pred.transpose(1, 2)
        return pred

    def warmup(self, imgsz: tuple[int, int] | None = None) -> None:
        """One throw-away inference so the first real frame's time is representative (lazy init, cudnn)."""
        h, w = self.imgsz or imgsz or (640, 640)
        self(torch.zeros(self.fixed_batch or 1, 3, h, w, device=self.device))
