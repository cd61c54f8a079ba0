"""The one exception the runner raises for bad input; the CLI prints it as a single line and exits 2."""
from __future__ import annotations


class UserInputError(Exception):
    """A problem with the user's model file, source or options. Library code names the value as its own API does
    (`subject`, e.g. "model file", "conf_thres") and leaves flags to the CLIs: run_cli shows the door's flag in
    the subject's place, so one message reads `--weights best.onnx: ...` in detect.py and `--model best.onnx:
    ...` in the runner. Without a subject the message is shown as it is."""

    def __init__(self, problem: str, subject: str | None = None, value: object = None):
        self.problem, self.subject, self.value = problem, subject, value
        super().__init__(self.render(subject))

    def render(self, name: str | None) -> str:
        """The message with `name` (the subject, or a flag) in front: 'name value: problem'."""
        if name is None:
            return self.problem
        return f"{name}{'' if self.value is None else f' {self.value}'}: {self.problem}"


MODEL_FILE = "model file"  # the subject of problems with the model file (detect.py: --weights, the runner: --model)
