"""Fixtures shared by several test files."""
import logging

import cv2
import numpy as np
import pytest
import yaml

from utils.log import LOGGER_NAME

BLOB_BOXES = ((0.5, 0.5, 0.8, 0.7), (0.4, 0.55, 0.6, 0.8), (0.6, 0.5, 0.7, 0.6), (0.5, 0.45, 0.9, 0.5))  # cx cy w h


@pytest.fixture
def log_text(caplog):
    """caplog that also sees the project logger (which does not propagate to root outside tests)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.propagate = True
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    yield caplog
    logger.propagate = False


@pytest.fixture(scope="session")
def blob_data(tmp_path_factory):
    """A 1-class data YAML over 4 noise images with one large labelled box each (train = val)."""
    root = tmp_path_factory.mktemp("blobs")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i, box in enumerate(BLOB_BOXES):
        cv2.imwrite(str(root / f"images/im{i}.jpg"), rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
        (root / f"labels/im{i}.txt").write_text("0 %g %g %g %g\n" % box)
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images", "val": "images", "names": ["blob"]}))
    return data
