"""Project logger: plain messages on stdout, set up by the runner's get_logger (deploy/log.py) so both sides
print alike. Rank 0 alone prints progress under DDP, so ranks > 0 are raised to WARNING."""
from __future__ import annotations

import logging
import os

from deploy.log import get_logger

LOGGER_NAME = "pconv_yolo"
LOGGER = get_logger(LOGGER_NAME, logging.INFO if int(os.environ.get("RANK", -1)) in (-1, 0) else logging.WARNING)
