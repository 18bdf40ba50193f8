"""SIGINT / SIGTERM during training: the real `llmops run quickstart` in a subprocess stops, marks
train `interrupted` with the time, ends every process of its embedded Ray within 10 s, exits
130 / 143 with one line saying how to go on, and `llmops resume` finishes the run. After a SIGKILL,
the next resume says the stage was left `running`, takes the lock over and goes on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _args(tmp_path: Path, cache: Path) -> list[str]:
    # a shorter quickstart (32 optimizer steps): still long enough to be stopped mid-train
    return [f"paths.cache_dir={cache}", f"paths.output_root={tmp_path / 'outputs'}",
            f"storage.root={tmp_path / 'models'}", "dataset.max_train_blocks=512",
            "cluster.trainer=ray"]  # an embedded Ray with Ray Train workers to end


def _train_status(run_dir: Path) -> str:
    try:
        return json.loads((run_dir / "state.json").read_text())["stages"]["train"]["status"]
    except (OSError, ValueError, KeyError):
        return "absent"


def _ray_session_of(pid: int) -> str:
    """The Ray session dir of the embedded Ray the llmops process `pid` started."""
    for child in psutil.Process(pid).children(recursive=True):
        try:
            for arg in child.cmdline():
                if "session_dir=" in arg or "session-dir=" in arg:
                    return arg.split("=", 1)[1]
        except psutil.Error:
            continue
    return ""


def _workers_started(pid: int) -> bool:
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()) or "ray::RayTrainWorker" in child.name():
                return True
        except psutil.Error:
            continue
    return False


def _processes_mentioning(needle: str) -> list[str]:
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = " ".join(p.info["cmdline"] or ())
            if needle in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid}: {cmd[:120]}")
        except psutil.Error:
            continue
    return out


def _start_and_wait_for_training(tmp_path: Path, run_dir: Path, cache: Path):
    p = subprocess.Popen([sys.executable, "-m", "llmops.cli", "run", "quickstart",
                          f"hydra.run.dir={run_dir}", *_args(tmp_path, cache)],
                         env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 300
    session = ""
    while time.time() < deadline:
        assert p.poll() is None, p.communicate()[1][-3000:]
        if _train_status(run_dir) == "running":
            session = session or _ray_session_of(p.pid)
            if session and _workers_started(p.pid):
                return p, session
        time.sleep(0.2)
    p.kill()
    pytest.fail("train did not start its Ray workers in 300 s")


def _assert_ray_gone(session: str, within_s: float = 10.0) -> None:
    deadline = time.time() + within_s
    while _processes_mentioning(session) and time.time() < deadline:
        time.sleep(0.2)
    assert not _processes_mentioning(session), _processes_mentioning(session)


def _resume(tmp_path: Path, run_dir: Path) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "llmops.cli", "resume", str(run_dir)], env=_env(),
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    st = json.loads((run_dir / "state.json").read_text())["stages"]
    assert all(st[s]["status"] == "done" for s in ("train", "export", "deploy", "smoke_test")), st
    return r


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("interrupt-cache")


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_train_stops_cleanly_and_resume_finishes(tmp_path, cache, sig, code):
    run_dir = tmp_path / "run"
    p, session = _start_and_wait_for_training(tmp_path, run_dir, cache)
    sent = time.time()
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == code, err[-3000:]
    said = [ln for ln in err.splitlines() if ln.startswith("llmops: interrupted")]
    assert said == [f"llmops: interrupted by {sig.name}; to go on from where it stopped: "
                    f"llmops resume {run_dir}"], err[-3000:]
    train = json.loads((run_dir / "state.json").read_text())["stages"]["train"]
    assert train["status"] == "interrupted" and train["error"] == f"interrupted by {sig.name}"
    at = datetime.strptime(train["interrupted_at"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    assert sent - 2 <= at <= sent + 60
    assert not (run_dir / "run.lock").exists()
    _assert_ray_gone(session)
    _resume(tmp_path, run_dir)


def test_after_sigkill_resume_says_the_stage_was_left_running_and_goes_on(tmp_path, cache):
    run_dir = tmp_path / "run"
    p, session = _start_and_wait_for_training(tmp_path, run_dir, cache)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    assert _train_status(run_dir) == "running"
    r = _resume(tmp_path, run_dir)
    out = r.stdout + r.stderr
    assert len([ln for ln in out.splitlines() if "state.json says 'running'" in ln]) == 1, out[-3000:]
    assert f"taking over the lock of pid {p.pid}" in out
    _assert_ray_gone(session, within_s=0)  # the resume ended whatever the killed run left


def test_ctrl_c_during_in_process_training_stops_cleanly_and_resume_finishes(tmp_path, cache):
    # the default for one CPU worker (cluster.trainer=auto): the loop runs in the llmops process;
    # SIGTERM reaches the same handler (the Ray Train test above sends both)
    sig, code = signal.SIGINT, 130
    run_dir = tmp_path / "run"
    args = [a for a in _args(tmp_path, cache) if a != "cluster.trainer=ray"]
    p = subprocess.Popen([sys.executable, "-m", "llmops.cli", "run", "quickstart",
                          f"hydra.run.dir={run_dir}", "training.logging_steps=1", *args],
                         env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (run_dir / "metrics.jsonl").exists():
        assert p.poll() is None, p.communicate()[1][-3000:]
        time.sleep(0.2)
    assert _train_status(run_dir) == "running"
    assert not _ray_session_of(p.pid)  # no Ray under it
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == code, err[-3000:]
    assert f"llmops: interrupted by {sig.name}; to go on from where it stopped: llmops resume {run_dir}" in err
    train = json.loads((run_dir / "state.json").read_text())["stages"]["train"]
    assert train["status"] == "interrupted" and train["error"] == f"interrupted by {sig.name}"
    assert not (run_dir / "run.lock").exists()
    _resume(tmp_path, run_dir)
