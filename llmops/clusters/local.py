"""`cluster=local`: an embedded Ray in this process (the default), or the warm Ray head llmops
started and keeps between runs (`cluster.ray_idle_timeout_s` > 0; llmops.clusters.warm_ray).
No cluster, no network. With `cluster.trainer=process` there is no Ray at all: the one worker
trains in this process (llmops.training.loop.fit_in_process).

The Ray it starts ends with it: on the way out (done, failed, Ctrl-C or SIGTERM) Ray is shut down
and every process still mentioning its session dir (raylet, GCS, agents, workers) is ended; the
session dir is written into the run's lock, so that a run after a SIGKILL ends what was left. A
warm head stays: the run's driver, actors and workers end with `ray.shutdown()`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from omegaconf import DictConfig

from llmops.run import TrainingTask, TrainOutputs
from llmops.run.rundir import end_processes_mentioning, note_in_held_locks

log = logging.getLogger("llmops")


def worker_env() -> dict:
    """Environment for Ray workers: llmops importable even when run from a source checkout."""
    from pathlib import Path

    import llmops

    root = str(Path(llmops.__file__).resolve().parent.parent)
    paths = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    return {"PYTHONPATH": os.pathsep.join(paths), "TOKENIZERS_PARALLELISM": "false",
            # Ray Train's controller polls its workers every 2 s by default: on a short local
            # run that is seconds of waiting at start and end (measured: 20 s -> 16 s per fit)
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")}


def in_thread(fn, *args):
    """`fn(*args)` in a helper thread while this (main) thread waits for it, so that SIGINT and
    SIGTERM reach llmops's handlers here. (In the main thread, Ray Train's `fit` puts its own
    SIGINT handler in place, which asks the trainer to stop and then returns as if nothing
    happened.) On an interrupt the exception leaves at once; the backend's exit shuts Ray down,
    which ends the helper thread's wait."""
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread as is
            box["error"] = e

    t = threading.Thread(target=target, name="llmops-fit", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.2)
    if "error" in box:
        raise box["error"]
    return box["result"]


def trainer(cfg: DictConfig) -> str:
    """How `cluster=local` trains: "process" (the one worker in the llmops process, no Ray) or
    "ray" (Ray Train). `cluster.trainer=auto` picks process for one CPU worker without restarts
    (`training.max_failures=0`): Ray Train's worker group would cost that run about 10 s of start
    and stop and give it nothing (no other worker, no restart)."""
    c = cfg.cluster
    t = str(getattr(c.trainer, "value", c.trainer))
    if t != "auto":
        return t
    kind = str(getattr(c.kind, "value", c.kind))
    one = int(c.num_workers) == 1 and int(c.gpus_per_worker) == 0
    return "process" if kind == "local" and one and int(cfg.training.max_failures) == 0 else "ray"


class LocalBackend:
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self._started = False
        self.session_dir: str | None = None
        self._lease = None

    def in_process(self) -> bool:
        return trainer(self.cfg) == "process"

    def cpus_needed(self) -> int:
        c = self.cfg.cluster
        return int(c.num_workers) * int(c.cpus_per_worker)

    def plan(self, cfg: DictConfig, ctx) -> dict:
        from llmops import storage

        c = cfg.cluster
        path, _ = storage.ray_storage(cfg, ctx.run_dir, ctx.run_id) if cfg.storage.kind.value != "s3" else (
            f"s3 bucket {cfg.storage.bucket}", None)
        if self.in_process():
            where = f"this process, one worker, no Ray (cluster.trainer={self.cfg.cluster.trainer.value})"
        elif int(c.ray_idle_timeout_s) > 0:
            where = "warm local Ray head (llmops ray status)"
        else:
            where = "embedded Ray in this process"
        return {
            "where": where,
            "workers": int(c.num_workers),
            "cpus_per_worker": int(c.cpus_per_worker),
            "gpus_per_worker": int(c.gpus_per_worker),
            "checkpoints": path,
            "trainer": ("transformers.Trainer in this process" if self.in_process() else
                        "ray.train.torch.TorchTrainer + transformers.Trainer (RayTrainReportCallback)"),
        }

    def __enter__(self) -> "LocalBackend":
        if self.in_process():
            return self
        import ray

        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            # at least the CPUs the workers ask for, so a 2-worker run on a 1-CPU box still starts
            num_cpus = max(os.cpu_count() or 1, self.cpus_needed())
            num_gpus = None if int(self.cfg.cluster.gpus_per_worker) else 0
            sigterm = signal.getsignal(signal.SIGTERM)
            info = None
            try:
                if not (int(self.cfg.cluster.ray_idle_timeout_s) > 0 and self._join_warm_head(num_cpus)):
                    info = ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                                    log_to_driver=True, logging_level=logging.WARNING,
                                    runtime_env={"env_vars": worker_env()})
                    self._started = True
            finally:
                # ray.init replaces the SIGTERM handler with sys.exit: keep llmops's (a SIGTERM
                # stops the run like Ctrl-C: stage marked interrupted, Ray shut down, exit 143)
                if callable(sigterm) and threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGTERM, sigterm)
            if info is None:  # the warm head: it stays after the run
                return self
            self.session_dir = str(info.address_info.get("session_dir") or "") or None
            if self.session_dir:
                note_in_held_locks(ray_session_dir=self.session_dir)
        return self

    def _join_warm_head(self, num_cpus: int) -> bool:
        """Connect to the warm head llmops started (starting it when there is none)."""
        import ray

        from llmops.clusters import warm_ray

        head, why = warm_ray.ensure(num_cpus, int(self.cfg.cluster.ray_idle_timeout_s))
        if head is None:
            log.info("cluster=local: %s; using an embedded Ray for this run", why)
            return False
        self._lease = warm_ray.attach()
        try:
            ray.init(address=head.gcs_address, log_to_driver=True, logging_level=logging.WARNING,
                     runtime_env={"env_vars": worker_env()})
        except BaseException:
            warm_ray.detach(self._lease)
            raise
        self._started = True
        log.info("cluster=local: warm Ray head at %s (up %.0f s; `llmops ray stop` ends it)",
                 head.gcs_address, time.time() - head.started_at)
        return True

    def run_training(self, cfg: DictConfig, task: TrainingTask) -> TrainOutputs:
        from llmops.training import loop as training

        if self.in_process():  # in the main thread: Ctrl-C and SIGTERM reach the loop as usual
            return training.fit_in_process(cfg, task)
        return in_thread(training.fit, cfg, task)

    def __exit__(self, *exc) -> None:
        if self._started:
            import ray

            self._started = False
            try:
                ray.shutdown()
            finally:
                if self.session_dir:  # what ray.shutdown left behind (agents, stray workers)
                    end_processes_mentioning(self.session_dir)
        if self._lease is not None:
            from llmops.clusters import warm_ray

            warm_ray.detach(self._lease)
            self._lease = None
