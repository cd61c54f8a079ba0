"""Command-line plumbing shared by the runner and the project's CLIs (torch-free, so both sides use one copy):
bad input as one `error:` line, and the flags detect.py and `python -m deploy.run` have in common."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Mapping

from .detector import Options
from .errors import UserInputError

DEFAULTS = Options()  # detect.py's thresholds, which the runner's Python API shares


def flag_for(subject: str, flags: Mapping[str, str] | None = None) -> str:
    """The door's flag for what library code calls `subject`: from `flags`, else `conf_thres` -> `--conf-thres`;
    a subject that is no option name ("image") stays as it is."""
    if flags and subject in flags:
        return flags[subject]
    return f"--{subject.replace('_', '-')}" if subject.isidentifier() else subject


def run_cli(main: Callable[[], object], flags: Mapping[str, str] | None = None) -> None:
    """Call `main()`; a UserInputError prints `error: <message>` on stderr, with the door's flag where the library
    named its subject (`flags` for names that are not the flag spelled with dashes, e.g. {"model file":
    "--weights"}), and exits with 2, never a traceback."""
    try:
        main()
    except UserInputError as e:
        print(f"error: {e if e.subject is None else e.render(flag_for(e.subject, flags))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def add_threshold_flags(p: argparse.ArgumentParser, conf: float = DEFAULTS.conf_thres,
                        iou: float = DEFAULTS.iou_thres, max_det: int = DEFAULTS.max_det) -> None:
    """--conf-thres, --iou-thres, --max-det; validation passes its own (lower) defaults."""
    p.add_argument("--conf-thres", type=float, default=conf, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=iou, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=max_det, help="maximum detections per image")


def add_label_flags(p: argparse.ArgumentParser) -> None:
    """--save-txt, --save-conf: YOLO-format label files."""
    p.add_argument("--save-txt", action="store_true", help="save results to labels/*.txt (YOLO format)")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")


def add_run_folder_flags(p: argparse.ArgumentParser, project: str) -> None:
    """--project, --name, --exist-ok: results go to project/name, incremented (exp, exp2, ...) unless --exist-ok."""
    p.add_argument("--project", default=project, help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")


def add_detect_flags(p: argparse.ArgumentParser, project: str, line_thickness: int | None) -> None:
    """Every flag detect.py and the runner share: thresholds, class filter, outputs, drawing, source reading."""
    add_threshold_flags(p)
    p.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    p.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    p.add_argument("--view-img", action="store_true", help="show results in a window (when a display exists)")
    add_label_flags(p)
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    add_run_folder_flags(p, project)
    p.add_argument("--line-thickness", type=int, default=line_thickness,
                   help="box thickness in pixels, 0: by image size" + (" (the default)" if line_thickness is None else ""))
    p.add_argument("--hide-labels", action="store_true", help="hide labels")
    p.add_argument("--hide-conf", action="store_true", help="hide confidences")
    p.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride")
    p.add_argument("--allow-local-streams", action="store_true",
                   help="allow stream URLs on private/loopback/link-local addresses (off: no SSRF)")


def checked_line_thickness(value: int | None) -> int | None:
    """--line-thickness in pixels; 0 (or unset) picks it by image size, as yolov5 does. Below 0 OpenCV would fill
    every box over its object and mirror the labels, so it is refused before anything runs."""
    if value is not None and value < 0:
        raise UserInputError(f"--line-thickness {value}: must be 1 or more pixels (0: by image size)")
    return value or None
