"""`RunDir`: one run directory and its files; `State`: state.json; `RunContext`: what a stage sees.

    state.json      {"run_id", "recipe", "stages": {NAME: {status, fingerprint, outputs, error,
                     seconds, reused}}}
    config.yaml     the resolved config, secrets masked
    overrides.yaml  the command-line overrides, secrets masked
    provenance.json recipe, hashes, versions, git commit, masked config
    run.lock        while a process runs the line here: its pid, host, start time (RunLock)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

from llmops.core.errors import LLMOpsError
from llmops.core.io import atomic_write_json
from llmops.run.outputs import OUTPUT_TYPES, Outputs, TrainingTask

STATE_FILE = "state.json"
SWEEP_JOB_FILE = "sweep_job.json"  # a sweep job's record (llmops.run.sweep), written before the run
CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.yaml"
PROVENANCE_FILE = "provenance.json"
LOCK_FILE = "run.lock"

log = logging.getLogger("llmops")

O = TypeVar("O", bound=Outputs)


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise LLMOpsError(f"{p}: not valid JSON ({e}); move it away to start afresh") from None
    except RecursionError:
        raise LLMOpsError(f"{p}: JSON nested too deep") from None


class State:
    """state.json of one run, held in memory and saved atomically."""

    def __init__(self, path: Path, data: dict):
        self.path = path
        self.data = data
        self.data.setdefault("stages", {})

    @classmethod
    def load(cls, run_dir: Path, run_id: str, recipe: str) -> "State":
        path = Path(run_dir) / STATE_FILE
        data = _read_json(path) if path.is_file() else {"run_id": run_id, "recipe": recipe, "stages": {}}
        return cls(path, data)

    @property
    def run_id(self) -> str:
        return self.data["run_id"]

    @property
    def recipe(self) -> Optional[str]:
        return self.data.get("recipe")

    def stage(self, name: str) -> dict:
        return self.data["stages"].setdefault(name, {"status": "pending"})

    def status(self, name: str) -> str:
        return (self.data["stages"].get(name) or {}).get("status", "absent")

    def outputs(self, name: str, *, where: Any = None) -> Outputs:
        """The typed outputs of a finished stage; a clear error when it has not finished."""
        st = self.data["stages"].get(name) or {}
        if st.get("status") != "done":
            raise LLMOpsError(
                f"{where or self.path.parent}: stage '{name}' has not finished (status "
                f"{st.get('status', 'absent')!r}): its outputs are needed; add it to stages=[...] "
                f"or rerun it")
        return OUTPUT_TYPES[name].from_dict(st.get("outputs"))

    def set_outputs(self, name: str, outputs: Outputs) -> None:
        self.stage(name)["outputs"] = outputs.to_dict()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


class RunDir:
    """An existing run directory, for the commands that read one (serve, call, undeploy,
    resume, lock, promote, the sweep summary)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def overrides_file(self) -> Path:
        return self.path / OVERRIDES_FILE

    def is_run_dir(self) -> bool:
        return self.state_file.is_file()

    def state(self) -> State:
        if not self.state_file.is_file():
            raise LLMOpsError(f"{self.path}: no {STATE_FILE}; expected a run directory made by `llmops run`")
        return State(self.state_file, _read_json(self.state_file))

    def maybe_state(self) -> Optional[State]:
        return self.state() if self.state_file.is_file() else None

    def outputs(self, name: str, cls: type[O] | None = None) -> O:
        out = self.state().outputs(name, where=self.path)
        return out  # type: ignore[return-value]

    def config(self):
        """The run's saved config (secrets masked), or None when the run directory has none."""
        p = self.path / CONFIG_FILE
        if not p.is_file():
            return None
        from omegaconf import OmegaConf

        return OmegaConf.load(p)

    def config_dict(self) -> Optional[dict]:
        p = self.path / CONFIG_FILE
        if not p.is_file():
            return None
        import yaml

        return yaml.safe_load(p.read_text()) or {}

    def provenance(self) -> Optional[dict]:
        p = self.path / PROVENANCE_FILE
        return _read_json(p) if p.is_file() else None

    def overrides(self) -> list[str]:
        if not self.overrides_file.is_file():
            return []
        import yaml

        return list(yaml.safe_load(self.overrides_file.read_text()) or [])

    def update_outputs(self, name: str, **changes: Any) -> None:
        """Record a change to a finished stage's outputs (say, `undeploy` deleting what it applied)."""
        state = self.state()
        out = state.outputs(name, where=self.path)
        for k, v in changes.items():
            setattr(out, k, v)
        state.set_outputs(name, out)
        state.save()


