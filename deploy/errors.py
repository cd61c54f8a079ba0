"""The one exception the runner raises for bad input; the CLI prints it as a single line and exits 2."""


class UserInputError(Exception):
    """A problem with the user's model file, source or flags: message names the flag or file and the problem."""
