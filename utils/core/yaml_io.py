"""Reading the user's YAML files (data, model, hyperparameters) with one-line errors instead of tracebacks."""
from __future__ import annotations

from pathlib import Path

import yaml

from deploy.errors import UserInputError


def read_yaml_mapping(path: Path, label: str, expected: str) -> dict:
    """The mapping in the YAML file `path`; `label` starts every error message (the file or flag),
    `expected` says what the mapping should hold when the file holds something else."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserInputError(f"{label}: not valid YAML ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{label}: {expected}")
    return data
