"""Loggers that print plain messages on stdout: the runner's ("deploy"), and the project's, configured by
utils/core/log.py through the same function so both sides print alike."""
from __future__ import annotations

import logging
import sys


def get_logger(name: str = "deploy", level: int = logging.INFO) -> logging.Logger:
    """Logger `name`, given a plain stdout handler once; it does not propagate, so nothing prints twice."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(level)
    return logger


LOGGER = get_logger()
