"""The project's CLIs print bad input the runner's way: deploy/cli.py's `run_cli` (torch-free, one copy) turns a
UserInputError into one `error: <message>` line on stderr and exit status 2. Every door here takes its model file
as --weights, so that is the flag shown for the library's "model file"."""
from __future__ import annotations

from typing import Callable, Mapping

from deploy.cli import run_cli as run_door

FLAGS = {"model file": "--weights"}


def run_cli(main: Callable[[], object], flags: Mapping[str, str] | None = None) -> None:
    """deploy.cli.run_cli with this project's flag names (FLAGS, then `flags`)."""
    run_door(main, {**FLAGS, **(flags or {})})


__all__ = ["run_cli"]
