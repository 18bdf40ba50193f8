"""`hydra/sweeper=optuna_resumable`: the config of llmops's Optuna sweeper (no optuna import here).

Hydra imports every module of a plugin package when it starts, so this one stays light: the
search itself (which imports optuna) is `hydra_plugins.llmops_optuna.search`, loaded by the
sweeper only when a sweep starts.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, Optional

from hydra.core.config_store import ConfigStore


class Direction(Enum):
    minimize = 1
    maximize = 2


class SamplerName(Enum):
    tpe = 1      # optuna.samplers.TPESampler
    random = 2   # optuna.samplers.RandomSampler
    grid = 3     # optuna.samplers.GridSampler over the params (choice(...) and range(...) only)


@dataclass
class SamplerConf:
    name: SamplerName = SamplerName.tpe
    # the sampler's seed for the study's first trials; a resumed sweep uses seed + the number of
    # trials the study already has, so it does not repeat the first run's suggestions
    seed: Optional[int] = None


@dataclass
class ResumableOptunaSweeperConf:
    _target_: str = "hydra_plugins.llmops_optuna.resumable_optuna.ResumableOptunaSweeper"

    direction: Direction = Direction.minimize
    # study name and storage URL: with both set (sqlite:///<sweep dir>/optuna.db) the study is
    # persistent and rerunning the same command resumes it
    study_name: Optional[str] = None
    storage: Optional[str] = None
    # completed trials the study should have; a rerun runs only the missing ones
    n_trials: int = 20
    # trials per batch, launched together through the configured launcher
    n_jobs: int = 2
    # highest share of failed trials in a batch for which the search goes on
    max_failure_rate: float = 0.0
    sampler: SamplerConf = field(default_factory=SamplerConf)
    # key -> Hydra override value: interval(a, b), tag(log, interval(a, b)), range(a, b[, step]),
    # choice(a, b, ...), or a plain value (the same for every trial)
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="optuna_resumable",
                             node=ResumableOptunaSweeperConf, provider="llmops")


@dataclass(frozen=True)
class Settings:
    """The sweeper config, checked: every problem names its `hydra.sweeper` key."""

    direction: str
    study_name: Optional[str]
    storage: Optional[str]
    n_trials: int
    n_jobs: int
    max_failure_rate: float
    sampler: str
    seed: Optional[int]
    params: Dict[str, str]

    @classmethod
    def create(cls, *, direction, study_name, storage, n_trials, n_jobs, max_failure_rate, sampler,
               params) -> "Settings":
        problems = []
        direction = _name(direction)
        if direction not in Direction.__members__:
            problems.append(f"hydra.sweeper.direction: expected minimize or maximize, got {direction!r}")
        sampler_name = _name(_get(sampler, "name", "tpe"))
        if sampler_name not in SamplerName.__members__:
            problems.append(f"hydra.sweeper.sampler.name: expected one of "
                            f"{', '.join(SamplerName.__members__)}, got {sampler_name!r}")
        seed = _get(sampler, "seed", None)
        if not _is_int(n_trials) or n_trials < 0:
            problems.append(f"hydra.sweeper.n_trials: expected an integer >= 0, got {n_trials!r}")
        if not _is_int(n_jobs) or n_jobs < 1:
            problems.append(f"hydra.sweeper.n_jobs: expected an integer >= 1, got {n_jobs!r}")
        if not isinstance(max_failure_rate, (int, float)) or not 0.0 <= max_failure_rate <= 1.0:
            problems.append(f"hydra.sweeper.max_failure_rate: expected a number in [0, 1], "
                            f"got {max_failure_rate!r}")
        if seed is not None and not _is_int(seed):
            problems.append(f"hydra.sweeper.sampler.seed: expected an integer or null, got {seed!r}")
        if problems:
            from llmops.core.errors import ConfigError

            raise ConfigError(problems)
        return cls(direction=direction, study_name=study_name, storage=storage,
                   n_trials=int(n_trials), n_jobs=int(n_jobs),
                   max_failure_rate=float(max_failure_rate), sampler=sampler_name,
                   seed=None if seed is None else int(seed),
                   params={str(k): str(v) for k, v in (params or {}).items()})


def _name(v) -> str:
    return v.name if isinstance(v, Enum) else str(v)


def _get(node, key, default):
    if node is None:
        return default
    return node.get(key, default) if hasattr(node, "get") else getattr(node, key, default)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
