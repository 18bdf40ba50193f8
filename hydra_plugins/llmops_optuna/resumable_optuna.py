"""`hydra/sweeper=optuna_resumable`: the Optuna sweeper, resuming an interrupted search.

`hydra-optuna-sweeper` reopens a study kept in `storage` (load_if_exists) but then runs
`n_trials` *more* trials, numbering jobs from 0 again, so their directories overwrite the first
run's. This sweeper counts the trials the study has finished and runs only the rest, numbers
new jobs after the old ones, and marks trials left RUNNING by an interrupted sweep as FAIL (so
the sampler does not wait for them). Everything else is the upstream sweeper and its config.
"""

import logging
from dataclasses import dataclass
from typing import Any, List

from hydra.core.config_store import ConfigStore

log = logging.getLogger("llmops")

try:  # the `sweep` extra; without it this sweeper is simply not offered
    from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # pragma: no cover
    OptunaSweeperConf = None


if OptunaSweeperConf is not None:
    @dataclass
    class ResumableOptunaSweeperConf(OptunaSweeperConf):
        _target_: str = "hydra_plugins.llmops_optuna.resumable_optuna.ResumableOptunaSweeper"


    ConfigStore.instance().store(group="hydra/sweeper", name="optuna_resumable",
                                 node=ResumableOptunaSweeperConf, provider="llmops")


    class ResumableOptunaSweeper(OptunaSweeper):
        def sweep(self, arguments: List[str]) -> Any:
            impl = self.sweeper
            if impl.storage and impl.study_name:
                import optuna

                try:
                    study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
                except KeyError:  # a new study
                    study = None
                if study is not None:
                    trials = study.get_trials(deepcopy=False)
                    for t in trials:
                        if t.state == optuna.trial.TrialState.RUNNING:  # interrupted last time
                            study._storage.set_trial_state(t._trial_id, optuna.trial.TrialState.FAIL)
                    finished = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
                    remaining = max(0, int(impl.n_trials) - finished)
                    log.info("optuna: study %s has %d finished trial(s) of %d; running %d more",
                             impl.study_name, finished, impl.n_trials, remaining)
                    impl.n_trials = remaining
                    impl.job_idx = len(trials)
                    if remaining == 0:
                        return None
            try:
                return super().sweep(arguments)
            except ValueError as e:
                if "Record does not exist" not in str(e):
                    raise
                from llmops.core.errors import LLMOpsError

                raise LLMOpsError(f"optuna: no trial of study '{impl.study_name}' completed, so there is "
                                  f"no best trial; the sweep summary says why each failed") from None
