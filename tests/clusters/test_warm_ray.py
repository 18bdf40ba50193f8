"""The warm local Ray head of `cluster=local`: reuse across runs, `llmops ray status|stop`, the
idle timeout, stale records. Real `ray start` heads, each test with its own state directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["dataset.max_train_blocks=32", "dataset.max_eval_blocks=4", "dataset.block_size=64",
        "training.max_steps=2", "training.eval_steps=2", "training.logging_steps=1",
        "stages=[prepare_data,train]", "cluster.ray_idle_timeout_s=600",
        "cluster.trainer=ray"]  # Ray Train on the head (the default, auto, would train in process)


@pytest.fixture
def ray_home(tmp_path, monkeypatch):
    """A state directory of its own; whatever head a test leaves there is stopped afterwards."""
    home = tmp_path / "ray-home"
    monkeypatch.setenv("LLMOPS_RAY_HOME", str(home))
    yield home
    from llmops.clusters import warm_ray

    warm_ray.stop()


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "llmops.cli", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout)


def _record(home: Path) -> dict:
    return json.loads((home / "head.json").read_text())


def _pids_using(marker: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if d.name.isdigit() and marker in cmd and int(d.name) != os.getpid():
            out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie child of this test process, ended but not yet reaped, is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_two_runs_in_a_row_share_one_head_that_outlives_them(ray_home, tmp_path):
    common = [*TINY, f"paths.cache_dir={tmp_path / 'cache'}", f"storage.root={tmp_path / 'models'}"]
    first = _cli("run", "quickstart", *common, f"hydra.run.dir={tmp_path / 'a'}")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    rec = _record(ray_home)
    assert rec["started_by"] == "llmops" and _alive(rec["pid"])
    assert f"warm Ray head at {rec['gcs_address']}" in first.stdout + first.stderr

    second = _cli("run", "quickstart", *common, f"hydra.run.dir={tmp_path / 'b'}")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert _record(ray_home) == rec  # the same head: same process, session and address
    assert f"warm Ray head at {rec['gcs_address']}" in second.stdout + second.stderr
    st = json.loads((tmp_path / "b" / "state.json").read_text())["stages"]
    assert st["train"]["status"] == "done" and st["train"]["outputs"]["metrics"]["global_step"] == 2
    # no run is attached any more, and the run's workers ended with it: only the head's own
    # processes name its temp dir
    status = json.loads(_cli("ray", "status", "--json").stdout)
    assert status["running"] and status["drivers"] == [] and status["address"] == rec["gcs_address"]


@pytest.mark.slow
def test_stop_ends_exactly_the_head_llmops_started(ray_home, ray_head):
    from llmops.clusters import warm_ray

    head, why = warm_ray.ensure(1, 600)
    assert head is not None, why
    st = _cli("ray", "status")
    assert st.returncode == 0 and head.gcs_address in st.stdout and "idle for" in st.stdout
    ours = _pids_using(head.temp_dir)
    theirs = _pids_using(str(ray_head.temp_dir))
    assert ours and theirs and head.pid in ours

    out = _cli("ray", "stop")
    assert out.returncode == 0 and "stopped the warm Ray head" in out.stdout
    assert not any(_alive(p) for p in ours)
    assert not (ray_home / "head.json").exists() and not Path(head.temp_dir).exists()
    # the unrelated head (started with `ray start --head`, its own temp dir) is untouched
    assert ray_head.proc.poll() is None and all(_alive(p) for p in theirs)
    import urllib.request

    with urllib.request.urlopen(ray_head.address + "/api/version", timeout=10) as r:
        assert r.status == 200
    again = _cli("ray", "stop")
    assert again.returncode == 0 and "nothing stopped" in again.stdout
    assert "no warm Ray head running" in _cli("ray", "status").stdout


@pytest.mark.slow
def test_idle_timeout_ends_the_head(ray_home):
    from llmops.clusters import warm_ray

    head, why = warm_ray.ensure(1, 3)
    assert head is not None and head.reaper_pid, why
    deadline = time.time() + 120
    while time.time() < deadline and (_alive(head.pid) or (ray_home / "head.json").exists()):
        time.sleep(1)
    assert not _alive(head.pid) and not (ray_home / "head.json").exists()
    assert not _pids_using(head.temp_dir)  # the reaper and every process of that head are gone


@pytest.mark.slow
def test_stale_or_foreign_record_is_never_used(ray_home, ray_head):
    from llmops.clusters import warm_ray

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ray_home.mkdir(parents=True)
    # a record naming a live Ray head llmops did not start: ignored, never connected to
    foreign = {"pid": ray_head.proc.pid, "gcs_address": ray_head.gcs_address,
               "temp_dir": str(ray_head.temp_dir), "session_name": "x", "num_cpus": 2,
               "python": sys.executable, "started_at": time.time(), "idle_timeout_s": 600,
               "started_by": "someone-else", "uid": os.getuid()}
    (ray_home / "head.json").write_text(json.dumps(foreign))
    assert warm_ray.read() is None
    # a record of ours whose head process is dead: stale, replaced by a new head. Even naming
    # the foreign head's temp dir, it makes llmops end nothing of that head
    stale = dict(foreign, pid=dead.pid, started_by="llmops")
    (ray_home / "head.json").write_text(json.dumps(stale))
    assert warm_ray.status()["running"] is False
    head, why = warm_ray.ensure(1, 600)
    assert head is not None, why
    assert head.pid != dead.pid and head.gcs_address != ray_head.gcs_address
    assert _record(ray_home)["pid"] == head.pid and _alive(head.pid)
    assert ray_head.proc.poll() is None  # neither record made llmops touch the foreign head


@pytest.mark.slow
def test_a_ray_launcher_sweep_trains_on_the_warm_head_and_leaves_it_up(ray_home, tmp_path):
    # both jobs train with Ray Train on the head (1 CPU each on a 2-CPU head): the launcher's
    # tasks reserve none of it, so the jobs' workers are not kept waiting for their own tasks
    r = _cli("run", "quickstart", "-m", "hydra/launcher=ray", "training.lr=1e-3,3e-3", *TINY,
             f"paths.cache_dir={tmp_path / 'cache'}", f"storage.root={tmp_path / 'models'}",
             f"paths.output_root={tmp_path / 'out'}", "hydra.launcher.num_cpus=2", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rec = _record(ray_home)
    assert f"ray launcher: on the warm Ray head at {rec['gcs_address']}" in r.stdout + r.stderr
    (sd,) = list((tmp_path / "out" / "multirun").iterdir())
    for n in (0, 1):
        st = json.loads((sd / str(n) / "state.json").read_text())["stages"]
        assert st["train"]["status"] == "done" and st["train"]["outputs"]["metrics"]["global_step"] == 2
    status = json.loads(_cli("ray", "status", "--json").stdout)
    assert status["running"] and status["drivers"] == [] and _alive(rec["pid"])


def _sweep(tmp_path: Path, name: str, *extra: str, env_extra: dict | None = None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.update(env_extra or {})
    args = ["run", "quickstart", "-m", "hydra/launcher=ray", "training.lr=1e-3,3e-3", *TINY,
            "cluster.trainer=process", f"paths.cache_dir={tmp_path / 'cache'}",
            f"storage.root={tmp_path / 'models'}", f"paths.output_root={tmp_path / name}", *extra]
    return subprocess.Popen([sys.executable, "-m", "llmops.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def _holding(folder: Path) -> list[int]:
    """Processes with a file under `folder` open (a forked job writes its log there)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            fds = list((d / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd).startswith(str(folder)):
                    out.append(int(d.name))
                    break
            except OSError:
                continue
    return out


def _records(out: Path) -> list[dict]:
    (sd,) = list((out / "multirun").iterdir())
    return [json.loads((sd / str(n) / "sweep_job.json").read_text()) for n in (0, 1)]


@pytest.mark.slow
def test_sweeps_on_the_warm_head_fork_their_jobs_from_runners_that_stay_warm(ray_home, tmp_path):
    first = _sweep(tmp_path, "a")
    out, _ = first.communicate(timeout=900)
    assert first.returncode == 0, out[-3000:]
    a = _records(tmp_path / "a")
    assert [r["process"] for r in a] == ["fork", "fork"] and all(r["runner_pid"] for r in a)

    second = _sweep(tmp_path, "b")  # the same jobs: forked from the same warm runners
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0, out[-3000:]
    b = _records(tmp_path / "b")
    assert {r["runner_pid"] for r in b} <= {r["runner_pid"] for r in a}
    assert [r["result"] for r in b] == pytest.approx([r["result"] for r in a], rel=1e-6)

    # jobs given another PYTHONPATH than the runners hold are not forked from them: replaced
    extra = tmp_path / "more-path"
    extra.mkdir()
    third = _sweep(tmp_path, "c", env_extra={"PYTHONPATH": os.pathsep.join([str(ROOT), str(extra)])})
    out, _ = third.communicate(timeout=900)
    assert third.returncode == 0, out[-3000:]
    assert "out of date; replacing it" in out
    c = _records(tmp_path / "c")
    assert not {r["runner_pid"] for r in c} & {r["runner_pid"] for r in a}


@pytest.mark.slow
def test_ctrl_c_of_a_warm_sweep_ends_its_forked_jobs_and_the_runners_stay(ray_home, tmp_path):
    import signal

    p = _sweep(tmp_path, "a", "training.max_steps=2000", "training.eval_steps=1000")
    deadline = time.time() + 600
    running = []
    while time.time() < deadline and len(running) < 2:
        assert p.poll() is None, p.stdout.read()[-3000:]
        running = [d for d in (tmp_path / "a").glob("multirun/*/*/state.json")
                   if json.loads(d.read_text() or "{}").get("stages", {}).get("train", {}).get("status") == "running"]
        time.sleep(0.5)
    assert len(running) == 2, "both jobs did not start training"
    time.sleep(3)  # well inside the training loop
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode != 0, out[-3000:]
    for st in running:  # each job saw the interrupt: stage marked, its process gone
        train = json.loads(st.read_text())["stages"]["train"]
        assert train["status"] == "interrupted", train
        assert not (st.parent / "run.lock").exists()
    assert not _holding(tmp_path / "a" / "multirun")  # no job process has its log open any more
    again = _sweep(tmp_path, "b")  # the runners are still there and serve the next sweep
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out[-3000:]
    assert [r["process"] for r in _records(tmp_path / "b")] == ["fork", "fork"]
