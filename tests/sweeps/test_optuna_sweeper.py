"""The resumable Optuna sweeper (`hydra/sweeper=optuna_resumable`), driven through a tiny Hydra app
(tests/sweeps/data/optuna_app.py: minimise (x - 0.3)^2), each sweep its own process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna", minversion="4")

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from tests.sweeps.helpers import DATA, compose_and_check, env  # noqa: E402



def run_app(sweep_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DATA / "optuna_app.py"), "-m",
                           f"hydra.sweep.dir={sweep_dir}",
                           f"hydra.sweeper.storage=sqlite:///{sweep_dir}/study.db", *extra],
                          capture_output=True, text=True, env=env(), timeout=120)


def load(sweep_dir: Path):
    return optuna.load_study(study_name="quadratic", storage=f"sqlite:///{sweep_dir}/study.db")


def states(sweep_dir: Path) -> list[str]:
    return [t.state.name for t in load(sweep_dir).trials]


def job(sweep_dir: Path, num: int) -> dict:
    return json.loads((sweep_dir / str(num) / "job.json").read_text())


def results(sweep_dir: Path) -> dict:
    return yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())


def job_dirs(sweep_dir: Path) -> list[str]:
    return sorted((p.name for p in sweep_dir.iterdir() if p.is_dir()), key=int)


# ----------------------------------------------------------------------------------- resuming
def test_interrupted_optuna_search_resumes_where_it_stopped(tmp_path):
    sd = tmp_path / "sweep"
    sd.mkdir()
    first = run_app(sd, "interrupt_at=2")  # Ctrl-C inside the third trial
    assert first.returncode != 0
    assert states(sd) == ["COMPLETE", "COMPLETE", "RUNNING"]

    second = run_app(sd)
    assert second.returncode == 0, second.stderr
    assert "has 2 finished trial(s) of 4; running 2 more" in second.stdout + second.stderr
    assert states(sd) == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    # new jobs are numbered after the old ones: no job directory was reused
    assert job_dirs(sd) == ["0", "1", "2", "3", "4"]

    third = run_app(sd)  # nothing left to do
    assert third.returncode == 0
    assert "running 0 more" in third.stdout + third.stderr
    assert len(load(sd).trials) == 5


def test_a_killed_optuna_sweep_reruns_only_the_missing_trials_in_new_job_dirs(tmp_path):
    sd = tmp_path / "sweep"
    first = run_app(sd, "kill_at=2")  # SIGKILL of the sweep process inside the third trial
    assert first.returncode == -signal.SIGKILL
    assert states(sd) == ["COMPLETE", "COMPLETE", "RUNNING"]
    before = {n: job(sd, n) for n in (0, 1, 2)}

    second = run_app(sd, "kill_at=-1")
    assert second.returncode == 0, second.stderr
    log = second.stdout + second.stderr
    assert "trial 2 of study quadratic was left RUNNING by an interrupted sweep; marked FAIL" in log
    assert "has 2 finished trial(s) of 4; running 2 more" in log
    study = load(sd)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + \
        [TrialState.COMPLETE] * 2
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 4  # n_trials
    # jobs 0-2 are untouched, 3 and 4 ran in the second process, one trial per job directory
    assert job_dirs(sd) == ["0", "1", "2", "3", "4"]
    assert {n: job(sd, n) for n in (0, 1, 2)} == before
    assert job(sd, 3)["pid"] == job(sd, 4)["pid"] != before[0]["pid"]
    assert all(job(sd, t.number)["x"] == t.params["x"] for t in study.trials)
    # the resumed sampler does not repeat the first run's suggestions (same seed)
    xs = [t.params["x"] for t in study.trials]
    assert len(set(xs)) == len(xs)
    best = min((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert results(sd)["best_trial"] == best.number and results(sd)["best_value"] == best.value


def test_a_job_dir_the_study_does_not_know_is_not_overwritten(tmp_path):
    sd = tmp_path / "sweep"
    assert run_app(sd, "hydra.sweeper.n_trials=1").returncode == 0
    (sd / "study.db").unlink()  # the study is lost, its job directory 0 is not
    again = run_app(sd, "hydra.sweeper.n_trials=1")
    assert again.returncode != 0
    assert f"job directory {sd / '0'} exists but study 'quadratic'" in again.stderr
    assert states(sd) == []  # nothing asked, nothing ran


# --------------------------------------------------------------------------------- direction
@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_the_best_trial_follows_the_direction(tmp_path, direction):
    sd = tmp_path / direction
    # the random sampler with one seed suggests the same x's for either direction
    r = run_app(sd, f"sweep.direction={direction}", "hydra.sweeper.sampler.name=random")
    assert r.returncode == 0, r.stderr
    study = load(sd)
    assert study.direction.name.lower() == direction
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4
    pick = min if direction == "minimize" else max
    best = pick(done, key=lambda t: t.value)
    assert study.best_trial.number == best.number
    res = results(sd)
    assert res["direction"] == direction
    assert res["best_trial"] == best.number and res["best_value"] == best.value
    assert res["best_params"] == {"x": best.params["x"]}
    assert res["best_value"] == (job(sd, best.number)["x"] - 0.3) ** 2


def test_a_study_is_not_resumed_in_the_other_direction(tmp_path):
    sd = tmp_path / "sweep"
    assert run_app(sd, "hydra.sweeper.n_trials=1").returncode == 0
    r = run_app(sd, "sweep.direction=maximize")
    assert r.returncode != 0
    assert "was created to minimize, but hydra.sweeper.direction is maximize" in r.stderr
    assert len(load(sd).trials) == 1


# ------------------------------------------------------------------------------- params grammar
def test_params_grammar_maps_to_optuna_distributions():
    from hydra_plugins.llmops_optuna.search import parse_params

    space = parse_params([
        "lr=tag(log, interval(1e-4, 3e-3))", "x=interval(0, 1)", "n=range(1, 5)",
        "k=range(0, 10, 2)", "w=range(0.0, 1.0, 0.25)", "h=tag(log, range(1, 100))",
        "opt=choice(a, 'b c', 3)", "z=1,2", "seed=5", "model=gpt2", "k=range(2, 8, 3)",
    ])
    d = space.distributions
    assert d["lr"] == FloatDistribution(1e-4, 3e-3, log=True)
    assert d["x"] == FloatDistribution(0.0, 1.0)
    assert d["n"] == IntDistribution(1, 4)  # Hydra's range: the stop is excluded
    assert d["k"] == IntDistribution(2, 5, step=3)  # the later override of a key wins
    assert d["w"] == FloatDistribution(0.0, 0.75, step=0.25)
    assert d["h"] == IntDistribution(1, 99, log=True)
    assert d["opt"] == CategoricalDistribution(("a", "b c", 3))
    assert d["z"] == CategoricalDistribution((1, 2))
    assert space.fixed == {"seed": "seed=5", "model": "model=gpt2"}
    # a suggested value becomes an override Hydra reads back as the same value
    over = space.overrides({"lr": 2e-4, "x": 0.5, "n": 3, "k": 5, "w": 0.25, "h": 10,
                            "opt": "b c", "z": 2})
    assert over == ["lr=0.0002", "x=0.5", "n=3", "k=5", "w=0.25", "h=10", r"opt=b\ c", "z=2",
                    "seed=5", "model=gpt2"]


@pytest.mark.parametrize("bad, why", [
    ("x=interval(1, 0)", "needs a < b"),
    ("x=tag(log, interval(0, 1))", "needs a > 0"),
    ("x=tag(log, choice(1, 2))", "not to choices"),
    ("x=tag(log, range(1, 10, 2))", "needs step 1"),
    ("x=range(3, 3)", "the range is empty"),
])
def test_params_that_optuna_cannot_search_name_the_param(bad, why):
    from hydra_plugins.llmops_optuna.search import parse_params
    from llmops.core.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        parse_params([bad])
    assert f"hydra.sweeper.params: '{bad}'" in str(e.value) and why in str(e.value)


def test_a_sweep_over_a_log_interval_an_int_range_and_a_choice(tmp_path):
    sd = tmp_path / "sweep"
    r = run_app(sd, "x=tag(log, interval(0.01, 1.0))", "n=range(1, 5)", "opt=choice(a, 'b c')",
                "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2")
    assert r.returncode == 0, r.stderr
    study = load(sd)
    assert len(study.trials) == 6
    for t in study.trials:
        assert t.distributions == {"x": FloatDistribution(0.01, 1.0, log=True),
                                   "n": IntDistribution(1, 4),
                                   "opt": CategoricalDistribution(("a", "b c"))}
        j = job(sd, t.number)  # what the job got is what the trial suggested
        assert (j["x"], j["n"], j["opt"]) == (t.params["x"], t.params["n"], t.params["opt"])
        assert isinstance(j["n"], int) and 1 <= j["n"] <= 4 and 0.01 <= j["x"] <= 1.0
    # batches of n_jobs trials go to the launcher together, numbered after each other
    assert (r.stdout + r.stderr).count("Launching 2 jobs locally") == 3
    assert job_dirs(sd) == ["0", "1", "2", "3", "4", "5"]


def test_the_grid_sampler_tries_each_point_once(tmp_path):
    sd = tmp_path / "sweep"
    r = run_app(sd, "hydra.sweeper.sampler.name=grid", "x=choice(0.1, 0.3, 0.5)", "n=range(1, 3)",
                "hydra.sweeper.n_trials=10")
    assert r.returncode == 0, r.stderr
    study = load(sd)
    assert sorted((t.params["x"], t.params["n"]) for t in study.trials) == \
        [(x, n) for x in (0.1, 0.3, 0.5) for n in (1, 2)]
    assert results(sd)["best_params"]["x"] == 0.3


def test_the_grid_sampler_refuses_a_continuous_param(tmp_path):
    r = run_app(tmp_path / "sweep", "hydra.sweeper.sampler.name=grid")  # x: interval(0.0, 1.0)
    assert r.returncode != 0
    assert "hydra.sweeper.params.x: the grid sampler needs choice(...) or range(...)" in r.stderr


# ---------------------------------------------------------------------------------- failures
def test_none_nan_and_failed_jobs_are_fail_trials_and_the_search_goes_on(tmp_path):
    sd = tmp_path / "sweep"
    r = run_app(sd, "none_at=1", "nan_at=2", "fail_at=3", "hydra.sweeper.n_trials=5",
                "hydra.sweeper.max_failure_rate=1.0")
    assert r.returncode == 0, r.stderr
    log = r.stdout + r.stderr
    assert states(sd) == ["COMPLETE", "FAIL", "FAIL", "FAIL", "COMPLETE"]
    assert "trial 1 ({'x': " in log and "is FAIL: the job returned None, not a number" in log
    assert "is FAIL: the job returned nan, not a finite number" in log
    assert "is FAIL: the job failed: RuntimeError: job 3 failed on purpose" in log
    assert results(sd)["n_complete"] == 2
    # a rerun runs new trials for the three that failed
    again = run_app(sd, "none_at=1", "nan_at=2", "fail_at=3", "hydra.sweeper.n_trials=5",
                    "hydra.sweeper.max_failure_rate=1.0")
    assert again.returncode == 0, again.stderr
    assert "has 2 finished trial(s) of 5; running 3 more" in again.stdout + again.stderr
    assert states(sd)[5:] == ["COMPLETE"] * 3 and results(sd)["n_complete"] == 5


def test_more_failures_than_max_failure_rate_stop_the_search_with_the_reason(tmp_path):
    sd = tmp_path / "sweep"
    r = run_app(sd, "fail_at=1")  # max_failure_rate defaults to 0.0
    assert r.returncode != 0
    assert ("1 of 1 trial(s) of the batch failed, more than hydra.sweeper.max_failure_rate=0.0 "
            "allows; trial 1: the job failed: RuntimeError: job 1 failed on purpose") in r.stderr
    assert states(sd) == ["COMPLETE", "FAIL"]


def test_no_completed_trial_is_a_clear_error(tmp_path):
    sd = tmp_path / "sweep"
    r = run_app(sd, "none_at=0", "hydra.sweeper.n_trials=1", "hydra.sweeper.max_failure_rate=1.0")
    assert r.returncode != 0
    assert "no trial of study 'quadratic' completed, so there is no best trial" in r.stderr
    assert states(sd) == ["FAIL"] and not (sd / "optimization_results.yaml").exists()


# --------------------------------------------------------------------------------- the plugin
def test_a_bad_sweeper_setting_names_its_key(tmp_path):
    r = run_app(tmp_path / "sweep", "hydra.sweeper.n_jobs=0", "hydra.sweeper.max_failure_rate=2")
    assert r.returncode != 0
    assert "hydra.sweeper.n_jobs: expected an integer >= 1, got 0" in r.stderr
    assert "hydra.sweeper.max_failure_rate: expected a number in [0, 1], got 2" in r.stderr


def test_composing_with_the_sweeper_does_not_import_optuna():
    r = compose_and_check([], (
        "assert cfg.hydra.sweeper._target_.endswith('ResumableOptunaSweeper'), cfg.hydra.sweeper\n"
        "assert cfg.hydra.sweeper.sampler.name.name == 'tpe'\n"
        "assert 'optuna' not in sys.modules\n"))
    assert r.returncode == 0, r.stderr
