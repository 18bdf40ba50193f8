"""The search behind `hydra/sweeper=optuna_resumable`: params -> optuna distributions, the study,
batches of trials through the launcher, the result file.

Hydra imports this module while scanning plugins, so optuna is imported inside the functions
that use it, never at the top.

A study counts towards `n_trials` its COMPLETE trials: a run asks for `n_trials - completed`
more trials (fewer with the grid sampler when fewer grid points are left), in batches of
`n_jobs`. A trial whose job failed, returned None or a value that is not a finite number is
FAIL; a trial an interrupted sweep left RUNNING is FAIL on the next run. A later run of the same
command runs new trials in their place.
"""

import logging
import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional, Sequence, Union

log = logging.getLogger("llmops")

RESULTS_FILE = "optimization_results.yaml"
JOB_NUM_SUBDIR = "${hydra.job.num}"


# --------------------------------------------------------------------------------- search space
@dataclass
class Param:
    """One searched key: its optuna distribution and how a suggested value becomes an override."""

    name: str                    # the optuna parameter name: the config key (with @package)
    key: str                     # the override's key as given (`+key` kept)
    distribution: Any            # an optuna BaseDistribution
    elements: Optional[list] = None  # choice(...): the parsed values, by index of the choices

    def override(self, value: Any) -> str:
        if self.elements is not None:  # back to the value as parsed (a list stays a list)
            value = self.elements[_index(self.distribution.choices, value)]
        return f"{self.key}={override_value(value)}"


@dataclass
class SearchSpace:
    """The params in the order given: a `Param` for each swept key, the override for fixed ones."""

    entries: dict[str, Union[Param, str]] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, Param]:
        return {n: e for n, e in self.entries.items() if isinstance(e, Param)}

    @property
    def distributions(self) -> dict[str, Any]:
        return {n: p.distribution for n, p in self.params.items()}

    @property
    def fixed(self) -> dict[str, str]:
        return {n: e for n, e in self.entries.items() if isinstance(e, str)}

    def overrides(self, trial_params: dict[str, Any]) -> list[str]:
        return [e.override(trial_params[n]) if isinstance(e, Param) else e
                for n, e in self.entries.items()]


def parse_params(overrides: Sequence[str]) -> SearchSpace:
    """Hydra override strings (`key=interval(0, 1)`, ...) -> the search space; a later override
    of the same key replaces an earlier one (the command line wins over hydra.sweeper.params).

    - `interval(a, b)` -> FloatDistribution(a, b); `tag(log, interval(a, b))` -> log=True
    - `range(a, b[, step])` (Hydra's range: b excluded) -> IntDistribution(a, last, step) for
      integers, FloatDistribution(a, last, step=step) otherwise; `tag(log, ...)` -> log=True
    - `choice(a, b, ...)`, `a,b,...`, `shuffle(range(...))` -> CategoricalDistribution
    - anything else (`key=value`, `~key`, a group choice) -> passed to every trial as given
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    space = SearchSpace()
    for ov in OverridesParser.create().parse_overrides(list(overrides)):
        name = ov.key_or_group + (f"@{ov.package}" if ov.package else "")
        space.entries[name] = distribution_param(ov, name) if ov.is_sweep_override() else ov.input_line
    return space


def distribution_param(ov: Any, name: str) -> Param:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = ov.value()
    tags = set(getattr(value, "tags", ()) or ())
    use_log = "log" in tags
    line = ov.input_line or name

    def bad(msg: str) -> Exception:
        from llmops.core.errors import ConfigError

        return ConfigError([f"hydra.sweeper.params: '{line}': {msg}"])

    try:
        if ov.is_interval_sweep():
            low, high = float(value.start), float(value.end)
            if not low < high:
                raise bad(f"interval(a, b) needs a < b, got {low} and {high}")
            if use_log and low <= 0:
                raise bad(f"tag(log, interval(a, b)) needs a > 0, got {low}")
            return Param(name, ov.get_key_element(), FloatDistribution(low, high, log=use_log))
        if ov.is_range_sweep() and not value.shuffle:
            values = list(ov.sweep_iterator())
            if not values:
                raise bad("the range is empty")
            step = abs(value.step)
            if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                if use_log and step != 1:
                    raise bad("tag(log, range(...)) needs step 1")
                return Param(name, ov.get_key_element(),
                             IntDistribution(min(values), max(values), log=use_log,
                                             step=1 if use_log else int(step)))
            if use_log:
                raise bad("tag(log, range(...)) needs integers; use tag(log, interval(a, b))")
            low = min(values)
            high = float(Decimal(str(low)) + (len(values) - 1) * Decimal(str(step)))
            return Param(name, ov.get_key_element(),
                         FloatDistribution(float(low), high, step=float(step)))
        if ov.is_choice_sweep() or ov.is_range_sweep():  # choice(...) or shuffle(range(...))
            if use_log:
                raise bad("tag(log, ...) applies to interval(...) and range(...), not to choices")
            from hydra.core.override_parser.types import Transformer

            elements = list(ov.sweep_iterator())
            if not elements:
                raise bad("no choices")
            choices = tuple(e if isinstance(e, (str, int, float, bool)) else Transformer.str(e)
                            for e in elements)
            return Param(name, ov.get_key_element(), CategoricalDistribution(choices), elements)
    except ValueError as e:  # optuna refused the distribution
        raise bad(str(e)) from None
    raise bad("expected interval(...), range(...) or choice(...)")


def override_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back (strings quoted when needed)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Transformer

    text = Transformer.str(value)
    if isinstance(value, str):
        back = OverridesParser.create().parse_override(f"k={text}").value()
        if not (isinstance(back, str) and back == value):
            text = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def _index(choices: Sequence[Any], value: Any) -> int:
    for i, c in enumerate(choices):
        if type(c) is type(value) and c == value:
            return i
    return list(choices).index(value)


# ------------------------------------------------------------------------------------- samplers
def grid_values(space: SearchSpace) -> dict[str, list]:
    """The grid sampler's search space: every value of each param (choice and range only)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    grid: dict[str, list] = {}
    for name, p in space.params.items():
        d = p.distribution
        if isinstance(d, CategoricalDistribution):
            grid[name] = list(d.choices)
        elif isinstance(d, IntDistribution) and not d.log:
            grid[name] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, FloatDistribution) and d.step is not None:
            n = int(round((d.high - d.low) / d.step)) + 1
            grid[name] = [float(Decimal(str(d.low)) + i * Decimal(str(d.step))) for i in range(n)]
        else:
            from llmops.core.errors import ConfigError

            raise ConfigError([f"hydra.sweeper.params.{name}: the grid sampler needs choice(...) or "
                               f"range(...), got a continuous {type(d).__name__}"])
    return grid


