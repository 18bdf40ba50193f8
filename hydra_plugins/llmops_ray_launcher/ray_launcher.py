"""`hydra/launcher=ray`: run the jobs of an `llmops run -m` sweep in parallel on Ray.

Why not `hydra-ray-launcher` (1.2.2): it pickles the task function into a Ray task with one CPU
and calls it there. An llmops job starts Ray Train inside that task, whose workers then ask the
same cluster for CPUs the sweep's own tasks already hold: on a 2-CPU machine, two jobs hold both
CPUs and their trainers wait forever. It also stops collecting at the first failed job and pins
cloudpickle<3.

This launcher schedules each job as a Ray task that *reserves the CPUs the job's training will
use* (`cluster.num_workers * cluster.cpus_per_worker` for `cluster=local`, else one CPU for the
job's driver, whose training runs on the configured cluster) and runs the job as its own
process: `llmops run RECIPE <the job's overrides> hydra.run.dir=<job dir>`. The job's embedded Ray
lives in that process, so no job ever asks the sweep's Ray for resources: nothing can deadlock,
a job that crashes takes nobody else down, and every job gets a clean interpreter. Jobs are
submitted only while they fit, so with `sweep.fail_fast=true` the jobs not yet started after a
failure are not started at all.

Before the jobs, each distinct dataset of the sweep (by the prepare_data stage's fingerprint) is
tokenized once (`sweep.prepare_once`); the jobs then find it in the shared cache.

With the warm local Ray head (`cluster=local`, `cluster.ray_idle_timeout_s > 0`, no
`hydra.launcher.address`) the launcher connects to that head instead of starting its own, passes
it to the job processes (`LLMOPS_RAY_HOME`), and its tasks reserve no CPU: jobs are admitted while
their training CPUs fit the head, and each job's Ray Train takes those CPUs on the same head.

Module import stays light (Hydra imports every plugin at start-up): ray only inside `launch`.
"""



import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("llmops")


@dataclass
class RayLauncherConf:
    _target_: str = "hydra_plugins.llmops_ray_launcher.ray_launcher.RayLauncher"
    # Ray that schedules the jobs: null starts an embedded one here; "auto" or ray://HOST:10001
    # joins an existing cluster (its nodes need llmops installed and the outputs folder shared)
    address: Optional[str] = None
    num_cpus: Optional[int] = None  # embedded Ray: CPUs it offers (null: this machine's)
    cpus_per_job: Optional[int] = None  # null: cluster.num_workers * cluster.cpus_per_worker
    max_parallel: Optional[int] = None  # at most this many jobs at once (null: as many as fit)
    job_timeout_s: int = 0  # 0: no limit; a job over it is stopped and marked failed


ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayLauncherConf,
                             provider="llmops")


@dataclass
class _Job:
    idx: int
    overrides: list
    sweep_config: Any
    task_cfg: Any
    job_dir: Path
    run_id: str
    cpus: int
    status: str = "pending"  # pending | running | completed | failed | not run
    error: str = ""
    seconds: float = 0.0
    result: Any = None
    started: Optional[float] = None
    ended: Optional[float] = None


def _run_child(argv: list, cwd: str, env: dict, log_path: str, timeout_s: int) -> dict:
    """Run one job's process to its end (also the body of the Ray task)."""
    import signal
    import subprocess

    t0 = time.time()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            while p.poll() is None:
                if timeout_s and time.time() - t0 > timeout_s:
                    os.killpg(p.pid, signal.SIGTERM)
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:
                        os.killpg(p.pid, signal.SIGKILL)
                    return {"rc": 124, "seconds": time.time() - t0, "timeout": True,
                            "started": t0, "ended": time.time()}
                time.sleep(0.2)
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
            "started": t0, "ended": time.time()}


