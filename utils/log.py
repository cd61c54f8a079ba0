"""Project logger. Rank 0 alone prints progress under DDP, so ranks > 0 are raised to WARNING."""
from __future__ import annotations

import logging
import os
import sys

LOGGER_NAME = "pconv_yolo"


def get_logger() -> logging.Logger:
    """Return the project logger, configured once (plain messages on stdout)."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
        rank = int(os.environ.get("RANK", -1))
        logger.setLevel(logging.INFO if rank in (-1, 0) else logging.WARNING)
    return logger


LOGGER = get_logger()
