"""The Ray launcher's work: compose the jobs, prepare each dataset once, run the jobs as processes
in Ray tasks that reserve their training's CPUs, and hand Hydra a JobReturn per job.

Each job is `llmops run RECIPE <its overrides> hydra.run.dir=<job dir> run_id=<job run id>` in its
own process: a job that crashes takes nobody else down, and every job has its own Hydra state,
session and signals. The job's Ray Train runs on the job's own embedded Ray, or on the warm local
head the sweep also runs on (`cluster.ray_idle_timeout_s` > 0); there its task reserves no CPU, so
the job's workers never wait on CPUs the sweep holds. A job with `cluster.trainer=process` trains
in its own process without Ray: that process is a fork of the Ray worker after the imports every
job needs (`warm_imports`), so only a worker's first job pays them. A task reserves
`cluster.num_workers * cluster.cpus_per_worker` CPUs for `cluster=local` (else one, for the job's
driver; its training runs on the configured cluster), at most the whole cluster. Jobs are submitted only while they
fit, so with `sweep.fail_fast=true` the jobs not yet started after a failure are not started.

Only public names of llmops and Hydra are used: `llmops.run.RunDir` to read a job's state,
`llmops.pipeline.engine` for the job's run id, the data fingerprint and the job's return value
(the metric `sweep.metric` names, as for the in-process launcher), `llmops.hydra_app` for the
sweep's failure record. Loaded by `ray_launcher.RayLauncher.launch`; ray only inside functions.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict

from llmops.core.errors import LLMOpsError
from llmops.hydra_app import NotRun, note_failure
from llmops.pipeline import engine
from llmops.run import RunDir
from llmops.run import sweep as sweeps

from hydra_plugins.llmops_ray_launcher._processes import run_child

log = logging.getLogger("llmops")

# the environment a job's process must not inherit from a Ray worker (it starts its own Ray)
RAY_ENV = ("RAY_ADDRESS", "RAY_JOB_ID", "RAY_RAYLET_PID", "RAY_NODE_ID")


@dataclass
class Job:
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
    process: Optional[str] = None  # how the job's process started: "fork" or "new"
    runner: Optional[int] = None  # pid of the warm job runner that forked it


@dataclass
class Context:
    """What every job's process shares: the recipe, where and how it runs."""

    recipe: Path
    sweep_dir: Path
    cwd: str
    env: dict
    hydra_args: list  # hydra.searchpath / hydra.verbose overrides, passed on to each job
    timeout_s: int
    warm: bool = False  # the jobs run on the warm local Ray head (llmops.clusters.warm_ray)

    def argv(self, overrides: Sequence[str], job_dir: Path, run_id: str,
             extra: Sequence[str] = ()) -> list:
        return [sys.executable, "-m", "llmops.cli", "run", str(self.recipe), *overrides, *extra,
                *self.hydra_args, f"hydra.run.dir={job_dir}", f"run_id={run_id}"]


# ----------------------------------------------------------------------------------- launch
def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """`RayLauncher.launch`: run the jobs, return a JobReturn per job in job order."""
    from hydra.core.utils import configure_log, setup_globals

    config = launcher.config
    assert config is not None and launcher.hydra_context is not None, "setup() first"
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(recipe=recipe_path(config), sweep_dir=sweep_dir, cwd=os.getcwd(), env=child_env(),
                  hydra_args=hydra_passthrough(config), timeout_s=launcher.job_timeout_s)

    jobs = compose_jobs(launcher, job_overrides, initial_job_idx, sweep_dir)
    if not jobs:
        return []
    opts = jobs[0].task_cfg.sweep
    fail_fast = bool(opts.fail_fast)
    with sweep_ray(jobs, ctx, address=launcher.address, num_cpus=launcher.num_cpus) as total:
        if bool(opts.prepare_once):  # before any job starts
            prepare_once(jobs, ctx, fail_fast)
        run_on_ray(jobs, ctx, fail_fast, total=total, max_parallel=launcher.max_parallel)
    return [job_return(j, ctx.cwd) for j in jobs]


