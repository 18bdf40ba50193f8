"""`hydra/launcher=ray`: run the jobs of an `llmops run -m` sweep in parallel on Ray.

Why not `hydra-ray-launcher` (1.2.2): it pickles the task function into a Ray task with one CPU
and calls it there. An llmops job starts Ray Train inside that task, whose workers then ask the
same cluster for CPUs the sweep's own tasks already hold: on a 2-CPU machine, two jobs hold both
CPUs and their trainers wait forever. It also stops collecting at the first failed job and pins
cloudpickle<3.

This launcher schedules each job as a Ray task that *reserves the CPUs the job's training will
use* and runs the job as its own process (`llmops run RECIPE <overrides> hydra.run.dir=<job dir>`);
before the jobs, each distinct dataset of the sweep is tokenized once (`sweep.prepare_once`).

The plugin in Hydra's own layout: the config is `_config` (ConfigStore), this module is what
Hydra imports while scanning plugins (light: no ray, no llmops), and the work is `_core`, loaded
when a sweep launches.
"""

from typing import Optional, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.llmops_ray_launcher._config import RayLauncherConf  # noqa: F401  (registers it)


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

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.llmops_ray_launcher import _core

        return _core.launch(self, job_overrides, initial_job_idx)
