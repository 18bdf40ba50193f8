"""`hydra/sweeper=optuna_resumable`: an Optuna search whose study survives an interruption.

With a persistent study (`storage` and `study_name` set), rerunning the same command finishes
the search: the trials an interrupted sweep left RUNNING are marked FAIL, only the missing
completed trials are run, and new jobs are numbered after the study's trials, so no job
directory is reused. The config is `hydra_plugins.llmops_optuna.config`; the search
(`hydra_plugins.llmops_optuna.search`, which imports optuna) is loaded when a sweep starts.
"""

from typing import Any, List, Optional

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.llmops_optuna.config import Settings


class ResumableOptunaSweeper(Sweeper):
    def __init__(self, direction: Any, study_name: Optional[str], storage: Optional[str],
                 n_trials: int, n_jobs: int, max_failure_rate: float, sampler: Any,
                 params: Optional[DictConfig]) -> None:
        self.settings = Settings.create(direction=direction, study_name=study_name, storage=storage,
                                        n_trials=n_trials, n_jobs=n_jobs,
                                        max_failure_rate=max_failure_rate, sampler=sampler,
                                        params=params)
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None and self.launcher is not None, "setup() first"
        from hydra_plugins.llmops_optuna import search

        sweep = OmegaConf.to_container(self.config.hydra.sweep, resolve=False)
        return search.run(self.settings, list(arguments), launcher=self.launcher,
                          sweep_dir=str(self.config.hydra.sweep.dir),
                          job_subdir=str(sweep.get("subdir", "")))
