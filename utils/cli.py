"""Shared CLI plumbing: turn a UserInputError into one clear line and a non-zero exit."""
from __future__ import annotations

import sys
from typing import Callable

from utils.errors import UserInputError


def run_cli(main: Callable[[], object]) -> None:
    """Call `main()`; a UserInputError prints `error: <message>` on stderr and exits with 2."""
    try:
        main()
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
