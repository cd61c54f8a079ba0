"""The project's CLIs print bad input the runner's way: deploy/cli.py's `run_cli` (torch-free, one copy) turns a
UserInputError into one `error: <message>` line on stderr and exit status 2."""
from deploy.cli import run_cli

__all__ = ["run_cli"]