def make_sampler(name: str, seed: Optional[int], grid: Optional[dict[str, list]]) -> Any:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    assert name == "grid" and grid is not None
    return optuna.samplers.GridSampler(grid, seed=seed)


def _grid_points_left(grid: dict[str, list], trials: Sequence[Any]) -> int:
    names = sorted(grid)
    points = {tuple(p) for p in _product([grid[n] for n in names])}
    seen = {tuple(t.params.get(n) for n in names) for t in trials
            if t.state.is_finished() and all(n in t.params for n in names)}
    return len(points - seen)


def _product(lists: list[list]) -> list[list]:
    out: list[list] = [[]]
    for values in lists:
        out = [o + [v] for o in out for v in values]
    return out


# ---------------------------------------------------------------------------------------- sweep
def objective(ret: Any) -> tuple[Optional[float], Optional[str], Optional[BaseException]]:
    """A finished job -> (its objective value, None, None) or (None, why it is a FAIL, error)."""
    from hydra.core.utils import JobStatus

    if ret.status != JobStatus.COMPLETED:
        try:
            ret.return_value  # raises the job's exception
        except Exception as e:  # noqa: BLE001 - the job's own error, reported and recorded
            return None, f"the job failed: {type(e).__name__}: {e}", e
        return None, "the job did not complete", None
    value = ret.return_value
    if value is None:
        return None, "the job returned None, not a number (no objective value)", None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, f"the job returned {value!r}, not a number", None
    if not math.isfinite(number):
        return None, f"the job returned {number}, not a finite number", None
    return number, None, None