def compose_jobs(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
                 sweep_dir: Path) -> list[Job]:
    """Each job's config (the sweep config with its overrides), directory, run id and CPUs."""
    from hydra.core.hydra_config import HydraConfig

    jobs = []
    for i, ov in enumerate(job_overrides):
        idx = initial_job_idx + i
        sc = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(ov))
        with open_dict(sc):
            sc.hydra.job.id = f"job_id_for_{idx}"
            sc.hydra.job.num = idx
        HydraConfig.instance().set_config(sc)
        subdir = str(OmegaConf.select(sc, "hydra.sweep.subdir"))
        task_cfg = OmegaConf.masked_copy(sc, [k for k in sc.keys() if k != "hydra"])
        user_run_id = any(str(o).split("=", 1)[0] == "run_id" for o in ov)
        run_id = str(task_cfg.run_id) if user_run_id else engine.job_run_id(str(task_cfg.run_id), idx)
        jobs.append(Job(idx, list(ov), sc, task_cfg, sweep_dir / subdir, run_id,
                        job_cpus(task_cfg, launcher.cpus_per_job)))
    return jobs


def job_cpus(task_cfg: DictConfig, cpus_per_job: Optional[int]) -> int:
    """The CPUs a job's training uses (`hydra.launcher.cpus_per_job` when set)."""
    if cpus_per_job:
        return int(cpus_per_job)
    c = task_cfg.cluster
    kind = str(getattr(c.kind, "value", c.kind))
    if kind == "local":
        return max(1, int(c.num_workers) * int(c.cpus_per_worker))
    return 1  # the job's driver; its training runs on the configured cluster


def trains_in_process(task_cfg: DictConfig) -> bool:
    """The job trains in its own process (`cluster=local cluster.trainer=process`): it uses no
    Ray itself, so its process can be a warm fork of the Ray worker's."""
    from llmops.clusters.local import trainer

    return trainer(task_cfg) == "process"  # with another cluster the job refuses it (clusters.checks)


def recipe_path(config: DictConfig) -> Path:
    """The recipe file (Hydra's primary config) of the sweep."""
    name = str(config.hydra.job.config_name)
    for src in config.hydra.runtime.config_sources:  # --config-dir is "command-line"
        if src.schema == "file" and src.provider in ("command-line", "main"):
            p = Path(str(src.path)) / f"{name}.yaml"
            if p.is_file():
                return p
    raise LLMOpsError("ray launcher: cannot find the recipe file (primary config) of this sweep")


def hydra_passthrough(config: DictConfig) -> list:
    return [str(o) for o in config.hydra.overrides.hydra
            if str(o).split("=", 1)[0].lstrip("+") in ("hydra.searchpath", "hydra.verbose")]


