"""The one exception type for problems the user can fix (bad file, bad flag, bad YAML).

It is the torch-free runner's own (`deploy.errors`), so the library, the CLIs and `deploy/` raise and catch one
type; CLIs print its message as a single line instead of a traceback, so every raise site must name the file
or flag and say what is wrong with it.
"""
from deploy.errors import UserInputError

__all__ = ["UserInputError"]
