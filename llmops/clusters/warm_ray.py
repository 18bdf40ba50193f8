"""The warm local Ray head of `cluster=local`: one per user, started by llmops, reused by later runs.

Starting Ray in-process costs every short run seconds (GCS, raylet, workers); a head that stays
up between runs lets the next run connect in well under a second. The rules:

- llmops only reuses a head **it started**: `head.json` in the state directory
  (`$LLMOPS_RAY_HOME`, default `~/.cache/llmops/ray`) records the `ray start --block` process
  (pid, its own session), the GCS address, the temp dir and session name, the interpreter and
  `started_by: llmops`. Before reuse all of it is checked against the live system (the pid's
  command line names the temp dir, the temp dir's `session_latest` is the recorded session, the
  GCS port answers). A record that fails the check is stale: what is left of that head (processes
  naming its temp dir) is ended and a new head starts. A Ray someone else started is never
  connected to, and `ray stop` is never run.
- Each llmops driver attached to the head holds a lease file `drivers/<pid>` while connected.
  A reaper process started with the head stops it after `cluster.ray_idle_timeout_s` seconds
  with no live lease (and exits when the head is gone).
- `stop()` ends the head's process group, then every process whose command line names its
  temp dir (the reaper included), and removes the record — nothing else.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from llmops.core.errors import LLMOpsError

STARTED_BY = "llmops"


def home() -> Path:
    return Path(os.environ.get("LLMOPS_RAY_HOME") or Path.home() / ".cache" / "llmops" / "ray").expanduser()


@dataclass
class Head:
    pid: int  # the `ray start --head --block` process, leader of its own process group
    gcs_address: str
    temp_dir: str
    session_name: str
    num_cpus: int
    python: str
    started_at: float
    idle_timeout_s: int
    reaper_pid: int = 0
    started_by: str = STARTED_BY
    uid: int = field(default_factory=os.getuid)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


# ------------------------------------------------------------------------------- the record
def _record_path() -> Path:
    return home() / "head.json"


def _drivers() -> Path:
    return home() / "drivers"


@contextmanager
def _locked():
    home().mkdir(parents=True, exist_ok=True)
    with open(home() / "head.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read() -> Optional[Head]:
    """The recorded head, or None (no record, or one llmops did not write)."""
    try:
        raw = json.loads(_record_path().read_text())
        head = Head(**raw)
    except (OSError, ValueError, TypeError):
        return None
    return head if head.started_by == STARTED_BY and head.uid == os.getuid() else None


def _write(head: Head) -> None:
    p = _record_path()
    tmp = p.with_name(f".{p.name}.{os.getpid()}.part")
    tmp.write_text(head.to_json())
    os.replace(tmp, p)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids_naming(marker: str) -> list[int]:
    me = os.getpid()
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != me and marker in _cmdline(int(d.name)):
            out.append(int(d.name))
    return out


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def problem(head: Head) -> str:
    """Why `head` cannot be reused ('' when it can): checked against the live processes."""
    if head.temp_dir not in _cmdline(head.pid):
        return f"process {head.pid} is gone (or is not that head any more)"
    latest = Path(head.temp_dir) / "session_latest"
    if not latest.exists() or latest.resolve().name != head.session_name:
        return f"{latest} is not session {head.session_name}"
    if not _port_open(head.gcs_address):
        return f"nothing answers at {head.gcs_address}"
    return ""


# --------------------------------------------------------------------------------- starting
def _free_ports(n: int, avoid: range) -> list[int]:
    socks: list = []
    try:
        while len(socks) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] in avoid:
                s.close()
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _worker_port_range(n: int = 64) -> int:
    import random

    for _ in range(200):
        base = random.randint(20000, 60000 - n)
        try:
            for p in range(base, base + n, 8):  # a sample: the range is only a hint to Ray
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise LLMOpsError("cluster=local: no free port range for the warm Ray head's workers")


def _start(num_cpus: int, idle_timeout_s: int, timeout_s: float = 180.0) -> Head:
    ray_exe = Path(sys.executable).parent / "ray"
    exe = str(ray_exe) if ray_exe.exists() else (shutil.which("ray") or "ray")
    temp = Path(tempfile.mkdtemp(prefix=_temp_prefix(), dir="/tmp"))  # short: Ray's socket paths
    wbase = _worker_port_range()
    names = ("port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "ray-client-server-port", "node-manager-port", "object-manager-port",
             "metrics-export-port", "runtime-env-agent-port")
    ports = dict(zip(names, _free_ports(len(names), range(wbase, wbase + 64))))
    args = [exe, "start", "--head", "--block", f"--num-cpus={num_cpus}",
            "--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--include-dashboard=false",
            "--disable-usage-stats", f"--min-worker-port={wbase}", f"--max-worker-port={wbase + 63}"]
    args += [f"--{k}={v}" for k, v in ports.items()]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_ID")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    log = open(temp / "ray-start.log", "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True, cwd="/")
    log.close()
    gcs = f"127.0.0.1:{ports['port']}"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            text = (temp / "ray-start.log").read_text(errors="replace")[-2000:]
            _end(proc.pid, str(temp))
            raise LLMOpsError(f"cluster=local: `ray start --head` exited {proc.returncode}:\n{text}")
        latest = temp / "session_latest"
        if latest.exists() and (latest / "sockets" / "raylet").exists() and _port_open(gcs):
            head = Head(pid=proc.pid, gcs_address=gcs, temp_dir=str(temp),
                        session_name=latest.resolve().name, num_cpus=num_cpus,
                        python=sys.executable, started_at=time.time(),
                        idle_timeout_s=int(idle_timeout_s))
            _write(head)  # before the reaper starts: it reads the record
            if idle_timeout_s > 0:
                head.reaper_pid = _start_reaper(temp)
                _write(head)
            return head
        time.sleep(0.2)
    _end(proc.pid, str(temp))
    raise LLMOpsError(f"cluster=local: the warm Ray head did not come up in {timeout_s:.0f} s "
                      f"(log: {temp / 'ray-start.log'})")


def _start_reaper(temp: Path) -> int:
    """`python -m llmops.clusters.warm_ray reap TEMP_DIR`: its command line names the temp dir,
    so stopping the head ends it too."""
    import llmops

    root = str(Path(llmops.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
               LLMOPS_RAY_HOME=str(home()))
    p = subprocess.Popen([sys.executable, "-m", "llmops.clusters.warm_ray", "reap", str(temp)],
                         env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=open(temp / "reaper.log", "w"), start_new_session=True, cwd="/")
    return p.pid


def ensure(num_cpus: int, idle_timeout_s: int) -> tuple[Optional[Head], str]:
    """(head, why): the head llmops started before if it is alive, else a new one (what is left
    of a stale one of ours is ended first). (None, why) when the live head cannot serve this
    run (fewer CPUs than it needs, another interpreter): it is left alone for whoever uses it."""
    with _locked():
        head = read()
        if head is not None and problem(head):
            _stop_locked(head)
            head = None
        if head is not None and head.num_cpus < num_cpus:
            return None, f"the warm head has {head.num_cpus} CPU(s), this run needs {num_cpus}"
        if head is not None and head.python != sys.executable:
            return None, f"the warm head runs {head.python}, this run {sys.executable}"
        _touch_used()  # under the lock: the reaper cannot stop it before the caller attaches
        if head is None:
            return _start(num_cpus, idle_timeout_s), ""
        elif head.idle_timeout_s != idle_timeout_s and idle_timeout_s > 0:
            head.idle_timeout_s = int(idle_timeout_s)  # the latest run's setting; the reaper rereads it
            _write(head)
        return head, ""


# ---------------------------------------------------------------------------------- leases
def attach() -> Path:
    """Mark this process as a driver using the head (the reaper waits while it lives)."""
    d = _drivers()
    d.mkdir(parents=True, exist_ok=True)
    lease = d / str(os.getpid())
    lease.write_text(str(time.time()))
    return lease


def _touch_used() -> None:
    try:
        (home() / "last_used").write_text(str(time.time()))
    except OSError:
        pass


def detach(lease: Path) -> None:
    lease.unlink(missing_ok=True)
    _touch_used()


def live_drivers() -> list[int]:
    out = []
    d = _drivers()
    for f in (d.iterdir() if d.is_dir() else []):
        if f.name.isdigit() and Path(f"/proc/{f.name}").exists():
            out.append(int(f.name))
        else:
            f.unlink(missing_ok=True)
    return out


def last_used(head: Head) -> float:
    try:
        return max(head.started_at, float((home() / "last_used").read_text()))
    except (OSError, ValueError):
        return head.started_at


# -------------------------------------------------------------------------------- stopping
def _end(pid: int, temp_dir: str) -> list[int]:
    """End the process group of `pid`, then every process naming `temp_dir`; the pids ended."""
    ended = set(_pids_naming(temp_dir))
    if temp_dir in _cmdline(pid):
        ended.add(pid)
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    t0 = time.time()
    while (left := _pids_naming(temp_dir)) and time.time() - t0 < 15:
        ended.update(left)
        sig = signal.SIGTERM if time.time() - t0 < 5 else signal.SIGKILL  # 5 s to exit cleanly
        for p in left:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        time.sleep(0.3)
    for p in ended:  # the head and reaper are children of the process that started them
        try:
            os.waitpid(p, os.WNOHANG)
        except ChildProcessError:
            pass
    shutil.rmtree(temp_dir, ignore_errors=True)
    return sorted(ended)


def _ours(temp_dir: str) -> bool:
    """Only a temp dir of the form llmops creates: a damaged record never ends another Ray."""
    p = Path(temp_dir)
    return p.parent == Path("/tmp") and p.name.startswith(_temp_prefix())


def _temp_prefix() -> str:
    return f"llmops-ray-{os.getuid()}-"


def _stop_locked(head: Head) -> list[int]:
    ended = _end(head.pid, head.temp_dir) if _ours(head.temp_dir) else []
    cur = read()
    if cur is not None and cur.temp_dir == head.temp_dir:
        _record_path().unlink(missing_ok=True)
    return ended


def stop() -> tuple[Optional[Head], list[int]]:
    """Stop the head llmops started (if any): (its record, the pids ended)."""
    with _locked():
        head = read()
        if head is None:
            return None, []
        return head, _stop_locked(head)


def status() -> dict:
    head = read()
    if head is None:
        return {"running": False, "record": str(_record_path())}
    why = problem(head)
    now = time.time()
    drivers = live_drivers() if not why else []
    return {"running": not why, "problem": why or None, "address": head.gcs_address,
            "pid": head.pid, "temp_dir": head.temp_dir, "session": head.session_name,
            "num_cpus": head.num_cpus, "started_at": head.started_at, "up_s": round(now - head.started_at, 1),
            "drivers": drivers, "idle_s": 0.0 if drivers else round(now - last_used(head), 1),
            "idle_timeout_s": head.idle_timeout_s, "record": str(_record_path())}


def reap(temp_dir: str) -> int:
    """The reaper's loop: stop the head after its idle timeout with no driver attached. It keeps
    the record it started with, so a head whose state directory was deleted still ends."""
    head = read()
    while head is not None and head.temp_dir == temp_dir and not problem(head):
        cur = read()
        if cur is not None and cur.temp_dir != temp_dir:
            return 0  # replaced (the replacing run ended this head)
        head = cur or head
        timeout = int(head.idle_timeout_s)
        if live_drivers():
            time.sleep(min(5.0, max(0.5, timeout / 4)))
            continue
        if timeout > 0 and time.time() - last_used(head) >= timeout:
            with _locked():
                cur = read()
                if (cur is None or cur.temp_dir == temp_dir) and not live_drivers():
                    print(f"idle for {timeout} s: stopping the warm Ray head {head.gcs_address}",
                          file=sys.stderr, flush=True)
                    _stop_locked(head)
                    return 0
        time.sleep(min(5.0, max(0.5, timeout / 4)))
    return 0


if __name__ == "__main__":  # python -m llmops.clusters.warm_ray reap TEMP_DIR
    if len(sys.argv) == 3 and sys.argv[1] == "reap":
        sys.exit(reap(sys.argv[2]))
    sys.exit("usage: python -m llmops.clusters.warm_ray reap TEMP_DIR")
