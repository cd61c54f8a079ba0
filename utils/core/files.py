"""Files the project writes for itself (checkpoints, caches): written whole or not at all."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


@contextmanager
def atomic_file(path: str | Path, durable: bool = False, single_writer: bool = False) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` only when the block ends without an error.

    A process killed mid-write leaves the previous file (or none) and a hidden temp file, never a partial file
    that a later run would read as complete. `durable` also syncs the data and the rename to disk (checkpoints:
    a power cut must not lose the last epoch). `single_writer` (one process ever writes `path`) lets a finished
    write remove temp files left by killed ones; with several writers (DDP ranks caching the same data) it
    would remove another's temp file mid-write.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if single_writer:
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left behind by a process killed mid-write
            stale.unlink(missing_ok=True)
    if durable and hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
