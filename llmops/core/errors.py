"""Errors a user can act on. Each names the key or file and says what was expected."""

from __future__ import annotations


class LLMOpsError(Exception):
    """A failure with a message meant for the user (no traceback needed)."""


class ConfigError(LLMOpsError):
    """One or more configuration problems, all reported at once."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} configuration error{'s' if n != 1 else ''}:"
        super().__init__("\n".join([head] + [f"  - {p}" for p in self.problems]))


class StageError(LLMOpsError):
    """A stage failed; the run directory keeps what earlier stages produced."""

    def __init__(self, stage: str, message: str):
        self.stage = stage
        super().__init__(f"stage '{stage}' failed: {message}")
