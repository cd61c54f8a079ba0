"""atomic_file: the target is the old file or the new one, never a partial write."""
from __future__ import annotations

import pytest

from utils.core.files import atomic_file


def test_an_error_mid_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "x.npy"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="stopped"):
        with atomic_file(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("stopped")
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]


def test_other_writers_temp_files_survive_unless_single_writer(tmp_path):
    target = tmp_path / "last.pt"
    other = tmp_path / ".last.pt.abc123.tmp"  # another process's write in progress, or a killed one's
    other.write_bytes(b"in progress")
    with atomic_file(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new" and other.exists()
    with atomic_file(target, durable=True, single_writer=True) as f:
        f.write(b"newer")
    assert target.read_bytes() == b"newer" and sorted(tmp_path.iterdir()) == [target]