def child_env() -> dict:
    """This process's environment for a job's process: llmops importable, no Ray worker's vars."""
    import llmops

    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}
    root = str(Path(llmops.__file__).resolve().parent.parent)
    paths = [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


# ----------------------------------------------------------------------------- prepare once
def prepare_once(jobs: list[Job], ctx: Context, fail_fast: bool = False) -> None:
    """Tokenize each distinct dataset of the sweep once, before the jobs run in parallel."""
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
        if data_cached(first.task_cfg):
            log.info("ray launcher: data %s of job(s) %s is prepared already", fp,
                     ", ".join(str(m.idx) for m in members))
            continue
        pdir = ctx.sweep_dir / ".prepare" / fp
        log.info("ray launcher: preparing data %s once for job(s) %s", fp,
                 ", ".join(str(m.idx) for m in members))
        out = run_task(1, ctx.argv(first.overrides, pdir, f"{first.run_id}-prepare",
                                   extra=["stages=[prepare_data]"]),
                       ctx, str(pdir / "llmops.log"), trains_in_process(first.task_cfg))
        if out["rc"] != 0:
            err = state_error(pdir) or log_tail(pdir / "llmops.log")
            for m in members:
                m.status, m.error, m.seconds = "failed", f"prepare_data (shared): {err}", 0.0
                record(m)


def data_cached(task_cfg: DictConfig) -> bool:
    """The job's prepared data is in the cache (False when that cannot be told: prepare then)."""
    from llmops.data.build import cached

    try:
        return cached(task_cfg)
    except Exception:  # noqa: BLE001 - the prepare run (or the job) reports what is wrong
        return False


# ------------------------------------------------------------------------------------ on Ray
@contextmanager
def sweep_ray(jobs: list[Job], ctx: Context, *, address: Optional[str], num_cpus: Optional[int]):
    """The Ray the jobs run on, for the time of the sweep; yields its CPUs. `address` joins that
    cluster; else, when every job trains on the warm local head (`cluster=local` with
    `cluster.ray_idle_timeout_s` > 0), that head (started if need be; it stays); else an
    embedded Ray in this process."""
    import ray

    started, lease = False, None
    if not ray.is_initialized():
        head = None if address else warm_head(jobs)
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        elif head is not None:
            from llmops.clusters import warm_ray

            lease = warm_ray.attach()
            ctx.warm = True
            ray.init(address=head.gcs_address, log_to_driver=False, logging_level=logging.WARNING)
            log.info("ray launcher: on the warm Ray head at %s (`llmops ray stop` ends it)",
                     head.gcs_address)
        else:
            ray.init(address="local", num_cpus=int(num_cpus or os.cpu_count() or 1), num_gpus=0,
                     include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        started = True
    try:
        yield int(ray.cluster_resources().get("CPU", 1))
    finally:
        if started:
            ray.shutdown()
        if lease is not None:
            from llmops.clusters import warm_ray

            warm_ray.detach(lease)


def warm_head(jobs: list[Job]):
    """The warm local Ray head when every job trains on it, else None (also when it cannot start)."""
    cfgs = [j.task_cfg.cluster for j in jobs]
    if not all(str(getattr(c.kind, "value", c.kind)) == "local" and int(c.ray_idle_timeout_s) > 0
               for c in cfgs):
        return None
    from llmops.clusters import warm_ray

    cpus = max([os.cpu_count() or 1] + [int(c.num_workers) * int(c.cpus_per_worker) for c in cfgs])
    head, why = warm_ray.ensure(cpus, max(int(c.ray_idle_timeout_s) for c in cfgs))
    if head is None:
        log.info("ray launcher: %s; an embedded Ray for this sweep", why)
    return head


def run_task(cpus: int, argv: list, ctx: Context, log_path: str, fork: bool) -> dict:
    """One process run to its end in a Ray task (prepare_once waits for it here)."""
    import ray

    ref = ray.remote(run_child).options(num_cpus=task_cpus(cpus, ctx, fork), max_retries=0).remote(
        argv, ctx.cwd, ctx.env, log_path, ctx.timeout_s, fork)
    try:
        return ray.get(ref)
    except KeyboardInterrupt:
        ray.cancel(ref)
        raise
    except Exception as e:  # the Ray task itself failed (node lost, ...)
        return {"rc": -1, "seconds": 0.0, "error": f"{type(e).__name__}: {e}"}


def task_cpus(cpus: int, ctx: Context, fork: bool) -> int:
    """What a job's Ray task reserves. On the warm head a job that trains with Ray Train asks
    that same Ray for its workers' CPUs, so its task reserves none (the launcher still admits
    jobs by their CPUs); else the two reservations could wait on each other."""
    return 0 if ctx.warm and not fork else cpus


def run_on_ray(jobs: list[Job], ctx: Context, fail_fast: bool, *, total: int,
               max_parallel: Optional[int]) -> None:
    """Run the pending jobs, in order, as many at once as their CPUs (and max_parallel) allow."""
    import ray

    running: dict = {}
    try:
        for j in jobs:
            j.cpus = min(j.cpus, total)  # a job larger than the cluster still runs, alone
        log.info("ray launcher: %d job(s) on %d CPU(s), sweep directory %s", len(jobs), total,
                 ctx.sweep_dir)
        for j in jobs:
            log.info("  #%d : %s (%d CPU)", j.idx, " ".join(shown_overrides(j.overrides)), j.cpus)

        remote = ray.remote(run_child)
        pending = [j for j in jobs if j.status == "pending"]
        forks = sum(1 for j in pending if trains_in_process(j.task_cfg))
        idle = job_runners(min(total, forks), ctx.env) if ctx.warm and forks else []
        owner: dict = {}  # ref -> the warm runner it runs on
        free = total
        failed_any = any(j.status == "failed" for j in jobs)
        while pending or running:
            # start jobs in order while they fit (and while fail_fast allows)
            while pending and not (fail_fast and failed_any):
                j = pending[0]
                if running and (j.cpus > free or (max_parallel and len(running) >= max_parallel)):
                    break
                pending.pop(0)
                j.job_dir.mkdir(parents=True, exist_ok=True)
                fork = trains_in_process(j.task_cfg)
                args = (ctx.argv(j.overrides, j.job_dir, j.run_id), ctx.cwd, ctx.env,
                        str(j.job_dir / "llmops.log"), ctx.timeout_s)
                if fork and idle:  # a fork of a warm runner that outlives the sweep
                    runner = idle.pop(0)
                    ref = runner.run.remote(*args)
                    owner[ref] = runner
                else:
                    ref = remote.options(num_cpus=task_cpus(j.cpus, ctx, fork), max_retries=0).remote(
                        *args, fork)
                running[ref] = j
                free -= j.cpus
                j.status = "running"
            if fail_fast and failed_any and pending:
                for j in pending:
                    j.status = "not run"
                    j.error = f"not run: sweep.fail_fast=true and job {first_failed(jobs)} failed"
                    record(j)
                pending = []
            if not running:
                break
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                j = running.pop(ref)
                free += j.cpus
                if ref in owner:
                    idle.append(owner.pop(ref))
                try:
                    out = ray.get(ref)
                except Exception as e:  # the Ray task itself failed (node lost, ...)
                    out = {"rc": -1, "seconds": 0.0, "error": f"{type(e).__name__}: {e}"}
                finish(j, out, ctx.timeout_s)
                failed_any = failed_any or j.status == "failed"
    except KeyboardInterrupt:
        for ref in list(running):
            ray.cancel(ref)
        if owner:  # a runner ends its job's processes when it sees the cancel: wait for that
            ray.wait(list(owner), num_returns=len(owner), timeout=40)
        raise


RUNNERS_NAMESPACE = "llmops"


def job_runners(n: int, env: dict) -> list:
    """`n` warm job runners on the warm local head (`_processes.JobRunner`): the ones a former
    sweep left that still match these jobs, else new ones (they import while the sweep starts;
    a job waits for its runner only the first time)."""
    import ray

    from hydra_plugins.llmops_ray_launcher._processes import JobRunner, identity

    ident = identity(env)
    cls = ray.remote(JobRunner)
    out = []
    for i in range(n):
        name = f"llmops-job-runner-{i}"
        runner = None
        try:
            runner = ray.get_actor(name, namespace=RUNNERS_NAMESPACE)
            if not ray.get(runner.fresh.remote(ident), timeout=120):
                log.info("ray launcher: warm job runner %d is out of date; replacing it", i)
                ray.kill(runner)
                runner = None
                wait_name_free(name)
        except ValueError:  # none of that name
            runner = None
        except Exception as e:  # noqa: BLE001 - a dead or hung runner: replace it
            log.info("ray launcher: warm job runner %d did not answer (%s); replacing it", i, e)
            try:
                ray.kill(runner)
            except Exception:  # noqa: BLE001
                pass
            runner = None
            wait_name_free(name)
        if runner is None:
            runner = cls.options(
                name=name, namespace=RUNNERS_NAMESPACE, lifetime="detached", num_cpus=0,
                max_restarts=0, runtime_env={"env_vars": {
                    "PYTHONPATH": env.get("PYTHONPATH", ""), "TOKENIZERS_PARALLELISM": "false"}},
            ).remote(ident)
        out.append(runner)
    return out


def wait_name_free(name: str, timeout_s: float = 30.0) -> None:
    import ray

    end = time.time() + timeout_s
    while time.time() < end:
        try:
            ray.get_actor(name, namespace=RUNNERS_NAMESPACE)
        except ValueError:
            return
        time.sleep(0.2)


def shown_overrides(overrides: Sequence[str]) -> list:
    from hydra.core.utils import filter_overrides

    return list(filter_overrides(list(overrides)))


# ----------------------------------------------------------------------------------- results
def finish(j: Job, out: dict, timeout_s: int) -> None:
    """A job's process ended: its status, error or return value (the sweep metric), its record."""
    j.seconds = round(float(out.get("seconds", 0.0)), 2)
    j.started, j.ended, j.process = out.get("started"), out.get("ended"), out.get("process")
    j.runner = out.get("runner_pid")
    if out.get("rc") == 0:
        try:
            state = RunDir(j.job_dir).maybe_state()
        except LLMOpsError:
            state = None
        # the job's return value: the metric sweep.metric names, as for the in-process launcher
        j.status, j.result = "completed", engine.sweep_metric(j.task_cfg, state) if state else None
        log.info("ray launcher: job %d done in %.1f s%s", j.idx, j.seconds,
                 f", {j.task_cfg.sweep.metric} {j.result:.4g}" if isinstance(j.result, (int, float)) else "")
    else:
        j.status = "failed"
        if out.get("timeout"):
            j.error = f"stopped after hydra.launcher.job_timeout_s={timeout_s}"
        else:
            j.error = out.get("error") or state_error(j.job_dir) or log_tail(j.job_dir / "llmops.log")
        log.error("ray launcher: job %d failed after %.1f s: %s (log: %s)", j.idx, j.seconds,
                  j.error, j.job_dir / "llmops.log")
    record(j)


def record(j: Job) -> None:
    """The job's sweep_job.json (what the summary reads); a failure is noted for fail_fast."""
    sweeps.write_job_record(j.job_dir, {
        "num": j.idx, "overrides": j.overrides, "status": j.status, "error": j.error or None,
        "seconds": j.seconds, "result": j.result, "cpus": j.cpus, "launcher": "ray", "started": j.started, "ended": j.ended,
        "process": j.process,  # "fork": a fork of a warm Ray worker; "new": a new interpreter
        "runner_pid": j.runner,  # the warm job runner it was forked from (None: a task's worker)
    })
    if j.status == "failed":
        note_failure(j.idx)


def job_return(j: Job, cwd: str) -> JobReturn:
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
    return r


def first_failed(jobs: list[Job]) -> Any:
    return next((j.idx for j in jobs if j.status == "failed"), "?")


def state_error(run_dir: Path) -> str:
    """The error of the run's failed stage, from its state.json ("" when none)."""
    try:
        state = RunDir(run_dir).maybe_state()
    except LLMOpsError:
        return ""
    for name, s in (state.data["stages"] if state else {}).items():
        if s.get("status") == "failed":
            return f"stage '{name}' failed: {s.get('error')}"
    return ""


def log_tail(p: Path) -> str:
    """The CLI's error message at the end of a job's log (else its last error-looking line)."""
    try:
        lines = [line for line in p.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    starts = [i for i, line in enumerate(lines) if line.startswith("llmops: error:")]
    if starts:  # the CLI's own message, with its indented problem lines
        block = [lines[starts[-1]][len("llmops: error:"):].strip()]
        block += [line.strip() for line in lines[starts[-1] + 1:] if line.startswith(" ")]
        return " ".join(block)[:500]
    errs = [line for line in lines if "error" in line.lower()]
    return (errs[-1] if errs else (lines[-1] if lines else "no output")).strip()[:500]
