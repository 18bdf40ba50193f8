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


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: the run stops the way Ctrl-C stops it, and exits 128 + signum.

    `Interrupted.last` is the last signal that arrived: code in between (Ray's `ray.get`) may turn
    the exception into a plain KeyboardInterrupt; `signal_of` still tells which signal it was."""

    last: int = 0

    def __init__(self, signum: int):
        Interrupted.last = self.signum = int(signum)
        super().__init__(signal_name(self.signum))


def signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


def signal_of(e: BaseException) -> int:
    """The signal number behind a KeyboardInterrupt (SIGINT when none is known)."""
    return int(getattr(e, "signum", 0) or Interrupted.last or 2)
