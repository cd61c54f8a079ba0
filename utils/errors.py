"""The one exception type for problems the user can fix (bad file, bad flag, bad YAML).

It is the torch-free runner's own (`deploy.errors`), so the library, the CLIs and `deploy/` raise and catch one
type; CLIs print its message as a single line instead of a traceback, so every raise site must name the file
or value and say what is wrong with it. Library code names a value as its API does (`subject`: "model file",
"conf_thres"); the CLI's run_cli shows its own flag there.
"""
from deploy.errors import MODEL_FILE, UserInputError

__all__ = ["MODEL_FILE", "UserInputError"]