def _child_env() -> dict:
    import llmops

    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_JOB_ID", "RAY_RAYLET_PID", "RAY_NODE_ID")}
    root = str(Path(llmops.__file__).resolve().parent.parent)
    paths = [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


class RayLauncher(Launcher):
    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None,
                 cpus_per_job: Optional[int] = None, max_parallel: Optional[int] = None,
                 job_timeout_s: int = 0) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.cpus_per_job = cpus_per_job
        self.max_parallel = max_parallel
        self.job_timeout_s = int(job_timeout_s or 0)
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    # ------------------------------------------------------------------------------ helpers
    def _recipe_path(self) -> Path:
        assert self.config is not None
        name = str(self.config.hydra.job.config_name)
        for src in self.config.hydra.runtime.config_sources:  # --config-dir is "command-line"
            if src.schema == "file" and src.provider in ("command-line", "main"):
                p = Path(str(src.path)) / f"{name}.yaml"
                if p.is_file():
                    return p
        raise RuntimeError("ray launcher: cannot find the recipe file (primary config) of this sweep")

    def _hydra_passthrough(self) -> list:
        assert self.config is not None
        return [o for o in self.config.hydra.overrides.hydra
                if str(o).split("=", 1)[0].lstrip("+") in ("hydra.searchpath", "hydra.verbose")]

    def _job_cpus(self, task_cfg) -> int:
        if self.cpus_per_job:
            return int(self.cpus_per_job)
        c = task_cfg.cluster
        kind = str(getattr(c.kind, "value", c.kind))
        if kind == "local":
            return max(1, int(c.num_workers) * int(c.cpus_per_worker))
        return 1  # the job's driver; its training runs on the configured cluster

    def _argv(self, recipe: Path, overrides: list, job_dir: Path, run_id: str,
              extra: Sequence[str] = ()) -> list:
        return [sys.executable, "-m", "llmops.cli", "run", str(recipe), *overrides, *extra,
                *self._hydra_passthrough(), f"hydra.run.dir={job_dir}", f"run_id={run_id}"]

    # ------------------------------------------------------------------------------- launch
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.utils import configure_log, filter_overrides, setup_globals

        from llmops.core.errors import LLMOpsError
        from llmops.hydra_app import NotRun
        from llmops.pipeline import engine

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        recipe = self._recipe_path()
        cwd = os.getcwd()
        env = _child_env()

        jobs: list[_Job] = []
        for i, ov in enumerate(job_overrides):
            idx = initial_job_idx + i
            sc = self.hydra_context.config_loader.load_sweep_config(self.config, list(ov))
            with open_dict(sc):
                sc.hydra.job.id = f"job_id_for_{idx}"
                sc.hydra.job.num = idx
            HydraConfig.instance().set_config(sc)
            subdir = str(OmegaConf.select(sc, "hydra.sweep.subdir"))
            task_cfg = OmegaConf.masked_copy(sc, [k for k in sc.keys() if k != "hydra"])
            user_run_id = any(str(o).split("=", 1)[0] == "run_id" for o in ov)
            run_id = str(task_cfg.run_id) if user_run_id else engine.job_run_id(str(task_cfg.run_id), idx)
            jobs.append(_Job(idx, list(ov), sc, task_cfg, sweep_dir / subdir, run_id,
                             self._job_cpus(task_cfg)))
        if not jobs:
            return []
        opts = jobs[0].task_cfg.sweep
        fail_fast = bool(opts.fail_fast)

        if bool(opts.prepare_once):  # before any job starts (and before Ray: it needs none)
            self._prepare_once(jobs, recipe, sweep_dir, cwd, env, fail_fast)

        import ray

        started, warm, lease = False, None, None
        if not ray.is_initialized():
            ncpu = int(self.num_cpus or os.cpu_count() or 1)
            if not self.address:
                warm = _warm_head(jobs, ncpu)
            if self.address:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            elif warm is not None:
                # the jobs' own training runs on this head too: the children find it through
                # LLMOPS_RAY_HOME, and the launcher's tasks reserve no CPU (the `free` count
                # below admits jobs while their training CPUs fit)
                from llmops.clusters import warm_ray

                lease = warm_ray.attach()
                env["LLMOPS_RAY_HOME"] = str(warm_ray.home())
                ray.init(address=warm.gcs_address, log_to_driver=False, logging_level=logging.WARNING,
                         runtime_env={"env_vars": {"PYTHONPATH": env["PYTHONPATH"]}})
            else:
                ray.init(address="local", num_cpus=ncpu, num_gpus=0, include_dashboard=False,
                         log_to_driver=False, logging_level=logging.WARNING)
            started = True
        try:
            total = int(ray.cluster_resources().get("CPU", 1))
            for j in jobs:
                j.cpus = min(j.cpus, total)  # a job larger than the cluster still runs, alone
            log.info("ray launcher: %d job(s) on %d CPU(s), sweep directory %s", len(jobs), total, sweep_dir)
            for j in jobs:
                log.info("  #%d : %s (%d CPU)", j.idx, " ".join(filter_overrides(j.overrides)), j.cpus)

            remote = ray.remote(_run_child)
            pending = [j for j in jobs if j.status == "pending"]
            running: dict = {}
            free = total
            failed_any = any(j.status == "failed" for j in jobs)
            while pending or running:
                # start jobs in order while they fit (and while fail_fast allows)
                while pending and not (fail_fast and failed_any):
                    j = pending[0]
                    if running and (j.cpus > free or (self.max_parallel and len(running) >= self.max_parallel)):
                        break
                    pending.pop(0)
                    j.job_dir.mkdir(parents=True, exist_ok=True)
                    argv = self._argv(recipe, j.overrides, j.job_dir, j.run_id)
                    ref = remote.options(num_cpus=0 if warm else j.cpus, max_retries=0).remote(
                        argv, cwd, env, str(j.job_dir / "llmops.log"), self.job_timeout_s)
                    running[ref] = j
                    free -= j.cpus
                    j.status = "running"
                if fail_fast and failed_any and pending:
                    for j in pending:
                        j.status, j.error = "not run", (
                            f"not run: sweep.fail_fast=true and job {first_failed(jobs)} failed")
                        self._record(j)
                    pending = []
                if not running:
                    break
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    j = running.pop(ref)
                    free += j.cpus
                    try:
                        out = ray.get(ref)
                    except Exception as e:  # the Ray task itself failed (node lost, ...)
                        out = {"rc": -1, "seconds": 0.0, "error": f"{type(e).__name__}: {e}"}
                    self._finish(j, out)
                    failed_any = failed_any or j.status == "failed"
        except KeyboardInterrupt:
            for ref in list(locals().get("running", {})):
                ray.cancel(ref)
            raise
        finally:
            if started:
                ray.shutdown()
            if lease is not None:
                from llmops.clusters import warm_ray

                warm_ray.detach(lease)

        rets = []
        for j in jobs:
            r = JobReturn()
            r.overrides = j.overrides
            r.cfg = j.task_cfg
            r.hydra_cfg = j.sweep_config
            r.working_dir = cwd
            if j.status == "completed":
                r.status = JobStatus.COMPLETED
                r.return_value = j.result
            else:
                r.status = JobStatus.FAILED
                r.return_value = (NotRun(j.error) if j.status == "not run"
                                  else LLMOpsError(f"job {j.idx} ({' '.join(j.overrides)}) failed: {j.error}"))
            rets.append(r)
        return rets

    # ------------------------------------------------------------------------ prepare once
    def _prepare_once(self, jobs: list, recipe: Path, sweep_dir: Path, cwd: str, env: dict,
                      fail_fast: bool = False) -> None:
        """Tokenize each distinct dataset of the sweep once, before the jobs run in parallel."""
        from llmops.pipeline import engine

        groups: dict = {}
        for j in jobs:
            stages = [str(getattr(s, "value", s)) for s in j.task_cfg.stages]
            if "prepare_data" not in stages:
                continue
            try:
                fp = engine.stage_fingerprint(j.task_cfg, "prepare_data", {})
            except Exception:
                continue  # the job itself will report what is wrong with its config
            groups.setdefault(fp, []).append(j)
        for fp, members in groups.items():
            if fail_fast and any(j.status == "failed" for j in jobs):
                return  # the rest will not run
            first = members[0]
            pdir = sweep_dir / ".prepare" / fp
            log.info("ray launcher: preparing data %s once for job(s) %s", fp,
                     ", ".join(str(m.idx) for m in members))
            out = _run_child(self._argv(recipe, first.overrides, pdir, f"{first.run_id}-prepare",
                                        extra=["stages=[prepare_data]"]),
                             cwd, env, str(pdir / "llmops.log"), self.job_timeout_s)
            if out["rc"] != 0:
                err = _state_error(pdir) or _log_tail(pdir / "llmops.log")
                for m in members:
                    m.status, m.error, m.seconds = "failed", f"prepare_data (shared): {err}", 0.0
                    self._record(m)

    # ----------------------------------------------------------------------------- results
    def _finish(self, j: _Job, out: dict) -> None:
        from llmops.core.errors import LLMOpsError
        from llmops.pipeline import engine
        from llmops.run import RunDir

        j.seconds = round(float(out.get("seconds", 0.0)), 2)
        j.started, j.ended = out.get("started"), out.get("ended")
        try:
            state = RunDir(j.job_dir).maybe_state()
        except LLMOpsError:
            state = None
        if out.get("rc") == 0:
            # the job's return value: the metric sweep.metric names, as for the in-process launcher
            j.status, j.result = "completed", engine.sweep_metric(j.task_cfg, state) if state else None
            log.info("ray launcher: job %d done in %.1f s%s", j.idx, j.seconds,
                     f", {j.task_cfg.sweep.metric} {j.result:.4g}" if isinstance(j.result, (int, float)) else "")
        else:
            j.status = "failed"
            if out.get("timeout"):
                j.error = f"stopped after hydra.launcher.job_timeout_s={self.job_timeout_s}"
            else:
                j.error = out.get("error") or _state_error(j.job_dir) or _log_tail(j.job_dir / "llmops.log")
            log.error("ray launcher: job %d failed after %.1f s: %s (log: %s)", j.idx, j.seconds,
                      j.error, j.job_dir / "llmops.log")
        self._record(j)

    def _record(self, j: _Job) -> None:
        from llmops.hydra_app import note_failure
        from llmops.run import sweep as sweeps

        sweeps.write_job_record(j.job_dir, {
            "num": j.idx, "overrides": j.overrides, "status": j.status, "error": j.error or None,
            "seconds": j.seconds, "result": j.result, "cpus": j.cpus, "launcher": "ray",
            "started": j.started, "ended": j.ended,
        })
        if j.status == "failed":
            note_failure(j.idx)


