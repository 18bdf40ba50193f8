"""Reading YAML files a user brings (recipes, option files, locks): clear errors naming the file."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmops.core.errors import LLMOpsError


def load_yaml_file(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise LLMOpsError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    except OSError as e:
        raise LLMOpsError(f"{path}: cannot be read: {e.strerror}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LLMOpsError(f"{path}: expected a YAML mapping of config keys, got {type(data).__name__}")
    return data
