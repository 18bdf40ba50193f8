"""`llmops` command line: argument handling only. Each command is a module of llmops.commands
(one file per command, imported only when that command runs).

    llmops run [RECIPE|path.yaml] [overrides...] [hydra flags: --cfg job, --info, -m, ...]
    llmops plan [RECIPE] [overrides...] [--out DIR] [--server-dry-run]
    llmops validate [RECIPE] [overrides...] | --all
    llmops recipes ls | show NAME | cp NAME DEST | diff A B | lock RUN_DIR
    llmops resume RUN_DIR
    llmops serve RUN_DIR [--port N] | call RUN_DIR|URL PROMPT | undeploy RUN_DIR
    llmops sweep report DIR | promote SWEEP_DIR
    llmops ray status | stop

Nothing here imports torch, ray or transformers: plan, validate, recipes and --help stay fast.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
from typing import Optional

from llmops.core.errors import Interrupted, LLMOpsError, signal_name, signal_of

COMMANDS = {
    "run": "compose a recipe and run its stages",
    "plan": "print what a run would do and write; change nothing",
    "validate": "check a recipe and overrides; report every error",
    "recipes": "ls | show | cp | diff | lock",
    "resume": "rerun a run directory, skipping finished stages",
    "serve": "serve a run's model locally (OpenAI completions API)",
    "call": "send a prompt to a run's model or a URL",
    "undeploy": "delete what a run applied to Kubernetes",
    "sweep": "report: print a sweep's summary",
    "promote": "deploy the best model of a sweep",
    "ray": "status | stop: the warm local Ray head of cluster=local",
}


def usage() -> str:
    lines = ["usage: llmops COMMAND [args...]", "",
             "Fine-tune-and-serve jobs for language models as Hydra recipes.", "", "commands:"]
    lines += [f"  {n:<10} {h}" for n, h in COMMANDS.items()]
    lines += ["", "`llmops COMMAND --help` for each. Start with: llmops run quickstart"]
    return "\n".join(lines)


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def stop_on_signals() -> dict:
    """SIGINT and SIGTERM end a command the same way: `Interrupted` (a KeyboardInterrupt) in the
    main thread, so a running stage is marked `interrupted`, what the run started is ended, and
    the command exits 130 (SIGINT) or 143 (SIGTERM). Returns the handlers it replaced."""
    Interrupted.last = 0
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from llmops import __version__

        print(f"llmops {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"llmops: error: unknown command '{name}'{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    before = stop_on_signals()
    try:
        rc = importlib.import_module(f"llmops.commands.{name}").main(rest)
    except LLMOpsError as e:
        print(f"llmops: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        if not getattr(e, "reported", False):  # `llmops run` says where to resume itself
            print(f"llmops: interrupted by {signal_name(signal_of(e))}", file=sys.stderr)
        return 128 + signal_of(e)
    finally:
        for sig, handler in before.items():  # main() called in-process (tests) leaves them as found
            signal.signal(sig, handler)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
