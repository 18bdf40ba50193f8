"""A sweep job's process, run to its end: a new interpreter, or a fork of a warm one
(`warm_imports` first), with a time limit, taken down with its process group when the wait is
interrupted or cancelled. Also the body of the Ray launcher's tasks and of its warm job runners
(llmops.clusters.warm_ray's head keeps them between sweeps: `JobRunner`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional


def run_child(argv: list, cwd: str, env: dict, log_path: str, timeout_s: int, fork: bool = False,
              cancelled: Optional[Callable[[], bool]] = None) -> dict:
    """Run one job's process to its end (also the body of the Ray task). `fork`: the job's
    process is a fork of this one after the imports every job needs (`warm_imports`), instead of
    a new interpreter that imports them again; for jobs that do not use Ray themselves.
    `cancelled`: asked while waiting; True ends the job's process group like an interrupt."""
    import signal
    import subprocess

    t0 = time.time()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    p = forked(argv, cwd, env, log_path) if fork and warm_imports() else None
    if p is None:
        with open(log_path, "ab") as out:
            p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        while p.poll() is None:
            if cancelled is not None and cancelled():
                raise KeyboardInterrupt("cancelled")
            if timeout_s and time.time() - t0 > timeout_s:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(30)
                return {"rc": 124, "seconds": time.time() - t0, "timeout": True,
                        "started": t0, "ended": time.time()}
            time.sleep(0.1)
    except BaseException:  # cancelled or interrupted: take the job (and its Ray) down with us
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(30)
        except Exception:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except Exception:
                pass
        raise
    return {"rc": p.returncode, "seconds": time.time() - t0, "timeout": False,
            "started": t0, "ended": time.time(), "process": "fork" if isinstance(p, Forked) else "new"}


# what every job imports (torch, transformers, llmops's run path), once per Ray worker process
WARM_IMPORTS = ("torch", "transformers", "transformers.trainer", "transformers.models.gpt2",
                "llmops.cli", "llmops.commands.run", "llmops.hydra_app", "llmops.pipeline.engine",
                "llmops.training.loop", "llmops.data.build")


def warm_imports() -> bool:
    """Import what every job needs into this process, so that its forks start warm. False when
    this process's llmops is not the one the jobs are given (their PYTHONPATH): then no fork."""
    import importlib

    import llmops

    for name in WARM_IMPORTS:
        importlib.import_module(name)
    root = str(Path(llmops.__file__).resolve().parent.parent)
    return os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] in ("", root) or root in sys.path[:3]


class Forked:
    """A forked job process, with the part of Popen's interface run_child uses."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        import subprocess

        end = time.time() + timeout
        while self.poll() is None:
            if time.time() > end:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.05)
        return self.returncode


def forked(argv: list, cwd: str, env: dict, log_path: str) -> Forked:
    """`argv` (`python -m llmops.cli ...`) run as `llmops.cli.main` in a fork of this process:
    its own session, working directory, environment and log; default signal handlers (the CLI
    installs its own); no Ray (the fork never touches this process's Ray connection)."""
    import signal

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pid = os.fork()
    if pid:
        os.close(fd)
        return Forked(pid)
    rc = 1
    try:  # the job's process from here on; it leaves only through os._exit
        os.setsid()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        from llmops import cli

        rc = cli.main(list(argv[3:]))  # argv: [python, -m, llmops.cli, ...]
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - the job's process ends here whatever happened
        import traceback

        traceback.print_exc()
    finally:
        try:
            import logging as logging_

            logging_.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc if isinstance(rc, int) else 1)


# ------------------------------------------------------------------------------- job runners
def identity(env: dict) -> str:
    """What a warm runner must share with the jobs it forks: the interpreter, the llmops it
    imports (the jobs' PYTHONPATH) and the state of llmops's own source files."""
    import hashlib

    import llmops

    root = Path(llmops.__file__).resolve().parent
    h = hashlib.sha256(f"{sys.executable}\0{env.get('PYTHONPATH', '')}\0{root}".encode())
    for base in (root, root.parent / "hydra_plugins"):
        for f in sorted(base.rglob("*.py")) if base.is_dir() else ():
            st = f.stat()
            h.update(f"{f}\0{st.st_mtime_ns}\0{st.st_size}\0".encode())
    return h.hexdigest()[:16]


def loaded_files() -> dict:
    """Every imported module's file and its modification time (what a warm process holds)."""
    out = {}
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if f:
            try:
                out[f] = os.stat(f).st_mtime_ns
            except OSError:
                pass
    return out


class JobRunner:
    """A detached Ray actor on the warm local head: it imports what every job needs once
    (`warm_imports`) and forks each `cluster.trainer=process` job it is given, one at a time,
    sweep after sweep. It reserves no CPU (the launcher admits jobs by their CPUs). `fresh`
    tells the launcher whether it still matches the jobs: same `identity`, and none of the files
    it imported changed since (an edited llmops, an upgraded package): else it is replaced."""

    def __init__(self, ident: str):
        self.ident = ident
        self.usable = warm_imports()
        self.files = loaded_files()

    def fresh(self, ident: str) -> bool:
        if not self.usable or ident != self.ident:
            return False
        for f, mtime in self.files.items():
            try:
                if os.stat(f).st_mtime_ns != mtime:
                    return False
            except OSError:
                return False
        return True

    def run(self, argv: list, cwd: str, env: dict, log_path: str, timeout_s: int) -> dict:
        import ray

        ctx = ray.get_runtime_context()
        t0 = time.time()
        try:
            out = run_child(argv, cwd, env, log_path, timeout_s, fork=True, cancelled=ctx.is_canceled)
        except KeyboardInterrupt:  # cancelled: the job's processes are ended; this runner stays
            return {"rc": 130, "seconds": time.time() - t0, "error": "cancelled",
                    "started": t0, "ended": time.time(), "process": "fork"}
        out["runner_pid"] = os.getpid()
        return out
