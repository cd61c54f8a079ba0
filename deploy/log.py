"""The runner's logger: plain messages on stdout, like the project's detect.py (whose logger needs torch)."""
from __future__ import annotations

import logging
import sys


def get_logger() -> logging.Logger:
    logger = logging.getLogger("deploy")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger


LOGGER = get_logger()
