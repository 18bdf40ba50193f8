"""`cluster=local`: this machine's Ray: the warm head llmops started (llmops.clusters.warm_ray),
or an embedded Ray in this process with `cluster.ray_idle_timeout_s=0`. No cluster, no network."""

from __future__ import annotations

import logging
import os
import time

from omegaconf import DictConfig

from llmops.run import TrainingTask, TrainOutputs

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


class LocalBackend:
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self._started = False
        self._lease = None

    def cpus_needed(self) -> int:
        c = self.cfg.cluster
        return int(c.num_workers) * int(c.cpus_per_worker)

    def plan(self, cfg: DictConfig, ctx) -> dict:
        from llmops import storage

        c = cfg.cluster
        path, _ = storage.ray_storage(cfg, ctx.run_dir, ctx.run_id) if cfg.storage.kind.value != "s3" else (
            f"s3 bucket {cfg.storage.bucket}", None)
        return {
            "where": ("warm local Ray head (llmops ray status)" if int(c.ray_idle_timeout_s) > 0
                      else "embedded Ray in this process"),
            "workers": int(c.num_workers),
            "cpus_per_worker": int(c.cpus_per_worker),
            "gpus_per_worker": int(c.gpus_per_worker),
            "checkpoints": path,
            "trainer": "ray.train.torch.TorchTrainer + transformers.Trainer (RayTrainReportCallback)",
        }

    def __enter__(self) -> "LocalBackend":
        import ray

        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            # at least the CPUs the workers ask for, so a 2-worker run on a 1-CPU box still starts
            num_cpus = max(os.cpu_count() or 1, self.cpus_needed())
            if int(self.cfg.cluster.ray_idle_timeout_s) > 0 and self._join_warm_head(num_cpus):
                return self
            num_gpus = None if int(self.cfg.cluster.gpus_per_worker) else 0
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                     log_to_driver=True, logging_level=logging.WARNING,
                     runtime_env={"env_vars": worker_env()})
            self._started = True
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

        return training.fit(cfg, task)

    def __exit__(self, *exc) -> None:
        if self._started:
            import ray

            ray.shutdown()  # a warm head stays; this run's actors and workers end with its driver
            self._started = False
        if self._lease is not None:
            from llmops.clusters import warm_ray

            warm_ray.detach(self._lease)
            self._lease = None