def run(settings: Any, arguments: list[str], *, launcher: Any, sweep_dir: str,
        job_subdir: str) -> list:
    """Run the missing trials of the study, batch by batch; write the result file."""
    import optuna
    from omegaconf import OmegaConf
    from optuna.trial import TrialState

    from llmops.core.errors import LLMOpsError

    s = settings
    space = parse_params([f"{k}={v}" for k, v in s.params.items()] + list(arguments))
    grid = grid_values(space) if s.sampler == "grid" else None
    _make_sqlite_dir(s.storage)
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)

    earlier: list = []
    if s.storage and s.study_name:
        try:
            earlier = optuna.load_study(study_name=s.study_name, storage=s.storage).get_trials(deepcopy=False)
        except KeyError:  # a new study
            earlier = []
    elif s.storage:
        log.warning("optuna: hydra.sweeper.storage is set but study_name is not: optuna names a new "
                    "study each run, so a rerun starts over instead of resuming")
    seed = None if s.seed is None else s.seed + len(earlier)
    study = optuna.create_study(study_name=s.study_name, storage=s.storage, direction=s.direction,
                                sampler=make_sampler(s.sampler, seed, grid), load_if_exists=True)
    stored = [d.name.lower() for d in study.directions]
    if stored != [s.direction]:
        raise LLMOpsError(f"optuna: study '{study.study_name}' in {s.storage} was created to "
                          f"{' and '.join(stored)}, but hydra.sweeper.direction is {s.direction}; "
                          f"use another study_name (or sweep directory) for the other direction")

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        _tell(study, t.number, state=TrialState.FAIL)
        log.warning("optuna: trial %d of study %s was left RUNNING by an interrupted sweep; marked FAIL",
                    t.number, study.study_name)

    trials = study.get_trials(deepcopy=False)
    completed = sum(t.state == TrialState.COMPLETE for t in trials)
    remaining = max(0, s.n_trials - completed)
    if grid is not None:
        remaining = min(remaining, _grid_points_left(grid, trials))
    log.info("optuna: study %s has %d finished trial(s) of %d; running %d more",
             study.study_name, completed, s.n_trials, remaining)
    log.info("optuna: storage %s, sampler %s (seed %s), direction %s", s.storage or "in memory",
             s.sampler, seed, s.direction)

    returns = []
    while remaining > 0:
        n = min(s.n_jobs, remaining)
        first = len(study.get_trials(deepcopy=False))  # trial numbers are 0, 1, ... in a study
        _check_job_dirs(sweep_dir, job_subdir, range(first, first + n), study.study_name, s.storage)
        batch_trials = [study.ask(space.distributions) for _ in range(n)]
        numbers = [t.number for t in batch_trials]
        if numbers != list(range(first, first + n)):
            for t in batch_trials:
                _tell(study, t, state=TrialState.FAIL)
            raise LLMOpsError(f"optuna: study '{study.study_name}' got trials {numbers} while this "
                              f"sweep expected {first}..{first + n - 1}: another sweep is using the "
                              f"study; run one sweep per study at a time")
        batch = [space.overrides(t.params) for t in batch_trials]
        rets = launcher.launch(batch, initial_job_idx=first)
        failures = []
        for trial, ret in zip(batch_trials, rets):
            value, why, err = objective(ret)
            if why is None:
                _tell(study, trial, values=value)
                log.info("optuna: trial %d: %s -> %s", trial.number, trial.params, value)
            else:
                _tell(study, trial, state=TrialState.FAIL)
                log.warning("optuna: trial %d (%s) is FAIL: %s", trial.number, trial.params, why)
                failures.append((trial.number, why, err))
        returns.append(rets)
        remaining -= n
        if failures and len(failures) / n > s.max_failure_rate:
            num, why, err = failures[0]
            raise LLMOpsError(f"optuna: {len(failures)} of {n} trial(s) of the batch failed, more than "
                              f"hydra.sweeper.max_failure_rate={s.max_failure_rate} allows; trial "
                              f"{num}: {why}") from err

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise LLMOpsError(f"optuna: no trial of study '{study.study_name}' completed, so there is no "
                          f"best trial; the log says why each one failed")
    best = study.best_trial
    results = {"name": "optuna", "study_name": study.study_name, "direction": s.direction,
               "best_trial": best.number, "best_params": best.params, "best_value": best.value,
               "n_complete": len(done), "n_trials": len(study.get_trials(deepcopy=False))}
    OmegaConf.save(OmegaConf.create(results), Path(sweep_dir) / RESULTS_FILE)
    log.info("optuna: best trial %d: %s -> %s (%s)", best.number, best.params, best.value,
             Path(sweep_dir) / RESULTS_FILE)
    return returns


def _tell(study: Any, trial: Any, **kw: Any) -> None:
    try:
        study.tell(trial, **kw)
    except RuntimeError as e:  # GridSampler stops the study when the grid is done: recorded anyway
        if "Study.stop" not in str(e):
            raise


def _check_job_dirs(sweep_dir: str, job_subdir: str, numbers: range, study_name: str,
                    storage: Optional[str]) -> None:
    """Job directories are numbered after the study's trials; one that exists belongs to another
    study (the study's storage was lost or points elsewhere): stop rather than overwrite it."""
    if job_subdir != JOB_NUM_SUBDIR:
        return
    for n in numbers:
        d = Path(sweep_dir) / str(n)
        if d.exists():
            from llmops.core.errors import LLMOpsError

            raise LLMOpsError(f"optuna: job directory {d} exists but study '{study_name}' "
                              f"({storage or 'in memory'}) has only {numbers.start} trial(s): it was "
                              f"made by another study; use another hydra.sweep.dir, or the storage "
                              f"of the study that made it")


def _make_sqlite_dir(storage: Optional[str]) -> None:
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        path = storage[len("sqlite:///"):]
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
