"""Run folders: yolov5's exp, exp2, ... numbering, and a clear error when the folder cannot be made."""
import pytest

from deploy.errors import UserInputError
from deploy.outputs import increment_path


def test_increment_path_numbers_existing_folders(tmp_path):
    assert increment_path(tmp_path / "exp", mkdir=True) == tmp_path / "exp"
    assert increment_path(tmp_path / "exp", mkdir=True) == tmp_path / "exp2"
    assert increment_path(tmp_path / "exp") == tmp_path / "exp3"
    assert increment_path(tmp_path / "exp", exist_ok=True) == tmp_path / "exp"


def test_a_file_in_the_way_is_a_one_line_error(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(UserInputError, match=r"cannot create the run folder .*runs/exp \(Not a directory\)"):
        increment_path(tmp_path / "runs" / "exp", mkdir=True)
