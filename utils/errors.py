"""The one exception type for problems the user can fix (bad file, bad flag, bad YAML).

CLIs catch it and print its message as a single line instead of a traceback, so every raise
site must name the file or flag and say what is wrong with it.
"""


class UserInputError(Exception):
    """Bad input from the user: the message is shown as-is, on one line."""