@dataclass
class RunContext:
    """What a stage sees of its run: where it is, its id, the state so far."""

    run_dir: Path
    run_id: str
    recipe: str
    state: Optional[State] = None
    dry_run: bool = False  # plan: nothing may be written or contacted
    provenance: Optional[dict] = None
    extra: dict = field(default_factory=dict)

    def outputs(self, name: str) -> Outputs:
        if self.state is None:
            raise LLMOpsError(f"stage '{name}' has not run: its outputs are needed")
        return self.state.outputs(name, where=self.run_dir)

    def training_task(self) -> "TrainingTask":
        """What the training function gets: this run, and the data prepare_data made."""
        return TrainingTask(run_id=self.run_id, run_dir=str(self.run_dir),
                            data=self.outputs("prepare_data"), provenance=self.provenance)

    def stage_dir(self, name: str) -> Path:
        p = self.run_dir / name
        if not self.dry_run:
            p.mkdir(parents=True, exist_ok=True)
        return p


# ------------------------------------------------------------------------------------ the lock
class RunLock:
    """`with RunLock(run_dir):` - this process alone runs stages in `run_dir`.

    An exclusive `flock` on `run_dir/run.lock`, which records who holds it (pid, host, start
    time, and what it started: `note(ray_session_dir=...)`). The kernel drops the lock when its
    process dies however it dies, so a lock file left by a killed process is taken over (and what
    that process started and left running is ended); a lock held by a live process refuses at once,
    naming it. The file is removed when the holder lets go.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: Optional[int] = None
        self.info: dict = {}
        self.previous: Optional[dict] = None  # what a dead holder left, when taken over

    def acquire(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_info(fd)
                os.close(fd)
                raise LLMOpsError(
                    f"{self.path.parent}: another llmops process is running stages here "
                    f"({_describe_holder(holder)}); wait for it to end, or stop it, then rerun "
                    f"(`llmops resume {self.path.parent}`)") from None
            # the holder before us may have removed the file between our open and our lock
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        left = _lock_info(fd)
        if left:
            self.previous = left
            log.warning("%s: taking over the lock of %s, which ended without letting go",
                        self.path, _describe_holder(left))
            session = left.get("ray_session_dir")
            if session:
                n = end_processes_mentioning(session)
                if n:
                    log.warning("%s: ended %d process(es) of Ray session %s that process left running",
                                self.path, n, session)
        self.info = {"pid": os.getpid(), "host": socket.gethostname(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self._write()
        _HELD.append(self)
        return self

    def note(self, **info: Any) -> None:
        """Record what this run started (say, a Ray session dir), for a later run to clean up."""
        if self.fd is None:
            return
        self.info.update(info)
        self._write()

    def _write(self) -> None:
        data = json.dumps(self.info).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # before unlocking: no one can lock the old file after us
        except FileNotFoundError:
            pass
        os.close(self.fd)  # drops the flock
        self.fd = None
        if self in _HELD:
            _HELD.remove(self)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


_HELD: list[RunLock] = []


def note_in_held_locks(**info: Any) -> None:
    """Record `info` in the lock of every run directory this process holds (what it started)."""
    for lock in list(_HELD):
        lock.note(**info)


def _lock_info(fd: int) -> dict:
    try:
        raw = os.pread(fd, 64 * 1024, 0)
        info = json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {"pid": "?", "note": "unreadable run.lock"}
    return info if isinstance(info, dict) else {}


def _describe_holder(info: dict) -> str:
    if not info:
        return "a process that has not written its name yet"
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, "
            f"started {info.get('started', '?')}")


def end_processes_mentioning(needle: str, *, timeout_s: float = 10.0) -> int:
    """End (SIGTERM, then SIGKILL after `timeout_s`/2) every process of this user whose command
    line mentions `needle` (a Ray session dir: its raylet, GCS, agents and workers), except this
    process. Returns how many there were."""
    import psutil

    me = os.getpid()
    procs = []
    for p in psutil.process_iter(["pid", "cmdline", "uids"]):
        try:
            if p.pid != me and p.info["uids"] and p.info["uids"].real == os.getuid() \
                    and needle in " ".join(p.info["cmdline"] or ()):
                procs.append(p)
        except (psutil.Error, TypeError):
            continue
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout_s / 2)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=timeout_s / 2)
    return len(procs)


def foreign_dir_problem(run_dir: Path) -> Optional[str]:
    """Why `run_dir` cannot be a run directory, or None: it is new, empty, a run directory
    (state.json), or holds only what Hydra and the sweep launchers put there before the run
    starts (job logs, the sweep job record)."""
    p = Path(run_dir)
    if not p.exists() and not p.is_symlink():
        return None
    if not p.is_dir():
        return f"run directory {p} exists and is not a folder"
    if (p / STATE_FILE).is_file():
        return None
    other = sorted(e.name for e in p.iterdir()
                   if not (e.is_file() and (e.suffix == ".log" or e.name in (SWEEP_JOB_FILE, LOCK_FILE))))
    if not other:
        return None
    shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
    return (f"run directory {p} is not empty ({shown}) and is not a run directory (no "
            f"{STATE_FILE}): llmops writes {CONFIG_FILE}, {STATE_FILE} and stage outputs there; "
            "choose a new or empty folder (hydra.run.dir=...)")
