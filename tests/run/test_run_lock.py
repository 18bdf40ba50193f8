"""One process at a time runs stages in a run directory: a second `llmops run` there is refused at
once, naming the holder; the lock of a killed process is taken over, and what that process left
running is ended. Real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from llmops.run import RunLock

ROOT = Path(__file__).resolve().parents[2]

# a stand-in for an `llmops run` in progress: holds the lock, records a "Ray session" whose
# process (a sleeping child mentioning it) it started, and left train 'running' in state.json
HOLDER = r"""
import subprocess, sys, time
from pathlib import Path
from llmops.run import RunLock, State
run_dir, session = Path(sys.argv[1]), sys.argv[2]
with RunLock(run_dir) as lock:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", session])
    lock.note(ray_session_dir=session)
    st = State.load(run_dir, "locked-run", "quickstart")
    st.stage("prepare_data").update({"status": "running"})
    st.save()
    print("held", child.pid, flush=True)
    time.sleep(600)
"""


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _holder(run_dir: Path, session: str) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), session], env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.startswith("held"), p.stderr.read()
    return p, int(line.split()[1])


def _llmops_run(run_dir: Path, tmp_path: Path, *extra: str, timeout: int = 300):
    return subprocess.run(
        [sys.executable, "-m", "llmops.cli", "run", "quickstart", f"hydra.run.dir={run_dir}",
         "run_id=locked-run", "stages=[prepare_data]", "dataset.max_train_blocks=32",
         f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_root={tmp_path / 'outputs'}", *extra],
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def test_second_run_is_refused_while_the_first_holds_the_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    holder, child = _holder(run_dir, str(tmp_path / "fake-ray-session-a"))
    try:
        t0 = time.time()
        r = _llmops_run(run_dir, tmp_path)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"another llmops process is running stages here (pid {holder.pid} on host" in r.stderr
        assert f"llmops resume {run_dir}" in r.stderr
        assert time.time() - t0 < 60  # refused at once, not after waiting for the holder
        # nothing of the refused run was written: no config, the holder's state untouched
        assert not (run_dir / "config.yaml").exists()
        assert json.loads((run_dir / "state.json").read_text())["stages"]["prepare_data"]["status"] == "running"
        assert holder.poll() is None and psutil.pid_exists(child)
    finally:
        holder.kill()
        holder.wait()
        psutil.Process(child).kill()


def test_lock_of_a_killed_process_is_taken_over_and_what_it_left_is_ended(tmp_path):
    run_dir = tmp_path / "run"
    session = str(tmp_path / "fake-ray-session-b")
    holder, child = _holder(run_dir, session)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert psutil.pid_exists(child)  # orphaned, still running: what a killed run leaves behind
    try:
        r = _llmops_run(run_dir, tmp_path)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert f"taking over the lock of pid {holder.pid}" in out
        assert f"ended 1 process(es) of Ray session {session}" in out
        stale = [ln for ln in out.splitlines() if "state.json says 'running'" in ln]
        assert len(stale) == 1 and "stage prepare_data" in stale[0]
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        st = json.loads((run_dir / "state.json").read_text())
        assert st["stages"]["prepare_data"]["status"] == "done"
        assert not (run_dir / "run.lock").exists()  # let go at the end
    finally:
        if psutil.pid_exists(child):
            psutil.Process(child).kill()


def test_lock_is_refused_in_the_same_process_too_and_free_again_after(tmp_path):
    with RunLock(tmp_path) as first:
        with pytest.raises(Exception, match=rf"pid {os.getpid()} on host"):
            RunLock(tmp_path).acquire()
        first.note(ray_session_dir="/nowhere")
        assert json.loads((tmp_path / "run.lock").read_text())["ray_session_dir"] == "/nowhere"
    with RunLock(tmp_path) as again:
        assert again.previous is None  # a lock let go cleanly leaves nothing to take over
