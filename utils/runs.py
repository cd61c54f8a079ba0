"""Run folders (runs/train/exp, exp2, ...) as yolov5 names them; never reuse a user's folder."""
from __future__ import annotations

from pathlib import Path

from utils.errors import UserInputError


def increment_path(path: str | Path, exist_ok: bool = False, mkdir: bool = False) -> Path:
    """Return `path`, or `path2`, `path3`, ... — the first that does not exist yet.

    With exist_ok the given path is returned even if it exists (yolov5's --exist-ok). A folder that cannot be
    made (a file in the way, no permission) is a one-line error naming it.
    """
    path = Path(path)
    if path.exists() and not exist_ok:
        stem, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
        n = 2
        while Path(f"{stem}{n}{suffix}").exists():
            n += 1
        path = Path(f"{stem}{n}{suffix}")
    if mkdir:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserInputError(f"--project {path.parent}: cannot create the run folder {path} ({e.strerror})") from None
    return path