def _warm_head(jobs: list, ncpu: int):
    """The warm local Ray head (llmops.clusters.warm_ray) when every job trains with
    `cluster=local` and keeps a warm head (`cluster.ray_idle_timeout_s > 0`); else None."""
    cl = [j.task_cfg.cluster for j in jobs]
    if not all(str(getattr(c.kind, "value", c.kind)) == "local" and int(c.ray_idle_timeout_s) > 0
               for c in cl):
        return None
    from llmops.clusters import warm_ray

    head, why = warm_ray.ensure(max([ncpu] + [j.cpus for j in jobs]), int(cl[0].ray_idle_timeout_s))
    if head is None:
        log.info("ray launcher: %s; each job starts its own Ray", why)
    return head


def first_failed(jobs: list) -> Any:
    return next((j.idx for j in jobs if j.status == "failed"), "?")


def _state_error(run_dir: Path) -> str:
    from llmops.core.errors import LLMOpsError
    from llmops.run import RunDir

    try:
        state = RunDir(run_dir).maybe_state()
    except LLMOpsError:
        return ""
    for name, s in (state.data["stages"] if state else {}).items():
        if s.get("status") == "failed":
            return f"stage '{name}' failed: {s.get('error')}"
    return ""


def _log_tail(p: Path) -> str:
    try:
        lines = [l for l in p.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return "no log"
    starts = [i for i, l in enumerate(lines) if l.startswith("llmops: error:")]
    if starts:  # the CLI's own message, with its indented problem lines
        block = [lines[starts[-1]][len("llmops: error:"):].strip()]
        block += [l.strip() for l in lines[starts[-1] + 1:] if l.startswith(" ")]
        return " ".join(block)[:500]
    errs = [l for l in lines if "error" in l.lower()]
    return (errs[-1] if errs else (lines[-1] if lines else "no output")).strip()[:500]
