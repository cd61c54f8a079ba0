"""The image-size rule every entry point applies to --imgsz: one or two positive sizes, each rounded up to a
multiple of the model's largest stride (a warning says when). Torch-free, so the runner and the library share it."""
from __future__ import annotations

from typing import Iterable

from .errors import UserInputError
from .log import LOGGER


def round_to_stride(size: int, stride: int) -> int:
    """The smallest multiple of `stride` >= size; sizes below 1 are the user's error."""
    if int(size) < 1:
        raise UserInputError("must be a positive number of pixels", "imgsz", size)
    rounded = -(-int(size) // int(stride)) * int(stride)
    if rounded != size:
        LOGGER.warning(f"WARNING: --imgsz {size} must be a multiple of max stride {stride}, updating to {rounded}")
    return rounded


def round_imgsz(imgsz: int | Iterable[int], stride: int) -> tuple[int, int]:
    """imgsz as one value (square) or two (h, w) -> (h, w), each rounded up to a multiple of `stride`."""
    sizes = [imgsz] if isinstance(imgsz, (int, float)) else list(imgsz)
    if len(sizes) not in (1, 2):
        raise UserInputError("expected one or two sizes", "imgsz", " ".join(map(str, sizes)))
    h = round_to_stride(sizes[0], stride)
    w = h if sizes[-1] == sizes[0] else round_to_stride(sizes[-1], stride)  # a square size warns once
    return h, w


SURPRISING_SCALE = 4  # an --imgsz this many times the model's own size is more likely a typo than a wish


def warn_far_from_trained(hw: tuple[int, int], own: int | Iterable[int], flag: str = "--imgsz") -> None:
    """Warn when the input is far above the size the model was trained (or exported) at: the cost grows with the
    square (8192 px takes seconds per image on a CPU, which looks like a hang) and the model never saw objects
    that large in pixels."""
    own_side = max([own] if isinstance(own, (int, float)) else list(own))
    if own_side and max(hw) > SURPRISING_SCALE * own_side:
        LOGGER.warning(f"WARNING: {flag} {max(hw)} is {max(hw) / own_side:.0f}x the {own_side} px the model was trained "
                       f"at: each image costs about {(max(hw) / own_side) ** 2:.0f}x more; "
                       f"omit {flag} to run at the model's own size")
