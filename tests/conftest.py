"""Fixtures shared by several test files."""
import logging

import cv2
import numpy as np
import pytest
import torch
import yaml

from deploy.log import LOGGER as DEPLOY_LOGGER
from utils.core.log import LOGGER_NAME

BLOB_BOXES = ((0.5, 0.5, 0.8, 0.7), (0.4, 0.55, 0.6, 0.8), (0.6, 0.5, 0.7, 0.6), (0.5, 0.45, 0.9, 0.5))  # cx cy w h


@pytest.fixture
def outputs_before_and_after_fuse():
    """f(model, x) -> (eval output, output after model.fuse()), with BN statistics made non-trivial first so
    fusion has something to fold."""
    def run(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)
        model.eval()
        with torch.no_grad():
            before = model(x)
            model.fuse()
            return before, model(x)
    return run


@pytest.fixture
def one_torch_thread():
    """One intra-op thread (modules opt in with pytestmark = usefixtures): tiny models gain nothing from a
    second one, counts do not depend on it, and on a busy 2-core box 2-thread barriers stall."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def two_torch_threads():
    """CI's two intra-op threads, whatever earlier modules set: a training trajectory depends on float summation
    order, so a test that asserts where training ends must not depend on the thread count it inherits."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


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


@pytest.fixture
def log_lines(caplog):
    """f() -> messages the project's and the runner's loggers emitted so far in the test (neither propagates to
    root; detect.py prints through the first and reads its sources through deploy/, which logs to the second)."""
    loggers = [logging.getLogger(LOGGER_NAME), DEPLOY_LOGGER]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.INFO)
    yield lambda: [r.getMessage() for r in caplog.records]
    for logger in loggers:
        logger.removeHandler(caplog.handler)
